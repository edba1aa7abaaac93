"""Concept patches: each segment's box crop, outside-of-segment pixels filled, resized for the model.

The fill is the [0, 1] colour that the model's normalisation maps to 0 (the caller passes it), so the
background carries no signal; ACE/VRX used GoogleNet's 117/255 even for Xception. The crop box is
end-exclusive and tight, so the whole segment is kept (the original dropped the last row and column).
Resizing is bicubic with antialiasing (PIL's kernel, as in the original's PIL BICUBIC), clamped to
[0, 1] because bicubic overshoots at sharp edges.

Speed (bench/bench_patches.py), measured choices:
- resizing is linear and separable, so each patch is resized as ``Wy @ patch @ Wx`` with weight
  matrices taken from ``F.interpolate`` itself (applied to an identity) and cached by size: same
  values to float rounding, about 2.5x faster than ``F.interpolate`` per patch;
- the weight matrices are banded (upscaling bicubic touches 4 inputs per output), so a product is
  cut into blocks of ~56 outputs that multiply only the input rows or columns their weights touch,
  where that saves more than the extra calls cost: on skimage's photos at 224 px, 0.28 instead of
  0.76 G multiply-adds per image, resizing ~13 ms instead of ~25 ms;
- patches are cut from an H x C x W copy of the image, so that both products are single plain GEMMs
  over all three channels (one call per block); the last step clamps while permuting to C x H x W;
- the output (about 65 MB for 100 patches at 224x224) is asked for transparent huge pages on Linux
  (:func:`vrx.concepts.fastpaths.empty_output`: 43 ms of first-touch page faults down to 12 ms);
- threads: the per-patch ops are tiny, so more torch intra-op threads only add fork/join waits.
  This module sets no thread count (that is process-wide state, for the program's edge to scope
  with ``vrx.runtime.threads``). Measured on the shared 2-core machine (best of 5 reps per image,
  median over images; the patches are bit-identical on 1 and 2 threads in every case), extraction
  on 1 vs 2 torch threads took, idle, 48.9 vs 44.1 ms per toyworld image (250 patches at 128 px)
  and 63.1 vs 60.8 ms per photo (112 patches at 224 px); with one core busy with other work, 48.4
  vs 123.5 ms and 84.1 vs 215.7 ms; at load average 4-6, 114 vs 679 ms and 195 vs 1308 ms
  (``bench/bench_patches.py --compare-threads``). So on shared cores, run whatever extracts
  patches (discovery, graph building) under ``vrx.runtime.threads(torch_threads=1)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, InvalidImageError
from .fastpaths import empty_output
from .segmentation import Segment, check_image

log = logging.getLogger(__name__)


def fill_vector(fill: np.ndarray | Sequence[float] | float) -> np.ndarray:
    """The per-channel fill as a float32 vector of 3 values in [0, 1]."""
    vec = np.asarray(fill, dtype=np.float32).reshape(-1)
    if vec.size == 1:
        vec = np.repeat(vec, 3)
    if vec.size != 3:
        raise ConfigError(f"fill must hold 1 or 3 values, got {vec.size}")
    if not np.all(np.isfinite(vec)) or vec.min() < 0.0 or vec.max() > 1.0:
        raise ConfigError(f"fill must be in [0, 1] (image space, before normalisation), got {vec.tolist()}")
    return vec


@lru_cache(maxsize=256)
def resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """The n_out x n_in matrix of 1-D antialiased bicubic resizing, exactly as F.interpolate does it."""
    eye = torch.eye(n_in, dtype=torch.float32)[None, None]
    # Resizing only the last axis of an identity yields the weights; the other axis keeps its size,
    # where the bicubic weights are exactly (0, 1, 0) and the identity passes through unchanged.
    weights = F.interpolate(eye, size=(n_in, n_out), mode="bicubic", align_corners=False, antialias=True)
    return weights[0, 0].T.contiguous()


_BLOCK = 56           # outputs per block of a banded product
_CALL_COST = 300_000  # a matmul call's fixed cost (~6 us) in multiply-adds (~50 per ns, one core)

Band = tuple[int, int, int, int, torch.Tensor, torch.Tensor]  # o0, o1, i0, i1, W[o0:o1, i0:i1], its .T


@lru_cache(maxsize=512)
def resize_bands(n_in: int, n_out: int, banded: bool = True) -> tuple[Band, ...]:
    """resize_matrix cut into blocks of outputs: (o0, o1, i0, i1, W[o0:o1, i0:i1], its transpose).

    [i0, i1) is the input range a block's weights touch; outside it they are zero. With
    ``banded=False``, or when the output axis is short, one block holds the whole matrix.
    """
    w = resize_matrix(n_in, n_out)
    n_blocks = max(1, round(n_out / _BLOCK)) if banded else 1
    step = -(-n_out // n_blocks)
    step = -(-step // 8) * 8 if n_blocks > 1 else step  # whole SIMD widths per block measured faster
    blocks = []
    for o0 in range(0, n_out, step):
        o1 = min(o0 + step, n_out)
        touched = torch.nonzero(w[o0:o1].ne(0).any(0)).flatten()
        i0, i1 = (int(touched[0]), int(touched[-1]) + 1) if n_blocks > 1 else (0, n_in)
        wb = w[o0:o1, i0:i1].contiguous()
        blocks.append((o0, o1, i0, i1, wb, wb.T.contiguous()))
    return tuple(blocks)


def _cost(blocks: Sequence[Band], other: int) -> int:
    """Multiply-adds of applying ``blocks`` to ``other`` columns (or rows), plus the calls' fixed cost."""
    return sum((o1 - o0) * (i1 - i0) for o0, o1, i0, i1, _, _ in blocks) * other + len(blocks) * _CALL_COST


def _cheapest(n_in: int, n_out: int, other: int) -> tuple[tuple[Band, ...], int]:
    """Dense or banded, whichever costs less for this product, with its cost."""
    options = [resize_bands(n_in, n_out, False), resize_bands(n_in, n_out, True)]
    return min(((b, _cost(b, other)) for b in options), key=lambda bc: bc[1])


@lru_cache(maxsize=4096)
def _plan(h: int, w: int, c: int, out_h: int, out_w: int) -> tuple[bool, tuple[Band, ...], tuple[Band, ...]]:
    """(rows first?, blocks of the first product, blocks of the second): the cheapest way to resize."""
    y1, cost_y1 = _cheapest(h, out_h, c * w)        # rows first: h -> out_h over c*w columns,
    x2, cost_x2 = _cheapest(w, out_w, out_h * c)    # then w -> out_w over out_h*c rows
    x1, cost_x1 = _cheapest(w, out_w, h * c)        # columns first: w -> out_w over h*c rows,
    y2, cost_y2 = _cheapest(h, out_h, c * out_w)    # then h -> out_h over c*out_w columns
    if cost_y1 + cost_x2 <= cost_x1 + cost_y2:
        return True, y1, x2
    return False, x1, y2


def _resize_hcw(patch: torch.Tensor, size: tuple[int, int], out: torch.Tensor) -> torch.Tensor:
    """Resize an h x c x w patch into ``out`` (out_h x c x out_w), with banded separable products."""
    h, c, w = patch.shape
    out_h, out_w = size
    rows_first, first, second = _plan(h, w, c, out_h, out_w)
    # Both orders are plain GEMMs over all channels at once, the second writing ``out`` directly.
    if rows_first:
        flat = patch.view(h, c * w)
        rows = torch.empty((out_h, c * w), dtype=patch.dtype)
        for o0, o1, i0, i1, wb, _ in first:
            torch.mm(wb, flat[i0:i1], out=rows[o0:o1])
        rows, target = rows.view(out_h * c, w), out.view(out_h * c, out_w)
        for o0, o1, i0, i1, _, wt in second:
            torch.mm(rows[:, i0:i1], wt, out=target[:, o0:o1])
    else:
        flat = patch.view(h * c, w)
        cols = torch.empty((h * c, out_w), dtype=patch.dtype)
        for o0, o1, i0, i1, _, wt in first:
            torch.mm(flat[:, i0:i1], wt, out=cols[:, o0:o1])
        cols, target = cols.view(h, c * out_w), out.view(out_h, c * out_w)
        for o0, o1, i0, i1, wb, _ in second:
            torch.mm(wb, cols[i0:i1], out=target[o0:o1])
    return out


def resize_patch(patch: torch.Tensor, size: tuple[int, int], out: torch.Tensor | None = None) -> torch.Tensor:
    """Resize a 3 x h x w patch to ``size`` with antialiased bicubic weights (separable matrix products)."""
    c = patch.shape[0]
    out_h, out_w = size
    if out is None:
        out = torch.empty((c, out_h, out_w), dtype=patch.dtype)
    tmp = torch.empty((out_h, c, out_w), dtype=patch.dtype)
    _resize_hcw(patch.permute(1, 0, 2).contiguous(), (out_h, out_w), tmp)
    out.copy_(tmp.permute(1, 0, 2))
    return out


def _check_segment(segment: Segment, shape: tuple[int, int], index: int) -> None:
    if segment.mask.shape != shape:
        raise InvalidImageError(f"segment {index} has a mask of shape {segment.mask.shape}, "
                                f"the image is {shape}")
    y0, x0, y1, x1 = segment.bbox
    if not (0 <= y0 < y1 <= shape[0] and 0 <= x0 < x1 <= shape[1]):
        raise InvalidImageError(f"segment {index} has bbox {segment.bbox}, empty or outside the "
                                f"{shape} image")


def crop_patch(image: np.ndarray, segment: Segment, fill: np.ndarray | Sequence[float] | float) -> np.ndarray:
    """The un-resized patch: h x w x 3 box crop with pixels outside the segment set to ``fill``."""
    image = check_image(image)
    _check_segment(segment, image.shape[:2], 0)
    sy, sx = segment.slices
    return np.where(segment.mask[sy, sx, None], image[sy, sx], fill_vector(fill)).astype(np.float32)


def extract_patches(image: np.ndarray, segments: Sequence[Segment], fill: np.ndarray | Sequence[float],
                    size: tuple[int, int]) -> torch.Tensor:
    """N x 3 x H x W float32 patches: the segment's box crop with outside-of-segment pixels set to `fill`, resized to `size`."""
    image = check_image(image)
    fill_t = torch.from_numpy(fill_vector(fill)).view(1, 3, 1)
    out_h, out_w = (int(s) for s in size)
    if out_h < 1 or out_w < 1:
        raise ConfigError(f"patch size must be positive, got {tuple(size)}")
    shape = image.shape[:2]
    for i, segment in enumerate(segments):
        _check_segment(segment, shape, i)
    out = empty_output((len(segments), 3, out_h, out_w))
    if not segments:
        return out
    # One H x C x W float32 copy of the image; crops are views of it (see the module notes).
    hcw = torch.from_numpy(np.ascontiguousarray(image.transpose(0, 2, 1), dtype=np.float32))
    resized = torch.empty((out_h, 3, out_w), dtype=torch.float32)  # reused: stays in cache
    for i, segment in enumerate(segments):
        sy, sx = segment.slices
        inside = torch.from_numpy(np.ascontiguousarray(segment.mask[sy, sx]))[:, None, :]
        patch = torch.where(inside, hcw[sy, :, sx], fill_t)
        if (patch.shape[0], patch.shape[2]) == (out_h, out_w):
            out[i] = patch.permute(1, 0, 2)  # no resampling: the pixels stay exact
        else:
            _resize_hcw(patch, (out_h, out_w), resized)
            # Bicubic overshoots at sharp edges; clamp on the way out, while still in cache.
            torch.clamp(resized.permute(1, 0, 2), 0.0, 1.0, out=out[i])
    return out
