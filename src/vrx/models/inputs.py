"""Turning images into what a classifier takes: THE one conversion of user input to NCHW float32.

Everything in vrx that holds an image (a NumPy H×W×3 array, a PIL image, a tensor or a list of
them) and needs a batch for a model goes through :func:`to_tensor`; :func:`resize` is the one
resampling of such batches and :func:`validate_images` the one range check.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidImageError

# Images a little outside [0, 1] come from resampling; anything further out is a scaling mistake.
RANGE_TOLERANCE = 1e-3

Images = Union[torch.Tensor, np.ndarray, Sequence[Any]]


def to_tensor(images: Images, *, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Images (tensor NCHW/CHW, NumPy HWC/NHWC, PIL image, or a list of these) as NCHW float32.

    uint8 values are divided by 255 and uint16 by 65535; float arrays are taken as [0, 1] values;
    grey images get three channels. ``size`` resizes every image to (height, width) with
    :func:`resize`, which lets a list mix image sizes.
    """
    if isinstance(images, (list, tuple)):
        if not images:
            raise InvalidImageError("no images given (empty list)")
        parts = [to_tensor(im, size=size) for im in images]
        shapes = {tuple(p.shape[1:]) for p in parts}
        if len(shapes) > 1:
            raise InvalidImageError(f"images differ in shape {sorted(shapes)}; pass size=(H, W) "
                                    "or give them to the adapter, which resizes them")
        return torch.cat(parts)
    if isinstance(images, torch.Tensor):
        x = _tensor_as_float(images)
    elif isinstance(images, np.ndarray):
        x = _array_as_nchw(images)
    elif _is_pil(images):
        x = _array_as_nchw(np.asarray(images.convert("RGB")))
    else:
        raise InvalidImageError(f"cannot use a {type(images).__name__} as images; expected a "
                                "tensor N×3×H×W in [0, 1], a NumPy H×W×3 array or a list of them")
    if x.ndim == 4 and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if size is not None and x.ndim == 4 and tuple(x.shape[-2:]) != tuple(size):
        x = resize(x, size)
    return x


def image_batch(images: Images) -> torch.Tensor:
    """Images as an N×C×H×W float tensor (one CHW image gains a batch axis); InvalidImageError else."""
    x = to_tensor(images)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise InvalidImageError(f"images must be N×3×H×W, got shape {tuple(x.shape)}")
    return x


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of an NCHW batch to (height, width), no crop."""
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False,
                         antialias=True)


def _is_pil(obj: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        return False
    return isinstance(obj, Image.Image)


def _tensor_as_float(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif not x.is_floating_point():
        raise InvalidImageError(f"image tensor has dtype {x.dtype}; expected float in [0, 1] or uint8")
    if x.ndim == 3:  # one CHW image
        x = x.unsqueeze(0)
    return x.float()


def _array_as_nchw(a: np.ndarray) -> torch.Tensor:
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise InvalidImageError(f"image array has shape {a.shape}; expected H×W×3 or N×H×W×3")
    channels = a.shape[-1]
    if channels == 4:
        raise InvalidImageError(f"image array has shape {a.shape} with an alpha channel; load the "
                                "file with vrx.data.load_image, which composites it")
    if channels not in (1, 3):
        raise InvalidImageError(f"image array has shape {a.shape}; expected channels last (H×W×3)")
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        a = a.astype(np.float32) / 65535.0
    elif a.dtype == np.bool_ or np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
    else:
        raise InvalidImageError(f"image array has dtype {a.dtype}; expected uint8, uint16 or float")
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


def validate_images(x: torch.Tensor, channels: int = 3) -> None:
    """Raise InvalidImageError unless ``x`` is a non-empty N×C×H×W float batch in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise InvalidImageError(f"images must be a tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise InvalidImageError(f"images must be a batch N×{channels}×H×W; got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise InvalidImageError(f"images must have {channels} channels (N×{channels}×H×W); "
                                f"got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise InvalidImageError(f"images batch is empty: shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InvalidImageError(f"images must be float in [0, 1]; got dtype {x.dtype}")
    lo, hi = (float(v) for v in torch.aminmax(x))  # one pass; NaN and inf show up in lo or hi
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InvalidImageError("images contain NaN or infinite values")
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        hint = " (they look like 0–255 values: divide by 255)" if hi > 2 else ""
        raise InvalidImageError(f"images must lie in [0, 1]; got values in [{lo:.3g}, {hi:.3g}]{hint}")
