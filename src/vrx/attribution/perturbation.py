"""Learned perturbation masks: meaningful (Fong & Vedaldi 2017) and extremal (Fong et al. 2019).

Both optimise a mask m (1 = keep the pixel, 0 = blur it away) by gradient descent through
``adapter.forward_module`` inside ``adapter.evaluating()``, with gradients w.r.t. the mask only
(the weights get no ``.grad``). ``batch_size`` masks are optimised together: in eval mode images
are independent and Adam and SGD act elementwise, so a mask does not depend on its batch. Masks
live at the model's input size and the map is resized to the image; pixel settings are the
papers' at 224 px, scaled by min(input size) / 224. Defaults: the authors' code (meaningful
perturbation) and TorchRay (extremal perturbation); docs/attribution.md lists the differences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..models.inputs import resize
from ..progress import progress
from .base import Attribution, register

__all__ = ["ExtremalPerturbation", "MeaningfulPerturbation", "SmoothMask", "gaussian_blur"]

REFERENCE_SIZE = 224  # the input size the papers' pixel settings are given for


def gaussian_blur(x: torch.Tensor, sigma: float, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Separable Gaussian blur of an NCHW batch (radius ⌈4σ⌉); borders repeat the edge, or are
    padded with ``fill`` (one value per channel). σ ≤ 0 returns ``x`` itself."""
    if sigma <= 0:
        return x
    radius, c = math.ceil(4 * sigma), x.shape[1]
    kernel = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device) / sigma) ** 2)
    kernel = kernel / kernel.sum()
    offset = 0 if fill is None else fill.to(x.device, x.dtype).view(1, -1, 1, 1)
    # Zero padding of x − fill is padding with the fill value.
    padded = F.pad(x, (radius,) * 4, mode="replicate") if fill is None else F.pad(x - offset, (radius,) * 4)
    out = F.conv2d(padded, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c) + offset


class _MaskMethod(Attribution):
    """What both methods share: chunks of ``batch_size`` masks, autograd whatever the caller's mode."""

    SETTINGS: ClassVar[tuple[str, ...]] = ()
    masks_per_image = 1

    def config(self) -> dict[str, Any]:
        """The settings that define the maps."""
        return {**super().config(), **{k: getattr(self, k) for k in self.SETTINGS}}

    def _attribute(self, images: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if kwargs:
            raise ConfigError(f"{self.name}: unknown option(s) {sorted(kwargs)}; settings are given when the "
                              "method is created")
        adapter, per, maps = self.adapter, max(1, self.batch_size // self.masks_per_image), []
        # inference_mode(False) and clones: the caller may be in inference mode, whose tensors
        # cannot take part in autograd.
        with torch.inference_mode(False), torch.enable_grad(), adapter.evaluating():
            state = self._prepare()
            for s in range(0, images.shape[0], per):
                x = images[s:s + per] if tuple(images.shape[-2:]) == adapter.input_size else \
                    resize(images[s:s + per], adapter.input_size)
                maps.append(self._optimise(x.to(adapter.device).clone(), targets[s:s + per].to(adapter.device).clone(),
                                           state).detach().cpu())
        out, size = torch.cat(maps), tuple(images.shape[-2:])
        return out if tuple(out.shape[-2:]) == size else resize(out.unsqueeze(1), size)[:, 0]

    def _prepare(self) -> Any:
        return None

    @property
    def scale(self) -> float:
        """Factor from the papers' 224 px settings to this model's input size."""
        return min(self.adapter.input_size) / REFERENCE_SIZE


@register
class MeaningfulPerturbation(_MaskMethod):
    """Meaningful perturbation: the smallest blurred region that changes the class.

    ``game="deletion"``: m minimises P(target | x ⊙ m + blur(x) ⊙ (1 − m)) + λ1 ‖1 − m‖₁ +
    λ2 Σ_u ‖∇m(u)‖^β, m ∈ [0, 1]; the map is 1 − m. ``"preservation"``: m minimises −P + λ1 ‖m‖₁ +
    λ2 TV; the map is m. Adam (β 0.9, 0.999), m clipped to [0, 1] after each step and started at 1;
    L1 and TV are sums over the mask at 1/``mask_scale`` of the input, which is upsampled (nearest)
    and blurred (``mask_blur`` px); ``jitter`` shifts the image by up to ±jitter/2 px per step.
    Cost: ``iterations`` forward + backward passes per image.
    """

    name = "meaningful_perturbation"
    GAMES = ("deletion", "preservation")
    SETTINGS = ("game", "iterations", "lr", "l1", "tv", "tv_beta", "mask_scale", "mask_blur", "blur_sigma",
                "jitter")

    def __init__(self, adapter, *, game: str = "deletion", iterations: int = 300, lr: float = 0.1,
                 l1: float = 1e-4, tv: float = 1e-2, tv_beta: float = 3.0, mask_scale: int = 8,
                 mask_blur: float = 5.0, blur_sigma: float = 10.0, jitter: int = 4, seed: int = 0,
                 batch_size: int | None = None):
        super().__init__(adapter, seed=seed, batch_size=batch_size)
        check = _Checker(self.name)
        self.game = check.choice("game", game, self.GAMES)
        self.iterations = check.number("iterations", iterations, low=1, integer=True)
        self.lr, self.blur_sigma = check.number("lr", lr, above=0), check.number("blur_sigma", blur_sigma, above=0)
        self.l1, self.tv, self.mask_blur = (check.number(k, v) for k, v in (("l1", l1), ("tv", tv),
                                                                             ("mask_blur", mask_blur)))
        self.tv_beta, self.mask_scale = check.number("tv_beta", tv_beta, low=1), check.number(
            "mask_scale", mask_scale, low=1, integer=True)
        if self.mask_scale > min(adapter.input_size):
            raise ConfigError(f"{self.name}: mask_scale {mask_scale} exceeds the model input {adapter.input_size}")
        self.jitter = check.number("jitter", jitter, integer=True)

    def upsample(self, low: torch.Tensor) -> torch.Tensor:
        """The full-size mask ``[n, 1, H, W]`` from low-resolution parameters (nearest, then blur)."""
        s, (height, width) = self.mask_scale, self.adapter.input_size
        full = low.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)[:, :, :height, :width]
        return gaussian_blur(full, self.mask_blur * self.scale)

    def _optimise(self, x: torch.Tensor, targets: torch.Tensor, state: Any) -> torch.Tensor:
        adapter, (height, width), deletion = self.adapter, self.adapter.input_size, self.game == "deletion"
        null, shift = gaussian_blur(x, self.blur_sigma * self.scale), round(self.jitter * self.scale / 2)
        if shift:
            x, null = (F.pad(t, (shift,) * 4, mode="replicate") for t in (x, null))
        rows = torch.arange(x.shape[0], device=x.device)
        gen = self.generator()  # a fresh one per chunk: every image gets the same jitter, whatever its batch
        low = torch.ones(x.shape[0], 1, math.ceil(height / self.mask_scale), math.ceil(width / self.mask_scale),
                         device=x.device, requires_grad=True)
        opt = torch.optim.Adam([low], lr=self.lr, betas=(0.9, 0.999), eps=1e-8)
        for _ in progress(range(self.iterations), desc=f"{adapter.name} {self.name}"):
            dy, dx = torch.randint(0, 2 * shift + 1, (2,), generator=gen).tolist() if shift else (0, 0)
            xi, ni = x[:, :, dy:dy + height, dx:dx + width], null[:, :, dy:dy + height, dx:dx + width]
            prob = torch.softmax(adapter.forward_module(ni + (xi - ni) * self.upsample(low)), dim=1)[rows, targets]
            loss = ((prob if deletion else -prob) + self.l1 * (low - float(deletion)).abs().sum(dim=(1, 2, 3))
                    + self.tv * total_variation(low, self.tv_beta)).sum()
            (low.grad,) = torch.autograd.grad(loss, [low])
            opt.step()
            with torch.no_grad():
                low.clamp_(0, 1)
        with torch.no_grad():
            mask = self.upsample(low)[:, 0]
        return 1 - mask if deletion else mask


def total_variation(mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Σ_u (|∂_y m|² + |∂_x m|²)^(β/2) per mask, with forward differences (0 past the last row/column)."""
    dy = F.pad(mask[:, :, 1:, :] - mask[:, :, :-1, :], (0, 0, 0, 1))
    dx = F.pad(mask[:, :, :, 1:] - mask[:, :, :, :-1], (0, 1, 0, 0))
    # The tiny offset keeps the gradient finite where the mask is flat (it matters for β < 2).
    return ((dy * dy + dx * dx + 1e-12) ** (beta / 2)).sum(dim=(1, 2, 3))


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


class _Checker:
    """Setting checks whose ConfigError names the method, the setting and the value."""

    def __init__(self, where: str):
        self.where = where

    def choice(self, what: str, value: Any, options: tuple) -> Any:
        if not any(type(value) is type(o) and value == o for o in options):
            raise ConfigError(f"{self.where}: {what} must be one of {options}, got {value!r}")
        return value

    def number(self, what: str, value: Any, low: float = 0, above: float | None = None,
               below: float | None = None, integer: bool = False) -> Any:
        kinds = (int, np.integer) if integer else (int, float, np.number)
        if not (not isinstance(value, bool) and isinstance(value, kinds) and math.isfinite(value)
                and (value > above if above is not None else value >= low) and (below is None or value < below)):
            bound = (f"> {above}" if above is not None else f"≥ {low}") + (f" and < {below}" if below else "")
            raise ConfigError(f"{self.where}: {what} must be {'an integer' if integer else 'a number'} {bound}, "
                              f"got {value!r}")
        return int(value) if integer else float(value)
