"""Patch features: segment an image, featurise every patch at the bottleneck, cache the result.

The cache holds one safetensors file per image, keyed by the image's pixels, the model, the
layer and the segmentation settings, and written atomically as soon as the image is done: a
re-run or a resumed run recomputes nothing, and a crash loses at most the image in flight.
Segments are cached *before* the Grad-CAM filter, so one featurisation serves every class.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ArtifactError
from ..models.adapter import ClassifierAdapter
from ..store import content_hash, load_tensors, save_tensors
from .patches import extract_patches
from .segmentation import Segment, SegmentationConfig, segment_image

log = logging.getLogger(__name__)

_CACHE_VERSION = "patches-v2"  # v2: context features beside the patch features


@dataclass
class ImagePatches:
    """All candidate patches of one image: their segments and two kinds of bottleneck features.

    ``features`` are what discovery clusters and the graph builder matches on (by default ACE's:
    the patch cropped, resized to the model input, activations averaged over space).
    ``context`` is what the network sees at the patch inside the whole image: the image's
    bottleneck map averaged over the segment's cells. The same as ``features`` in "map" mode.
    """

    shape: tuple[int, int]
    features: np.ndarray      # [M, C] float32, activations averaged over space
    context: np.ndarray       # [M, C] float32, the whole image's map pooled over each segment
    masks: np.ndarray         # [M, H, W] bool
    bboxes: np.ndarray        # [M, 4] int (y0, x0, y1, x1), end-exclusive
    resolutions: np.ndarray   # [M] int, index into SegmentationConfig.n_segments

    def __len__(self) -> int:
        return len(self.features)

    def segments(self, index: np.ndarray | None = None) -> list[Segment]:
        """The Segment objects, optionally only those at ``index``."""
        rows = range(len(self)) if index is None else np.asarray(index).tolist()
        return [Segment(mask=self.masks[i], bbox=tuple(int(v) for v in self.bboxes[i]),
                        resolution=int(self.resolutions[i])) for i in rows]

    def inside_fraction(self, keep_mask: np.ndarray) -> np.ndarray:
        """For each patch, the fraction of its pixels that lie inside ``keep_mask``."""
        flat = self.masks.reshape(len(self), -1)
        inside = flat @ keep_mask.reshape(-1).astype(np.float32)
        return inside / np.maximum(flat.sum(1), 1)

    def centroids(self) -> np.ndarray:
        """[M, 2] mask centroids as (x, y), normalised to [0, 1] by width and height."""
        h, w = self.shape
        ys, xs = np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32)
        area = np.maximum(self.masks.sum((1, 2)), 1)
        cy = (self.masks.sum(2) @ ys) / area
        cx = (self.masks.sum(1) @ xs) / area
        return np.stack([(cx + 0.5) / w, (cy + 0.5) / h], axis=1).astype(np.float32)


class PatchMemo:
    """The patches of the last ``size`` images, in memory, for a featurizer that sees an image again."""

    def __init__(self, size: int = 4):
        self.size = max(int(size), 1)
        self._items: dict[str, ImagePatches] = {}

    def get(self, key: str) -> ImagePatches | None:
        return self._items.get(key)

    def put(self, key: str, patches: ImagePatches) -> None:
        if key not in self._items and len(self._items) >= self.size:
            self._items.pop(next(iter(self._items)))   # the oldest
        self._items[key] = patches


class PatchFeaturizer:
    """Segments images and featurises their patches at the adapter's bottleneck, with a disk cache.

    ``memo`` (optional) keeps recent images' patches in memory, in front of the disk cache.
    ``batch_size``: patches per forward; None lets the adapter size batches (its explicit batch size,
    else its memory budget; see :mod:`vrx.models.batching`).
    """

    def __init__(self, adapter: ClassifierAdapter, segmentation: SegmentationConfig,
                 cache_dir: str | Path | None = None, batch_size: int | None = None, memo: PatchMemo | None = None):
        self.adapter = adapter
        self.segmentation = segmentation
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.memo = memo
        self.batch_size = batch_size
        self.hits = 0
        self.misses = 0
        self._settings = json.dumps({"v": _CACHE_VERSION, "model": adapter.model_id,
                                     "layer": adapter.bottleneck, "size": list(adapter.input_size),
                                     "seg": dataclasses.asdict(segmentation)}, sort_keys=True)

    def patches(self, image: np.ndarray, segments: list[Segment]) -> torch.Tensor:
        """Model-input-sized patches for ``segments``, background filled with the model's zero."""
        fill = self.adapter.fill_value.numpy()
        return extract_patches(image, segments, fill, tuple(self.adapter.input_size))

    def features(self, patches: torch.Tensor) -> np.ndarray:
        """[M, C] float32 features of model-input-sized patches: bottleneck activations averaged over space."""
        acts = self.adapter.activations(patches, batch_size=self.batch_size)
        return acts.flatten(2).mean(2).numpy().astype(np.float32)

    def key(self, image: np.ndarray) -> str:
        """The cache key of ``image``: its pixels, the model, the layer and the segmentation settings."""
        return content_hash(np.ascontiguousarray(image, dtype=np.float32), self._settings)

    def cached(self, key: str) -> bool:
        """Whether the disk cache holds an entry for ``key``."""
        return self.cache_dir is not None and (self.cache_dir / f"{key}.safetensors").exists()

    def compute(self, image: np.ndarray) -> ImagePatches:
        """Segment and featurise ``image`` without any cache (what a remote worker runs)."""
        return self._featurise(image, segment_image(image, self.segmentation))

    def store(self, key: str, patches: ImagePatches) -> None:
        """Write ``patches`` into the disk cache under ``key`` (computed elsewhere, e.g. by a worker)."""
        if self.cache_dir is None:
            raise ArtifactError("this featurizer has no cache folder to store patches in")
        write_entry(self.cache_dir, key, patches)

    def __call__(self, image: np.ndarray) -> ImagePatches:
        """Segment ``image`` (HxWx3 float in [0,1]) and featurise its patches, using the caches."""
        key = self.key(image)
        if self.memo is None:
            return self._cached(image, key)
        found = self.memo.get(key)
        if found is None:
            found = self._cached(image, key)
            self.memo.put(key, found)
        return found

    def _cached(self, image: np.ndarray, key: str) -> ImagePatches:
        path = self.cache_dir / f"{key}.safetensors" if self.cache_dir else None
        if path is not None and path.exists():
            try:
                cached = _load(path)
                self.hits += 1
                return cached
            except ArtifactError as exc:
                log.warning("ignoring unreadable cache entry %s (%s); recomputing", path, exc)
        self.misses += 1
        result = self.compute(image)
        if path is not None:
            _save(path, result)
        return result

    def full_activations(self, image: np.ndarray, segments: list[Segment],
                         kind: str = "patch") -> torch.Tensor:
        """[M, C, h, w] bottleneck activations of the patches (what CAVs are trained on).

        ``kind="patch"``: the activations the patch features come from (in "crop" mode each
        model-input-sized patch's; in "map" mode the context's); ``"context"``: the image's
        bottleneck map weighted by the share of each cell the segment covers (zero elsewhere).
        """
        if kind == "patch" and self.segmentation.features == "crop":
            return self.adapter.activations(self.patches(image, segments), batch_size=self.batch_size)
        act, weights = self._map_and_weights(image, segments)
        return act * weights

    def _map_and_weights(self, image: np.ndarray, segments: list[Segment] | list[np.ndarray]
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """The image's [1, C, h, w] bottleneck map and each segment's (or HxW mask's) [M, 1, h, w] cell coverage."""
        act = self.adapter.activations(image)  # one H×W×3 image: one batch
        masks = torch.from_numpy(np.stack([getattr(s, "mask", s) for s in segments]))[:, None].float()
        return act, F.adaptive_avg_pool2d(masks, act.shape[-2:])

    def context_of(self, image: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
        """[M, C] float32: ``image``'s bottleneck map (one forward) averaged over each HxW bool mask,
        each cell weighted by the share of it the mask covers (the "map" mode's patch features)."""
        act, weights = self._map_and_weights(image, masks)
        return ((act * weights).sum((2, 3)) / weights.sum((2, 3)).clamp_min(1e-12)).numpy().astype(np.float32)

    def _features_of(self, image: np.ndarray, segments: list[Segment]) -> tuple[np.ndarray, np.ndarray]:
        """(features, context) of the segments: see ImagePatches."""
        context = self.context_of(image, [s.mask for s in segments])
        if self.segmentation.features == "crop":
            return self.features(self.patches(image, segments)), context
        return context, context.copy()  # two tensors: safetensors refuses shared memory

    def _featurise(self, image: np.ndarray, segments: list[Segment]) -> ImagePatches:
        h, w = image.shape[:2]
        if segments:
            features, context = self._features_of(image, segments)
            masks = np.stack([s.mask for s in segments])
        else:
            features = context = np.zeros((0, 0), np.float32)
            masks = np.zeros((0, h, w), bool)
        return ImagePatches(
            shape=(h, w), features=features, context=context, masks=masks,
            bboxes=np.array([s.bbox for s in segments], dtype=np.int32).reshape(-1, 4),
            resolutions=np.array([s.resolution for s in segments], dtype=np.int32))


def to_arrays(p: ImagePatches) -> dict[str, np.ndarray]:
    """``p`` as named arrays, masks bit-packed (8x smaller): the cache file's tensors, and what a worker sends back."""
    packed = np.packbits(p.masks.reshape(len(p), -1), axis=1)
    return {"features": p.features, "context": p.context, "masks": packed, "bboxes": p.bboxes,
            "resolutions": p.resolutions, "shape": np.array(p.shape, dtype=np.int64)}


def from_arrays(t: dict[str, np.ndarray], source: str) -> ImagePatches:
    """The inverse of :func:`to_arrays`; ``source`` names where the arrays came from in errors."""
    if "context" not in t:
        raise ArtifactError(f"{source}: no context features (an older cache entry)")
    h, w = (int(v) for v in t["shape"])
    masks = np.unpackbits(t["masks"], axis=1, count=h * w).astype(bool).reshape(-1, h, w)
    return ImagePatches(shape=(h, w), features=t["features"], context=t["context"], masks=masks,
                        bboxes=t["bboxes"], resolutions=t["resolutions"])


def write_entry(cache_dir: str | Path, key: str, p: ImagePatches) -> Path:
    """Write one image's patches into the cache folder ``cache_dir`` under ``key`` (atomically)."""
    path = Path(cache_dir) / f"{key}.safetensors"
    _save(path, p)
    return path


def _save(path: Path, p: ImagePatches) -> None:
    save_tensors(path, to_arrays(p))


def _load(path: Path) -> ImagePatches:
    return from_arrays({k: v.numpy() for k, v in load_tensors(path).items()}, str(path))
