"""SCGBuilder: turn images into structural concept graphs, one per class of interest.

For every image and every class c of the bank, the image is segmented exactly as in discovery
(same settings, same patch cache), its patches are optionally filtered by the Grad-CAM of *c*
(``use_gradcam``; never of the image's label: the original filtered only the true class's graph,
which leaks the label), and c's concepts are matched to patches by optimal assignment on the
distance to each concept's centre. A concept counts as detected when that distance is under its calibrated radius (a
quantile of the distances of its own cluster's patches), otherwise it becomes a dummy node.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from ..concepts.bank import ConceptBank
from ..concepts.features import ImagePatches, PatchFeaturizer, PatchMemo
from ..concepts.gradcam import class_foregrounds
from ..concepts.inputs import ImageInput, iter_images, resized_batch
from ..config import Config, check
from ..errors import ArtifactError
from ..models.adapter import ClassifierAdapter
from ..store import load_tensors, save_tensors
from .dataset import GraphDataset
from .scg import DUMMY_EPS, SCGBatch
from .teacher import Teacher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MatchConfig(Config):
    """How concepts are matched to an image's patches."""

    # Filter candidate patches by class c's Grad-CAM (None: as in discovery). Off by default: on the
    # toyworld demo (seeds 0, 1) the filter left too few candidates in school-bus images (a window
    # concept unmatched in 92 of 150), and without it held-out fidelity rose 0.962 -> 0.968 and
    # 0.956 -> 0.987, masked-concept fidelity 0.914 -> 0.937 and 0.940 -> 0.953 (docs/grn.md).
    use_gradcam: bool | None = False
    min_inside: float = 0.5           # looser than discovery's 1.0: a test image's part may straddle the mask
    radius_quantile: float = 0.9      # detection threshold per concept, from its cluster's distances
    teacher: bool = True              # also compute the classifier's (masked) logits
    # A node's feature: "context", the network's bottleneck map of the whole image pooled over the
    # matched patch (what the classifier itself sees there), or "patch", the matched patch's own
    # features (the cropped patch, as matched). Matching always uses the patch's own features.
    # docs/grn.md shows why "context" is the default: the classifier decides on parts in context.
    node_features: str = "context"
    # The patch features matching compares with concept centres: "bank", the bank's own mode (crop or
    # map, as discovered), or "map", one forward of the image pooled over each segment, compared with
    # the concepts' map-space centres (a crop-mode bank needs them: `vrx map-centres`; docs/realnet.md).
    features: str = "bank"

    def validate(self) -> None:
        check((self.node_features in ("context", "patch"),
               f"node_features must be 'context' or 'patch', got {self.node_features!r}"),
              (self.features in ("bank", "map"), f"features must be 'bank' or 'map', got {self.features!r}"),
              (self.use_gradcam in (None, True, False), f"use_gradcam must be None or a bool, got {self.use_gradcam!r}"),
              (0.0 <= self.min_inside <= 1.0, f"min_inside must lie in [0, 1], got {self.min_inside}"),
              (0.0 <= self.radius_quantile <= 1.0, f"radius_quantile must lie in [0, 1], got {self.radius_quantile}"))


def match_config_from_meta(meta: dict[str, Any]) -> MatchConfig:
    """The matching settings graphs were built with, from their ``graphs.json`` metadata, teacher off:
    to build more graphs alike. Empty metadata (no graphs yet) gives the defaults; unknown keys are
    ignored (settings of another vrx version).
    """
    match = dict((meta.get("config") or {}).get("match") or {})
    if match:
        match.setdefault("node_features", "patch")  # what graphs built before the setting existed carry
    known = {f.name for f in dataclasses.fields(MatchConfig)}
    return MatchConfig.from_dict({k: v for k, v in match.items() if k in known} | {"teacher": False})


#: A node is removed with a masked patch when at least this share of its own patch lies inside it.
COVER_FRACTION = 0.5


def covered_nodes(masks: np.ndarray, chosen: np.ndarray) -> torch.Tensor:
    """[K, N, K, N] bool: masking the patch of detected node (k, n) covers node (k2, n2)'s patch.

    ``masks`` [M, H, W] are the image's patch masks, ``chosen`` [K, N] each node's patch (-1: none).
    """
    k_, n_ = chosen.shape
    out = torch.zeros(k_, n_, k_, n_, dtype=torch.bool)
    where = list(zip(*np.nonzero(chosen >= 0)))
    if not where:
        return out
    flat = masks[[chosen[k, n] for k, n in where]].reshape(len(where), -1).astype(np.float32)
    inter = flat @ flat.T                                   # [M, M] shared pixels
    share = inter / np.maximum(flat.sum(1), 1)[None, :]     # of the covered node's own patch
    for a, (k, n) in enumerate(where):
        for b, (k2, n2) in enumerate(where):
            out[k, n, k2, n2] = bool(a == b or share[a, b] >= COVER_FRACTION)
    return out


@dataclass
class Matches:
    """Where each node of each class graph was found: [B, K, N] patches, boxes and distances."""

    bbox: np.ndarray      # [B, K, N, 4] int (y0, x0, y1, x1); -1 where not detected
    distance: np.ndarray  # [B, K, N] float; nan where no patch was assigned
    radius: np.ndarray    # [K, N] detection threshold; nan for padded concepts
    patch: np.ndarray     # [B, K, N] int index into the image's ImagePatches; -1 where not detected

    def save(self, path: Path) -> None:
        """Write the matches as safetensors."""
        save_tensors(path, {"bbox": self.bbox.astype(np.int32), "distance": self.distance.astype(np.float32),
                            "radius": self.radius.astype(np.float32), "patch": self.patch.astype(np.int32)})

    @classmethod
    def load(cls, path: Path) -> Matches:
        """Read matches written by :meth:`save`."""
        t = {k: v.numpy() for k, v in load_tensors(path).items()}
        try:
            return cls(bbox=t["bbox"], distance=t["distance"], radius=t["radius"], patch=t["patch"])
        except KeyError as exc:
            raise ArtifactError(f"{path}: tensor {exc} missing") from None


class SCGBuilder:
    """Builds the K class graphs of each image from a ConceptBank (scikit-learn style transform)."""

    def __init__(self, adapter: ClassifierAdapter, bank: ConceptBank, config: MatchConfig | None = None, *,
                 cache_dir: str | Path | None = None, memo: PatchMemo | None = None,
                 show_progress: bool | None = None):
        if bank.model_id != adapter.model_id or bank.layer != adapter.bottleneck:
            raise ArtifactError(f"the concept bank was made with model {bank.model_id} at layer {bank.layer!r}, "
                                f"not {adapter.model_id} at {adapter.bottleneck!r}")
        self.adapter = adapter
        self.bank = bank
        self.config = config or MatchConfig()
        disc = bank.config  # the typed ConceptConfig discovery ran with
        seg = disc.segmentation
        # One-forward matching of a crop-mode bank: map-mode patches against the map-space centres.
        self.map_centres = self.config.features == "map" and seg.features != "map"
        if self.map_centres:
            if not bank.has_map_centres:
                raise ArtifactError("matching with features='map' needs the bank's map-space centres, and "
                                    "this crop-mode bank has none; add them with `vrx map-centres --run RUN`")
            seg = dataclasses.replace(seg, features="map")
        self.use_gradcam = disc.gradcam.enabled if self.config.use_gradcam is None else self.config.use_gradcam
        self.keep_top = disc.gradcam.keep_top
        self.featurizer = PatchFeaturizer(adapter, seg, cache_dir, batch_size=disc.batch_size,
                                          memo=memo)
        self.class_names = bank.class_names
        self.class_ids = [adapter.class_id(c) for c in self.class_names]
        self.n = bank.n_concepts
        q = self.config.radius_quantile
        self.centers = [bank.map_centers(c) if self.map_centres else bank.centers(c) for c in self.class_names]
        self.radius = np.full((len(self.class_names), self.n), np.nan, np.float32)
        for k, c in enumerate(self.class_names):
            for n, concept in enumerate(bank[c]):
                self.radius[k, n] = concept.map_radius(q) if self.map_centres else concept.radius(q)
        self.show_progress = show_progress

    def transform(self, images: Sequence[ImageInput], labels: Sequence[int] | None = None, *,
                  return_matches: bool = False) -> GraphDataset | tuple[GraphDataset, Matches]:
        """Graphs (and teacher logits) for ``images``; ``labels`` are stored for reporting only.

        With ``return_matches``, also where each node was found: ``(dataset, matches)``.
        """
        k_, n_ = len(self.class_names), self.n
        d_ = self.bank.feature_dim
        xs, logits, masked, covers, masked_xs, ids = [], [], [], [], [], []
        bboxes, dists, chosens = [], [], []
        for image_id, image in iter_images(images, self.adapter.input_size, desc="graphs",
                                           show_progress=self.show_progress):
            patches = self.featurizer(image)
            g = SCGBatch.empty(1, self.class_names, n_, d_)
            bbox = np.full((k_, n_, 4), -1, np.int32)
            dist = np.full((k_, n_), np.nan, np.float32)
            chosen = np.full((k_, n_), -1)
            cents = patches.centroids() if len(patches) else np.zeros((0, 2), np.float32)
            node_x = patches.context if self.config.node_features == "context" else patches.features
            # Every class's Grad-CAM from one forward of the image (only when the filter is on).
            fgs = (class_foregrounds(self.adapter, image, self.class_ids, self.keep_top)
                   if self.use_gradcam and len(patches) else None)
            for k in range(k_):
                for n, j, d in self._match(patches, k, None if fgs is None else fgs[k]):
                    dist[k, n] = d
                    if d <= self.radius[k, n]:
                        chosen[k, n] = j
                        bbox[k, n] = patches.bboxes[j]
                        g.x[0, k, n] = torch.from_numpy(node_x[j])
                        g.present[0, k, n] = 1.0
                        g.pos[0, k, n] = torch.from_numpy(cents[j])
            xs.append(g)
            ids.append(image_id)
            bboxes.append(bbox)
            dists.append(dist)
            chosens.append(chosen)
            if self.config.teacher:
                lg, ml, mx = self._teacher(image, patches, chosen)
                logits.append(lg)
                masked.append(ml)
                masked_xs.append(mx)
                covers.append(covered_nodes(patches.masks, chosen))
        graphs = SCGBatch.concat(xs) if xs else SCGBatch.empty(0, self.class_names, n_, d_)
        if self.config.teacher and logits:
            teacher = Teacher(torch.stack(logits), torch.stack(masked), torch.stack(covers),
                              None if masked_xs[0] is None else torch.stack(masked_xs))
        else:
            teacher = Teacher(torch.zeros(len(ids), k_), torch.full((len(ids), k_, n_, k_), float("nan")))
        matches = Matches(np.stack(bboxes) if bboxes else np.zeros((0, k_, n_, 4), np.int32),
                          np.stack(dists) if dists else np.zeros((0, k_, n_), np.float32), self.radius,
                          np.stack(chosens) if chosens else np.zeros((0, k_, n_), np.int64))
        paths = list(ids) if all(not i.startswith("array:") for i in ids) else None
        ds = GraphDataset(graphs, teacher, ids, list(labels) if labels is not None else [-1] * len(ids),
                          paths, {"match": self.config.to_dict(), "use_gradcam": self.use_gradcam,
                                  "model_id": self.bank.model_id, "layer": self.bank.layer})
        return (ds, matches) if return_matches else ds

    def _match(self, patches: ImagePatches, k: int, fg: np.ndarray | None) -> list[tuple[int, int, float]]:
        """Optimal one-to-one assignment of class k's concepts to candidate patches: (node, patch, distance).

        ``fg``: class k's Grad-CAM foreground when the filter is on (None: every patch is a candidate).
        """
        centers = self.centers[k]
        if len(patches) == 0 or len(centers) == 0:
            return []
        candidates = np.arange(len(patches))
        if fg is not None:
            candidates = np.flatnonzero(patches.inside_fraction(fg) >= self.config.min_inside - 1e-9)
            if len(candidates) == 0:
                return []
        cost = np.linalg.norm(centers[:, None, :] - patches.features[candidates][None], axis=2)
        rows, cols = linear_sum_assignment(cost)
        return [(int(r), int(candidates[c]), float(cost[r, c])) for r, c in zip(rows, cols)]

    def _teacher(self, image: np.ndarray, patches: ImagePatches, chosen: np.ndarray
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Logits over the classes of interest for the image and for each detected concept masked out,
        and (context node features) each masked image's own node features [K, N, K, N, D].

        A masked image's graph is its own: the same matches, but every node's context re-pooled
        from the masked image's bottleneck map, since the patch's neighbours see it gone too.
        """
        fill = self.adapter.fill_value.numpy().astype(np.float32)
        variants, where = [image], []
        for k, n in zip(*np.nonzero(chosen >= 0)):
            masked = image.copy()
            masked[patches.masks[chosen[k, n]]] = fill
            variants.append(masked)
            where.append((k, n))
        batch = resized_batch(variants, self.adapter.input_size)
        k_, n_ = chosen.shape
        context = self.config.node_features == "context"
        if context:
            logits, maps = self.adapter.logits_and_activations(batch)
        else:
            logits, maps = self.adapter.logits(batch), None
        out = logits[:, self.class_ids].float()
        masked_logits = torch.full((k_, n_, k_), float("nan"))
        for row, (k, n) in enumerate(where, start=1):
            masked_logits[k, n] = out[row]
        if not context:
            return out[0], masked_logits, None
        masked_x = torch.full((k_, n_, k_, n_, self.bank.feature_dim), DUMMY_EPS)
        if where:
            masks = torch.from_numpy(patches.masks[[chosen[k, n] for k, n in where]])[:, None].float()
            weights = F.adaptive_avg_pool2d(masks, maps.shape[-2:])                 # [M, 1, h, w]
            pooled = torch.einsum("vchw,mxhw->vmc", maps[1:], weights) \
                / weights.sum((1, 2, 3)).clamp_min(1e-12)[None, :, None]              # [V, M, C]
            for row, (k, n) in enumerate(where):
                for m, (k2, n2) in enumerate(where):
                    masked_x[k, n, k2, n2] = pooled[row, m]
        return out[0], masked_logits, masked_x
