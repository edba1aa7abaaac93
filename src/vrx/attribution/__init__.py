"""Pixel-level attribution methods, one API for all: ``Method(adapter, **config).attribute(images, target)``.

Each method module registers its classes with :func:`vrx.attribution.base.register` when imported;
``get(name)`` and ``method_names()`` import them all. Maps are ``[B, H, W]`` at input resolution.
"""

from __future__ import annotations

from .base import METHODS, Attribution, get, method_names, register

# Method modules, imported for their registrations (one line each).
from . import gradcam, gradients, lrp, occlusion  # noqa: F401
from . import extremal, inverse, perturbation, rise  # noqa: F401

__all__ = ["Attribution", "METHODS", "get", "method_names", "register"]
