"""A classifier's preprocessing: input size and per-channel normalisation, checked and applied."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .hooks import evaluating
from .inputs import resize


class PreprocessedModel(nn.Module):
    """Resize + normalise + the wrapped model: takes [0, 1] images, returns logits.

    This is what Captum methods receive. The model runs in eval mode for each forward (each
    submodule's ``training`` flag is put back afterwards); it is not moved: on a device other than
    the model's, call it inside ``ClassifierAdapter.evaluating()``, which moves it there and back.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float],
                 input_size: tuple[int, int], device: torch.device | str = "cpu"):
        super().__init__()
        self.model = model
        self.input_size = tuple(input_size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1),
                             persistent=False)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """The model input for [0, 1] images: resized to input_size, then (x - mean) / std."""
        if tuple(images.shape[-2:]) != self.input_size:
            images = resize(images, self.input_size)
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of [0, 1] images (no range check here: attribution methods add noise)."""
        with evaluating(self.model):
            return self.model(self.normalise(images))


def size_pair(size: int | Sequence[int], model: str) -> tuple[int, int]:
    """(height, width) from an int or a 1- or 2-sequence; ConfigError names the model."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    if isinstance(size, (list, tuple)) and len(size) == 1:
        size = (size[0], size[0])
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ConfigError(f"model {model!r}: input_size must be an int or (height, width), got {size!r}") from None
    if h < 1 or w < 1:
        raise ConfigError(f"model {model!r}: input_size must be positive, got {(h, w)}")
    return (h, w)


def channel_values(values: float | Sequence[float], what: str, model: str) -> tuple[float, ...]:
    """Three per-channel floats (R, G, B) from one number or three; ConfigError names the model."""
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    if isinstance(values, (int, float, np.number)):
        values = [float(values)] * 3
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(f"model {model!r}: {what} must be a number or 3 numbers, got {values!r}") from None
    if len(out) == 1:
        out = out * 3
    if len(out) != 3:
        raise ConfigError(f"model {model!r}: {what} must have 3 values (R, G, B), got {list(out)}")
    return out
