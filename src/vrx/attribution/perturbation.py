"""Meaningful perturbation (Fong & Vedaldi 2017), and what it shares with extremal perturbation.

Both mask methods (this one and :mod:`.extremal`) optimise a mask m (1 = keep the pixel, 0 = blur it away) by gradient descent through
``adapter.forward_module`` inside ``adapter.evaluating()``, with gradients w.r.t. the mask only
(the weights get no ``.grad``). ``batch_size`` masks are optimised together: in eval mode images
are independent and Adam and SGD act elementwise, so a mask does not depend on its batch. Masks
live at the model's input size and the map is resized to the image; pixel settings are the
papers' at 224 px, scaled by min(input size) / 224. Defaults: the authors' code (meaningful
perturbation) and TorchRay (extremal perturbation); docs/attribution.md lists the differences.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..models.inputs import resize
from ..progress import progress
from .base import Attribution, register

__all__ = ["MeaningfulPerturbation", "gaussian_blur", "total_variation"]

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
