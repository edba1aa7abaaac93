"""The model zoo: EfficientNet-Lite0 on real photos, python: and toy: specs, spec errors, the CLI."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import types

import numpy as np
import pytest
import torch
from PIL import Image

from vrx.errors import ModelSpecError, UnknownClassError
from vrx.models import ClassifierAdapter, load, to_tensor

MODEL_FILE = textwrap.dedent('''
    import torch
    from torch import nn

    def build():
        g = torch.Generator().manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                              nn.Flatten(), nn.Linear(4, 3))
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        return model

    def not_a_model():
        return 42

    def broken():
        raise RuntimeError("weights file gone")
''')

OPTIONS = dict(input_size=8, mean=0.5, std=0.25, bottleneck="1", class_names=["cat", "dog", "bird"])


# ---- EfficientNet-Lite0 ----------------------------------------------------------------------


def test_efficientnet_classifies_real_photos(effnet, photos):
    probs = effnet.probabilities([photos["chelsea"], photos["coffee"]])
    top = probs.argmax(1).tolist()
    assert top == [285, 967]  # Egyptian cat (Egyptian Mau), espresso
    assert probs[0, 285] > 0.5 and probs[1, 967] > 0.5
    assert effnet.class_name(285) == "Egyptian Mau" and effnet.class_name(967) == "espresso"


def test_efficientnet_class_names_are_unique(effnet):
    names = effnet.class_names
    assert len(names) == 1000 and len(set(names)) == 1000
    assert effnet.class_id("espresso") == 967
    assert effnet.class_id("fire engine") == effnet.class_id("fire_truck") == 555  # WordNet alias
    with pytest.raises(UnknownClassError, match=r"missile \(\d+\)"):
        effnet.class_id("missile")  # two ImageNet classes share this name


def test_efficientnet_bottleneck_gradient_matches_finite_difference(effnet, photos):
    x = to_tensor(photos["chelsea"], size=effnet.input_size)
    acts, grads = effnet.bottleneck_gradients(x, 285)
    assert acts.shape == (1, 320, 7, 7) and grads.shape == acts.shape
    direction = torch.randn(acts.shape, generator=torch.Generator().manual_seed(0))
    eps = 1e-2
    # One forward of two copies: +eps·direction added to the first, -eps·direction to the second.
    offset = torch.cat([eps * direction, -eps * direction])
    hook = effnet.layer_module().register_forward_hook(lambda _m, _i, o: o + offset)
    try:
        up, down = effnet.logits(torch.cat([x, x]))[:, 285]
    finally:
        hook.remove()
    fd = (up - down) / (2 * eps)
    analytic = (grads * direction).sum()
    # Tolerance covers float32 rounding and the few ReLU6 units that switch within ±eps.
    assert abs(float(fd - analytic)) <= 0.05 * abs(float(analytic)) + 1e-3, (float(fd), float(analytic))


def test_efficientnet_cached_model_fresh_adapter(effnet):
    other = load("efficientnet-lite0", bottleneck="_bn1", batch_size=4)
    assert other is not effnet and other.model is effnet.model  # weights loaded once per process
    assert other.bottleneck == "_bn1" and effnet.bottleneck == "_blocks.15"
    assert other.model_id == effnet.model_id
    with pytest.raises(ModelSpecError, match="runs 2 times.*'_bn0', '_bn1'"):
        other.activations(torch.zeros(1, 3, 32, 32), layer="_swish")
    with pytest.raises(ModelSpecError, match="fixed"):
        load("efficientnet-lite0", mean=0.5)


# ---- python: specs ---------------------------------------------------------------------------


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "my_models.py"
    path.write_text(MODEL_FILE)
    return path


def test_python_spec_from_file_and_module(model_file, monkeypatch):
    a = load(f"python:{model_file}:build", **OPTIONS)
    assert isinstance(a, ClassifierAdapter) and a.name == "build"
    assert a.input_size == (8, 8) and a.mean == (0.5, 0.5, 0.5) and a.class_id("dog") == 1
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    assert a.logits(x).shape == (2, 3) and a.activations(x).shape == (2, 4, 8, 8)
    monkeypatch.syspath_prepend(str(model_file.parent))
    b = load("python:my_models:build", **OPTIONS)
    assert torch.allclose(a.logits(x), b.logits(x)) and a.model_id == b.model_id


def test_python_spec_class_names_from_files(model_file, tmp_path):
    txt = tmp_path / "labels.txt"
    txt.write_text("cat\ndog\nbird\n\n")
    js = tmp_path / "labels.json"
    js.write_text(json.dumps({"0": "cat", "2": "bird", "1": "dog"}))
    for source in (txt, str(js)):
        a = load(f"python:{model_file}:build", **{**OPTIONS, "class_names": source})
        assert a.class_names == ("cat", "dog", "bird")
    txt.write_text("cat\n\ndog\nbird\n")
    with pytest.raises(ModelSpecError, match="blank line"):
        load(f"python:{model_file}:build", **{**OPTIONS, "class_names": txt})
    with pytest.raises(ModelSpecError, match="does not exist"):
        load(f"python:{model_file}:build", **{**OPTIONS, "class_names": tmp_path / "none.txt"})


def test_python_spec_errors(model_file):
    with pytest.raises(ModelSpecError, match=r"needs input_size, mean, std, bottleneck, class_names"):
        load(f"python:{model_file}:build")
    with pytest.raises(ModelSpecError, match="needs bottleneck"):
        load(f"python:{model_file}:build", **{k: v for k, v in OPTIONS.items() if k != "bottleneck"})
    with pytest.raises(ModelSpecError, match="cannot import module 'no_such_module_xyz'"):
        load("python:no_such_module_xyz:build", **OPTIONS)
    with pytest.raises(ModelSpecError, match=r"no function 'nope'.*'build'"):
        load(f"python:{model_file}:nope", **OPTIONS)
    with pytest.raises(ModelSpecError, match="gave a int"):
        load(f"python:{model_file}:not_a_model", **OPTIONS)
    with pytest.raises(ModelSpecError, match="weights file gone"):
        load(f"python:{model_file}:broken", **OPTIONS)
    with pytest.raises(ModelSpecError, match="python:MODULE:FUNCTION"):
        load("python:justamodule", **OPTIONS)
    with pytest.raises(ModelSpecError, match="valid model specs"):
        load("resnet50")
    with pytest.raises(ModelSpecError, match="unknown model option"):
        load("efficientnet-lite0", colour="red")


def test_module_and_adapter_accepted_directly(model_file):
    module = load(f"python:{model_file}:build", **OPTIONS).model
    a = load(module, **OPTIONS)
    assert load(a) is a
    assert load(a, batch_size=1).batch_size == 1


# ---- toy: specs (the loader is faked here; vrx.models.toycnn has its own tests) ---------------


def test_toy_spec_uses_load_toy_model_contract(model_file, tmp_path, monkeypatch):
    folder = tmp_path / "toy_model"
    folder.mkdir()
    seen = {}

    def fake_load_toy_model(path):
        seen["path"] = path
        meta = {k: v for k, v in OPTIONS.items()}
        meta["class_names"] = ["fire_engine", "ambulance", "school_bus"]
        return load(f"python:{model_file}:build", **OPTIONS).model, meta

    monkeypatch.setitem(sys.modules, "vrx.models.toycnn",
                        types.SimpleNamespace(load_toy_model=fake_load_toy_model))
    a = load(f"toy:{folder}", batch_size=2)
    assert seen["path"] == folder and a.name == "toy-toy_model" and a.batch_size == 2
    assert a.class_id("school bus") == 2 and a.bottleneck == "1"
    with pytest.raises(ModelSpecError, match="does not exist"):
        load(f"toy:{tmp_path / 'missing'}")


# ---- CLI -------------------------------------------------------------------------------------


def run_classify(argv: list[str]) -> int:
    from vrx.cli import classify

    parser = argparse.ArgumentParser()
    classify.register(parser.add_subparsers())
    args = parser.parse_args(["classify", *argv])
    return args.func(args)


def test_cli_classify_efficientnet(photos, tmp_path, capsys):
    path = tmp_path / "chelsea.png"
    Image.fromarray((photos["chelsea"] * 255).round().astype(np.uint8)).save(path)
    (tmp_path / "bad.png").write_bytes(b"nope")
    assert run_classify([str(path), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "chelsea.png" in out and "Egyptian Mau (285)" in out.splitlines()[1]
    assert len(out.strip().splitlines()) == 4
    assert run_classify([str(path), str(tmp_path / "bad.png"), "--json", "--top", "1"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)[0]["top"][0]["class_id"] == 285
    assert "bad.png" in captured.err


def test_cli_classify_python_spec(model_file, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n")
    img = tmp_path / "x.png"
    Image.fromarray(np.full((10, 10, 3), 200, np.uint8)).save(img)
    rc = run_classify([str(img), "--model", f"python:{model_file}:build", "--input-size", "8",
                       "--mean", "0.5", "--std", "0.25", "--bottleneck", "1", "--labels", str(labels),
                       "--top", "3"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and {ln.split()[-2] for ln in lines[1:]} == {"cat", "dog", "bird"}
