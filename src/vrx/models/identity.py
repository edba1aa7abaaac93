"""A model's identity for caches: a short hash of its weights, preprocessing and class names."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import torch
from torch import nn


def model_id(name: str, model: nn.Module, settings: Any) -> str:
    """``name-<16 hex>``: a stable cache key from ``model``'s state dict and ``repr(settings)``.

    Every tensor of the state dict counts with its key, dtype and shape; its bytes are read
    through a uint8 view, so bfloat16 and other dtypes NumPy lacks hash too.
    """
    h = hashlib.blake2b(digest_size=8)
    h.update(repr(settings).encode())
    for key, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"
    return f"{safe}-{h.hexdigest()}"
