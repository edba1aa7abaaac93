"""ConceptExtractor: discover each class's important visual concepts from the network (ACE + Grad-CAM).

fit() runs, per class: Grad-CAM foreground masks -> multi-resolution patches (cached features)
-> k-means -> ACE's cluster filter -> CAVs against random patch sets -> TCAV scores -> a
significance test corrected for multiple testing -> the top-N significant concepts by TCAV.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, EmptyFolderError, VRXError
from ..models.adapter import ClassifierAdapter
from ..models.inputs import resize, to_tensor
from ..progress import progress
from .bank import Concept, ConceptBank, Member
from .clustering import Cluster, cluster_patches
from .config import ConceptConfig
from .features import ImagePatches, PatchFeaturizer
from .gradcam import class_foreground
from .importance import effect_significance, masking_effect
from .inputs import ImageInput, iter_images, resized_batch
from .selection import duplicate_similarity, qualify, rank_key, rejection_reason, select
from .tcav import CAV, adjust_pvalues, conceptual_sensitivity, significance, tcav_score, train_cav

log = logging.getLogger(__name__)

N_THUMBNAILS = 10
THUMB_SIZE = 64
MIN_RANDOM_PATCHES = 10
#: Fewest images of a class discovery accepts: with one, every cluster lies in a single image.
MIN_IMAGES_PER_CLASS = 2


@dataclass
class _ClassPatches:
    """The Grad-CAM-filtered patch table of one class."""

    image_ids: list[str]
    images: list[np.ndarray]
    patches: list[ImagePatches]
    features: np.ndarray      # [P, C]
    image_index: np.ndarray   # [P] which image
    patch_index: np.ndarray   # [P] which patch of that image
    n_candidates: int         # patches before the Grad-CAM filter


@dataclass
class DiscoveryReport:
    """Figures of one discovery run, printed by ``vrx discover`` and stored in the bank."""

    seconds: dict[str, float] = field(default_factory=dict)
    per_class: dict[str, dict] = field(default_factory=dict)

    def add_time(self, stage: str, seconds: float) -> None:
        """Accumulate wall-clock seconds for a stage."""
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


class ConceptExtractor:
    """Discovers per-class visual concepts of ``adapter``'s model at its bottleneck layer."""

    def __init__(self, adapter: ClassifierAdapter, config: ConceptConfig | None = None, *,
                 cache_dir: str | Path | None = None, show_progress: bool | None = None):
        self.adapter = adapter
        self.config = config or ConceptConfig()
        self.config.validate()
        self.featurizer = PatchFeaturizer(adapter, self.config.segmentation, cache_dir,
                                          batch_size=self.config.batch_size)
        self.show_progress = show_progress

    # ------------------------------------------------------------------ public
    def fit(self, images_by_class: Mapping[str, Sequence[ImageInput]],
            random_images: Sequence[ImageInput]) -> ConceptExtractor:
        """Discover concepts for every class in ``images_by_class``; the bank is then ``self.bank_``.

        It changes no thread setting. Its matrix products are small and its patch loop is many
        tiny ops, so on shared cores run it under ``vrx.runtime.threads(torch_threads=1,
        blas_threads=1)`` for its measured speed (see :mod:`vrx.concepts.patches`).
        """
        self.bank_ = self._fit(images_by_class, random_images)
        return self

    def _fit(self, images_by_class: Mapping[str, Sequence[ImageInput]],
             random_images: Sequence[ImageInput]) -> ConceptBank:
        cfg = self.config
        if not images_by_class:
            raise ConfigError("no classes given to discover concepts for")
        class_ids = {c: self.adapter.class_id(c) for c in images_by_class}  # UnknownClassError early
        for cls, items in images_by_class.items():
            if len(items) == 0:
                raise EmptyFolderError(f"class {cls!r} has no usable images")
            if len(items) < MIN_IMAGES_PER_CLASS:
                raise ConfigError(f"class {cls!r} has {len(items)} usable image(s); discovery needs at least "
                                  f"{MIN_IMAGES_PER_CLASS} per class (a concept must recur across images, "
                                  "and TCAV holds out a third of its patches)")
        if not random_images:
            raise EmptyFolderError("no random images: TCAV needs random counterparts "
                                   "(pass --random DIR or put them in <images>/random)")
        self.report_ = report = DiscoveryReport()

        random_sets, random_acts = self._random_sets(random_images, report)
        random_cavs: dict[int, CAV] = {}
        concepts: dict[str, list[Concept]] = {}
        candidates: dict[str, list[dict]] = {}
        discovery_images: dict[str, list[str]] = {}
        for cls, items in images_by_class.items():
            table = self._class_patches(cls, class_ids[cls], items, report)
            discovery_images[cls] = list(table.image_ids)
            t0 = time.perf_counter()
            rejected: dict[int, str] = {}
            clusters = cluster_patches(table.features, table.image_index, len(table.images),
                                       cfg.cluster, cfg.seed, rejected)
            for cl in [cl for cl in clusters if len(cl.members) < 2]:   # too few for a CAV's hold-out
                rejected[cl.label] = f"size: {len(cl.members)} member patch(es), a CAV needs at least 2"
            clusters = [cl for cl in clusters if len(cl.members) >= 2]
            report.add_time("clustering", time.perf_counter() - t0)
            t0 = time.perf_counter()
            grads = self._class_gradients(table.images, class_ids[cls])
            report.add_time("tcav_gradients", time.perf_counter() - t0)
            t0 = time.perf_counter()
            random_scores = self._random_scores(grads, random_acts, random_sets, random_cavs)
            rows = self._tcav_rows(cls, table, clusters, grads, random_acts, random_sets, random_scores)
            report.add_time("tcav", time.perf_counter() - t0)
            t0 = time.perf_counter()
            concepts[cls], candidates[cls] = self._choose(cls, class_ids[cls], table, clusters, rows,
                                                         list(class_ids.values()))
            report.add_time("importance", time.perf_counter() - t0)
            stats = report.per_class.setdefault(cls, {})
            stats.update(clusters=len(clusters), significant=sum(c["significant"] for c in candidates[cls]),
                         concepts=len(concepts[cls]),
                         rejected={f"cluster {k}": why for k, why in sorted(rejected.items())}
                         | {f"cluster {r['cluster']}": r["selection"] for r in candidates[cls]
                            if r["selection"] != "chosen"})
            if len(concepts[cls]) < cfg.tcav.n_concepts:
                log.warning("%s: only %d significant concept(s), fewer than the %d asked for; "
                            "using what there is", cls, len(concepts[cls]), cfg.tcav.n_concepts)
                stats["fewer_than_requested"] = True
        report.seconds = {k: round(v, 3) for k, v in report.seconds.items()}
        stats = {"per_class": report.per_class, "seconds": report.seconds,
                 # What later stages must not count as held out (e.g. localisation).
                 "discovery_images": discovery_images,
                 "cache": {"hits": self.featurizer.hits, "misses": self.featurizer.misses},
                 "correction": cfg.tcav.correction}
        return ConceptBank(concepts=concepts, model_id=self.adapter.model_id, layer=self.adapter.bottleneck,
                           config=cfg, stats=stats, candidates=candidates)

    # ------------------------------------------------------------------ stages
    def _class_patches(self, cls: str, class_id: int, items: Sequence[ImageInput],
                       report: DiscoveryReport) -> _ClassPatches:
        gc = self.config.gradcam
        image_ids, images, patches, feats, img_idx, patch_idx = [], [], [], [], [], []
        n_candidates = 0
        for image_id, image in self._iter(items, f"{cls}: patches"):
            t0 = time.perf_counter()
            p = self.featurizer(image)
            report.add_time("patches", time.perf_counter() - t0)
            keep = np.arange(len(p))
            if gc.enabled and len(p):
                t0 = time.perf_counter()
                keep = np.flatnonzero(p.inside_fraction(class_foreground(self.adapter, image, class_id, gc.keep_top)) >= gc.min_inside - 1e-9)
                report.add_time("gradcam", time.perf_counter() - t0)
            n_candidates += len(p)
            i = len(images)
            image_ids.append(image_id)
            images.append(image)
            patches.append(p)
            feats.append(p.features[keep])
            img_idx.append(np.full(len(keep), i))
            patch_idx.append(keep)
        if not images:
            raise EmptyFolderError(f"class {cls!r} has no usable images")
        features = np.concatenate(feats) if feats else np.zeros((0, 0), np.float32)
        if len(features) == 0:
            raise VRXError(f"class {cls!r}: no patches survived the Grad-CAM filter "
                           f"(min_inside={gc.min_inside}); lower it or switch the filter off")
        report.per_class[cls] = {"images": len(images), "patches": n_candidates, "patches_kept": len(features)}
        return _ClassPatches(image_ids, images, patches, features, np.concatenate(img_idx),
                             np.concatenate(patch_idx), n_candidates)

    def _iter(self, items: Sequence[ImageInput], desc: str) -> Iterator[tuple[str, np.ndarray]]:
        return iter_images(items, self.adapter.input_size, desc=desc, show_progress=self.show_progress)

    def _random_sets(self, random_images: Sequence[ImageInput],
                     report: DiscoveryReport) -> tuple[list[np.ndarray], np.ndarray]:
        """Random patch sets (index arrays into the returned full-activation matrix).

        Set 0 is the reference set that random-vs-random CAVs are trained against; sets 1..R
        are the negatives of every concept CAV. Activations are computed once for all classes.
        """
        t = self.config.tcav
        pool: list[tuple[np.ndarray, ImagePatches, int]] = []
        for _, image in self._iter(random_images, "random patches"):
            t0 = time.perf_counter()
            p = self.featurizer(image)
            report.add_time("patches", time.perf_counter() - t0)
            pool.extend((image, p, j) for j in range(len(p)))
        if len(pool) < MIN_RANDOM_PATCHES:
            raise EmptyFolderError(f"random images yield only {len(pool)} patches; need at least "
                                   f"{MIN_RANDOM_PATCHES} (and {t.random_set_size} for full-size random sets)")
        size = min(t.random_set_size, len(pool))
        if size < t.random_set_size:
            log.warning("random images yield only %d patches; random sets shrink from %d to %d",
                        len(pool), t.random_set_size, size)
        rng = np.random.default_rng(self.config.seed + 7919)
        sets = [rng.choice(len(pool), size=size, replace=False) for _ in range(t.n_random_sets + 1)]
        used = np.unique(np.concatenate(sets))
        t0 = time.perf_counter()
        acts = self._full_activations([(pool[i][0], pool[i][1], pool[i][2]) for i in used])
        report.add_time("tcav_activations", time.perf_counter() - t0)
        remap = {int(u): k for k, u in enumerate(used)}
        return [np.array([remap[int(i)] for i in s]) for s in sets], acts

    def _full_activations(self, items: list[tuple[np.ndarray, ImagePatches, int]]) -> np.ndarray:
        """Flattened bottleneck activations [n, F] of the given (image, patches, index) patches."""
        out = []
        by_image: dict[int, list[int]] = {}
        for k, (_, p, _) in enumerate(items):
            by_image.setdefault(id(p), []).append(k)
        order = []
        for ks in by_image.values():
            image, p = items[ks[0]][0], items[ks[0]][1]
            segs = p.segments(np.array([items[k][2] for k in ks]))
            acts = self.featurizer.full_activations(image, segs, self.config.tcav.activations)
            out.append(acts.flatten(1).numpy())
            order.extend(ks)
        result = np.empty((len(items), out[0].shape[1]), np.float32)
        result[np.array(order)] = np.concatenate(out)
        return result

    def _class_gradients(self, images: list[np.ndarray], class_id: int) -> np.ndarray:
        """[I, F] gradients of the class logit at the bottleneck for the class's images."""
        batch = resized_batch(images, self.adapter.input_size)
        _, grads = self.adapter.bottleneck_gradients(batch, class_id, batch_size=self.config.batch_size)
        return grads.flatten(1).numpy()

    def _random_scores(self, grads: np.ndarray, acts: np.ndarray, sets: list[np.ndarray],
                       cavs: dict[int, CAV]) -> np.ndarray:
        """TCAV scores of random-vs-random CAVs (set 0 against each other set) for this class."""
        t = self.config.tcav
        for i in range(1, len(sets)):
            if i not in cavs:
                cavs[i] = train_cav(acts[sets[0]], acts[sets[i]], seed=self.config.seed + i, alpha=t.cav_alpha)
        return np.array([tcav_score(grads, cavs[i]) for i in range(1, len(sets))])

    def _tcav_rows(self, cls: str, table: _ClassPatches, clusters: list[Cluster], grads: np.ndarray,
                   random_acts: np.ndarray, random_sets: list[np.ndarray],
                   random_scores: np.ndarray) -> list[dict]:
        """One row of TCAV statistics and significance per cluster."""
        t = self.config.tcav
        rows = []
        for cl in progress(clusters, desc=f"{cls}: TCAV", enabled=self.show_progress):
            members = [(table.images[table.image_index[m]], table.patches[table.image_index[m]],
                        int(table.patch_index[m])) for m in cl.members]
            pos = self._full_activations(members)
            cavs = [train_cav(pos, random_acts[s], seed=self.config.seed + i, alpha=t.cav_alpha)
                    for i, s in enumerate(random_sets[1:], start=1)]
            scores = np.array([tcav_score(grads, c) for c in cavs])
            rows.append({"cluster": cl.label, "size": cl.size, "n_images": cl.n_images,
                         "tcav": float(scores.mean()), "tcav_std": float(scores.std()),
                         "sensitivity": float(np.mean([conceptual_sensitivity(grads, c) for c in cavs])),
                         "cav_accuracy": float(np.mean([c.accuracy for c in cavs])),
                         "p_raw": significance(scores, random_scores)})
        p_adj = adjust_pvalues(np.array([r["p_raw"] for r in rows]), t.correction)
        random_mean = float(random_scores.mean())
        for r, p in zip(rows, p_adj):
            # Significant *and* above random: a concept significantly *against* the class is no evidence for it.
            r.update(p_value=float(p), significant=bool(p < t.alpha and r["tcav"] > random_mean),
                     random_tcav=random_mean)
        return rows

    def _choose(self, cls: str, class_id: int, table: _ClassPatches, clusters: list[Cluster],
                rows: list[dict], all_class_ids: list[int]) -> tuple[list[Concept], list[dict]]:
        """Masking effect of every cluster, then the top N qualifying ones that are not duplicates.

        Each row gets ``importance`` (mean drop over the cluster's members of the class logit less
        the mean logit of the other classes in ``all_class_ids``) and ``selection``: "chosen" or the
        rule that left it out.
        """
        t = self.config.tcav
        items, owner = [], []
        for k, cl in enumerate(clusters):
            for m in cl.members:
                i, j = int(table.image_index[m]), int(table.patch_index[m])
                items.append((i, table.patches[i].masks[j]))
                owner.append(k)
        drops = masking_effect(self.adapter, table.images, items, class_id, self.config.batch_size,
                               others=all_class_ids)
        owner_arr = np.array(owner)
        p_raw = []
        for k, r in enumerate(rows):
            d = drops[owner_arr == k]
            r.update(importance=float(d.mean()) if len(d) else 0.0,
                     importance_std=float(d.std()) if len(d) else 0.0)
            p_raw.append(effect_significance(d))
        qualify(rows, adjust_pvalues(np.array(p_raw), t.correction), t.rank_by, t.alpha)
        order = sorted((i for i, r in enumerate(rows) if r["significant"]), key=rank_key(rows, t.rank_by))

        def mask_of(m: int) -> tuple[int, np.ndarray]:
            i = int(table.image_index[m])
            return i, table.patches[i].masks[int(table.patch_index[m])]

        similarity = duplicate_similarity({i: clusters[i] for i in order}, table.features, mask_of)
        chosen, why = select(order, t.n_concepts, t.max_overlap, similarity,
                             name=lambda i: f"cluster {clusters[i].label}")
        for i, r in enumerate(rows):
            r["selection"] = "chosen" if i in chosen else why.get(i) or rejection_reason(r, t.alpha)
        concepts = [self._concept(cls, rank, clusters[i], rows[i], table)
                    for rank, i in enumerate(chosen, start=1)]
        return concepts, rows

    def _concept(self, cls: str, rank: int, cl: Cluster, row: dict, table: _ClassPatches) -> Concept:
        members, thumbs = [], []
        for k, (m, d) in enumerate(zip(cl.members, cl.distances)):
            i, j = int(table.image_index[m]), int(table.patch_index[m])
            p = table.patches[i]
            y0, x0, y1, x1 = (int(v) for v in p.bboxes[j])
            members.append(Member(image=table.image_ids[i], resolution=int(p.resolutions[j]),
                                  bbox=(y0, x0, y1, x1), mask=p.masks[j, y0:y1, x0:x1].copy(),
                                  image_shape=p.shape, distance=float(d)))
            if k < N_THUMBNAILS:
                thumbs.append(_thumbnail(table.images[i], p.masks[j], (y0, x0, y1, x1)))
        return Concept(class_name=cls, rank=rank, cluster=cl.label, center=cl.center, tcav=row["tcav"],
                       importance=row["importance"],
                       tcav_std=row["tcav_std"], p_value=row["p_value"], significant=row["significant"],
                       cav_accuracy=row["cav_accuracy"], size=cl.size, members=members,
                       thumbnails=np.stack(thumbs) if thumbs else None, cluster_distances=cl.all_distances)

def _thumbnail(image: np.ndarray, mask: np.ndarray, bbox: tuple[int, int, int, int]) -> np.ndarray:
    """A small uint8 picture of one patch: its box, with the rest of the segment's box greyed."""
    y0, x0, y1, x1 = bbox
    crop = image[y0:y1, x0:x1].copy()
    crop[~mask[y0:y1, x0:x1]] = crop[~mask[y0:y1, x0:x1]] * 0.25 + 0.75 * 0.5
    t = resize(to_tensor(crop), (THUMB_SIZE, THUMB_SIZE))[0].permute(1, 2, 0).clamp(0, 1)
    return (t.numpy() * 255).round().astype(np.uint8)
