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
    render_dataset(root, 8, seed=11, n_random=12, show_progress=False)
    return root


@pytest.fixture(scope="session")
def toy_adapter():
    """An untrained (seeded) toy CNN as a ClassifierAdapter: exercises the mechanics, claims nothing."""
    import torch

    from vrx.data.toyworld import DEFAULT_CLASSES
    from vrx.models.adapter import ClassifierAdapter
    from vrx.models.toycnn import ToyCNN, init_toy_cnn

    model = init_toy_cnn(ToyCNN(num_classes=3), torch.Generator().manual_seed(0))
    return ClassifierAdapter(model, input_size=(128, 128), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                             bottleneck=model.bottleneck, class_names=list(DEFAULT_CLASSES), name="toy-untrained")
