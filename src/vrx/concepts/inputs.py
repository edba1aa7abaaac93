"""Images as the concept and graph stages take them: paths (loaded lazily) or HxWx3 arrays in [0,1]."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import InvalidImageError
from ..models.inputs import resize, to_tensor
from ..progress import progress

log = logging.getLogger(__name__)

ImageInput = str | Path | np.ndarray
MIN_SIDE = 8


def iter_images(items: Sequence[ImageInput], input_size: tuple[int, int], *, desc: str = "",
                show_progress: bool | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (image id, HxWx3 float32 array) for paths or arrays, loading paths one at a time.

    Images smaller than the model input are upsampled, with a warning naming them; images
    too small to segment are an error.
    """
    from ..data.images import load_image

    for k, item in enumerate(progress(items, desc=desc, enabled=show_progress)):
        if isinstance(item, np.ndarray):
            image_id, image = f"array:{k}", item
        else:
            image_id, image = str(item), load_image(item)
        if image.ndim != 3 or image.shape[2] != 3:
            raise InvalidImageError(f"{image_id}: expected an HxWx3 image, got shape {image.shape}")
        if min(image.shape[:2]) < MIN_SIDE:
            raise InvalidImageError(f"{image_id}: image is {image.shape[1]}x{image.shape[0]}, too small to segment")
        if min(image.shape[:2]) < min(input_size):
            log.warning("%s: image (%dx%d) is smaller than the model input %s; it is upsampled",
                        image_id, image.shape[1], image.shape[0], tuple(input_size))
        yield image_id, np.asarray(image, dtype=np.float32)


def resized_batch(images: Sequence[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """Stack images of any sizes into one [n, 3, *size] batch (bilinear, antialiased, clamped to [0, 1])."""
    return torch.cat([resize(to_tensor(im), size).clamp(0, 1) for im in images])
