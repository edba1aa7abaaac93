"""Shared fixtures: the bundled EfficientNet-Lite0 and the real photos scikit-image ships."""

from __future__ import annotations

import numpy as np
import pytest
import torch

# The tests run many small forward passes; on a shared 2-core machine a second torch thread
# mostly waits for the first (measured up to 10x slower), so the whole suite uses one.
torch.set_num_threads(1)

#: Fixtures that train a network, discover concepts or load EfficientNet: a test that uses one is
#: marked slow, so `pytest -m "not slow"` (make test-fast) leaves it out.
SLOW_FIXTURES = {"vrx_run", "effnet", "discovered", "discovery"}


def pytest_terminal_summary(terminalreporter):
    """The reliability fuzz suite's count of cases, when it ran (tests/test_reliability_fuzz.py)."""
    import sys

    fuzz = sys.modules.get("test_reliability_fuzz")
    if fuzz is not None and fuzz.CASES:
        terminalreporter.write_sep("-", fuzz.summary_line())


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


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
    from vrx.data.toyworld import DEFAULT_CLASSES
    from vrx.models.adapter import ClassifierAdapter
    from vrx.models.toycnn import ToyCNN, init_toy_cnn

    model = init_toy_cnn(ToyCNN(num_classes=3), torch.Generator().manual_seed(0))
    return ClassifierAdapter(model, input_size=(128, 128), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                             bottleneck=model.bottleneck, class_names=list(DEFAULT_CLASSES), name="toy-untrained")


def build_tiny_run(world, root):
    """A complete run folder (toy CNN, concepts, graphs, GRN with ablations) on the toyworld ``world``.

    An untrained network finds few significant concepts, so a narrow toy CNN is trained for a few
    seconds first. One torch thread: with two on a shared 2-core machine small convolutions run
    about ten times slower.
    """
    import argparse

    from vrx import stages
    from vrx.cli import train
    from vrx.concepts.config import ClusterConfig, ConceptConfig, GradCamConfig, TCAVConfig
    from vrx.data.images import load_image_folder
    from vrx.data.toyworld import render_dataset
    from vrx.models.toytrain import train_toy
    from vrx.run import ModelSpec, Run
    from vrx.runtime import threads

    with threads(torch_threads=1, blas_threads=1):
        render_dataset(root / "train", 40, seed=3, n_random=0, show_progress=False)
        train_toy(root / "train", root / "model", epochs=10, seed=0, widths=(8, 16, 16, 24, 24),
                  batch_size=16, progress=False)
        run = Run(root / "run")
        run.write_manifest(ModelSpec(model=f"toy:{root / 'model'}"))
        adapter = run.adapter()
        config = ConceptConfig(gradcam=GradCamConfig(min_inside=0.5),
                               cluster=ClusterConfig(n_clusters=6, n_init=1, n_members=10, min_size_fraction=0.5),
                               tcav=TCAVConfig(n_random_sets=10, random_set_size=10, n_concepts=3, alpha=0.1))
        bank, _ = stages.discover(run, adapter, load_image_folder(world, max_images_per_class=6), config,
                                  show_progress=False)
        counts = {c: len(bank[c]) for c in bank.class_names}
        assert bank.n_concepts >= 2, f"tiny run: too few concepts {counts}; the GRN needs a class with two"
        stages.build_graphs(run, adapter, load_image_folder(world), show_progress=False)
        # Through the `vrx train` command (not vrx.cli.main, which would configure logging globally).
        parser = argparse.ArgumentParser(prog="vrx")
        train.register(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["train", "--run", str(run.path), "--epochs", "15", "--hidden", "8,8",
                                  "--input-proj", "8", "--edge-dim", "4", "--batch-size", "8",
                                  "--test-fraction", "0.3"])
        assert args.func(args) == 0, "vrx train failed on the tiny run"
    return run.path


@pytest.fixture(scope="session")
def vrx_run(toy_world, tmp_path_factory):
    """A tiny complete run folder (run.json, concepts/, graphs/, grn/), built once per session."""
    return build_tiny_run(toy_world, tmp_path_factory.mktemp("vrx_run"))
