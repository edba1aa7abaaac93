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


@pytest.fixture(scope="session")
def toy_world(tmp_path_factory):
    """A small rendered toyworld folder (3 default classes + random images), made once per session."""
    from vrx.data.toyworld import render_dataset

    root = tmp_path_factory.mktemp("toyworld")
    render_dataset(root, 24, seed=11, n_random=30, show_progress=False)
    return root


@pytest.fixture(scope="session")
def toy_adapter(tmp_path_factory):
    """A toy CNN trained once per session on its own toyworld render, as a ClassifierAdapter."""
    from vrx.data.toyworld import render_dataset
    from vrx.models import load
    from vrx.models.toytrain import train_toy

    data = tmp_path_factory.mktemp("toytrain")
    render_dataset(data, 120, seed=5, n_random=0, show_progress=False)
    out = tmp_path_factory.mktemp("toymodel")
    train_toy(data, out, epochs=8, seed=0, progress=False)
    return load(f"toy:{out}")
