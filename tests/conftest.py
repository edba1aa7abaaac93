"""Shared fixtures: the bundled EfficientNet-Lite0 and the real photos scikit-image ships."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def effnet():
    """EfficientNet-Lite0 (ImageNet weights) as a ClassifierAdapter, loaded once per session."""
    from vrx.models import load

    return load("efficientnet-lite0")


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """scikit-image's bundled photos as H×W×3 float32 arrays in [0, 1]."""
    from skimage import data

    return {name: (getattr(data, name)().astype(np.float32) / 255.0)
            for name in ("chelsea", "coffee", "astronaut", "rocket")}
