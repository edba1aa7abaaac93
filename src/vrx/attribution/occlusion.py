"""Occlusion (Zeiler & Fergus 2014) through Captum's ``Occlusion``: slide a patch, watch the logit.

A ``window``-sized square-ish patch (a fraction of each side, default 1/8) is moved over the image
in steps of ``stride`` times the window (default 1/2); each position replaces the patch, in all
channels, by ``adapter.fill_value`` (normalised value 0). A pixel's score is the mean, over the
patch positions covering it, of logit(image) - logit(occluded image): positive where hiding the
pixel lowers the logit. Cost per image: one forward per position, about
(1 + (1 - window) / (window * stride))^2 = 225 with the defaults.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from captum.attr import Occlusion

from .base import Attribution, register
from .gradients import fraction, run_batches

__all__ = ["OcclusionMap"]


def _side(length: int, frac: float) -> int:
    """A window or stride of ``frac`` × ``length`` pixels, at least 1 and at most ``length``."""
    return max(1, min(length, math.floor(length * frac + 0.5)))  # half up, not to even


@register
class OcclusionMap(Attribution):
    """Occlusion with a window of ``window`` × each side and a stride of ``stride`` × the window; signed."""

    name = "occlusion"
    signed = True

    def __init__(self, adapter, *, window: float = 0.125, stride: float = 0.5, **kwargs: Any):
        super().__init__(adapter, **kwargs)
        self.window = fraction(window, "window")
        self.stride = fraction(stride, "stride")

    def config(self) -> dict[str, Any]:
        return {**super().config(), "window": self.window, "stride": self.stride}

    def shapes(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """((window h, window w), (stride h, stride w)) in pixels for an image of this size."""
        win = (_side(height, self.window), _side(width, self.window))
        return win, (_side(win[0], self.stride), _side(win[1], self.stride))

    def _attribute(self, images: torch.Tensor, targets: torch.Tensor, **_: Any) -> torch.Tensor:
        occ = Occlusion(self.adapter.forward_module)
        (wh, ww), (sh, sw) = self.shapes(*images.shape[-2:])
        fill = self.adapter.fill_value.view(1, -1, 1, 1)

        def one(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():  # forward passes only: no graph to keep
                attr = occ.attribute(x, sliding_window_shapes=(x.shape[1], wh, ww), strides=(x.shape[1], sh, sw),
                                     baselines=fill.to(x.device).expand_as(x), target=t,
                                     perturbations_per_eval=max(1, self.batch_size // x.shape[0]))
            return attr.mean(1)  # the window spans all channels, so they hold the same score

        return run_batches(self, images, targets, one, requires_grad=False)
