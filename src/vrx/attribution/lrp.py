"""Layer-wise relevance propagation (Bach et al. 2015) through Captum's ``LRP``, on an LRP-ready copy.

Captum applies one rule per *leaf module* and treats whatever a ``forward`` does functionally as
plain autograd, so vrx runs it on a deep copy of the model (the model itself is only read) in which

* a BatchNorm after a conv is **folded into it** (w' = w·γ/σ, b' = (b - μ)·γ/σ + β): one affine
  layer, so the rule sees the whole map and its bias;
* TF-style "same" padding (EfficientNet's ``ZeroPad2d`` child) runs inside the conv's forward;
* each activation is its own module (EfficientNet-Lite runs one ReLU6 twice per block);
* each **residual addition** y + x is Captum's ``Addition_Module`` (ε rule): relevance is split
  between branch and skip in proportion to their values, not copied to both by autograd;
* Dropout (the identity in eval mode) is left out; the first Linear's input is flattened.

The copy's logits equal the model's. Supported: the toy CNN, EfficientNet-Lite without
squeeze-excitation (``efficientnet_lite_pytorch``) and plain ``nn.Sequential`` CNNs; other models
raise ModelSpecError, as vrx cannot see what their ``forward`` does between modules.

Rules (``rule=``) per module of the copy:

=======================================  =========  =========  =========
module                                   epsilon    alphabeta  zplus
=======================================  =========  =========  =========
Conv2d (with its BatchNorm folded in)    ε          z⁺         z⁺
Linear                                   ε          z⁺         ε
ReLU, ReLU6                              identity   identity   identity
average / adaptive-average / max pool    ε          ε          ε
residual addition (Addition_Module)      ε          ε          ε
BatchNorm2d not after a conv             ε          ε          ε
=======================================  =========  =========  =========

ε is Captum's ``EpsilonRule(epsilon)``, R_i = Σ_j z_ij / (z_j + ε sign z_j) R_j with the bias in
z_j; ``epsilon`` = 0.01 by default, small next to pre-activations of order 1 (BatchNorm folded in)
but enough to keep near-zero z_j from exploding. z⁺ is LRP-α1β0 (α = 1, β = 0), relevance along
the positive contributions (a_i w_ij)⁺ only, biases left out of the denominators: Captum's
``Alpha1_Beta0_Rule(set_bias_to_zero=True)`` where the layer's input is a ReLU output (>= 0), and
:class:`SignedZPlusRule` where it can be negative (the image, linear bottlenecks, residual sums).
``zplus`` (the default) is the ε-z⁺ composite of Montavon et al. (2019). Identity: relevance as is.

The map is the relevance of the *normalised* model input, summed over channels (a pixel at the
fill value gets none); for an image of another size it is carried back through the resize by its
adjoint, which shares each model pixel's relevance among the image pixels it was interpolated
from and so keeps the total. Completeness: with ε → 0 the map sums to the target logit minus
what biases take (an ε layer keeps b_j / z_j of R_j, a z⁺ layer drops R_j where no contribution
is positive); for a bias-free ReLU network every rule gives the logit exactly, and LRP-ε (ε → 0)
equals gradient × normalised input in any ReLU network. Cost: two forwards and one backward.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from captum.attr import LRP
from captum.attr._utils.custom_modules import Addition_Module
from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule, IdentityRule, PropagationRule
from torch import nn

from ..config import check
from ..errors import ModelSpecError
from ..models.inputs import resize
from ..models.toycnn import ToyCNN
from .base import Attribution, register
from .gradients import nonnegative, run_batches

__all__ = ["LRPMap", "RULES", "SignedZPlusRule", "lrp_model", "to_image_size"]

RULES = ("epsilon", "alphabeta", "zplus")
ACTIVATIONS = (nn.ReLU, nn.ReLU6)
POOLS = (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.MaxPool2d)
DROPPED = (nn.Dropout, nn.Identity, nn.Flatten)  # identities in eval mode; _Chain flattens itself

RuleFor = Callable[[str, bool], PropagationRule]  # a "conv" or "linear" layer's rule, given "its input is >= 0"


class _Affine(nn.Conv2d):
    """A convolution with a BatchNorm folded into it and any explicit zero padding done first."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, pad: Sequence[int]):
        w = conv.weight.detach()
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
                         device=w.device, dtype=w.dtype)
        b = conv.bias.detach() if conv.bias is not None else w.new_zeros(conv.out_channels)
        if bn is not None:
            if bn.running_mean is None or bn.running_var is None:
                raise ModelSpecError(f"LRP folds BatchNorm into the conv before it, which needs running "
                                     f"statistics; {bn} has none (track_running_stats=False)")
            gamma, beta = (bn.weight.detach(), bn.bias.detach()) if bn.affine else (1.0, 0.0)
            scale = gamma * torch.rsqrt(bn.running_var + bn.eps)
            w, b = w * scale.view(-1, 1, 1, 1), (b - bn.running_mean) * scale + beta
        with torch.no_grad():
            self.weight.copy_(w)
            self.bias.copy_(b)
        self.pad = tuple(int(p) for p in pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, self.pad) if any(self.pad) else x
        if _signed_zplus_pass(self):
            return self._conv_forward(x.clamp(min=0), self.weight, None) + \
                self._conv_forward(x.clamp(max=0), self.negative_weight, None)
        return super().forward(x)


class _Dense(nn.Linear):
    """A Linear layer that can take part in the sign-split z⁺ rule."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _signed_zplus_pass(self):
            return F.linear(x.clamp(min=0), self.weight) + F.linear(x.clamp(max=0), self.negative_weight)
        return super().forward(x)


class SignedZPlusRule(Alpha1_Beta0_Rule):
    """z⁺ = α1β0 for inputs of either sign: relevance along the positive contributions (a_i w_ij)⁺.

    Captum's Alpha1_Beta0_Rule keeps only w⁺, which is z⁺ when every input a_i >= 0; for a
    negative a_i the positive contributions are a_i w_ij with w_ij < 0, so the propagation pass
    adds a second term with the negative weights on the negative inputs (see ``_Affine.forward``).
    Biases are left out of the denominators, as in Captum with ``set_bias_to_zero=True``.
    """

    def __init__(self) -> None:
        super().__init__(set_bias_to_zero=True)

    def _manipulate_weights(self, module: nn.Module, inputs: Any, outputs: Any) -> None:
        module.negative_weight = module.weight.data.clamp(max=0)
        super()._manipulate_weights(module, inputs, outputs)  # weight -> w⁺, bias -> 0


def _signed_zplus_pass(module: nn.Module) -> bool:
    # negative_weight appears after Captum's first (recording) pass; Captum deletes ``rule`` when
    # it is done, after which the layer computes its ordinary output again.
    return isinstance(getattr(module, "rule", None), SignedZPlusRule) and hasattr(module, "negative_weight")


class _Chain(nn.Module):
    """Modules run one after another; the input of the first Linear is flattened."""

    def __init__(self, steps: Sequence[nn.Module]):
        super().__init__()
        self.steps = nn.ModuleList(steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.steps:
            if isinstance(m, nn.Linear) and x.ndim > 2:
                x = torch.flatten(x, 1)
            x = m(x)
        return x


class _Residual(nn.Module):
    """``body(x) + x`` through Captum's Addition_Module (or just ``body(x)`` without a skip)."""

    def __init__(self, body: _Chain, skip: bool, epsilon: float):
        super().__init__()
        self.body = body
        self.add = Addition_Module() if skip else None
        if self.add is not None:
            self.add.rule = EpsilonRule(epsilon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return self.add(y, x) if self.add is not None else y


def _ruled(module: nn.Module, rule: PropagationRule) -> nn.Module:
    module.rule = rule  # where Captum's LRP looks for a module's rule
    return module


def _padding(conv: nn.Module) -> tuple[int, ...]:
    """The explicit zero padding a TF-style 'same' conv applies before convolving."""
    pad = getattr(conv, "static_padding", None)
    if pad is None or isinstance(pad, nn.Identity) or type(pad).__name__ == "Identity":
        return (0, 0, 0, 0)
    if isinstance(pad, nn.ZeroPad2d):
        return tuple(pad.padding)
    raise ModelSpecError(f"LRP cannot read the padding {pad!r} of {type(conv).__name__}")


def _affine(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, rule_for: RuleFor, nonneg_input: bool) -> nn.Module:
    return _ruled(_Affine(conv, bn, _padding(conv)), rule_for("conv", nonneg_input))


def _linear(linear: nn.Linear, rule_for: RuleFor, nonneg_input: bool) -> nn.Module:
    dense = _Dense(linear.in_features, linear.out_features, bias=linear.bias is not None,
                   device=linear.weight.device, dtype=linear.weight.dtype)
    dense.load_state_dict(linear.state_dict())
    return _ruled(dense, rule_for("linear", nonneg_input))


def _activation(act: nn.Module) -> nn.Module:
    return _ruled(copy.deepcopy(act), IdentityRule())


def _chain_of(leaves: Sequence[tuple[str, nn.Module]], rule_for: RuleFor, epsilon: float, model: str) -> _Chain:
    """A chain from modules in forward order: conv + BN folded, rules set, identities dropped."""
    steps: list[nn.Module] = []
    nonneg = False  # the first layer reads the normalised image, which is signed
    i = 0
    while i < len(leaves):
        name, m = leaves[i]
        if isinstance(m, nn.Conv2d):
            nxt = leaves[i + 1][1] if i + 1 < len(leaves) else None
            bn = nxt if isinstance(nxt, nn.BatchNorm2d) else None
            steps.append(_affine(m, bn, rule_for, nonneg))
            i += 2 if bn is not None else 1
            nonneg = False
            continue
        if isinstance(m, nn.Linear):
            steps.append(_linear(m, rule_for, nonneg))
            nonneg = False
        elif isinstance(m, ACTIVATIONS):
            steps.append(_activation(m))
            nonneg = True
        elif isinstance(m, (*POOLS, nn.BatchNorm2d)):
            steps.append(_ruled(copy.deepcopy(m), EpsilonRule(epsilon)))
            nonneg = nonneg and not isinstance(m, nn.BatchNorm2d)  # pooling keeps signs, BN does not
        elif not isinstance(m, DROPPED):
            raise ModelSpecError(f"LRP has no rule for layer {name!r} ({type(m).__name__}) of model {model!r}; "
                                 f"supported: Conv2d, BatchNorm2d, Linear, ReLU, ReLU6, average/max pooling, "
                                 "Dropout, Flatten")
        i += 1
    return _Chain(steps)


def _leaves(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """Leaf modules of nested nn.Sequentials in order; ModelSpecError for any other container."""
    out = []
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, nn.Sequential):
            out.extend(_leaves(child, f"{full}."))
        elif any(True for _ in child.children()):
            raise ModelSpecError(f"LRP cannot see inside {full!r} ({type(child).__name__}): only the toy CNN, "
                                 "EfficientNet-Lite and plain nn.Sequential models are supported")
        else:
            out.append((full, child))
    return out


def _toy_chain(model: nn.Module, rule_for: RuleFor, epsilon: float, name: str) -> _Chain:
    # ToyCNN.forward is head(flatten(pool(features(x)))): a chain.
    leaves = _leaves(model.features, "features.") + [("pool", model.pool), ("head", model.head)]
    return _chain_of(leaves, rule_for, epsilon, name)


def _effnet_chain(model: nn.Module, rule_for: RuleFor, epsilon: float) -> _Chain:
    """EfficientNet-Lite (no squeeze-excitation): stem, MBConv blocks, head, as in its forward."""
    steps: list[nn.Module] = [_affine(model._conv_stem, model._bn0, rule_for, False), _activation(model._swish)]
    for block in model._blocks:
        if block.has_se:
            raise ModelSpecError("LRP supports EfficientNet-Lite without squeeze-excitation only "
                                 "(its sigmoid gate has no LRP rule here)")
        args = block._block_args
        body: list[nn.Module] = []
        nonneg = len(steps) == 2  # block 0 reads the stem's ReLU6; later blocks a linear bottleneck
        if args.expand_ratio != 1:
            body += [_affine(block._expand_conv, block._bn0, rule_for, nonneg), _activation(block._swish)]
            nonneg = True
        body += [_affine(block._depthwise_conv, block._bn1, rule_for, nonneg), _activation(block._swish),
                 _affine(block._project_conv, block._bn2, rule_for, True)]
        skip = block.id_skip and args.stride == 1 and args.input_filters == args.output_filters
        steps.append(_Residual(_Chain(body), skip, epsilon))
    steps += [_affine(model._conv_head, model._bn1, rule_for, False), _activation(model._swish),
              _ruled(copy.deepcopy(model._avg_pooling), EpsilonRule(epsilon)),
              _linear(model._fc, rule_for, True)]  # the model's dropout is left out
    return _Chain(steps)


def _rule_for(rule: str, epsilon: float) -> RuleFor:
    def pick(kind: str, nonneg_input: bool) -> PropagationRule:
        if rule == "epsilon" or (rule == "zplus" and kind == "linear"):
            return EpsilonRule(epsilon)
        return Alpha1_Beta0_Rule(set_bias_to_zero=True) if nonneg_input else SignedZPlusRule()
    return pick


def lrp_model(model: nn.Module, rule: str = "epsilon", epsilon: float = 0.01, name: str = "model") -> nn.Module:
    """An LRP-ready copy of ``model`` (eval mode, same logits) with Captum rules set on its leaves.

    ``model`` must already be on the device and in eval mode (``adapter.evaluating()``); it is
    only read.
    """
    check((rule in RULES, f"unknown LRP rule {rule!r}; choose one of {', '.join(RULES)}"))
    rule_for = _rule_for(rule, epsilon)
    with torch.no_grad():
        if type(model) is ToyCNN:
            chain = _toy_chain(model, rule_for, epsilon, name)
        elif type(model).__module__.startswith("efficientnet_lite_pytorch") and hasattr(model, "_blocks"):
            chain = _effnet_chain(model, rule_for, epsilon)
        elif isinstance(model, nn.Sequential):
            chain = _chain_of(_leaves(model), rule_for, epsilon, name)
        else:
            raise ModelSpecError(f"LRP supports the toy CNN, EfficientNet-Lite and plain nn.Sequential CNNs; "
                                 f"model {name!r} is a {type(model).__name__}, whose forward vrx cannot see "
                                 "(a residual addition in it would be propagated wrongly)")
    return chain.requires_grad_(False).eval()


def to_image_size(relevance: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Relevance ``[B, h, w]`` of the resized image carried back to ``size`` by the resize's adjoint."""
    if tuple(relevance.shape[-2:]) == tuple(size):
        return relevance
    with torch.enable_grad():
        probe = torch.zeros((relevance.shape[0], 1, *size), device=relevance.device, requires_grad=True)
        small = resize(probe, tuple(relevance.shape[-2:]))  # the same resize as the adapter's
        (back,) = torch.autograd.grad(small, probe, grad_outputs=relevance.unsqueeze(1))
    return back[:, 0]


@register
class LRPMap(Attribution):
    """LRP with rule ``zplus`` (default), ``alphabeta`` (α=1, β=0) or ``epsilon``; signed. See the module doc.

    The default is the ε-z⁺ composite recommended for deep CNNs: with ε everywhere, LRP on such a
    network is close to gradient × input (``grad_input``, which it equals in ReLU networks).
    """

    name = "lrp"
    signed = True

    def __init__(self, adapter, *, rule: str = "zplus", epsilon: float = 0.01, **kwargs: Any):
        super().__init__(adapter, **kwargs)
        check((rule in RULES, f"unknown LRP rule {rule!r}; choose one of {', '.join(RULES)}"))
        self.rule = rule
        self.epsilon = nonnegative(epsilon, "epsilon")
        check((self.epsilon > 0, f"epsilon must be > 0 (it keeps denominators off zero), got {epsilon!r}"))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "rule": self.rule, "epsilon": self.epsilon}

    def _attribute(self, images: torch.Tensor, targets: torch.Tensor, **_: Any) -> torch.Tensor:
        adapter = self.adapter

        def one(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            # A fresh copy per batch: Captum strips the rules off the modules after each call, and
            # the copy then has the model's weights as they are now (building it costs < 1 forward).
            lrp = LRP(lrp_model(adapter.model, self.rule, self.epsilon, adapter.name))
            with torch.no_grad():
                xn = adapter.forward_module.normalise(x)
            relevance = lrp.attribute(xn.requires_grad_(), target=t).sum(1)
            return to_image_size(relevance, tuple(x.shape[-2:]))

        return run_batches(self, images, targets, one, requires_grad=False)
