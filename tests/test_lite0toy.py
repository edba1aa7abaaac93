"""EfficientNet-Lite0 with a toyworld head (vrx.models.lite0toy): trained on frozen features, loaded by spec."""

from __future__ import annotations

import pytest
import torch

from vrx.errors import ModelSpecError


@pytest.fixture(scope="module")
def head_model(tmp_path_factory):
    from vrx.data.toyworld import render_dataset
    from vrx.models import load
    from vrx.models.lite0toy import train_lite0_head
    from vrx.runtime import threads

    root = tmp_path_factory.mktemp("lite0toy")
    render_dataset(root / "data", 6, seed=4, n_random=0, size=224, show_progress=False)
    with threads(torch_threads=1):
        metrics = train_lite0_head(root / "data", root / "model", load("efficientnet-lite0"), epochs=40, val_fraction=0.2, test_fraction=0.2)
    return root / "model", metrics


@pytest.mark.slow
def test_the_head_is_the_models_classifier(head_model):
    from vrx.data.images import load_image
    from vrx.models import load
    from vrx.models.lite0toy import POOLED
    from vrx.store import read_json

    folder, metrics = head_model
    adapter = load(f"lite0-toy:{folder}")
    assert list(adapter.class_names) == ["fire_engine", "ambulance", "school_bus"] == metrics["class_names"]
    assert adapter.bottleneck == "_blocks.15" and tuple(adapter.input_size) == (224, 224)
    assert metrics["n_train"] + metrics["n_val"] + metrics["n_test"] == 18
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["best_epoch"] >= 1
    image = load_image(read_json(folder / "split.json")["test"][0])
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    pooled = adapter.activations(x, layer=POOLED).flatten(1)
    head = adapter.model._fc
    torch.testing.assert_close(adapter.logits(x), head(pooled), rtol=1e-5, atol=1e-5)
    # The bundled ImageNet network is left as it was: its own head still has 1000 classes.
    assert load("efficientnet-lite0").logits(x).shape == (1, 1000)


def test_a_folder_without_a_head_is_named(tmp_path):
    from vrx.models import load

    with pytest.raises(ModelSpecError, match="has no head.safetensors"):
        load(f"lite0-toy:{tmp_path}")
