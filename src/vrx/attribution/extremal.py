"""Extremal perturbation (Fong, Patrick & Vedaldi 2019): smooth masks of a given area, TorchRay's defaults.

The mask is a smooth max of Gaussian bumps on a coarse grid (:class:`SmoothMask`), the perturbation a
blend through a blur pyramid (:func:`perturb`), and the area a penalty that grows each iteration; the
shared optimisation loop and checks are in :mod:`.perturbation`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..progress import progress
from .base import register
from .perturbation import _Checker, _MaskMethod, gaussian_blur

__all__ = ["ExtremalPerturbation", "SmoothMask", "blur_pyramid", "perturb"]


class SmoothMask:
    """Smooth masks from parameters m̄_k at pixels p_k = (step·i, step·j) (Fong et al. 2019).

    mask(u) = the smooth maximum (softmax pooling, coldness 20) of m̄_k · w(‖u − p_k‖ / σ) over the
    (2R + 1)² parameters around the one nearest u, R = 1 + ⌈σ / step⌉, w(d) = exp(−2 max(0, d − ½)²),
    clamped to [0, 1], on the image plus a margin of σ px (parameters beyond the grid are 0).
    Pixels at the same offset from their nearest parameter share w, so the mask is computed per
    (parameter cell, offset in the cell, neighbour), with no per-pixel gather.
    """

    COLDNESS = 20.0

    def __init__(self, size: tuple[int, int], step: int, sigma: float, device: torch.device):
        self.size, self.step, self.sigma = tuple(int(n) for n in size), int(step), float(sigma)
        self.margin = round(self.sigma)
        self.grid = tuple(math.ceil(n / self.step) for n in self.size)
        self.radius = radius = 1 + math.ceil(self.sigma / self.step)
        step, low = self.step, -(self.step // 2)  # pixel v: cell c = round(v / step), offset v − step·c ≥ low
        first = math.floor((-self.margin - low) / step)
        self.cells = [(first, math.floor((n + self.margin - 1 - low) / step) + 1) for n in self.size]
        self.pad = radius + max(0, -first) + 1
        self.crop = -self.margin - (first * step + low)  # where the image-plus-margin starts in the tiles
        self.full_size = tuple(n + 2 * self.margin for n in self.size)
        offsets = torch.arange(low, low + step, dtype=torch.float32)
        near = torch.arange(-radius, radius + 1, dtype=torch.float32) * step
        dist = torch.sqrt((offsets[:, None, None, None] - near[None, None, :, None]) ** 2
                          + (offsets[None, :, None, None] - near[None, None, None, :]) ** 2)  # [oy, ox, ky, kx]
        weight = torch.exp(-2 * (dist / self.sigma - 0.5).clamp(min=0) ** 2)
        self.weight = weight.reshape(step * step, -1).to(device)  # [offsets, K]

    def __call__(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask cropped to the image ``[n, 1, H, W]``, mask with its margin) from ``[n, 1, gh, gw]``."""
        n, step, k = params.shape[0], self.step, 2 * self.radius + 1
        padded = F.pad(params, (self.pad,) * 4)
        near = F.unfold(padded, k).view(n, k * k, padded.shape[-2] - k + 1, padded.shape[-1] - k + 1)
        (y0, y1), (x0, x1), shift = *self.cells, self.pad - self.radius  # cell c unfolds at c + shift
        near = near[:, :, y0 + shift:y1 + shift, x0 + shift:x1 + shift]  # the neighbours of each cell
        gy, gx = near.shape[-2:]
        pooled = _SoftMaxPool.apply(near.permute(0, 2, 3, 1).reshape(n, gy * gx, 1, k * k), self.weight,
                                    self.COLDNESS).clamp(0, 1)  # [n, cells, offsets]
        tiled = pooled.view(n, gy, gx, step, step).permute(0, 1, 3, 2, 4).reshape(n, 1, gy * step, gx * step)
        c, (hy, wx), m = self.crop, self.full_size, self.margin
        full = tiled[:, :, c:c + hy, c:c + wx]
        return full[:, :, m:m + self.size[0], m:m + self.size[1]], full


class _SoftMaxPool(torch.autograd.Function):
    """pooled[n, c, o] = Σ_k z e^{βz} / Σ_k e^{βz}, z = near[n, c, 0, k] · weight[o, k], in groups of
    cells that fit a cache and recomputed for the backward pass, so the [n, cells, offsets, K]
    tensors (6 M values per mask at 224 px) are never stored: 5× faster than TorchRay's mask on a
    CPU. z ∈ [0, 1] and β = 20, so e^{βz} needs no max subtraction."""

    @staticmethod
    def _groups(near: torch.Tensor, weight: torch.Tensor) -> tuple[range, int]:
        size = max(1, (1 << 16) // (near.shape[0] * weight.numel()))  # 256 KiB of float32 per group
        return range(0, near.shape[1], size), size

    @staticmethod
    def forward(ctx, near: torch.Tensor, weight: torch.Tensor, coldness: float) -> torch.Tensor:
        out = near.new_empty(near.shape[0], near.shape[1], weight.shape[0])
        total = torch.empty_like(out)
        starts, size = _SoftMaxPool._groups(near, weight)
        for a in starts:
            z = near[:, a:a + size] * weight
            e = z.mul(coldness).exp_()
            total[:, a:a + size] = s = e.sum(dim=-1)
            out[:, a:a + size] = z.mul_(e).sum(dim=-1).div_(s)
        ctx.save_for_backward(near, weight, out, total)
        ctx.coldness = coldness
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (near, weight, out, total), c = ctx.saved_tensors, ctx.coldness
        grad, scaled = torch.empty_like(near), grad_out / total
        starts, size = _SoftMaxPool._groups(near, weight)
        for a in starts:
            sl = slice(a, a + size)
            z = near[:, sl] * weight
            e = z.mul(c).exp_()
            # ∂ pooled / ∂ z_k = e_k (1 + β (z_k − pooled)) / Σ e
            t = z.sub_(out[:, sl].unsqueeze(-1)).mul_(c).add_(1).mul_(e).mul_(scaled[:, sl].unsqueeze(-1))
            grad[:, sl] = t.mul_(weight).sum(dim=2, keepdim=True)
        return grad, None, None


def blur_pyramid(x: torch.Tensor, levels: int, max_blur: float, fill: torch.Tensor) -> torch.Tensor:
    """``[B, L, C, H, W]``: level l blurred with σ = max_blur · (1 − l / (L − 1)); the last is ``x``."""
    return torch.stack([gaussian_blur(x, max_blur * (1 - lvl / (levels - 1)), fill) for lvl in range(levels)], dim=1)


def perturb(pyramid: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each pixel taken from the pyramid level m · (L − 1), linearly interpolated (m = 1: the image)."""
    w = mask.unsqueeze(1) * (pyramid.shape[1] - 1)  # [n, 1, 1, H, W]
    k = w.detach().floor().clamp(0, pyramid.shape[1] - 2)
    frac, k = w - k, k.long().expand(-1, 1, pyramid.shape[2], -1, -1)
    lo, hi = pyramid.gather(1, k), pyramid.gather(1, k + 1)
    return (lo + frac * (hi - lo)).squeeze(1)


@register
class ExtremalPerturbation(_MaskMethod):
    """Extremal perturbation: the smooth mask of a given area that matters most for the logit.

    ``variant="preserve"`` maximises the target logit with the image blurred outside the mask,
    ``"delete"`` minimises it with the mask's region blurred. The area a is enforced by
    λ · mean((sort(m) − r_a)²), r_a = (1 − a)·n zeros then a·n ones, λ = ``regul_weight`` times
    ``regul_growth`` per iteration. SGD (momentum = dampening), parameters started at 1 and clamped
    to [0, 1]; masks from :class:`SmoothMask`; an ``levels``-level blur pyramid up to ``max_blur`` px;
    ``jitter`` flips the image on even iterations (no random numbers). The map is the mask, or the
    mean of the masks of several ``areas``. Cost: ``iterations`` forward + backward passes per mask.
    """

    name = "extremal_perturbation"
    VARIANTS = ("preserve", "delete")
    SETTINGS = ("areas", "variant", "iterations", "step", "sigma", "max_blur", "levels", "jitter", "lr",
                "momentum", "regul_weight", "regul_growth")

    def __init__(self, adapter, *, areas: float | Sequence[float] = (0.1,), variant: str = "preserve",
                 iterations: int = 800, step: int = 7, sigma: float = 21.0, max_blur: float = 20.0,
                 levels: int = 8, jitter: bool = True, lr: float = 0.01, momentum: float = 0.9,
                 regul_weight: float = 300.0, regul_growth: float = 1.0035, seed: int = 0,
                 batch_size: int | None = None):
        super().__init__(adapter, seed=seed, batch_size=batch_size)
        check = _Checker(self.name)
        self.variant = check.choice("variant", variant, self.VARIANTS)
        self.areas = [check.number("areas", a, above=0, below=1)
                      for a in ([areas] if isinstance(areas, (int, float, np.number)) else areas)]
        if not self.areas:
            raise ConfigError(f"{self.name}: areas must name at least one area fraction")
        self.masks_per_image = len(self.areas)
        self.iterations = check.number("iterations", iterations, low=1, integer=True)
        self.step, self.levels = check.number("step", step, low=1, integer=True), check.number(
            "levels", levels, low=2, integer=True)
        self.sigma, self.max_blur, self.lr, self.regul_weight, self.regul_growth = (
            check.number(k, v, above=0) for k, v in (("sigma", sigma), ("max_blur", max_blur), ("lr", lr),
                                                      ("regul_weight", regul_weight), ("regul_growth", regul_growth)))
        self.momentum = check.number("momentum", momentum, below=1)
        self.jitter = check.choice("jitter", jitter, (True, False))

    def _prepare(self) -> SmoothMask:
        """The smooth-mask parameterisation at the model's input size (step and σ scaled)."""
        return SmoothMask(self.adapter.input_size, max(1, round(self.step * self.scale)), self.sigma * self.scale,
                          self.adapter.device)

    def _optimise(self, x: torch.Tensor, targets: torch.Tensor, generator: SmoothMask) -> torch.Tensor:
        adapter, n_areas = self.adapter, len(self.areas)
        pyramid = blur_pyramid(x, self.levels, self.max_blur * self.scale, adapter.fill_value)
        pyramid = pyramid.repeat_interleave(n_areas, dim=0)  # mask i belongs to image i // n_areas
        tb = targets.repeat_interleave(n_areas)
        rows = torch.arange(tb.shape[0], device=x.device)
        n_full = generator.full_size[0] * generator.full_size[1]
        index = torch.arange(n_full, device=x.device)
        reference = torch.stack([(index >= int(n_full * (1 - a))).float() for a in self.areas]).repeat(x.shape[0], 1)
        preserve, weight = self.variant == "preserve", self.regul_weight
        params = torch.ones(tb.shape[0], 1, *generator.grid, device=x.device, requires_grad=True)
        opt = torch.optim.SGD([params], lr=self.lr, momentum=self.momentum, dampening=self.momentum)
        for t in progress(range(self.iterations), desc=f"{adapter.name} {self.name}"):
            mask, full = generator(params)
            perturbed = perturb(pyramid, mask if preserve else 1 - mask)
            if self.jitter and t % 2 == 0:
                perturbed = perturbed.flip(3)
            logit = adapter.forward_module(perturbed)[rows, tb]
            regul = ((full.flatten(1).sort(dim=1).values - reference) ** 2).mean(dim=1)
            loss = -((logit if preserve else -logit) - weight * regul).sum()
            (params.grad,) = torch.autograd.grad(loss, [params])
            opt.step()
            with torch.no_grad():
                params.clamp_(0, 1)
            weight *= self.regul_growth
        with torch.no_grad():
            mask = generator(params)[0][:, 0]
        return mask.view(x.shape[0], n_areas, *mask.shape[1:]).mean(dim=1)
