"""Gradient maps: saliency, sensitivity, gradient × input, integrated gradients and SmoothGrad.

All differentiate the target's logit (not its probability) through ``adapter.forward_module``,
i.e. through the resize and the normalisation, with respect to the [0, 1] image at its own size;
the per-channel gradients are then reduced to one value per pixel. Captum computes the gradients
(``Saliency``, ``InputXGradient``, ``IntegratedGradients``); SmoothGrad draws its own noise from
``self.generator()`` because Captum's ``NoiseTunnel`` draws from the global random generator.
:func:`run_batches` is the batch loop the other method modules share.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
from captum.attr import InputXGradient, IntegratedGradients, Saliency

from ..config import check
from ..progress import progress
from .base import Attribution, register

__all__ = ["GradientXInput", "IntegratedGradientsMap", "SaliencyMap", "Sensitivity", "SmoothGrad",
           "run_batches"]

BatchFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def run_batches(method: Attribution, images: torch.Tensor, targets: torch.Tensor, fn: BatchFn,
                batch_size: int | None = None, requires_grad: bool = True) -> torch.Tensor:
    """``fn(images, targets)`` in chunks of ``batch_size`` (default the method's), on the adapter's device.

    Runs inside ``adapter.evaluating()`` with autograd on (also when the caller is in inference
    mode); each chunk is a fresh leaf tensor, requiring grad if asked; the chunks' results are
    concatenated on the CPU.
    """
    adapter = method.adapter
    bs = int(batch_size or method.batch_size)
    starts = range(0, images.shape[0], bs)
    outs = []
    with adapter.evaluating(), torch.inference_mode(False), torch.enable_grad():
        for s in progress(starts, desc=f"{adapter.name} {method.name}", total=len(starts),
                          enabled=None if len(starts) > 1 else False):
            # clone: a normal tensor even if the images were made in inference mode
            xb = images[s:s + bs].to(adapter.device).clone().requires_grad_(requires_grad)
            tb = targets[s:s + bs].to(adapter.device).clone()
            outs.append(fn(xb, tb).detach().float().cpu())
    return torch.cat(outs)


def positive_int(value: Any, what: str) -> int:
    """``value`` as an int >= 1, else ConfigError naming ``what``."""
    check((not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= 1,
           f"{what} must be a positive integer, got {value!r}"))
    return int(value)


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def fraction(value: Any, what: str) -> float:
    """``value`` as a float in (0, 1], else ConfigError naming ``what``."""
    check((_number(value) and 0 < value <= 1, f"{what} must be a number with 0 < {what} <= 1, got {value!r}"))
    return float(value)


def nonnegative(value: Any, what: str) -> float:
    """``value`` as a finite float >= 0, else ConfigError naming ``what``."""
    check((_number(value) and value >= 0, f"{what} must be a finite number >= 0, got {value!r}"))
    return float(value)


@register
class SaliencyMap(Attribution):
    """Simonyan et al. 2014: max over colour channels of |d logit / d pixel|. One forward + backward."""

    name = "saliency"
    signed = False

    def _attribute(self, images: torch.Tensor, targets: torch.Tensor, **_: Any) -> torch.Tensor:
        sal = Saliency(self.adapter.forward_module)
        return run_batches(self, images, targets, lambda x, t: sal.attribute(x, target=t, abs=True).amax(1))


@register
class Sensitivity(Attribution):
    """Sensitivity analysis (Samek et al. 2017): sum over channels of (d logit / d pixel)^2.

    It explains how the logit *varies* around the image (its total is the squared gradient norm),
    not the logit's value. One forward + backward per image.
    """

    name = "sensitivity"
    signed = False

    def _attribute(self, images: torch.Tensor, targets: torch.Tensor, **_: Any) -> torch.Tensor:
        sal = Saliency(self.adapter.forward_module)
        return run_batches(self, images, targets,
                           lambda x, t: sal.attribute(x, target=t, abs=False).pow(2).sum(1))


class _Shifted(torch.nn.Module):
    """The model as a function of the normalised-zero-centred image ``d = x - fill_value``."""

    def __init__(self, forward: torch.nn.Module, fill: torch.Tensor):
        super().__init__()
        self.forward_module = forward
        self.fill = fill.view(1, -1, 1, 1)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return self.forward_module(d + self.fill.to(d.device))


@register
class GradientXInput(Attribution):
    """Gradient × input, summed over channels; signed. One forward + backward per image.

    The input is the *normalised* one: the map is ``sum_c (x - fill_value)_c * d logit / d x_c``
    at the image's own size. At the model's input size this is exactly ``sum_c x̂_c d logit / d x̂_c``
    of the normalised image x̂ = (x - mean) / std, the quantity whose total equals the logit for a
    bias-free ReLU network and that LRP-0 reproduces; the [0, 1] input would instead credit a black
    pixel with nothing and a white one with everything.
    """

    name = "grad_input"
    signed = True

    def _attribute(self, images: torch.Tensor, targets: torch.Tensor, **_: Any) -> torch.Tensor:
        fill = self.adapter.fill_value.view(1, -1, 1, 1)
        ixg = InputXGradient(_Shifted(self.adapter.forward_module, self.adapter.fill_value))

        def one(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            d = (x - fill.to(x.device)).detach().requires_grad_()
            return ixg.attribute(d, target=t).sum(1)

        return run_batches(self, images, targets, one)


@register
class IntegratedGradientsMap(Attribution):
    """Integrated gradients (Sundararajan et al. 2017, Captum), summed over channels; signed.

    The baseline is the image of ``adapter.fill_value`` (normalised value 0 everywhere); the path
    integral uses ``n_steps`` Gauss-Legendre points (default 50), so one image costs ``n_steps``
    forward + backward passes. Completeness: the map sums to logit(x) - logit(baseline) up to
    the quadrature error.
    """

    name = "integrated_gradients"
    signed = True

    def __init__(self, adapter, *, n_steps: int = 50, **kwargs: Any):
        super().__init__(adapter, **kwargs)
        self.n_steps = positive_int(n_steps, "n_steps")

    def config(self) -> dict[str, Any]:
        return {**super().config(), "n_steps": self.n_steps}

    def _attribute(self, images: torch.Tensor, targets: torch.Tensor, **_: Any) -> torch.Tensor:
        ig = IntegratedGradients(self.adapter.forward_module)
        fill = self.adapter.fill_value.view(1, -1, 1, 1)

        def one(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            base = fill.to(x.device).expand_as(x)
            # internal_batch_size bounds each forward to batch_size path points (Captum's memory knob)
            attr = ig.attribute(x, baselines=base, target=t, n_steps=self.n_steps,
                                internal_batch_size=self.batch_size)
            return attr.sum(1)

        return run_batches(self, images, targets, one)


@register
class SmoothGrad(Attribution):
    """SmoothGrad (Smilkov et al. 2017) over saliency: |gradient| averaged over noisy copies.

    Each image gets ``nt_samples`` (default 50) copies with Gaussian noise of standard deviation
    ``stdev`` (default 0.15) times the input range (1 for [0, 1] images; not clipped); the mean
    |d logit / d pixel| per channel is then reduced by the max over channels, as for saliency.
    The noise comes from ``self.generator()``, drawn image by image, so the maps depend on
    ``seed`` but not on the batch size. Cost: ``nt_samples`` forward + backward passes per image.
    """

    name = "smoothgrad"
    signed = False

    def __init__(self, adapter, *, nt_samples: int = 50, stdev: float = 0.15, **kwargs: Any):
        super().__init__(adapter, **kwargs)
        self.nt_samples = positive_int(nt_samples, "nt_samples")
        self.stdev = nonnegative(stdev, "stdev")

    def config(self) -> dict[str, Any]:
        return {**super().config(), "nt_samples": self.nt_samples, "stdev": self.stdev}

    def _attribute(self, images: torch.Tensor, targets: torch.Tensor, **_: Any) -> torch.Tensor:
        sal = Saliency(self.adapter.forward_module)
        gen = self.generator()
        sigma = self.stdev * 1.0  # times the input range: 1 for [0, 1] images
        maps = []
        for x, t in progress(zip(images, targets), desc=f"{self.adapter.name} smoothgrad images",
                             total=len(images), enabled=None if len(images) > 1 else False):
            noise = torch.randn((self.nt_samples, *x.shape), generator=gen) * sigma
            grads = run_batches(self, x.unsqueeze(0) + noise, t.repeat(self.nt_samples),
                                lambda xb, tb: sal.attribute(xb, target=tb, abs=True))
            maps.append(grads.mean(0).amax(0))
        return torch.stack(maps)
