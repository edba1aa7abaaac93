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
from functools import lru_cache

import numpy as np
from scipy import ndimage
from skimage.segmentation import slic

from ..errors import ConfigError, InvalidImageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentationConfig:
    """SLIC resolutions and parameters, and the rules that prune the resulting segments."""

    n_segments: tuple[int, ...] = (15, 50, 80)
    compactness: float = 20.0
    sigma: float = 1.0
    min_area: float = 0.001        # drop segments under this fraction of the image (ACE kept > 0.001)
    max_jaccard: float = 0.5       # drop a segment whose Jaccard with an already-kept one exceeds this
    start_label: int = 1           # passed to slic explicitly; has no effect on the segments returned
    max_num_iter: int = 10         # skimage's default k-means iterations, written down for the cache key
    enforce_connectivity: bool = True
    # slic's connectivity step merges segments under this fraction of the mean segment area into a
    # neighbour (slic's default 0.5). A thin part (a stripe a third of a segment tall) is such a
    # segment: a smaller factor keeps it on its own. See docs/concepts.md.
    min_size_factor: float = 0.5
    # How a patch becomes a feature: "crop" (ACE) crops its box, fills the rest and resizes it to
    # the model input; "map" pools the whole image's bottleneck map over the segment (one forward
    # per image, and the patch keeps its context and scale). See docs/concepts.md.
    features: str = "crop"

    def __post_init__(self) -> None:
        # JSON gives lists; a tuple keeps the frozen config hashable.
        object.__setattr__(self, "n_segments", tuple(self.n_segments))
        self.validate()
        # Plain ints, so dataclasses.asdict(config) stays JSON-able for cache keys.
        object.__setattr__(self, "n_segments", tuple(int(n) for n in self.n_segments))

    def validate(self) -> None:
        """Raise ConfigError for out-of-range values."""
        if not self.n_segments:
            raise ConfigError("segmentation.n_segments must list at least one resolution")
        for n in self.n_segments:
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise ConfigError(f"segmentation.n_segments must hold positive integers, got {n!r}")
        checks = [
            (self.compactness > 0, "segmentation.compactness must be > 0"),
            (self.sigma >= 0, "segmentation.sigma must be >= 0"),
            (0 <= self.min_area < 1, "segmentation.min_area must be in [0, 1)"),
            (0 <= self.max_jaccard <= 1, "segmentation.max_jaccard must be in [0, 1]"),
            (self.start_label in (0, 1), "segmentation.start_label must be 0 or 1"),
            (self.max_num_iter >= 1, "segmentation.max_num_iter must be >= 1"),
            (0 <= self.min_size_factor <= 1, "segmentation.min_size_factor must be in [0, 1]"),
            (self.features in ("crop", "map"), "segmentation.features must be 'crop' or 'map'"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


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
    call) is done once for all of them.
    """
    shared = _slic_shared(image, config) if _shared_slic_matches() else None
    maps = []
    for n in config.n_segments:
        if shared is None:
            labels = slic(image, n_segments=int(n), compactness=float(config.compactness),
                          sigma=float(config.sigma), max_num_iter=int(config.max_num_iter),
                          enforce_connectivity=bool(config.enforce_connectivity),
                          min_size_factor=float(config.min_size_factor),
                          start_label=int(config.start_label), channel_axis=-1)
        else:
            labels = _slic_core(shared, int(n), config)
        maps.append(labels.astype(np.int64, copy=False) - int(config.start_label))
    return maps


# skimage's slic is preprocessing + _slic_cython (+ connectivity); these are the private pieces it
# calls, taken from its own module so that they are the same functions. If any is missing, or the
# pieces no longer reproduce slic (checked once per process), plain slic is called instead.
_SLIC_PARTS = ("img_as_float", "utils", "rgb2lab", "gaussian", "_get_grid_centroids", "_slic_cython",
               "_enforce_label_connectivity_cython")
_SLIC_MAX_SIZE_FACTOR = 3  # slic's default, which vrx never changes


def _slic_module():  # noqa: ANN202 - a module or None
    try:
        from skimage.segmentation import slic_superpixels
    except ImportError:
        return None
    return slic_superpixels if all(hasattr(slic_superpixels, n) for n in _SLIC_PARTS) else None


_SK = _slic_module()


@lru_cache(maxsize=1)
def _shared_slic_matches() -> bool:
    """Whether _slic_shared + _slic_core reproduce plain slic with this scikit-image (checked once)."""
    if _SK is None:
        return False
    # A noisy colour ramp below full range: rescaling, Lab, smoothing and compactness all show.
    yy, xx = np.mgrid[:32, :32] / 32.0
    ramp = np.stack([0.1 + 0.5 * yy, 0.2 + 0.4 * xx * yy, 0.15 + 0.2 * xx], axis=-1)
    noise = np.random.default_rng(0).normal(0.0, 0.08, ramp.shape)
    probe = np.clip(ramp + noise, 0.05, 0.7).astype(np.float32)
    config = SegmentationConfig(n_segments=(6, 20))
    try:
        shared = _slic_shared(probe, config)
        fast = [_slic_core(shared, n, config) for n in config.n_segments]
    except Exception as exc:  # noqa: BLE001 - private API of another package: any failure means "no"
        log.debug("shared-preprocessing SLIC unavailable (%s); using plain slic", exc)
        return False
    plain = [slic(probe, n_segments=n, compactness=config.compactness, sigma=config.sigma,
                  max_num_iter=config.max_num_iter, start_label=config.start_label, channel_axis=-1)
             for n in config.n_segments]
    same = all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(fast, plain))
    if not same:
        log.debug("shared-preprocessing SLIC differs from plain slic here; using plain slic")
    return same


def _slic_shared(image: np.ndarray, config: SegmentationConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """slic's own steps up to the clustering for an RGB image (no mask, unit spacing); None: unavailable."""
    if _SK is None:
        return None
    img = _SK.img_as_float(image)
    dtype = _SK.utils._supported_float_type(img.dtype)
    img = img.astype(dtype, copy=True)
    lo, hi = img.min(), img.max()
    img -= lo
    if hi != lo:
        img /= hi - lo
    img = _SK.rgb2lab(img[np.newaxis, ...])
    spacing = np.ones(3, dtype=dtype)
    sigma = np.array([config.sigma] * 3, dtype=dtype) / spacing
    if (sigma > 0).any():
        img = _SK.gaussian(img, sigma=[*sigma, 0], mode="reflect")
    return np.ascontiguousarray(img * (1.0 / float(config.compactness)), dtype=dtype), spacing


def _slic_core(shared: tuple[np.ndarray, np.ndarray], n_segments: int, config: SegmentationConfig) -> np.ndarray:
    """slic's clustering and connectivity steps at one resolution, on the output of _slic_shared."""
    img, spacing = shared
    centroids, steps = _SK._get_grid_centroids(img, n_segments)
    n = centroids.shape[0]
    start = np.ascontiguousarray(np.concatenate([centroids, np.zeros((n, img.shape[3]))], axis=-1),
                                 dtype=img.dtype)
    labels = _SK._slic_cython(img, None, start, max(steps), int(config.max_num_iter), spacing, False,
                              ignore_color=False, start_label=int(config.start_label))
    if config.enforce_connectivity:
        size = float(np.prod(img.shape[:3])) / n
        labels = _SK._enforce_label_connectivity_cython(
            labels, int(float(config.min_size_factor) * size), int(_SLIC_MAX_SIZE_FACTOR * size),
            start_label=int(config.start_label))
    return labels[0]


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


def segment_image(image: np.ndarray, config: SegmentationConfig = SegmentationConfig(), *,
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
