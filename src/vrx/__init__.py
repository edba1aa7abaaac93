"""vrx: explain image classifiers with structural visual concepts (VRX, Ge et al., CVPR 2021).

The main objects are importable from here; each is loaded on first use, so ``import vrx`` stays
fast (torch and the rest are imported only by what needs them)::

    import vrx
    adapter = vrx.load_model("efficientnet-lite0")
    run = vrx.Run("runs/toy")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    ArtifactError,
    ConfigError,
    EmptyFolderError,
    ImageTooLargeError,
    InvalidImageError,
    ModelSpecError,
    UnknownClassError,
    VRXError,
)

__version__ = "0.1.0"

# Public name -> (module, attribute), imported on first access.
_LAZY = {
    "load_model": ("vrx.models.zoo", "load"),
    "ClassifierAdapter": ("vrx.models.adapter", "ClassifierAdapter"),
    "ConceptExtractor": ("vrx.concepts.extractor", "ConceptExtractor"),
    "ConceptConfig": ("vrx.concepts.config", "ConceptConfig"),
    "SCGBuilder": ("vrx.graphs.builder", "SCGBuilder"),
    "Distiller": ("vrx.grn.distill", "Distiller"),
    "Interpreter": ("vrx.interpret.contributions", "Interpreter"),
    "Run": ("vrx.run", "Run"),
    "stages": ("vrx.stages", None),
}

if TYPE_CHECKING:
    from . import stages
    from .concepts.config import ConceptConfig
    from .concepts.extractor import ConceptExtractor
    from .graphs.builder import SCGBuilder
    from .grn.distill import Distiller
    from .interpret.contributions import Interpreter
    from .models.adapter import ClassifierAdapter
    from .models.zoo import load as load_model
    from .run import Run


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'vrx' has no attribute {name!r}") from None
    value = importlib.import_module(module)
    value = value if attr is None else getattr(value, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ArtifactError",
    "ConfigError",
    "EmptyFolderError",
    "ImageTooLargeError",
    "InvalidImageError",
    "ModelSpecError",
    "UnknownClassError",
    "VRXError",
    "__version__",
    *_LAZY,
]
