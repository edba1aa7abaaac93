"""The two speed-ups of patching that lean on other libraries' internals, in one place.

Each is a pure speed-up: the results are the same as without it (tests/test_patch_fast_paths.py),
and each falls back to the plain computation when its internals are missing.

- **Shared SLIC preprocessing** (:func:`slic_shared`, :func:`slic_core`): ``skimage``'s ``slic`` is
  preprocessing (rescaling, RGB to Lab, Gaussian smoothing) + clustering + connectivity. The
  preprocessing does not depend on the number of segments and is about a quarter of a call, so
  :func:`vrx.concepts.segmentation.slic_labels` does it once for all resolutions, calling the same
  private functions of ``skimage.segmentation.slic_superpixels`` that ``slic`` calls. They are
  used only if they exist and reproduce plain ``slic`` bit for bit (:func:`shared_slic_matches`,
  checked once per process).
- **Huge pages for patch batches** (:func:`empty_output`): the output of extract_patches (about
  65 MB for 100 patches at 224x224) is advised onto transparent huge pages with ``madvise`` through
  ctypes (Linux only): first-touch page faults otherwise cost as much as the resizing itself
  (43 ms vs 12 ms measured). The advice is a hint; when it fails nothing changes.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from functools import lru_cache

import numpy as np
import torch
from skimage.segmentation import slic

from .config import SegmentationConfig

log = logging.getLogger(__name__)

# ---- shared SLIC preprocessing ------------------------------------------------------------------

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
def shared_slic_matches() -> bool:
    """Whether slic_shared + slic_core reproduce plain slic with this scikit-image (checked once)."""
    if _SK is None:
        return False
    # A noisy colour ramp below full range: rescaling, Lab, smoothing and compactness all show.
    yy, xx = np.mgrid[:32, :32] / 32.0
    ramp = np.stack([0.1 + 0.5 * yy, 0.2 + 0.4 * xx * yy, 0.15 + 0.2 * xx], axis=-1)
    noise = np.random.default_rng(0).normal(0.0, 0.08, ramp.shape)
    probe = np.clip(ramp + noise, 0.05, 0.7).astype(np.float32)
    config = SegmentationConfig(n_segments=(6, 20))
    try:
        shared = slic_shared(probe, config)
        fast = [slic_core(shared, n, config) for n in config.n_segments]
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


def slic_shared(image: np.ndarray, config: SegmentationConfig) -> tuple[np.ndarray, np.ndarray] | None:
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


def slic_core(shared: tuple[np.ndarray, np.ndarray], n_segments: int, config: SegmentationConfig) -> np.ndarray:
    """slic's clustering and connectivity steps at one resolution, on the output of slic_shared."""
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


# ---- huge pages ---------------------------------------------------------------------------------

_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14  # linux/mman.h


@lru_cache(maxsize=1)
def _madvise():  # noqa: ANN202 - a ctypes function or None
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def empty_output(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float32 tensor whose large interior is advised onto huge pages (Linux)."""
    out = torch.empty(shape, dtype=torch.float32)
    madvise = _madvise()
    nbytes = out.numel() * out.element_size()
    if madvise is None or nbytes < 2 * _HUGE_PAGE:
        return out
    # Only whole 2 MB pages inside the buffer; advice is a hint, so a failure changes nothing.
    start = -(-out.data_ptr() // _HUGE_PAGE) * _HUGE_PAGE
    stop = (out.data_ptr() + nbytes) // _HUGE_PAGE * _HUGE_PAGE
    if stop > start and madvise(start, stop - start, _MADV_HUGEPAGE) != 0:
        log.debug("madvise(MADV_HUGEPAGE) failed (errno %d)", ctypes.get_errno())
    return out
