"""Errors vrx raises for bad input: each names the file, class or artifact that is wrong."""

from __future__ import annotations


class VRXError(Exception):
    """Base class of every error vrx raises on purpose."""


class InvalidImageError(VRXError):
    """An image file that cannot be read, is corrupt, or has an unusable size or mode."""


class EmptyFolderError(VRXError):
    """A folder that should hold images holds none (or is missing)."""


class ImageTooLargeError(InvalidImageError):
    """An image whose pixel count exceeds the configured limit."""


class UnknownClassError(VRXError):
    """A class name or id the model does not know."""


class ModelSpecError(VRXError):
    """A model specification that cannot be resolved to a classifier."""


class ArtifactError(VRXError):
    """A run-folder artifact that is missing, corrupt or does not match what reads it."""


class ConfigError(VRXError):
    """A configuration value that is out of range or inconsistent."""


class RunBusyError(VRXError):
    """A run folder another process is writing (its lock is held)."""
