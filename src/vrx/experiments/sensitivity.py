"""Sensitivity of VRX's explanations to visual and structural edits (paper section 4.3, Figure 7).

On toyworld, where every pixel's part is known, each image (true class c) goes through:

1. render its scene, build its SCGs with the run's concept bank, explain with the run's GRN;
2. pick a concept k of class c's graph that is **detected** and whose matched patch lies **mostly on
   one vehicle part type** (the share of the patch's pixels on vehicle parts of that type, from the
   scene's instance map, is at least ``min_share``; background, loose distractor parts and the body
   do not count as a part to edit);
3. edit that part in the scene (every vehicle instance of its type, by default), re-render, rebuild
   the graphs with the same bank and builder settings, explain again;
4. compare, for output c and class graph c:

   * **structural** (edit ``move``): the part keeps its look and moves vertically to an implausible
     place: a part in the lower half of the body (wheels) goes onto the roof, its footprint's bottom
     ``gap`` pixels above the body's top; a part in the upper half (ladder, windows, siren) goes under
     the floor. Measure: the sum of the contributions of the directed edges j -> k and k -> j;
   * **visual** (edit ``swap``): the part is replaced, at the same centre and draw position, by a part
     of a type that another class of interest has and class c has not (a cross or a door instead of
     a wheel), sized as that type is in a vehicle; edit ``distort`` keeps the part's shape and inverts
     its colours. Measure: node k's contribution;
   * edit ``noise`` is the control for either measure: only the pixel noise is drawn anew, no part
     changes; its "fell" rate says how often the measure falls by chance.

The effect "held" when the measure after the edit is strictly below the one before. When concept k
is not detected after the edit, its edges have an embedding of zero, so their contribution is exactly
0, and the node is a dummy whose contribution is the GRN's learned constant for that slot: these are
the values VRX would report, and they are used as they are (no special case). Such images are
counted in ``n_vanished``, and ``rate_detected`` gives the rate over the others.

Choosing k (``pick``): ``"contribution"`` takes the eligible concept whose measure is largest before
the edit (the paper edits "a relatively good concept, with high positive contribution"), ``"rank"``
the best-ranked eligible concept. Picking the largest favours a fall a little (regression to the
mean), which the ``noise`` control measures. With ``positive_only`` (the default) a concept is
eligible only if its measure is positive before the edit: removing a relation that counted *against*
the class should raise the measure, so such an image says nothing about the effect; an image with no
such concept is skipped.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..concepts.bank import ConceptBank
from ..concepts.inputs import resized_batch
from ..data.images import load_image
from ..data.toyworld.dataset import load_scene
from ..data.toyworld.render import render_layers
from ..data.toyworld.scene import Scene
from ..errors import ArtifactError, ConfigError, InvalidImageError
from ..graphs.builder import SCGBuilder, stored_match_config
from ..graphs.scg import GRAPHS_DIR, GRAPHS_META, SCGBatch
from ..grn.model import CONFIG_FILE, GRN_DIR, load_grn
from ..interpret.contributions import Interpreter
from ..progress import progress
from ..store import content_hash, read_json
from .scene_edits import (
    EditInfo, SkipImage, distort_edit, move_edit, noise_edit, replacement_types, swap_edit,
)

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("structural", "visual")
EDITS: dict[str, tuple[str, ...]] = {"structural": ("move", "noise"), "visual": ("swap", "distort", "noise")}
DEFAULT_EDIT: dict[str, str] = {"structural": "move", "visual": "swap"}
PICKS: tuple[str, ...] = ("contribution", "rank")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SensitivityConfig:
    """How concepts are chosen and parts edited."""

    min_share: float = 0.5        # share of the matched patch's pixels on one vehicle part type
    pick: str = "contribution"    # "contribution": largest measure before the edit; "rank": best rank
    positive_only: bool = True    # only concepts whose measure is > tol before the edit (the paper's)
    all_instances: bool = True    # edit every vehicle part of that type (else only the most covered one)
    gap: int = 2                  # pixels between a moved part's footprint and the body
    min_inside: float = 0.9       # share of a moved part's footprint that must stay inside the image
    seed: int = 0                 # seeds the replacement type and colours (with the image's name)
    tol: float = 1e-6             # a fall must exceed this: smaller changes are float rounding

    def __post_init__(self) -> None:
        if not 0.0 < self.min_share <= 1.0:
            raise ConfigError(f"min_share must be in (0, 1], got {self.min_share}")
        if self.pick not in PICKS:
            raise ConfigError(f"pick must be one of {', '.join(PICKS)}, got {self.pick!r}")
        if not 0.0 < self.min_inside <= 1.0:
            raise ConfigError(f"min_inside must be in (0, 1], got {self.min_inside}")
        if not self.tol >= 0.0:
            raise ConfigError(f"tol must be >= 0, got {self.tol}")
        if int(self.gap) < 0:
            raise ConfigError(f"gap must be >= 0 pixels, got {self.gap}")


@dataclass
class SensitivityRecord:
    """One edited image: which concept and part, the measure before and after, and whether it fell."""

    image: str
    true_class: str
    kind: str                        # "structural" or "visual"
    edit: str                        # "move", "swap", "distort" or "noise"
    concept: int                     # 1-based rank of concept k in class c's graph
    part_type: str                   # the part type its patch lies on (and that was edited)
    share: float                     # share of the patch's pixels on that part type
    edited_parts: list[int]          # indices of the edited parts in the original scene
    detail: dict[str, Any]           # edit parameters (dy, replacement type, noise seed, ...)
    before: float                    # the measure (edge sum or node contribution) before the edit
    after: float
    held: bool                       # after < before - tol
    detected_after: bool             # concept k still detected after the edit
    share_after: float | None        # share of its new patch on the edited parts' new footprint
    changed_pixels: int              # pixels whose part label changed
    score_before: float              # the GRN's output for c
    score_after: float
    logit_before: float              # the classifier's logit for c
    logit_after: float


@dataclass
class SensitivityResult:
    """The records of one experiment (kind + edit) over a set of images, and the images skipped."""

    kind: str
    edit: str
    records: list[SensitivityRecord]
    skipped: dict[str, str]          # image -> why it was not used
    config: dict[str, Any]
    run: str
    seconds: float = 0.0

    @property
    def n(self) -> int:
        """Images edited and measured."""
        return len(self.records)

    @property
    def n_held(self) -> int:
        """Images where the measure fell."""
        return sum(r.held for r in self.records)

    @property
    def rate(self) -> float | None:
        """Share of images where the measure fell (None without records)."""
        return self.n_held / self.n if self.n else None

    @property
    def n_vanished(self) -> int:
        """Images where concept k was no longer detected after the edit."""
        return sum(not r.detected_after for r in self.records)

    @property
    def rate_detected(self) -> float | None:
        """The rate over images where concept k was still detected after the edit."""
        kept = [r for r in self.records if r.detected_after]
        return sum(r.held for r in kept) / len(kept) if kept else None

    def by_class(self) -> dict[str, dict[str, int]]:
        """Per true class: records and how many held."""
        out: dict[str, dict[str, int]] = {}
        for r in self.records:
            row = out.setdefault(r.true_class, {"n": 0, "n_held": 0, "n_vanished": 0})
            row["n"] += 1
            row["n_held"] += int(r.held)
            row["n_vanished"] += int(not r.detected_after)
        return out

    def by_part(self) -> dict[str, dict[str, int]]:
        """Per edited part type: records and how many held."""
        out: dict[str, dict[str, int]] = {}
        for r in self.records:
            row = out.setdefault(r.part_type, {"n": 0, "n_held": 0})
            row["n"] += 1
            row["n_held"] += int(r.held)
        return out

    def summary(self) -> str:
        """One line: the rate, counts and the rate without vanished concepts."""
        def fmt(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.3f}"
        return (f"{self.kind} ({self.edit}): fell in {self.n_held}/{self.n} = {fmt(self.rate)}; "
                f"concept lost after the edit in {self.n_vanished}, rate without those "
                f"{fmt(self.rate_detected)}; skipped {len(self.skipped)} image(s)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: counts, rates, config and every record."""
        return {"format_version": FORMAT_VERSION, "kind": self.kind, "edit": self.edit, "run": self.run,
                "n": self.n, "n_held": self.n_held, "rate": self.rate, "n_vanished": self.n_vanished,
                "rate_detected": self.rate_detected, "n_skipped": len(self.skipped),
                "by_class": self.by_class(), "by_part": self.by_part(),
                "seconds": self.seconds, "config": dict(self.config),
                "records": [asdict(r) for r in self.records], "skipped": dict(self.skipped)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SensitivityResult:
        """Inverse of :meth:`to_dict`; ArtifactError on a malformed dict."""
        try:
            if d.get("format_version") != FORMAT_VERSION:
                raise ArtifactError(f"sensitivity result version {d.get('format_version')!r}, "
                                    f"this vrx reads {FORMAT_VERSION}")
            return cls(kind=d["kind"], edit=d["edit"], run=d["run"], seconds=float(d["seconds"]),
                       config=dict(d["config"]), skipped=dict(d["skipped"]),
                       records=[SensitivityRecord(**r) for r in d["records"]])
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"not a sensitivity result: {type(exc).__name__}: {exc}") from None


# ---------------------------------------------------------------------------------- the run
class _MemoFeaturizer:
    """Remembers the last few images' patches so the patch masks of a match can be read back."""

    def __init__(self, inner, size: int = 4):
        self.inner = inner
        self.size = size
        self.memo: dict[str, Any] = {}

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __call__(self, image: np.ndarray):
        key = content_hash(np.ascontiguousarray(image, dtype=np.float32))
        if key not in self.memo:
            if len(self.memo) >= self.size:
                self.memo.pop(next(iter(self.memo)))
            self.memo[key] = self.inner(image)
        return self.memo[key]


@dataclass
class _State:
    """One rendered scene seen through the run: graphs, contributions for class c, patch masks."""

    graphs: SCGBatch
    node: np.ndarray                 # [N] contributions of class c's nodes to output c
    edge: np.ndarray                 # [E] contributions of class c's edges to output c
    masks: dict[int, np.ndarray]     # node -> matched patch mask, for detected nodes of graph c
    score: float
    logit: float
    instances: np.ndarray            # scene instance map (part index, -1 background)
    parts: np.ndarray                # scene part-type map (0 background)
    rgb: np.ndarray                  # the rendered image, uint8


def _to_float(rgb: np.ndarray) -> np.ndarray:
    # Exactly what load_image gives for the PNG, so the patch cache key and features agree.
    return np.ascontiguousarray(rgb.astype(np.float64) / 255.0, dtype=np.float32)


def _image_rng(seed: int, scene: Scene, image: str) -> np.random.Generator:
    # Keyed on class and file name, so an image gets the same edit wherever its folder is.
    name = f"{scene.cls}/{Path(image).name}"
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]))


class SensitivityExperiment:
    """Loads a run once (classifier, bank, GRN) and runs sensitivity experiments on toyworld images."""

    def __init__(self, run: str | os.PathLike, config: SensitivityConfig | None = None, *,
                 show_progress: bool | None = None):
        from ..cli._common import adapter_from_run

        self.run_dir = Path(run)
        self.config = config or SensitivityConfig()
        self.show_progress = show_progress
        grn_dir = self.run_dir / GRN_DIR
        if not (grn_dir / CONFIG_FILE).exists():
            raise ArtifactError(f"{grn_dir}: no trained GRN in this run; run `vrx train --run {run}` first")
        bank_dir = self.run_dir / "concepts"
        if not (bank_dir / "bank.json").exists():
            raise ArtifactError(f"{bank_dir / 'bank.json'}: missing; run `vrx discover --out {run}` first")
        self.bank = ConceptBank.load(bank_dir)
        self.grn = load_grn(grn_dir)
        if list(self.grn.class_names or []) != self.bank.class_names:
            raise ArtifactError(f"{grn_dir}: the GRN was trained on classes {self.grn.class_names}, the "
                                f"concept bank in {bank_dir} has {self.bank.class_names}")
        self.class_names = self.bank.class_names
        self.adapter = adapter_from_run(self.run_dir)
        self.interpreter = Interpreter(self.grn)
        self.edges = list(self.grn.layout.edges) if self.grn.layout.num_edges else []
        # No disk cache: edited images would fill the run's patch cache; the memo serves the reads.
        self.builder = SCGBuilder(self.adapter, self.bank, stored_match_config(self.run_dir), cache_dir=None,
                                  show_progress=False)
        self.builder.featurizer = _MemoFeaturizer(self.builder.featurizer)
        self._before: dict[str, tuple[Scene, _State] | str] = {}

    # -------------------------------------------------------------- measuring one scene
    def _state(self, scene: Scene, cls: str) -> _State:
        layers = render_layers(scene)
        image = _to_float(layers.rgb)
        graphs = self.builder.transform([image]).graphs
        matched = self.builder.matches_.patch[0]
        k = self.class_names.index(cls)
        con = self.interpreter.contributions(graphs)
        patches = self.builder.featurizer(image)
        masks = {int(n): patches.masks[matched[k, n]] for n in np.flatnonzero(matched[k] >= 0)}
        with torch.no_grad():
            logits = self.adapter.logits(resized_batch([image], self.adapter.input_size))
        return _State(graphs=graphs, node=con.node[0, k, k].double().numpy(),
                      edge=con.edge[0, k, k].double().numpy(), masks=masks,
                      score=float(con.scores[0, k]), logit=float(logits[0, self.adapter.class_id(cls)]),
                      instances=layers.instances, parts=layers.parts, rgb=layers.rgb)

    def _measure(self, state: _State, kind: str, n: int) -> float:
        if kind == "visual":
            return float(state.node[n])
        return float(sum(state.edge[e] for e, (j, i) in enumerate(self.edges) if n in (j, i)))

    def _vehicle_types(self, scene: Scene, instances: np.ndarray) -> np.ndarray:
        """Per pixel, the type name index+1 of the vehicle part drawn there; 0 for anything else."""
        from ..data.toyworld.classes import PART_IDS

        lut = np.zeros(len(scene.parts) + 1, np.int64)   # slot 0 is background (instance -1)
        for i, p in enumerate(scene.parts):
            if not p.distractor and p.type != "body":
                lut[i + 1] = PART_IDS[p.type]
        return lut[instances.astype(np.int64) + 1]

    def candidates(self, scene: Scene, state: _State) -> list[tuple[int, str, float]]:
        """Eligible nodes of class c's graph: (node, part type, share), detected and mostly on one part type."""
        from ..data.toyworld.classes import PART_TYPES

        labels = self._vehicle_types(scene, state.instances)
        n_real = len(self.bank[scene.cls])   # slots beyond are padding, never concepts
        out = []
        for n, mask in sorted(state.masks.items()):
            if n >= n_real or not mask.any():
                continue
            counts = np.bincount(labels[mask], minlength=len(PART_TYPES) + 1)
            top = int(counts[1:].argmax()) + 1
            share = counts[top] / mask.sum()
            if share >= self.config.min_share:
                out.append((n, PART_TYPES[top - 1], float(share)))
        return out

    def _before_of(self, path: str) -> tuple[Scene, _State]:
        if path in self._before:
            got = self._before[path]
            if isinstance(got, str):
                raise SkipImage(got)
            return got
        try:
            p = Path(path)
            json_path = p.with_suffix(".json")
            if not json_path.exists():
                raise SkipImage(f"no scene JSON beside the image ({json_path.name}): not a toyworld image")
            scene = load_scene(json_path)
            if scene.cls not in self.class_names:
                raise SkipImage(f"class {scene.cls!r} is not a class of interest {self.class_names}")
            state = self._state(scene, scene.cls)
            if p.exists() and not np.array_equal(load_image(p), _to_float(state.rgb)):
                raise SkipImage("the scene JSON does not reproduce the image (edited or re-encoded?)")
        except SkipImage as exc:
            self._before[path] = str(exc)
            raise
        except (ArtifactError, InvalidImageError) as exc:
            self._before[path] = str(exc)
            raise SkipImage(str(exc)) from None
        self._before[path] = (scene, state)
        return scene, state

    # -------------------------------------------------------------- the experiment
    def edit(self, scene: Scene, kind: str, edit: str, part_type: str, part_indices: Sequence[int],
             rng: np.random.Generator) -> tuple[Scene, EditInfo]:
        """Apply ``edit`` to the parts ``part_indices`` (of ``part_type``) of ``scene``."""
        if edit == "noise":
            return noise_edit(scene, rng)
        if edit == "move":
            return move_edit(scene, part_indices, gap=int(self.config.gap), min_inside=self.config.min_inside)
        if edit == "swap":
            types = replacement_types(scene.cls, self.class_names)
            return swap_edit(scene, part_indices, types[int(rng.integers(len(types)))], rng)
        if edit == "distort":
            return distort_edit(scene, part_indices)
        raise ConfigError(f"unknown edit {edit!r} for {kind}; known: {', '.join(EDITS[kind])}")

    def _parts_to_edit(self, scene: Scene, state: _State, n: int, part_type: str) -> list[int]:
        same = [i for i in scene.find(part_type)]
        if self.config.all_instances:
            return same
        mask = state.masks[n]
        return [max(same, key=lambda i: int((state.instances[mask] == i).sum()))]

    def measure_image(self, image: str | os.PathLike, kind: str, edit: str | None = None) -> SensitivityRecord:
        """Edit one toyworld image and measure; raises SkipImage (a VRXError) when it cannot be used."""
        kind, edit = self._check(kind, edit)
        path = str(image)
        scene, before = self._before_of(path)
        cls = scene.cls
        cands = self.candidates(scene, before)
        if not cands:
            raise SkipImage(f"no detected {cls} concept lies mostly (>= {self.config.min_share:.0%}) on one "
                        "vehicle part other than the body")
        if self.config.positive_only:
            # An edit can only take away credit that is there: a concept whose measure counts
            # against the class would "fail" exactly when the edit removes that evidence.
            cands = [c for c in cands if self._measure(before, kind, c[0]) > self.config.tol]
            if not cands:
                raise SkipImage(f"no eligible {cls} concept has a positive {kind} measure before the edit")
        if self.config.pick == "rank":
            n, ptype, share = cands[0]
        else:
            n, ptype, share = max(cands, key=lambda c: self._measure(before, kind, c[0]))
        indices = self._parts_to_edit(scene, before, n, ptype)
        rng = _image_rng(self.config.seed, scene, path)
        new_scene, info = self.edit(scene, kind, edit, ptype, indices, rng)
        after = self._state(new_scene, cls)
        k = self.class_names.index(cls)
        detected = bool(after.graphs.present[0, k, n] > 0)
        share_after = None
        if detected and n in after.masks:
            region = np.zeros_like(after.instances, bool)
            for j in info.new_indices:
                region |= after.instances == j
            m = after.masks[n]
            share_after = float((m & region).sum() / max(m.sum(), 1))
        b, a = self._measure(before, kind, n), self._measure(after, kind, n)
        return SensitivityRecord(
            image=path, true_class=cls, kind=kind, edit=edit, concept=n + 1, part_type=ptype, share=share,
            edited_parts=list(info.old_indices), detail=dict(info.detail), before=b, after=a, held=a < b - self.config.tol,
            detected_after=detected, share_after=share_after,
            changed_pixels=int((before.parts != after.parts).sum()),
            score_before=before.score, score_after=after.score,
            logit_before=before.logit, logit_after=after.logit)

    def _check(self, kind: str, edit: str | None) -> tuple[str, str]:
        if kind not in KINDS:
            raise ConfigError(f"unknown sensitivity kind {kind!r}; known: {', '.join(KINDS)}")
        edit = DEFAULT_EDIT[kind] if edit is None else edit
        if edit not in EDITS[kind]:
            raise ConfigError(f"unknown edit {edit!r} for {kind}; known: {', '.join(EDITS[kind])}")
        if kind == "structural" and not self.edges:
            raise ConfigError(f"{self.run_dir / GRN_DIR}: this GRN has no edge embeddings "
                              "(use_edge_features=False), so relations have no contribution to measure")
        return kind, edit

    def run(self, images: Sequence[str | os.PathLike], kind: str, edit: str | None = None, *,
            limit: int | None = None, num_threads: int | None = None) -> SensitivityResult:
        """Edit and measure the images in order (until ``limit`` records); unusable ones go to ``skipped``."""
        from ..grn.distill import torch_threads

        kind, edit = self._check(kind, edit)
        if not images:
            raise InvalidImageError("no images given to the sensitivity experiment")
        start = time.perf_counter()
        records, skipped = [], {}
        with torch_threads(num_threads):
            for image in progress(list(images), desc=f"{kind} sensitivity", enabled=self.show_progress):
                if limit is not None and len(records) >= limit:
                    break
                try:
                    records.append(self.measure_image(image, kind, edit))
                except SkipImage as exc:
                    log.debug("%s: skipped (%s)", image, exc)
                    skipped[str(image)] = str(exc)
        return SensitivityResult(kind=kind, edit=edit, records=records, skipped=skipped,
                                 config=asdict(self.config), run=str(self.run_dir),
                                 seconds=time.perf_counter() - start)


def structural_sensitivity(run: str | os.PathLike | SensitivityExperiment, images: Sequence[str | os.PathLike],
                           *, edit: str = "move", config: SensitivityConfig | None = None,
                           limit: int | None = None, num_threads: int | None = None) -> SensitivityResult:
    """Move a detected concept's part to an implausible place; how often its relations' contribution falls."""
    exp = run if isinstance(run, SensitivityExperiment) else SensitivityExperiment(run, config)
    return exp.run(images, "structural", edit, limit=limit, num_threads=num_threads)


def visual_sensitivity(run: str | os.PathLike | SensitivityExperiment, images: Sequence[str | os.PathLike],
                       *, edit: str = "swap", config: SensitivityConfig | None = None,
                       limit: int | None = None, num_threads: int | None = None) -> SensitivityResult:
    """Replace a detected concept's part by a worse one; how often that concept's contribution falls."""
    exp = run if isinstance(run, SensitivityExperiment) else SensitivityExperiment(run, config)
    return exp.run(images, "visual", edit, limit=limit, num_threads=num_threads)


def test_split_images(run: str | os.PathLike) -> list[Path]:
    """The images of the GRN's test split (``RUN/grn/config.json`` indices into ``RUN/graphs``)."""
    run = Path(run)
    cfg = read_json(run / GRN_DIR / CONFIG_FILE)
    meta = read_json(run / GRAPHS_DIR / GRAPHS_META)
    split = (cfg or {}).get("split")
    if not isinstance(split, dict) or "test" not in split:
        raise ArtifactError(f"{run / GRN_DIR / CONFIG_FILE}: no train/val/test split recorded")
    ids = meta.get("image_paths") or meta.get("image_ids") or []
    try:
        return [Path(ids[int(i)]) for i in split["test"]]
    except (IndexError, ValueError, TypeError):
        raise ArtifactError(f"{run / GRN_DIR / CONFIG_FILE}: test indices do not fit the "
                            f"{len(ids)} images of {run / GRAPHS_DIR / GRAPHS_META}") from None


def interleaved_images(folder: str | os.PathLike, only: Sequence[str | os.PathLike] | None = None) -> list[Path]:
    """A toyworld folder's images with classes interleaved (1st of each class, 2nd of each, ...).

    With ``only``, just the images among those paths (e.g. :func:`test_split_images`). Interleaving
    keeps the classes balanced when an experiment stops after ``limit`` records.
    """
    from ..data.toyworld.dataset import list_images

    classes, items = list_images(folder)
    keep = None if only is None else {Path(p).resolve() for p in only}
    per_class: list[list[Path]] = [[] for _ in classes]
    for path, k in items:
        if keep is None or path.resolve() in keep:
            per_class[k].append(path)
    out = []
    for row in range(max((len(v) for v in per_class), default=0)):
        out += [v[row] for v in per_class if row < len(v)]
    return out
