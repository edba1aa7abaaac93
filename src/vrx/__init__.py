"""vrx: explain image classifiers with structural visual concepts (VRX, Ge et al., CVPR 2021)."""

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
]
