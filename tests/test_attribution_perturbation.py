"""Perturbation attributions (RISE, meaningful and extremal perturbation) and the inverse method.

The known-answer tests use a two-class network that reads one image region per class: class 0
is the mean of a texture detector over region A, class 1 over region B. Both regions hold the
same texture, so only the target decides which region a map must point at.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.transform import resize as sk_resize
from torch import nn

from vrx.attribution import get, method_names
from vrx.attribution.inverse import Inverse, _unpool, plan_steps
from vrx.attribution.extremal import ExtremalPerturbation, SmoothMask, blur_pyramid, perturb
from vrx.attribution.perturbation import MeaningfulPerturbation, gaussian_blur, total_variation
from vrx.attribution.rise import Rise, upsample_matrix
from vrx.errors import ConfigError, InvalidImageError, UnknownClassError
from vrx.models.adapter import ClassifierAdapter

SIZE = 64
REGION_A = (slice(8, 24), slice(24, 40))  # image pixels read by class 0
REGION_B = (slice(40, 56), slice(24, 40))  # image pixels read by class 1

# Small settings: the mechanics, not the papers' budgets.
TINY = {"rise": {"n_masks": 12}, "meaningful_perturbation": {"iterations": 2},
        "extremal_perturbation": {"iterations": 2}, "inverse": {"max_iter": 5}}
METHODS = sorted(TINY)


class RegionNet(nn.Module):
    """1×1 conv (channel mean) → ReLU → 2×2 max-pool → linear: class k averages region k."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flat = nn.Flatten()
        self.head = nn.Linear((SIZE // 2) ** 2, 2)
        with torch.no_grad():
            self.conv.weight.fill_(1 / 3)
            self.conv.bias.zero_()
            w = torch.zeros(2, SIZE // 2, SIZE // 2)
            for k, (rows, cols) in enumerate((REGION_A, REGION_B)):
                cells = w[k, rows.start // 2:rows.stop // 2, cols.start // 2:cols.stop // 2]
                cells.fill_(10.0 / cells.numel())
            self.head.weight.copy_(w.view(2, -1))
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(self.flat(self.pool(self.relu(self.conv(x)))))


@pytest.fixture(scope="module")
def region_adapter():
    return ClassifierAdapter(RegionNet(), input_size=SIZE, mean=0.5, std=0.25, bottleneck="conv",
                             class_names=["a", "b"], name="region")


@pytest.fixture(scope="module")
def region_image():
    """Mean-grey image with the same 8-px checkerboard in regions A and B."""
    x = torch.full((1, 3, SIZE, SIZE), 0.5)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    checker = torch.where((yy // 8 + xx // 8) % 2 == 0, 0.95, 0.05)
    for region in (REGION_A, REGION_B):
        x[0, :, region[0], region[1]] = checker[region]
    return x


def _images(n: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, *size, generator=torch.Generator().manual_seed(seed))


# ---- registry and the shared contract ---------------------------------------------------------


def test_methods_are_registered():
    names = method_names()
    for name in METHODS:
        assert name in names
        assert get(name).name == name and get(name).signed is False
    assert get("Extremal-Perturbation") is ExtremalPerturbation


@pytest.mark.parametrize("name", METHODS)
def test_maps_have_the_image_size(name, toy_adapter):
    method = get(name)(toy_adapter, **TINY[name])
    for images in (_images(2, (128, 128)), _images(1, (72, 100), seed=1)):
        maps = method.attribute(images, target=[1] * images.shape[0])
        assert maps.shape == (images.shape[0], *images.shape[-2:]) and maps.dtype == torch.float32
        assert torch.isfinite(maps).all() and maps.min() >= 0


@pytest.mark.parametrize("name", METHODS)
def test_config_rebuilds_the_same_method(name, toy_adapter):
    method = get(name)(toy_adapter, **TINY[name], seed=3)
    again = get(name)(toy_adapter, **method.config())
    assert again.config() == method.config() and method.config()["seed"] == 3


@pytest.mark.parametrize("name", METHODS)
def test_model_is_left_as_found(name):
    from vrx.models.toycnn import ToyCNN

    model = ToyCNN(num_classes=3, widths=(4, 4, 4, 4, 4)).train()
    adapter = ClassifierAdapter(model, input_size=32, mean=0.5, std=0.25, bottleneck=model.bottleneck,
                                class_names=list("abc"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    get(name)(adapter, **TINY[name]).attribute(_images(1, (32, 32)), 0)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN stats too


@pytest.mark.parametrize("name", METHODS)
def test_works_inside_inference_mode(name, toy_adapter):
    method = get(name)(toy_adapter, **TINY[name])
    images = _images(1, (128, 128))
    expected = method.attribute(images, 0)
    with torch.inference_mode():
        assert torch.allclose(method.attribute(images, 0), expected, atol=1e-6)


# ---- determinism -------------------------------------------------------------------------------


def test_rise_same_seed_same_map_other_seed_other_map(toy_adapter):
    images = _images(1, (128, 128))
    first = Rise(toy_adapter, n_masks=24, seed=5).attribute(images, 0)
    assert torch.equal(first, Rise(toy_adapter, n_masks=24, seed=5).attribute(images, 0))
    other = Rise(toy_adapter, n_masks=24, seed=6).attribute(images, 0)
    assert (first - other).abs().max() > 1e-3


def test_rise_does_not_depend_on_batch_size_or_batch_company(toy_adapter):
    images = _images(3, (128, 128))
    full = Rise(toy_adapter, n_masks=20, batch_size=16).attribute(images, [0, 1, 2])
    small = Rise(toy_adapter, n_masks=20, batch_size=3).attribute(images, [0, 1, 2])
    alone = Rise(toy_adapter, n_masks=20, batch_size=7).attribute(images[1:2], 1)
    assert torch.allclose(full, small, atol=1e-6) and torch.allclose(full[1:2], alone, atol=1e-6)


def test_meaningful_perturbation_is_seeded(toy_adapter):
    images = _images(2, (128, 128))
    first = MeaningfulPerturbation(toy_adapter, iterations=4, seed=1).attribute(images, 0)
    assert torch.equal(first, MeaningfulPerturbation(toy_adapter, iterations=4, seed=1).attribute(images, 0))
    other = MeaningfulPerturbation(toy_adapter, iterations=4, seed=2).attribute(images, 0)
    assert not torch.equal(first, other)  # another jitter sequence
    alone = MeaningfulPerturbation(toy_adapter, iterations=4, seed=1, batch_size=1).attribute(images[1:], 0)
    assert torch.allclose(first[1:], alone, atol=1e-5)


@pytest.mark.parametrize("name", ["extremal_perturbation", "inverse"])
def test_deterministic_methods_repeat_exactly(name, toy_adapter):
    images = _images(2, (128, 128))
    method = get(name)(toy_adapter, **TINY[name])
    assert torch.equal(method.attribute(images, [0, 2]), method.attribute(images, [0, 2]))


# ---- known answers: the region the model reads ------------------------------------------------


KNOWN = [
    ("rise", {"n_masks": 500}, (0, 1)),
    ("meaningful_perturbation", {"iterations": 100}, (0, 1)),
    ("meaningful_perturbation", {"iterations": 100, "game": "preservation"}, (0, 1)),
    ("extremal_perturbation", {"iterations": 300, "areas": 0.04}, (0, 1)),
    ("extremal_perturbation", {"iterations": 300, "areas": 0.04, "variant": "delete"}, (0,)),
    ("inverse", {}, (0, 1)),
]


@pytest.mark.parametrize("name, settings, targets", KNOWN, ids=[f"{k[0]}-{i}" for i, k in enumerate(KNOWN)])
def test_map_points_at_the_region_the_class_reads(name, settings, targets, region_adapter, region_image):
    assert region_adapter.logits(region_image)[0].tolist() == pytest.approx([9.0, 9.0])
    maps = get(name)(region_adapter, **settings).attribute(region_image.repeat(len(targets), 1, 1, 1),
                                                           list(targets))
    for sal, t in zip(maps, targets):
        read, other = (REGION_A, REGION_B) if t == 0 else (REGION_B, REGION_A)
        assert float(sal[read].max()) == pytest.approx(float(sal.max()), abs=1e-3), (t, "peak outside")
        assert float(sal[read].mean()) > float(sal[other].mean()) + 0.1, (t, sal[read].mean(), sal[other].mean())


def test_inverse_keeps_nothing_the_class_does_not_read(region_adapter, region_image):
    maps = Inverse(region_adapter).attribute(region_image.repeat(2, 1, 1, 1), [0, 1])
    outside_a = torch.ones(SIZE, SIZE, dtype=torch.bool)
    outside_a[REGION_A] = False
    assert maps[0][outside_a].abs().max() == 0 and maps[0].max() == 1
    # Inside A only the max-pool winners of the bright squares are needed: one pixel in four of
    # the bright half of the region.
    assert float((maps[0][REGION_A] > 0.5).float().mean()) == pytest.approx(1 / 8)


# ---- RISE internals ------------------------------------------------------------------------------


@pytest.mark.parametrize("s, n", [(7, 224), (7, 128), (5, 33), (2, 9)])
def test_upsampling_matches_scikit_image(s, n):
    up = (s + 1) * math.ceil(n / s)
    grid = (np.random.default_rng(s + n).random((s, s)) < 0.5).astype(np.float64)
    expected = sk_resize(grid, (up, up), order=1, mode="reflect", anti_aliasing=False)
    a = upsample_matrix(s, up).double().numpy()
    np.testing.assert_allclose(a @ grid @ a.T, expected, atol=1e-6)


def test_rise_masks_are_the_reference_generator(toy_adapter):
    rise = Rise(toy_adapter, n_masks=6, grid=7, p1=0.5, seed=2)
    grids, shifts = rise.mask_parameters()
    cell = math.ceil(128 / 7)
    masks = rise.masks()
    for i in range(6):
        up = sk_resize(grids[i].numpy().astype(np.float64), (8 * cell, 8 * cell), order=1, mode="reflect",
                       anti_aliasing=False)
        dy, dx = shifts[i].tolist()
        assert 0 <= dy < cell and 0 <= dx < cell
        np.testing.assert_allclose(masks[i].numpy(), up[dy:dy + 128, dx:dx + 128], atol=1e-5)


def test_rise_is_the_probability_weighted_mean_of_masks(toy_adapter):
    images = _images(2, (128, 128), seed=4)
    rise = Rise(toy_adapter, n_masks=10, p1=0.3, seed=1)
    masks = rise.masks()
    with torch.no_grad(), toy_adapter.evaluating() as model:
        normalised = toy_adapter.preprocess(images)  # the reference masks the normalised image
        expected = []
        for b, t in enumerate((2, 0)):
            probs = torch.softmax(model(normalised[b:b + 1] * masks[:, None]), dim=1)[:, t]
            expected.append((probs[:, None, None] * masks).sum(0) / (10 * 0.3))
    assert torch.allclose(rise.attribute(images, [2, 0]), torch.stack(expected), atol=1e-5)


# ---- perturbation internals ----------------------------------------------------------------------


def test_gaussian_blur_matches_scipy():
    x = _images(1, (20, 24))
    expected = np.stack([ndimage.gaussian_filter(x[0, c].double().numpy(), 2.0, mode="nearest", truncate=4.0)
                         for c in range(3)])
    np.testing.assert_allclose(gaussian_blur(x, 2.0)[0].numpy(), expected, atol=1e-5)
    fill = torch.tensor([0.2, 0.5, 0.7])
    constant = np.stack([ndimage.gaussian_filter(x[0, c].double().numpy(), 2.0, mode="constant",
                                                 cval=float(fill[c]), truncate=4.0) for c in range(3)])
    np.testing.assert_allclose(gaussian_blur(x, 2.0, fill)[0].numpy(), constant, atol=1e-5)
    assert gaussian_blur(x, 0.0) is x


def test_total_variation_known_answer():
    mask = torch.tensor([[0.0, 0.5], [0.0, 0.0]]).view(1, 1, 2, 2)
    # Forward differences: ∂x at (0, 0) is 0.5 and ∂y at (0, 1) is −0.5; β = 3 gives 2 · 0.5³.
    assert float(total_variation(mask, 3.0)) == pytest.approx(0.25, abs=1e-6)
    assert float(total_variation(torch.ones(2, 1, 5, 5), 3.0).max()) < 1e-12


def test_smooth_mask_single_parameter_known_answer():
    gen = SmoothMask((56, 56), step=7, sigma=21.0, device=torch.device("cpu"))
    params = torch.zeros(1, 1, *gen.grid)
    params[0, 0, 4, 4] = 1.0  # at pixel (28, 28)
    mask, full = gen(params)
    k = (2 * gen.radius + 1) ** 2
    # Only one neighbour is non-zero: mask = w · e^{20 w} / (e^{20 w} + K − 1), w = kernel(d / σ).
    for dy, dx in [(0, 0), (0, 10), (21, 0), (14, 14)]:
        w = math.exp(-2 * max(0.0, math.hypot(dy, dx) / 21 - 0.5) ** 2)
        expected = w * math.exp(20 * w) / (math.exp(20 * w) + k - 1)
        assert float(mask[0, 0, 28 + dy, 28 + dx]) == pytest.approx(expected, abs=1e-5)
    assert full.shape[-2:] == (56 + 42, 56 + 42)
    # All parameters at 1: on a parameter, the soft maximum of its neighbours' kernel weights.
    r = gen.radius
    w = torch.tensor([math.exp(-2 * max(0.0, math.hypot(7 * i, 7 * j) / 21 - 0.5) ** 2)
                      for i in range(-r, r + 1) for j in range(-r, r + 1)], dtype=torch.float64)
    expected = float((w * torch.softmax(20 * w, 0)).sum())
    assert float(gen(torch.ones(1, 1, *gen.grid))[0][0, 0, 28, 28]) == pytest.approx(expected, abs=1e-5)


def test_smooth_mask_gradient_is_exact():
    from vrx.attribution.extremal import _SoftMaxPool

    near = torch.rand(2, 9, 1, 25, dtype=torch.float64, requires_grad=True)
    weight = torch.rand(4, 25, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda n: _SoftMaxPool.apply(n, weight, 20.0), (near,))
    z = near * weight
    plain = (z * torch.softmax(20 * z, dim=-1)).sum(-1)  # the formula, through autograd
    assert torch.allclose(_SoftMaxPool.apply(near, weight, 20.0), plain)


def test_perturbation_pyramid_levels():
    x = _images(1, (16, 16))
    pyr = blur_pyramid(x, 8, 3.0, torch.tensor([0.5, 0.5, 0.5]))
    assert torch.equal(pyr[:, -1], x)
    assert torch.allclose(perturb(pyr, torch.ones(1, 1, 16, 16)), x)
    assert torch.allclose(perturb(pyr, torch.zeros(1, 1, 16, 16)), pyr[:, 0])
    half = perturb(pyr, torch.full((1, 1, 16, 16), 0.5))  # level 3.5 of 0..7
    assert torch.allclose(half, (pyr[:, 3] + pyr[:, 4]) / 2, atol=1e-6)


# ---- inverse internals ---------------------------------------------------------------------------


class _Vgg(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                      nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                      nn.AdaptiveMaxPool2d(4))
        self.classifier = nn.Sequential(nn.Dropout(), nn.Linear(96, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x):
        x = self.features(x)
        return self.classifier(x.view(x.size(0), -1))


def test_inverse_plans_vgg_style_networks():
    steps = plan_steps(_Vgg())
    assert [(s.kind, s.relu) for s in steps] == [("linear", True), ("maxpool", False), ("linear", True),
                                                ("maxpool", False), ("linear", True), ("linear", False)]
    assert steps[2].names == ["features.3", "features.4"] and steps[-1].names == ["classifier.3"]


def test_inverse_stays_inside_the_consistency_box():
    model = _Vgg()
    adapter = ClassifierAdapter(model, input_size=32, mean=0.5, std=0.25, bottleneck="features.0",
                                class_names=list("abc"))
    method = Inverse(adapter, max_iter=50)
    images = _images(2, (32, 32), seed=7)
    x_hat, x = method.inverse_image(images, torch.tensor([0, 2]))
    assert (x_hat >= x.clamp(max=0) - 1e-6).all() and (x_hat <= x.clamp(min=0) + 1e-6).all()
    maps = method.attribute(images, [0, 2])
    assert maps.shape == (2, 32, 32) and torch.allclose(maps.flatten(1).amax(1), torch.ones(2))


def test_unpool_puts_values_at_the_forward_argmax():
    x = torch.tensor([[1.0, 5.0, 0.0, 2.0], [3.0, 4.0, 7.0, 1.0]]).view(1, 1, 2, 4)
    _, idx = nn.functional.max_pool2d(x, 2, return_indices=True)
    out = _unpool(torch.tensor([10.0, 20.0]).view(1, 1, 1, 2), idx, x.shape)
    assert out.view(-1).tolist() == [0, 10, 0, 0, 0, 0, 20, 0]


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head((x + self.conv(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize("model, message", [
    (_Residual(), "residual connection"),
    (nn.Sequential(nn.Conv2d(3, 2, 3), nn.Sigmoid(), nn.Flatten(), nn.Linear(2 * 30 * 30, 2)), "Sigmoid"),
    (nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 30 * 30, 2), nn.ReLU()), "end in a linear"),
])
def test_inverse_rejects_models_it_cannot_invert(model, message):
    adapter = ClassifierAdapter(model, input_size=32, mean=0.5, std=0.25, bottleneck="", class_names=["a", "b"])
    with pytest.raises(ConfigError, match=message):
        Inverse(adapter)


# ---- errors --------------------------------------------------------------------------------------


BAD_SETTINGS = [
    ("rise", {"n_masks": 0}, "n_masks"),
    ("rise", {"p1": 1.5}, "p1"),
    ("rise", {"grid": 500}, "grid"),
    ("meaningful_perturbation", {"game": "hide"}, "game"),
    ("meaningful_perturbation", {"iterations": 0}, "iterations"),
    ("meaningful_perturbation", {"tv_beta": 0.5}, "tv_beta"),
    ("meaningful_perturbation", {"l1": -1.0}, "l1"),
    ("extremal_perturbation", {"areas": [0.1, 1.2]}, "areas"),
    ("extremal_perturbation", {"areas": []}, "areas"),
    ("extremal_perturbation", {"variant": "dual"}, "variant"),
    ("extremal_perturbation", {"jitter": 1}, "jitter"),
    ("extremal_perturbation", {"step": 2.5}, "step"),
    ("inverse", {"mask_weight": -0.1}, "mask_weight"),
    ("inverse", {"window": 1}, "window"),
    ("inverse", {"max_iter": True}, "max_iter"),
]


@pytest.mark.parametrize("name, settings, word", BAD_SETTINGS)
def test_bad_settings_are_named(name, settings, word, toy_adapter):
    with pytest.raises(ConfigError, match=word):
        get(name)(toy_adapter, **settings)


@pytest.mark.parametrize("name", METHODS)
def test_bad_targets_images_and_options(name, toy_adapter):
    method = get(name)(toy_adapter, **TINY[name])
    images = _images(2, (32, 32))
    with pytest.raises(UnknownClassError, match="out of range"):
        method.attribute(images, 7)
    with pytest.raises(ConfigError, match="targets"):
        method.attribute(images, [0, 1, 2])
    with pytest.raises(InvalidImageError):
        method.attribute(torch.rand(32, 32), 0)
    with pytest.raises(InvalidImageError, match=r"\[0, 1\]"):
        method.attribute(images * 255, 0)
    with pytest.raises(ConfigError, match="unknown option"):
        method.attribute(images, 0, n_samples=3)


def test_inverse_explains_why_efficientnet_is_not_supported(effnet):
    with pytest.raises(ConfigError, match="residual connection"):
        Inverse(effnet)


def test_rise_on_efficientnet_at_photo_resolution(effnet, photos):
    image = photos["chelsea"]
    maps = Rise(effnet, n_masks=16, batch_size=8).attribute(image)
    assert maps.shape == (1, *image.shape[:2]) and torch.isfinite(maps).all() and maps.max() > 0
