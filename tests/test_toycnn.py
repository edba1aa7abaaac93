"""The toy CNN: shapes, bottleneck, safetensors artifact, a tiny deterministic training run."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from vrx.data.toyworld import render_dataset
from vrx.errors import ArtifactError, ConfigError
from vrx.models.toycnn import ToyCNN, init_toy_cnn, load_toy_model, save_toy_model
from vrx.models.toytrain import split_indices, train_toy
from vrx.store import load_tensors

META = {"class_names": ["fire_engine", "ambulance", "school_bus"], "mean": [0.5, 0.4, 0.3],
        "std": [0.2, 0.25, 0.3]}


def _model(seed: int = 0) -> ToyCNN:
    return init_toy_cnn(ToyCNN(num_classes=3), torch.Generator().manual_seed(seed)).eval()


def test_forward_and_bottleneck_shapes():
    model = _model()
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    assert model(x).shape == (2, 3)
    layer = model.get_submodule(model.bottleneck)
    assert model.bottleneck == "features.3" and isinstance(layer[-1], nn.ReLU)
    seen = {}
    handle = layer.register_forward_hook(lambda m, i, o: seen.setdefault("a", o))
    try:
        model(x)
    finally:
        handle.remove()
    assert seen["a"].shape == (2, 64, 16, 16) and (seen["a"] >= 0).all()


def test_init_is_seeded_without_global_state():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a, b, c = _model(5), _model(5), _model(6)
    assert torch.equal(torch.random.get_rng_state(), state)  # global generator untouched
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not torch.equal(a.features[0][0].weight, c.features[0][0].weight)


def test_save_load_round_trip(tmp_path):
    model = _model(3)
    save_toy_model(tmp_path / "m", model, META)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    for key in ("arch", "kwargs", "class_names", "input_size", "mean", "std", "bottleneck"):
        assert key in config
    assert config["input_size"] == [128, 128] and config["bottleneck"] == "features.3"
    loaded, cfg = load_toy_model(tmp_path / "m")
    assert cfg["class_names"] == META["class_names"] and not loaded.training
    x = torch.rand(3, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_load_errors_name_the_folder(tmp_path):
    with pytest.raises(ArtifactError, match="nowhere"):
        load_toy_model(tmp_path / "nowhere")
    save_toy_model(tmp_path / "m", _model(), META)
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(ArtifactError, match="model.safetensors"):
        load_toy_model(tmp_path / "m")
    save_toy_model(tmp_path / "w", _model(), META)
    cfg = json.loads((tmp_path / "w" / "config.json").read_text())
    cfg["kwargs"]["widths"] = [8, 8, 8, 8, 8]  # no longer fits the stored weights
    (tmp_path / "w" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="do not fit"):
        load_toy_model(tmp_path / "w")
    (tmp_path / "w" / "config.json").write_text("{}")
    with pytest.raises(ArtifactError, match="missing keys"):
        load_toy_model(tmp_path / "w")
    with pytest.raises(ArtifactError, match="class_names"):
        save_toy_model(tmp_path / "x", _model(), {"mean": [0] * 3, "std": [1] * 3})


def test_split_is_stratified_and_seeded():
    import numpy as np
    labels = np.repeat([0, 1, 2], 20)
    tr, va, te = split_indices(labels, 0.2, 0.25, seed=1)
    assert len(set(tr) | set(va) | set(te)) == 60 and len(tr) + len(va) + len(te) == 60
    assert [int((labels[va] == c).sum()) for c in range(3)] == [4, 4, 4]
    assert [int((labels[te] == c).sum()) for c in range(3)] == [5, 5, 5]
    assert all(np.array_equal(a, b) for a, b in zip((tr, va, te), split_indices(labels, 0.2, 0.25, 1)))
    with pytest.raises(ConfigError):
        split_indices(labels, 0.6, 0.5, 0)


def test_tiny_training_run(tmp_path):
    render_dataset(tmp_path / "data", 6, seed=0, n_random=0)
    kwargs = dict(epochs=1, seed=4, batch_size=6, val_fraction=0.17, test_fraction=0.17, progress=False)
    threads = torch.get_num_threads()
    m = train_toy(tmp_path / "data", tmp_path / "m1", **kwargs)
    assert torch.get_num_threads() == threads == m["torch_threads"]  # training leaves them alone
    on_disk = json.loads((tmp_path / "m1" / "metrics.json").read_text())
    for key in ("val_accuracy", "test_accuracy", "n_train", "n_val", "n_test", "epochs", "seconds",
                "class_names"):
        assert key in on_disk
    assert on_disk["n_train"] + on_disk["n_val"] + on_disk["n_test"] == 18 and on_disk["n_test"] == 3
    assert on_disk["class_names"] == ["fire_engine", "ambulance", "school_bus"]
    assert 0.0 <= m["test_accuracy"] <= 1.0
    model, cfg = load_toy_model(tmp_path / "m1")
    assert len(cfg["mean"]) == 3 and all(0 < s < 1 for s in cfg["std"])
    # same seed, same data: the same weights
    train_toy(tmp_path / "data", tmp_path / "m2", **kwargs)
    w1, w2 = load_tensors(tmp_path / "m1" / "model.safetensors"), load_tensors(tmp_path / "m2" / "model.safetensors")
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)


def _layer_gradient(model: ToyCNN, layer: str, x: torch.Tensor) -> torch.Tensor:
    """Gradient of the class-0 logit summed over the batch with respect to ``layer``'s output."""
    seen = {}

    def keep(module, inputs, output) -> None:
        output.retain_grad()
        seen["a"] = output

    handle = model.get_submodule(layer).register_forward_hook(keep)
    try:
        model(x)[:, 0].sum().backward()
    finally:
        handle.remove()
    return seen["a"].grad


def test_class_gradient_at_the_bottleneck_depends_on_the_image():
    # TCAV needs this: at the last block the logit is a linear read-out, so the gradient is the
    # same for every image (and TCAV scores collapse to 0 or 1); at the bottleneck it is not.
    model = _model()
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(4))
    last = _layer_gradient(model, "features.4", x)
    assert torch.allclose(last[0], last[1])
    g = _layer_gradient(model, model.bottleneck, x)
    assert not torch.allclose(g[0], g[1], atol=1e-6)
