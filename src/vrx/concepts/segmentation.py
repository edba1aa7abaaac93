"""Multi-resolution SLIC segmentation: the concept proposals of the Visual Concept Extractor (ACE-style).

Each image is cut by SLIC at several resolutions (15, 50 and 80 segments, as in ACE and VRX).
From the pooled segments, tiny ones are dropped, an optional foreground mask (binarised Grad-CAM)
removes segments off the object, and a greedy Jaccard rule removes near-duplicates across
resolutions. Order of the steps, as in ACE/VRX: size and foreground filters first, then the
duplicate test, which compares a segment only with segments already *accepted*.

Fixes over the original code: every SLIC label is used (ACE's ``range(segments.max())`` loses the
last one), the configuration is never mutated, and the duplicate test works on contingency tables of
label maps (O(H*W) per pair of resolutions) instead of O(M^2) comparisons of full-resolution masks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.segmentation import slic

from ..errors import ConfigError, InvalidImageError
from . import fastpaths
from .config import SegmentationConfig

__all__ = ["Segment", "SegmentationConfig", "check_image", "segment_image", "select_labels", "slic_labels"]

log = logging.getLogger(__name__)

_DEFAULT_CONFIG = SegmentationConfig()  # frozen, so one shared default is safe


@dataclass
class Segment:
    """One superpixel: its full-resolution mask, tight box, and the resolution that produced it."""

    mask: np.ndarray                    # bool HxW
    bbox: tuple[int, int, int, int]     # (y0, x0, y1, x1), end-exclusive
    resolution: int                     # index into SegmentationConfig.n_segments
    area: int | None = None             # pixels in mask; computed from the mask when not given
    centroid: tuple[float, float] | None = None  # (cy, cx), mean pixel row and column; likewise
    label: int = -1                     # 0-based SLIC label within its resolution (-1: unknown)

    def __post_init__(self) -> None:
        if self.area is None or self.centroid is None:
            # Only the box can hold the segment, so look there rather than at the whole image.
            ys, xs = np.nonzero(self.mask[self.slices])
            self.area = int(ys.size)
            if ys.size:
                self.centroid = (float(ys.mean()) + self.bbox[0], float(xs.mean()) + self.bbox[1])
            else:
                self.centroid = (float("nan"), float("nan"))

    @property
    def slices(self) -> tuple[slice, slice]:
        """The bbox as a pair of slices, for cropping."""
        y0, x0, y1, x1 = self.bbox
        return slice(y0, y1), slice(x0, x1)


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate an HxWx3 float image in [0, 1]; return it as a numpy array."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidImageError(f"expected an HxWx3 image, got shape {image.shape}")
    if image.dtype.kind != "f":
        raise InvalidImageError(f"expected a float image in [0, 1], got dtype {image.dtype}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise InvalidImageError(f"image of shape {image.shape} is too small to segment")
    lo, hi = float(image.min()), float(image.max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
        raise InvalidImageError(f"image values must be finite and in [0, 1], got [{lo}, {hi}]")
    return image


def slic_labels(image: np.ndarray, config: SegmentationConfig) -> list[np.ndarray]:
    """One SLIC label map per resolution, labels shifted to start at 0 (int64, HxW).

    The maps are exactly those of ``skimage.segmentation.slic`` called once per resolution, but the
    resolution-independent work (rescaling, RGB to Lab, Gaussian smoothing: about a quarter of a
    call) is done once for all of them (:mod:`.fastpaths`), where that reproduces slic exactly.
    """
    shared = fastpaths.slic_shared(image, config) if fastpaths.shared_slic_matches() else None
    maps = []
    for n in config.n_segments:
        if shared is None:
            labels = slic(image, n_segments=int(n), compactness=float(config.compactness),
                          sigma=float(config.sigma), max_num_iter=int(config.max_num_iter),
                          enforce_connectivity=bool(config.enforce_connectivity),
                          min_size_factor=float(config.min_size_factor),
                          start_label=int(config.start_label), channel_axis=-1)
        else:
            labels = fastpaths.slic_core(shared, int(n), config)
        maps.append(labels.astype(np.int64, copy=False) - int(config.start_label))
    return maps


def _check_keep_mask(keep_mask: np.ndarray, shape: tuple[int, int], min_inside: float) -> np.ndarray:
    keep_mask = np.asarray(keep_mask)
    if keep_mask.shape != shape:
        raise ConfigError(f"keep_mask has shape {keep_mask.shape}, the image is {shape}")
    if keep_mask.dtype != bool:
        if not np.isin(keep_mask, (0, 1)).all():
            raise ConfigError(f"keep_mask must be boolean (or 0/1), got dtype {keep_mask.dtype}")
        keep_mask = keep_mask.astype(bool)
    if not 0.0 <= min_inside <= 1.0:
        raise ConfigError(f"min_inside must be in [0, 1], got {min_inside}")
    return keep_mask


def _contingency(a: np.ndarray, n_a: int, b: np.ndarray, n_b: int) -> np.ndarray:
    """Pixel counts of every (label in a, label in b) pair: one bincount over the joint label."""
    joint = a.ravel() * n_b + b.ravel()
    return np.bincount(joint, minlength=n_a * n_b).reshape(n_a, n_b)


def select_labels(maps: list[np.ndarray], config: SegmentationConfig, *,
                  keep_mask: np.ndarray | None = None, min_inside: float = 1.0
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per resolution, the labels that survive the filters, and every label's area.

    Equivalent to ACE's greedy loop over resolutions then labels, where a segment is a duplicate if
    its Jaccard with any already-accepted segment exceeds ``max_jaccard``. Segments of one SLIC map
    are disjoint (Jaccard 0, never above a threshold >= 0), so a segment's fate depends only on the
    segments accepted at *earlier* resolutions; those are compared through a contingency table.
    """
    height, width = maps[0].shape
    min_pixels = config.min_area * height * width
    counts = [int(m.max()) + 1 for m in maps]
    result: list[tuple[np.ndarray, np.ndarray]] = []
    for r, labels in enumerate(maps):
        area = np.bincount(labels.ravel(), minlength=counts[r])
        # area > 0 guards against label gaps, which a zero min_area would otherwise let through.
        ok = (area > 0) & (area >= min_pixels)
        if keep_mask is not None:
            inside = np.bincount(labels[keep_mask], minlength=counts[r])
            ok &= inside / np.maximum(area, 1) >= min_inside
        for q in range(r):
            kept_q, area_q = result[q]
            if kept_q.size == 0 or not ok.any():
                continue
            inter = _contingency(maps[q], counts[q], labels, counts[r])[kept_q]
            union = area_q[kept_q, None] + area[None, :] - inter
            jaccard = inter / np.maximum(union, 1)
            ok &= ~(jaccard > config.max_jaccard).any(axis=0)
        result.append((np.flatnonzero(ok), area))
    return result


def segment_image(image: np.ndarray, config: SegmentationConfig = _DEFAULT_CONFIG, *,
                  keep_mask: np.ndarray | None = None, min_inside: float = 1.0) -> list[Segment]:
    """SLIC at each resolution; tiny and near-duplicate segments removed; optional foreground filter.

    ``keep_mask`` (bool HxW, e.g. the binarised Grad-CAM) keeps only segments with at least
    ``min_inside`` of their pixels inside it (1.0: entirely inside, the paper's rule). It is applied
    before the duplicate test, as in ACE/VRX, so only kept segments can suppress others.
    Segments come in order of resolution, then SLIC label.
    """
    image = check_image(image)
    shape = image.shape[:2]
    if keep_mask is not None:
        keep_mask = _check_keep_mask(keep_mask, shape, float(min_inside))
    maps = slic_labels(image, config)
    selected = select_labels(maps, config, keep_mask=keep_mask, min_inside=float(min_inside))
    segments = _build_segments(maps, selected)
    log.debug("segmented %s image into %d segments", shape, len(segments))
    return segments


def _build_segments(maps: list[np.ndarray], selected: list[tuple[np.ndarray, np.ndarray]]) -> list[Segment]:
    height, width = maps[0].shape
    segments: list[Segment] = []
    ys = xs = None
    for r, (labels, (kept, area)) in enumerate(zip(maps, selected)):
        if kept.size == 0:
            continue
        # One pass per label map gives every box; labels+1 because find_objects ignores label 0.
        boxes = ndimage.find_objects(labels + 1, max_label=int(area.size))
        if ys is None:
            ys, xs = np.indices((height, width), dtype=np.float64)
        flat = labels.ravel()
        sum_y = np.bincount(flat, weights=ys.ravel(), minlength=area.size)
        sum_x = np.bincount(flat, weights=xs.ravel(), minlength=area.size)
        for label in kept.tolist():
            sy, sx = boxes[label]
            mask = np.zeros((height, width), dtype=bool)
            # Only the box can hold the label, so compare there and leave the rest False.
            mask[sy, sx] = labels[sy, sx] == label
            n = int(area[label])
            segments.append(Segment(mask=mask, bbox=(sy.start, sx.start, sy.stop, sx.stop),
                                    resolution=r, area=n,
                                    centroid=(float(sum_y[label] / n), float(sum_x[label] / n)),
                                    label=int(label)))
    return segments
