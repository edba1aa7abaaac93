"""LRP: the LRP-ready copy, conservation, known answers on the toy CNN, EfficientNet-Lite0 (slow)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from vrx.attribution import get
from vrx.attribution.lrp import RULES, lrp_model, to_image_size
from vrx.errors import ConfigError, InvalidImageError, ModelSpecError, UnknownClassError
from vrx.models.adapter import ClassifierAdapter
from vrx.models.inputs import resize
from vrx.models.toycnn import ToyCNN

SIZE = 32
TINY = 1e-9  # ε → 0: the ε rule becomes LRP-0


def toy_adapter(biased: bool) -> ClassifierAdapter:
    """A small toy CNN; ``biased`` gives its BatchNorms statistics and its head a bias."""
    model = ToyCNN(num_classes=3, widths=(8, 8, 16, 16, 16), seed=0)
    if biased:
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=g))
                    m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                    m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                    m.bias.copy_(0.3 * torch.randn(m.num_features, generator=g))
            model.head.bias.copy_(torch.randn(3, generator=g))
    return ClassifierAdapter(model, input_size=SIZE, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3),
                             bottleneck=model.bottleneck, class_names=["a", "b", "c"], name="toy")


def images(n: int, h: int = SIZE, w: int = SIZE, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("rule", RULES)
def test_relevance_sums_to_the_logit_on_a_bias_free_relu_network(rule):
    # A fresh toy CNN has no biases (BatchNorm at its initial statistics, head bias 0), so no
    # layer absorbs relevance: the ε rule with ε → 0 and the z⁺ rule (whose denominators are
    # positive wherever relevance arrives) both conserve it exactly. Tolerance: float32 rounding.
    adapter = toy_adapter(biased=False)
    x = images(3)
    logits = adapter.logits(x)
    for target in range(3):
        total = get("lrp")(adapter, rule=rule, epsilon=TINY).attribute(x, target).sum((1, 2))
        assert torch.allclose(total, logits[:, target], rtol=1e-4, atol=1e-7)


def test_epsilon_rule_is_gradient_times_normalised_input_with_batchnorm_folded():
    # LRP-0 equals gradient × input layer by layer in a ReLU network, biases included; so the
    # folded conv + BN copy must give exactly grad_input's map. Tolerance: float32 rounding.
    adapter = toy_adapter(biased=True)
    x = images(2, seed=1)
    lrp = get("lrp")(adapter, rule="epsilon", epsilon=TINY).attribute(x, 1)
    gxi = get("grad_input")(adapter).attribute(x, 1)
    assert torch.allclose(lrp, gxi, atol=1e-4 * float(gxi.abs().max()))
    # the biases take their share: the total is no longer the logit
    assert not torch.allclose(lrp.sum((1, 2)), adapter.logits(x)[:, 1], rtol=1e-2)


@pytest.mark.parametrize("rule", RULES)
def test_only_the_patch_that_differs_from_the_fill_colour_gets_relevance(rule):
    # Known answer: every rule hands the first layer's relevance to its inputs in proportion to
    # the normalised input, which is exactly 0 at the fill colour.
    adapter = toy_adapter(biased=True)
    x = adapter.fill_value.view(1, 3, 1, 1).repeat(1, 1, SIZE, SIZE)
    x[..., 5:11, 20:29] = images(1, 6, 9, seed=2)
    patch = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    patch[5:11, 20:29] = True
    target = int(adapter.logits(x).argmax())
    rel = get("lrp")(adapter, rule=rule).attribute(x, target)[0]
    assert rel[~patch].abs().max() == 0
    assert rel[patch].abs().max() > 0
    assert torch.isfinite(rel).all()


def test_other_image_sizes_keep_the_total_and_come_back_at_their_own_size():
    adapter = toy_adapter(biased=True)
    x = images(2, 45, 37, seed=3)
    method = get("lrp")(adapter, rule="zplus")
    maps = method.attribute(x, 0)
    assert maps.shape == (2, 45, 37)
    at_model_size = method.attribute(resize(x, (SIZE, SIZE)).clamp(0, 1), 0)
    assert torch.allclose(maps.sum((1, 2)), at_model_size.sum((1, 2)), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("size", [(45, 37), (20, 16)])
def test_resize_adjoint_conserves_relevance(size):
    rel = torch.randn(2, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    back = to_image_size(rel, size)
    assert back.shape == (2, *size)
    assert torch.allclose(back.sum((1, 2)), rel.sum((1, 2)), rtol=1e-5, atol=1e-5)
    assert torch.equal(to_image_size(rel, (SIZE, SIZE)), rel)


def test_the_copy_has_the_same_logits_and_the_users_model_is_left_alone():
    adapter = toy_adapter(biased=True)
    model = adapter.model.train()  # a model left in training mode must stay so
    before = copy.deepcopy(model.state_dict())
    xn = adapter.preprocess(images(2, seed=5))
    with adapter.evaluating() as m:
        chain = lrp_model(m, "alphabeta")
        assert not any(isinstance(c, nn.BatchNorm2d) for c in chain.modules())  # folded into the convs
        with torch.no_grad():
            assert torch.allclose(chain(xn), m(xn), atol=1e-5)
    get("lrp")(adapter, rule="alphabeta").attribute(images(2, seed=5), 0)
    assert model.training and all(t.equal(before[k]) for k, t in model.state_dict().items())
    assert not any(hasattr(m, "rule") for m in model.modules())


def test_two_calls_agree_and_batches_do_not_matter():
    adapter = toy_adapter(biased=True)
    x = images(3, seed=6)
    method = get("lrp")(adapter, rule="zplus")
    first = method.attribute(x, [0, 1, 2])
    assert torch.equal(first, method.attribute(x, [0, 1, 2]))
    one_by_one = get("lrp")(adapter, rule="zplus", batch_size=1).attribute(x, [0, 1, 2])
    assert torch.allclose(first, one_by_one, atol=1e-6 * float(first.abs().max()))
    assert method.config() == {"seed": 0, "rule": "zplus", "epsilon": 0.01}
    assert get("lrp")(adapter).config() == method.config()  # zplus is the default


def plain_sequential() -> ClassifierAdapter:
    g = torch.Generator().manual_seed(7)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Sequential(nn.Conv2d(6, 8, 3, stride=2), nn.ReLU6()), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Dropout(0.5), nn.Linear(8, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
        model[1].running_mean.copy_(0.2 * torch.randn(6, generator=g))
        model[1].running_var.copy_(0.5 + torch.rand(6, generator=g))
    return ClassifierAdapter(model, input_size=SIZE, mean=0.5, std=0.25, bottleneck="4",
                             class_names=["p", "q", "r", "s"], name="seq")


def test_plain_sequential_models_are_supported():
    adapter = plain_sequential()
    x = images(2, seed=8)
    with adapter.evaluating() as model, torch.no_grad():  # ReLU6 below its ceiling acts as a ReLU
        assert model[4][0](model[:4](adapter.preprocess(x))).max() < 6
    lrp = get("lrp")(adapter, rule="epsilon", epsilon=TINY).attribute(x, 3)
    gxi = get("grad_input")(adapter).attribute(x, 3)
    assert torch.allclose(lrp, gxi, atol=1e-4 * float(gxi.abs().max()))


class Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 2, 1), nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x) + x[:, :2]).mean((2, 3)))


def test_models_lrp_cannot_see_raise_model_spec_errors():
    custom = ClassifierAdapter(Custom(), input_size=8, mean=0.5, std=0.25, bottleneck="conv",
                               class_names=["x", "y"], name="custom")
    with pytest.raises(ModelSpecError, match="'custom' is a Custom.*forward"):
        get("lrp")(custom).attribute(images(1, 8, 8), 0)
    sig = ClassifierAdapter(nn.Sequential(nn.Conv2d(3, 2, 1), nn.Sigmoid(), nn.Flatten(), nn.Linear(128, 2)),
                            input_size=8, mean=0.5, std=0.25, bottleneck="0", class_names=["x", "y"])
    with pytest.raises(ModelSpecError, match="no rule for layer '1' \\(Sigmoid\\)"):
        get("lrp")(sig).attribute(images(1, 8, 8), 0)


@pytest.mark.parametrize("cfg, word", [({"rule": "z+"}, "rule"), ({"epsilon": 0}, "epsilon"),
                                       ({"epsilon": -1.0}, "epsilon"), ({"epsilon": "big"}, "epsilon")])
def test_bad_settings(cfg, word):
    with pytest.raises(ConfigError, match=word):
        get("lrp")(toy_adapter(biased=False), **cfg)


def test_bad_images_and_targets():
    method = get("lrp")(toy_adapter(biased=False))
    with pytest.raises(InvalidImageError):
        method.attribute(torch.rand(1, 2, 8, 8), 0)
    with pytest.raises(UnknownClassError):
        method.attribute(torch.rand(1, 3, 8, 8), 3)


def test_lrp_runs_inside_inference_mode():
    adapter = toy_adapter(biased=True)
    x = images(1, seed=9)
    outside = get("lrp")(adapter).attribute(x, 0)
    with torch.inference_mode():
        assert torch.equal(get("lrp")(adapter).attribute(x, 0), outside)


# ---- EfficientNet-Lite0 (slow: loads the ImageNet network) -------------------------------------


def test_efficientnet_copy_has_the_models_logits(effnet, photos):
    xn = effnet.preprocess(photos["coffee"])
    with effnet.evaluating() as model, torch.no_grad():
        assert torch.allclose(lrp_model(model)(xn), model(xn), atol=1e-4)


def test_efficientnet_epsilon_rule_is_gradient_times_input_once_relu6_is_a_relu(effnet, photos):
    # With ReLU instead of ReLU6 the network is piecewise linear, so LRP-0 must equal gradient ×
    # input; that holds only if the residual additions split relevance (not copy it) and the
    # folding and TF padding are right. Tolerance: 0.06 % of the map's maximum was measured
    # (float32 through 50 layers); 0.5 % allows other BLAS builds.
    model = copy.deepcopy(effnet.model)
    model._swish = nn.ReLU()
    for block in model._blocks:
        block._swish = nn.ReLU()
    adapter = ClassifierAdapter(model, input_size=effnet.input_size, mean=effnet.mean, std=effnet.std,
                                bottleneck=effnet.bottleneck, class_names=effnet.class_names, name="lite0-relu")
    x = resize(torch.from_numpy(photos["chelsea"]).permute(2, 0, 1)[None], (224, 224)).clamp(0, 1)
    target = int(adapter.logits(x).argmax())
    lrp = get("lrp")(adapter, rule="epsilon", epsilon=TINY).attribute(x, target)
    gxi = get("grad_input")(adapter).attribute(x, target)
    assert torch.allclose(lrp, gxi, atol=5e-3 * float(gxi.abs().max()))


def test_efficientnet_maps_on_a_photo(effnet, photos):
    photo = photos["chelsea"]  # 300 × 451: the map comes back through the resize's adjoint
    target = int(effnet.logits(photo).argmax())
    for rule in RULES:
        rel = get("lrp")(effnet, rule=rule).attribute(photo, target)
        assert rel.shape == (1, 300, 451) and torch.isfinite(rel).all()
        if rule != "epsilon":  # ε is close to gradient × input, whose total has no fixed sign
            assert rel.sum() > 0, rule
