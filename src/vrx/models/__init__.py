"""Classifiers for vrx: the ClassifierAdapter and a zoo of ready models (``vrx.models.load``).

The names below are imported on first use (PEP 562), so ``import vrx.models`` stays cheap and
does not import torch; ``from vrx.models import load, ClassifierAdapter, to_tensor`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .toydefaults import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_THREADS

if TYPE_CHECKING:
    from .adapter import ClassifierAdapter, LayerGradients, Prediction
    from .class_index import ClassIndex, normalize_class_name
    from .hooks import capture, evaluating
    from .inputs import resize, to_tensor, validate_images
    from .zoo import SPEC_FORMS, load, read_class_names

_LAZY = {
    "ClassifierAdapter": "adapter", "LayerGradients": "adapter", "Prediction": "adapter",
    "ClassIndex": "class_index", "normalize_class_name": "class_index",
    "capture": "hooks", "evaluating": "hooks",
    "resize": "inputs", "to_tensor": "inputs", "validate_images": "inputs",
    "SPEC_FORMS": "zoo", "load": "zoo", "read_class_names": "zoo",
}

__all__ = [
    "DEFAULT_BATCH_SIZE", "DEFAULT_EPOCHS", "DEFAULT_THREADS", "SPEC_FORMS", "ClassIndex", "ClassifierAdapter",
    "LayerGradients", "Prediction", "capture", "evaluating", "load", "normalize_class_name", "read_class_names",
    "resize", "to_tensor", "validate_images",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
