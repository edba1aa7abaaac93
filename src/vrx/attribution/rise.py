"""RISE: randomized input sampling for explanation (Petsiuk, Das & Saenko, BMVC 2018).

The saliency of pixel u for class c is the expected class probability over random masks, weighted
by how much each mask keeps u::

    S_c(u) = 1 / (N · p1) · Σ_i P(c | x ⊙ M_i) · M_i(u)

Masks follow the reference ``generate_masks`` (eclique/RISE): an s × s grid of Bernoulli(p1)
cells is upsampled bilinearly (scikit-image's ``resize``, order 1, mode "reflect", no
anti-aliasing) to (s + 1) · cell pixels, cell = ⌈size / s⌉, and a random window of the model's
input size is cut from it (shift uniform in [0, cell) per axis). Masks are made at the model's
input size, as in the reference, which resizes the image first; the map is resized to the image.
Masking multiplies the *normalised* image (``adapter.preprocess``), so hidden pixels become the
mean colour: in [0, 1] space that is a blend towards ``adapter.fill_value``.

Memory is bounded by the batch size: only the Bernoulli grids and shifts of all N masks are drawn
up front (N · s² bytes); each batch of masks is upsampled when it is needed and dropped after.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, ModelSpecError
from ..models.inputs import resize
from ..progress import progress
from .base import Attribution, register

__all__ = ["Rise", "upsample_matrix"]


def upsample_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """``[n_out, n_in]`` weights of 1-D linear upsampling with mirror edges (skimage order 1, 'reflect').

    Output pixel o samples the input at (o + 0.5) · n_in / n_out − 0.5 (pixel centres aligned);
    positions outside [0, n_in − 1] are mirrored about the edge pixel, as scikit-image's
    ``mode="reflect"`` (SciPy's "mirror") does.
    """
    pos = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    if n_in > 1:
        period = 2 * (n_in - 1)
        pos = np.abs(np.mod(pos, period))
        pos = np.where(pos > n_in - 1, period - pos, pos)
    else:
        pos = np.zeros_like(pos)
    lo = np.clip(np.floor(pos).astype(int), 0, n_in - 1)
    hi = np.clip(lo + 1, 0, n_in - 1)
    frac = pos - lo
    weights = np.zeros((n_out, n_in))
    np.add.at(weights, (np.arange(n_out), lo), 1 - frac)
    np.add.at(weights, (np.arange(n_out), hi), frac)
    return torch.from_numpy(weights).float()


@register
class Rise(Attribution):
    """RISE saliency: the mean softmax probability of the target under random smooth masks.

    Settings: ``n_masks`` (N, default 4000, the paper's ImageNet setting), ``grid`` (s, default 7),
    ``p1`` (probability that a grid cell is kept, default 0.5), ``seed``, ``batch_size`` (masked
    images per forward pass). Cost: N forward passes per image, no backward. The same seed gives
    the same masks for every image and every call, whatever the batch size.
    """

    name = "rise"
    signed = False

    def __init__(self, adapter, *, n_masks: int = 4000, grid: int = 7, p1: float = 0.5, seed: int = 0,
                 batch_size: int | None = None):
        super().__init__(adapter, seed=seed, batch_size=batch_size)
        self.n_masks = _positive_int(n_masks, "n_masks")
        self.grid = _positive_int(grid, "grid")
        if isinstance(p1, bool) or not isinstance(p1, (int, float, np.number)) or not 0 < p1 <= 1:
            raise ConfigError(f"rise: p1 (probability that a grid cell is kept) must be in (0, 1], got {p1!r}")
        self.p1 = float(p1)
        height, width = adapter.input_size
        if self.grid > min(height, width):
            raise ConfigError(f"rise: grid {self.grid} is finer than the model input {height}×{width}")

    def config(self) -> dict[str, Any]:
        """The settings that define the maps."""
        return {**super().config(), "n_masks": self.n_masks, "grid": self.grid, "p1": self.p1}

    # ---- masks ------------------------------------------------------------------------------

    def mask_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(grids ``[N, s, s]`` bool, shifts ``[N, 2]`` long) drawn from the seeded generator."""
        gen = self.generator()
        s = self.grid
        grids = torch.rand(self.n_masks, s, s, generator=gen) < self.p1
        cells = [math.ceil(n / s) for n in self.adapter.input_size]
        shifts = torch.stack([torch.randint(0, c, (self.n_masks,), generator=gen) for c in cells], dim=1)
        return grids, shifts

    def _interpolators(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.grid
        return tuple(upsample_matrix(s, (s + 1) * math.ceil(n / s)).to(device) for n in self.adapter.input_size)

    @staticmethod
    def _make_masks(grids: torch.Tensor, shifts: torch.Tensor, up_y: torch.Tensor, up_x: torch.Tensor,
                    size: tuple[int, int]) -> torch.Tensor:
        """``[m, H, W]`` masks: each grid upsampled and cropped at its shift (two small matmuls)."""
        height, width = size
        rows = up_y[shifts[:, :1] + torch.arange(height, device=up_y.device)]  # [m, H, s]
        cols = up_x[shifts[:, 1:] + torch.arange(width, device=up_x.device)]  # [m, W, s]
        return rows @ grids.to(rows.dtype) @ cols.transpose(1, 2)

    def masks(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Masks ``start:stop`` at the model's input size (CPU), as :meth:`attribute` uses them."""
        grids, shifts = self.mask_parameters()
        up_y, up_x = self._interpolators(torch.device("cpu"))
        sl = slice(start, stop)
        return self._make_masks(grids[sl], shifts[sl], up_y, up_x, self.adapter.input_size)

    # ---- saliency ---------------------------------------------------------------------------

    def _attribute(self, images: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if kwargs:
            raise ConfigError(f"rise: unknown option(s) {sorted(kwargs)}; set n_masks, grid and p1 "
                              "when creating the method")
        adapter = self.adapter
        size = adapter.input_size
        # The reference masks the normalised image (hidden pixels become the mean colour). Doing so
        # here, once per batch, and calling the model on it directly costs one multiplication per
        # masked image instead of a blend plus forward_module's normalisation.
        x = adapter.preprocess(images)
        device = x.device
        grids, shifts = self.mask_parameters()
        up_y, up_x = self._interpolators(device)
        sal = torch.zeros(x.shape[0], size[0] * size[1], device=device)
        starts = range(0, self.n_masks, self.batch_size)
        with adapter.evaluating() as model, torch.inference_mode():
            # One buffer for every masked batch: a fresh 10 MB tensor per forward costs page faults.
            buffer = torch.empty(min(self.batch_size, self.n_masks), *x.shape[1:], device=device)
            for s in progress(starts, desc=f"{adapter.name} rise", total=len(starts)):
                sl = slice(s, s + self.batch_size)
                m = self._make_masks(grids[sl].to(device), shifts[sl].to(device), up_y, up_x, size)
                flat = m.view(m.shape[0], -1)
                masked = buffer[:m.shape[0]]
                for b in range(x.shape[0]):
                    torch.mul(x[b:b + 1], m.unsqueeze(1), out=masked)
                    logits = model(masked)
                    if s == 0 and b == 0 and (logits.ndim != 2 or logits.shape[1] != adapter.num_classes):
                        raise ModelSpecError(f"model {adapter.name!r} returned {tuple(logits.shape)}; expected "
                                             f"logits of shape N×{adapter.num_classes}")
                    probs = torch.softmax(logits.float(), dim=1)
                    sal[b] += probs[:, int(targets[b])] @ flat
        sal = (sal / (self.n_masks * self.p1)).view(-1, 1, *size).cpu()
        if tuple(images.shape[-2:]) != size:
            sal = resize(sal, tuple(images.shape[-2:]))
        return sal[:, 0]


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"rise: {what} must be a positive integer, got {value!r}")
    return int(value)
