"""The amount-kept / re-identification trade-off (Kwon et al., "Inverse-based approach", TNNLS 2021).

Kwon et al. plot, per method, how much of the input an explanation keeps against how often the
model still predicts the original class from what is kept. Their inverse image is an attenuation of
the normalised input, x̂ = x ⊙ h with h in [0, 1]; its "amount of activations" is the mean of the
map |x̂| / |x| = h. Here any saliency map is made into such an h by keeping its top-k fraction of
pixels (h = 1 there, 0 elsewhere), for each k in a grid, so the amount is exactly the fraction
kept:

* Work in the model's normalised input space at its input size, as :mod:`.deletion` does (maps
  resized bilinearly, pixels ranked by decreasing saliency, ties in raster order).
* Keep the ``round(k * h * w)`` top pixels (all channels), set the rest to 0 in normalised space
  (= ``adapter.fill_value`` in [0, 1] space).
* Re-identified: the model's top-1 class on the kept image is the class it predicts on the clean
  image (or ``target``); top-5 and the class probability are recorded too.

A curve above another (a higher rate at the same amount kept) is better; random maps give the
chance curve. At k = 1 the image is whole, so the rate is 1 for the predicted class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from ..models.adapter import ClassifierAdapter, Target
from ..models.inputs import Images
from .deletion import explained_classes, model_space, normalised_logits, saliency_ranks

__all__ = ["DEFAULT_FRACTIONS", "TradeoffResult", "tradeoff_curve"]

DEFAULT_FRACTIONS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True, eq=False)
class TradeoffResult:
    """Per image and kept fraction: re-identified (top-1, top-5) and the class probability."""

    fractions: np.ndarray
    kept: np.ndarray
    reidentified: np.ndarray
    reidentified_top5: np.ndarray
    probabilities: np.ndarray
    classes: np.ndarray

    @property
    def rate(self) -> np.ndarray:
        """[F] share of images whose class is re-identified (top-1) at each fraction."""
        return self.reidentified.mean(0)

    @property
    def rate_top5(self) -> np.ndarray:
        """[F] the same with the class among the top five."""
        return self.reidentified_top5.mean(0)

    def area(self) -> float:
        """Area under the top-1 rate over the amount actually kept (trapezoid rule; NaN for one point)."""
        if self.kept.size < 2:
            return float("nan")
        return float(np.trapezoid(self.rate, self.kept))


def _fractions(fractions: Sequence[float]) -> np.ndarray:
    f = np.asarray(fractions, dtype=np.float64).reshape(-1)
    if f.size == 0 or not np.isfinite(f).all() or (f < 0).any() or (f > 1).any():
        raise ConfigError(f"fractions must be numbers in [0, 1], got {list(fractions)!r}")
    if (np.diff(f) <= 0).any():
        raise ConfigError(f"fractions must increase, got {f.tolist()}")
    return f


def tradeoff_curve(adapter: ClassifierAdapter, images: Images, saliency: torch.Tensor | np.ndarray,
                   fractions: Sequence[float] = DEFAULT_FRACTIONS, target: Target | None = None,
                   batch_size: int | None = None) -> TradeoffResult:
    """Re-identification of ``images`` from the top ``fractions`` of pixels of their ``saliency`` maps."""
    f = _fractions(fractions)
    xn, sal = model_space(adapter, images, saliency)
    b, c, h, w = xn.shape
    hw = h * w
    n_keep = np.floor(f * hw + 0.5).astype(np.int64)  # round half up
    classes = explained_classes(adapter, xn, target, batch_size)
    ranks = saliency_ranks(sal).to(xn.device)
    flat = xn.flatten(2)
    nf = f.size
    total = b * nf
    image_of = torch.arange(total, device=xn.device) // nf
    keep = torch.from_numpy(n_keep).to(xn.device)[torch.arange(total, device=xn.device) % nf]
    cls = classes.to(xn.device)
    top = min(5, adapter.num_classes)

    def build(s: int, e: int) -> torch.Tensor:
        i = image_of[s:e]
        kept = (ranks[i] < keep[s:e, None]).unsqueeze(1)
        return torch.where(kept, flat[i], torch.zeros((), device=xn.device)).view(e - s, c, h, w)

    def pick(out: torch.Tensor, s: int, e: int) -> torch.Tensor:
        t = cls[image_of[s:e]]
        p = torch.softmax(out, 1).gather(1, t.view(-1, 1)).squeeze(1)
        hit1 = out.argmax(1) == t
        hit5 = (out.topk(top, 1).indices == t.view(-1, 1)).any(1)
        return torch.stack([p, hit1.float(), hit5.float()], 1)

    got = normalised_logits(adapter, build, total, batch_size, "trade-off", pick).double().numpy()
    got = got.reshape(b, nf, 3)
    return TradeoffResult(fractions=f, kept=n_keep / hw, reidentified=got[..., 1] > 0.5,
                          reidentified_top5=got[..., 2] > 0.5, probabilities=got[..., 0],
                          classes=classes.numpy())
