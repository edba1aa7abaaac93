"""Gradient, Grad-CAM and occlusion maps: shapes, determinism, known answers, completeness, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vrx.attribution import get
from vrx.errors import ConfigError, InvalidImageError, ModelSpecError, UnknownClassError
from vrx.models.adapter import ClassifierAdapter
from vrx.models.toycnn import ToyCNN

METHODS = ["saliency", "sensitivity", "grad_input", "integrated_gradients", "smoothgrad", "gradcam", "occlusion"]
GRADIENT_METHODS = ["saliency", "sensitivity", "grad_input", "integrated_gradients", "smoothgrad", "gradcam"]
SIGNED = ["grad_input", "integrated_gradients", "occlusion"]
FAST = {"integrated_gradients": {"n_steps": 8}, "smoothgrad": {"nt_samples": 6}}  # fewer passes, same code
SIZE = 32
ROWS, COLS = (4, 12), (18, 28)  # the region RegionNet reads, in its 32 × 32 input; not symmetric on purpose


class RegionNet(nn.Module):
    """Logits from the pixels in ROWS × COLS only: masked input, 1×1 conv, ReLU, mean, linear.

    The conv weights are positive and class 0's head weights too, so brighter region pixels raise
    logit 0 and lower logit 1; nothing outside the region reaches the conv.
    """

    def __init__(self) -> None:
        super().__init__()
        mask = torch.zeros(1, 1, SIZE, SIZE)
        mask[..., ROWS[0]:ROWS[1], COLS[0]:COLS[1]] = 1
        self.register_buffer("mask", mask)
        self.conv = nn.Conv2d(3, 4, 1, bias=False)
        self.relu = nn.ReLU()
        self.head = nn.Linear(4, 2)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.conv.weight.copy_(torch.rand(4, 3, 1, 1, generator=g) + 0.1)
            self.head.weight.copy_(torch.tensor([[1.0, 0.5, 0.8, 0.3], [-1.0, -0.5, -0.8, -0.3]]))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.conv(x * self.mask)).mean((2, 3)))


@pytest.fixture(scope="module")
def region() -> ClassifierAdapter:
    model = RegionNet()
    return ClassifierAdapter(model, input_size=SIZE, mean=0.5, std=0.25, bottleneck="relu",
                             class_names=["bright", "dark"], name="region")


def region_image(height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random image whose (scaled) region is bright (above the fill value 0.5), and that region's mask."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, height, width, generator=g)
    inside = torch.zeros(height, width, dtype=torch.bool)
    r0, r1 = ROWS[0] * height // SIZE, ROWS[1] * height // SIZE
    c0, c1 = COLS[0] * width // SIZE, COLS[1] * width // SIZE
    inside[r0:r1, c0:c1] = True
    x[..., inside] = 0.6 + 0.4 * torch.rand(1, 3, int(inside.sum()), generator=g)
    return x, inside


def make(adapter: ClassifierAdapter, name: str, **cfg):
    return get(name)(adapter, **{**FAST.get(name, {}), **cfg})


def argmax_pixel(m: torch.Tensor) -> tuple[int, int]:
    i = int(m.flatten().argmax())
    return divmod(i, m.shape[-1])


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("size", [(SIZE, SIZE), (48, 64)])
def test_maximum_lies_in_the_region_the_model_reads(region, name, size):
    x, inside = region_image(*size)
    maps = make(region, name).attribute(torch.cat([x, x.flip(0)]), target=0)
    assert maps.shape == (2, *size) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all()
    assert inside[argmax_pixel(maps[0])], f"{name}: maximum at {argmax_pixel(maps[0])}, outside the region"
    if name in SIGNED:  # class 1 falls as the region brightens: its strongest negative evidence is there
        low = make(region, name).attribute(x, target="dark")[0]
        assert inside[argmax_pixel(-low)]


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_gradient_maps_are_zero_where_the_model_does_not_look(region, name):
    x, inside = region_image(SIZE, SIZE, seed=1)
    m = make(region, name).attribute(x, target=0)[0]
    assert m[~inside].abs().max() == 0
    assert m[inside].abs().max() > 0


@pytest.mark.parametrize("name", METHODS)
def test_two_calls_give_the_same_maps_and_config_rebuilds_the_method(region, name):
    x = torch.rand(3, 3, 40, 36, generator=torch.Generator().manual_seed(2))
    method = make(region, name)
    first = method.attribute(x, target=[0, 1, 0])
    assert torch.equal(first, method.attribute(x, target=[0, 1, 0]))
    rebuilt = get(name)(region, **method.config())
    assert torch.equal(first, rebuilt.attribute(x, target=[0, 1, 0]))


def test_smoothgrad_noise_depends_on_the_seed_not_on_the_batch_size(region):
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    base = make(region, "smoothgrad", seed=0).attribute(x, 0)
    assert torch.allclose(base, make(region, "smoothgrad", seed=0, batch_size=2).attribute(x, 0), atol=1e-7)
    assert not torch.allclose(base, make(region, "smoothgrad", seed=1).attribute(x, 0))
    noiseless = make(region, "smoothgrad", stdev=0.0).attribute(x, 0)
    assert torch.allclose(noiseless, make(region, "saliency").attribute(x, 0), atol=1e-7)


def test_smoothgrad_is_the_mean_absolute_gradient_over_its_noisy_copies_then_the_channel_max():
    toy = biased_toy()
    x = torch.rand(1, 3, 20, 24, generator=torch.Generator().manual_seed(6))
    noise = torch.randn((5, 3, 20, 24), generator=torch.Generator().manual_seed(7)) * 0.2
    noisy = (x + noise).requires_grad_()
    toy.forward_module(noisy)[:, 1].sum().backward()
    expected = noisy.grad.abs().mean(0).amax(0)
    got = get("smoothgrad")(toy, nt_samples=5, stdev=0.2, seed=7).attribute(x, 1)[0]
    assert torch.allclose(got, expected, atol=1e-6)


def test_sensitivity_and_saliency_are_reductions_of_the_same_gradient(region):
    x, _ = region_image(SIZE, SIZE, seed=4)
    xr = x.clone().requires_grad_()
    region.forward_module(xr)[0, 0].backward()
    g = xr.grad[0]
    assert torch.allclose(make(region, "saliency").attribute(x, 0)[0], g.abs().amax(0))
    assert torch.allclose(make(region, "sensitivity").attribute(x, 0)[0], g.pow(2).sum(0))
    # gradient × the *normalised* input: (x - mean) · d/dx, which at the model's size is x̂ · d/dx̂
    assert torch.allclose(make(region, "grad_input").attribute(x, 0)[0], ((x[0] - 0.5) * g).sum(0), atol=1e-7)


def biased_toy() -> ClassifierAdapter:
    """A small toy CNN with BatchNorm statistics and biases: a non-linear path from the baseline."""
    from test_lrp import toy_adapter

    return toy_adapter(biased=True)


def test_integrated_gradients_completeness():
    adapter = biased_toy()
    x = torch.rand(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(10))
    baseline = adapter.fill_value.view(1, 3, 1, 1).expand_as(x)
    delta = adapter.logits(x)[:, 0] - adapter.logits(baseline)[:, 0]
    total = get("integrated_gradients")(adapter).attribute(x, 0).sum((1, 2))  # default 50 steps
    # ReLUs make the integrand piecewise constant along the path, so the 50-point quadrature is
    # not exact: 0.4-1.8 % of |delta| was measured on such toy CNNs; 3 % leaves room for rounding.
    assert torch.all((total - delta).abs() <= 0.03 * delta.abs())
    assert get("integrated_gradients")(adapter).attribute(baseline[:1], 0).abs().max() == 0


def test_occlusion_window_and_stride_scale_with_the_image(region):
    occ = get("occlusion")(region)
    assert occ.shapes(224, 224) == ((28, 28), (14, 14))
    assert occ.shapes(48, 64) == ((6, 8), (3, 4))
    assert get("occlusion")(region, window=1.0, stride=1.0).shapes(10, 20) == ((10, 20), (10, 20))
    # one window over the whole image: every pixel gets logit(x) - logit(fill image)
    toy = biased_toy()  # (RegionNet gives a black and a fill-coloured image the same logit)
    x = torch.rand(1, 3, 20, 24, generator=torch.Generator().manual_seed(5))
    whole = get("occlusion")(toy, window=1.0).attribute(x, 2)[0]
    expected = toy.logits(x)[0, 2] - toy.logits(toy.fill_value.view(1, 3, 1, 1).expand_as(x))[0, 2]
    assert torch.allclose(whole, expected.expand_as(whole), atol=1e-6)


def test_gradcam_follows_its_layer_and_relu_setting(region):
    x, inside = region_image(SIZE, SIZE)
    with_relu = get("gradcam")(region).attribute(x, "dark")[0]
    raw = get("gradcam")(region, relu=False, layer="conv").attribute(x, "dark")[0]
    assert get("gradcam")(region).signed is False and get("gradcam")(region, relu=False).signed is True
    assert with_relu.min() >= 0 and raw[inside].max() < 0  # class "dark": evidence against, cut by the ReLU
    assert with_relu.abs().max() == 0


# ---- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", METHODS)
def test_bad_images_and_targets_raise_vrx_errors(region, name):
    method = make(region, name)
    with pytest.raises(InvalidImageError, match="N×3×H×W|channel|shape"):
        method.attribute(torch.rand(2, 3, 8, 8, 2), target=0)
    with pytest.raises(InvalidImageError):
        method.attribute(torch.rand(1, 2, 8, 8), target=0)  # (one grey channel would be expanded)
    with pytest.raises(InvalidImageError):
        method.attribute(torch.rand(1, 3, 8, 8) + 1.5, target=0)
    with pytest.raises(UnknownClassError):
        method.attribute(torch.rand(1, 3, 8, 8), target=2)
    with pytest.raises(UnknownClassError):
        method.attribute(torch.rand(1, 3, 8, 8), target="purple")


class Reused(nn.Module):
    """Runs one ReLU module twice (Grad-CAM cannot pick one of its outputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.act = nn.Conv2d(3, 2, 1), nn.Conv2d(2, 2, 1), nn.ReLU()
        self.head = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.b(self.act(self.a(x)))).mean((2, 3)))


def test_gradcam_layer_errors(region):
    with pytest.raises(ModelSpecError, match="no layer 'conv2'.*'conv'"):
        get("gradcam")(region, layer="conv2")
    reused = ClassifierAdapter(Reused(), input_size=8, mean=0.5, std=0.25, bottleneck="b",
                               class_names=["x", "y"])
    with pytest.raises(ModelSpecError, match="'act'.*runs 2 times"):
        get("gradcam")(reused, layer="act")


@pytest.mark.parametrize("name, cfg, word", [
    ("integrated_gradients", {"n_steps": 0}, "n_steps"),
    ("integrated_gradients", {"n_steps": 2.5}, "n_steps"),
    ("smoothgrad", {"nt_samples": -1}, "nt_samples"),
    ("smoothgrad", {"stdev": -0.1}, "stdev"),
    ("smoothgrad", {"stdev": float("nan")}, "stdev"),
    ("occlusion", {"window": 0}, "window"),
    ("occlusion", {"window": 1.5}, "window"),
    ("occlusion", {"stride": 0.0}, "stride"),
    ("gradcam", {"relu": "yes"}, "relu"),
    ("saliency", {"batch_size": 0}, "batch_size"),
])
def test_bad_settings_raise_config_error(region, name, cfg, word):
    with pytest.raises(ConfigError, match=word):
        get(name)(region, **cfg)


def test_unknown_setting_is_a_type_error_naming_it(region):
    with pytest.raises(TypeError, match="n_step"):
        get("integrated_gradients")(region, n_step=10)


@pytest.mark.parametrize("name", METHODS)
def test_maps_are_the_same_inside_inference_mode_and_for_the_predicted_class(region, name):
    x, _ = region_image(SIZE, SIZE, seed=9)
    outside = make(region, name).attribute(x)  # target None: the predicted class, here "bright"
    with torch.inference_mode():
        inside = make(region, name).attribute(x, target="bright")
    assert int(region.logits(x).argmax()) == 0 and torch.equal(outside, inside)
