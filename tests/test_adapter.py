"""ClassifierAdapter on a tiny CNN defined here: preprocessing, logits, layers, gradients, classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vrx.errors import ConfigError, InvalidImageError, ModelSpecError, UnknownClassError
from vrx.models import ClassifierAdapter, to_tensor

CLASSES = ("fire_engine", "ambulance", "school bus")
MEAN = (0.4, 0.5, 0.6)
STD = (0.2, 0.25, 0.3)


class CountingHead(nn.Module):
    """Non-linear head (so finite differences are a real check) that counts its calls."""

    def __init__(self, channels: int, n_classes: int):
        super().__init__()
        self.mix = nn.Conv2d(channels, 8, 1)
        self.fc = nn.Linear(8, n_classes)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(torch.tanh(self.mix(x)).mean(dim=(2, 3)))


class TinyCNN(nn.Module):
    def __init__(self, n_classes: int = 3, seed: int = 0):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.Tanh())
        self.shared = nn.Softplus()  # one module used twice in forward
        self.pair = PairOutput()
        self.unused = nn.Linear(2, 2)
        self.head = CountingHead(6, n_classes)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.shared(x) - self.shared(torch.zeros_like(x))
        x = self.features(x)
        x, _ = self.pair(x)
        return self.head(x)


class PairOutput(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


def make_adapter(model: nn.Module | None = None, **kw) -> ClassifierAdapter:
    args = dict(input_size=(16, 16), mean=MEAN, std=STD, bottleneck="features.3",
                class_names=CLASSES, name="tiny", batch_size=4)
    args.update(kw)
    return ClassifierAdapter(model or TinyCNN(), **args)


def rand_images(n: int, h: int = 20, w: int = 24, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


# ---- preprocessing ---------------------------------------------------------------------------


def test_preprocess_resizes_and_normalises_constant_image():
    a = make_adapter()
    x = torch.full((2, 3, 30, 11), 0.7)
    out = a.preprocess(x)
    assert out.shape == (2, 3, 16, 16)
    expected = (0.7 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(out[0, :, 5, 5], expected, atol=1e-6)


def test_fill_value_becomes_zero():
    a = make_adapter()
    assert torch.allclose(a.fill_value, torch.tensor(MEAN))
    out = a.preprocess(a.fill_value.view(1, 3, 1, 1).expand(1, 3, 9, 9))
    assert out.abs().max() < 1e-6


def test_to_tensor_numpy_and_lists():
    hwc = np.zeros((5, 7, 3), np.uint8)
    hwc[..., 0] = 255
    t = to_tensor(hwc)
    assert t.shape == (1, 3, 5, 7) and t.dtype == torch.float32
    assert t[0, 0].min() == 1.0 and t[0, 1].max() == 0.0
    grey = to_tensor(np.full((4, 4), 0.25, np.float32))
    assert grey.shape == (1, 3, 4, 4) and torch.allclose(grey, torch.tensor(0.25))
    both = to_tensor([hwc, np.ones((9, 9, 3), np.float32)], size=(6, 6))
    assert both.shape == (2, 3, 6, 6)
    with pytest.raises(InvalidImageError, match="differ in shape"):
        to_tensor([hwc, np.ones((9, 9, 3), np.float32)])
    with pytest.raises(InvalidImageError, match="alpha"):
        to_tensor(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(InvalidImageError, match="channels last"):
        to_tensor(np.zeros((3, 8, 8), np.float32))


def test_adapter_accepts_mixed_size_list():
    a = make_adapter()
    imgs = [np.random.default_rng(0).random((20, 30, 3)).astype(np.float32),
            np.random.default_rng(1).random((40, 12, 3)).astype(np.float32)]
    assert a.logits(imgs).shape == (2, 3)


@pytest.mark.parametrize("bad, message", [
    (torch.rand(3, 8), "batch"),
    (torch.rand(1, 4, 8, 8), "3 channels"),
    (torch.rand(2, 3, 8, 8) * 255, "divide by 255"),
    (torch.full((1, 3, 4, 4), float("nan")), "NaN"),
    (torch.zeros(0, 3, 8, 8), "empty"),
    (torch.zeros(1, 3, 8, 8, dtype=torch.int64), "dtype"),
    ("image.png", "cannot use a str"),
])
def test_bad_images_rejected(bad, message):
    a = make_adapter()
    with pytest.raises(InvalidImageError, match=message):
        a.logits(bad)


# ---- outputs ---------------------------------------------------------------------------------


def test_logits_batched_equal_unbatched_and_manual():
    model = TinyCNN()
    a = make_adapter(model)
    x = rand_images(7)
    whole = a.logits(x, batch_size=100)
    parts = a.logits(x, batch_size=2)
    assert whole.shape == (7, 3)
    assert torch.allclose(whole, parts, atol=1e-6)
    with torch.no_grad():
        manual = model(a.preprocess(x))
    assert torch.allclose(whole, manual, atol=1e-6)
    assert not whole.is_inference()  # usable in autograd later (e.g. as a distillation target)
    assert torch.equal(a.logits(x), whole)  # deterministic


def test_predict_and_probabilities():
    a = make_adapter()
    preds = a.predict(rand_images(2), top=2)
    assert len(preds) == 2 and all(len(p) == 2 for p in preds)
    assert preds[0][0].probability >= preds[0][1].probability
    assert preds[0][0].class_name == CLASSES[preds[0][0].class_id]
    assert torch.allclose(a.probabilities(rand_images(3)).sum(1), torch.ones(3))


def test_activations_match_manual_forward_and_skip_head():
    model = TinyCNN()
    a = make_adapter(model)
    x = rand_images(5)
    a.layer_call_counts()  # the one-off probe runs the head once; count from here on
    calls = model.head.calls
    acts = a.activations(x, batch_size=2)
    assert model.head.calls == calls  # forward stopped at the bottleneck
    with torch.no_grad():
        z = a.preprocess(x)
        manual = model.features(model.shared(z) - model.shared(torch.zeros_like(z)))
    assert acts.shape == (5, 6, 8, 8)
    assert torch.allclose(acts, manual, atol=1e-6)
    early = a.activations(x, layer="features.1")
    assert early.shape == (5, 4, 16, 16)
    a.logits(x, batch_size=2)
    assert model.head.calls == calls + 3
    assert no_hooks(model)


def test_layer_errors_and_hooks_removed():
    model = TinyCNN()
    a = make_adapter(model)
    x = rand_images(2)
    with pytest.raises(ModelSpecError, match="runs 2 times"):
        a.activations(x, layer="shared")
    with pytest.raises(ModelSpecError, match="runs more than once"):
        a.bottleneck_gradients(x, 0, layer="shared")
    with pytest.raises(ModelSpecError, match="never runs"):
        a.activations(x, layer="unused")
    with pytest.raises(ModelSpecError, match="not a tensor"):
        a.activations(x, layer="pair")
    with pytest.raises(ModelSpecError, match="did you mean 'features.3'"):
        a.activations(x, layer="feature.3")
    with pytest.raises(ModelSpecError, match="no layer"):
        make_adapter(bottleneck="nope")
    assert no_hooks(model)
    assert "features.3" in a.hookable_layers() and "shared" not in a.hookable_layers()
    assert torch.isfinite(a.activations(x)).all()  # still usable after the errors


def test_wrong_number_of_logits():
    a = make_adapter(TinyCNN(n_classes=5))
    with pytest.raises(ModelSpecError, match="N×3"):
        a.logits(rand_images(1))


# ---- gradients -------------------------------------------------------------------------------


def _logits_with_offset(a: ClassifierAdapter, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    handle = a.layer_module().register_forward_hook(lambda _m, _i, out: out + delta)
    try:
        return a.logits(x)
    finally:
        handle.remove()


def test_gradient_matches_finite_difference():
    a = make_adapter()
    x = rand_images(3)
    target = [0, "ambulance", 2]
    acts, grads = a.bottleneck_gradients(x, target, batch_size=2)
    assert acts.shape == grads.shape == (3, 6, 8, 8)
    direction = torch.randn(acts.shape, generator=torch.Generator().manual_seed(3))
    eps = 1e-3
    up = _logits_with_offset(a, x, eps * direction)
    down = _logits_with_offset(a, x, -eps * direction)
    for i, t in enumerate([0, 1, 2]):
        fd = (up[i, t] - down[i, t]) / (2 * eps)
        analytic = (grads[i] * direction[i]).sum()
        assert torch.allclose(fd, analytic, rtol=2e-2, atol=2e-3), (i, float(fd), float(analytic))
    assert torch.allclose(acts, a.activations(x), atol=1e-6)


def test_layer_gradients_targets_and_logits():
    model = TinyCNN()
    a = make_adapter(model)
    x = rand_images(4)
    by_name = a.layer_gradients(x, "School_Bus")
    by_id = a.layer_gradients(x, torch.tensor(2))
    assert torch.allclose(by_name.gradients, by_id.gradients)
    assert torch.allclose(by_name.logits, a.logits(x), atol=1e-6)
    other = a.layer_gradients(x, 0)
    assert not torch.allclose(other.gradients, by_id.gradients)
    with pytest.raises(ConfigError, match="2 targets given for 4 images"):
        a.layer_gradients(x, [0, 1])
    # Frozen weights and an enclosing inference_mode still give gradients.
    model.requires_grad_(False)
    with torch.inference_mode():
        frozen = a.layer_gradients(x, 2)
    assert torch.allclose(frozen.gradients, by_id.gradients, atol=1e-6)
    assert no_hooks(model)


def test_captum_gradcam_on_forward_module():
    from captum.attr import LayerGradCam

    a = make_adapter()
    x = rand_images(2)
    cam = LayerGradCam(a.forward_module, a.layer_module()).attribute(x, target=1)
    assert cam.shape == (2, 1, 8, 8)
    # Grad-CAM is the channel-weighted sum of activations with spatially averaged gradients.
    acts, grads = a.bottleneck_gradients(x, 1)
    manual = (grads.mean(dim=(2, 3), keepdim=True) * acts).sum(1, keepdim=True)
    assert torch.allclose(cam.detach(), manual, atol=1e-5)
    # vrx's Grad-CAM comes from the adapter's one gradient path, bit for bit Captum's.
    from vrx.concepts.gradcam import gradcam

    relu = LayerGradCam(a.forward_module, a.layer_module()).attribute(x, target=1, relu_attributions=True)
    assert torch.equal(gradcam(a, x, 1), relu[:, 0].detach())


def test_model_is_left_as_it_was_found():
    from captum.attr import LayerGradCam

    model = TinyCNN()
    model.features[0].eval()  # mixed flags: the rest of the model is in training mode
    before = {n: m.training for n, m in model.named_modules()}
    a = make_adapter(model)
    x = rand_images(3)
    a.logits(x)
    a.activations(x, layer="features.1")
    a.layer_gradients(x, 1)
    LayerGradCam(a.forward_module, a.layer_module()).attribute(x, target=1)
    assert {n: m.training for n, m in model.named_modules()} == before
    with a.evaluating() as m:
        assert m is model and not any(s.training for s in model.modules())
    assert {n: m.training for n, m in model.named_modules()} == before
    assert all(p.device.type == "cpu" for p in model.parameters()) and no_hooks(model)


def test_importing_vrx_models_imports_no_torch():
    import subprocess
    import sys

    probe = ("import sys, vrx.models as m; print('torch' in sys.modules, m.DEFAULT_THREADS); "
             "from vrx.models import ClassifierAdapter, load, to_tensor; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "1", "True"], out.stdout + out.stderr


# ---- classes and identity --------------------------------------------------------------------


def test_class_lookup():
    a = make_adapter(aliases={"fire truck": 0, "bus": 2})
    assert a.num_classes == 3
    assert a.class_id("fire engine") == a.class_id("Fire-Engine") == a.class_id(0) == 0
    assert a.class_id("school_bus") == 2 and a.class_id("bus") == 2 and a.class_id("fire truck") == 0
    assert a.class_id("1") == 1 and a.class_id(np.int64(1)) == 1
    assert a.class_name(2) == "school bus"
    with pytest.raises(UnknownClassError, match="did you mean 'ambulance'"):
        a.class_id("ambulence")
    with pytest.raises(UnknownClassError, match="out of range"):
        a.class_id(3)
    with pytest.raises(UnknownClassError):
        a.class_name(-1)
    with pytest.raises(ConfigError, match="unique"):
        make_adapter(class_names=["a", "Fire engine", "fire_engine"])


def test_model_id_stable_and_weight_sensitive():
    a1, a2 = make_adapter(TinyCNN(seed=0)), make_adapter(TinyCNN(seed=0))
    assert a1.model_id == a2.model_id and a1.model_id.startswith("tiny-")
    assert make_adapter(TinyCNN(seed=1)).model_id != a1.model_id
    assert make_adapter(TinyCNN(seed=0), mean=0.5).model_id != a1.model_id


def test_constructor_validation_and_replace():
    with pytest.raises(ConfigError, match="std must be positive"):
        make_adapter(std=0)
    with pytest.raises(ConfigError, match="3 values"):
        make_adapter(mean=(0.1, 0.2))
    with pytest.raises(ConfigError, match="input_size"):
        make_adapter(input_size="big")
    with pytest.raises(ModelSpecError, match="not a torch.nn.Module"):
        ClassifierAdapter(lambda x: x, input_size=8, mean=0, std=1, bottleneck="", class_names=["a"])
    a = make_adapter()
    b = a.replace(bottleneck="features.1", batch_size=1)
    assert b.model is a.model and b.bottleneck == "features.1" and a.bottleneck == "features.3"
    assert b.logits(rand_images(2)).shape == (2, 3)
    assert a.device == torch.device("cpu") and a.logits(rand_images(1)).device.type == "cpu"


def test_every_class_gradcam_from_one_forward_is_each_class_gradcam(toy_adapter):
    from vrx.concepts.gradcam import class_foreground, class_foregrounds

    image = np.random.default_rng(3).random((128, 128, 3)).astype(np.float32)
    acts, grads = toy_adapter.class_gradients(image, [0, 1, 2])
    for k in range(3):
        one = toy_adapter.layer_gradients(image, k)
        torch.testing.assert_close(acts, one.activations, rtol=0, atol=0)
        torch.testing.assert_close(grads[k:k + 1], one.gradients, rtol=1e-6, atol=1e-7)
    masks = class_foregrounds(toy_adapter, image, [2, 0], 0.3)
    assert np.array_equal(masks[0], class_foreground(toy_adapter, image, 2, 0.3))
    assert np.array_equal(masks[1], class_foreground(toy_adapter, image, 0, 0.3))
    assert not np.array_equal(masks[0], masks[1])


def test_class_gradients_takes_one_image(toy_adapter):
    from vrx.errors import InvalidImageError

    with pytest.raises(InvalidImageError, match="takes one image, got 2"):
        toy_adapter.class_gradients(torch.zeros(2, 3, 128, 128), [0])
