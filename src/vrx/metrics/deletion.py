"""Deletion and insertion curves (Petsiuk et al., RISE 2018): does removing what a map ranks first hurt?

The protocol is the RISE reference's ("causal metric"), restated:

* Work in the model's normalised input space at its input size: images go through
  ``adapter.preprocess`` (bilinear, antialiased resize, then ``(x - mean) / std``); saliency maps are
  resized to the input size the same way (:func:`vrx.models.inputs.resize`, bilinear, antialiased).
* Pixels in order of decreasing saliency; ties broken by a stable sort on ``-saliency``, so equal
  values go in raster order (row by row, left to right).
* ``step`` pixels per step (all channels of a pixel together; default: the input width, as the
  reference's 224 at 224 px); ``n_steps = ceil(H*W / step)``, ``n_steps + 1`` scores.
* Deletion starts from the image and replaces pixels by the substrate, zeros in normalised space
  (the mean colour); insertion starts from the substrate, the image blurred in normalised space by
  an 11×11 Gaussian kernel with σ = 5 (a delta smoothed by ``scipy.ndimage.gaussian_filter``) and
  zero padding, and puts the image's pixels back.
* Score: softmax probability of the class the model predicts on the clean image (or of an explicit
  ``target``). AUC: the trapezoid rule on a uniform grid over [0, 1].

Lower deletion AUC and higher insertion AUC are better.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, InvalidImageError, ModelSpecError
from ..models.adapter import ClassifierAdapter, Target
from ..models.inputs import Images, image_batch, resize
from ..progress import progress

__all__ = ["CurveResult", "deletion_insertion", "gaussian_kernel", "blur_substrate", "trapezoid_auc"]

MODES = ("deletion", "insertion")
BLUR_SIZE = 11
BLUR_SIGMA = 5.0

Substrate = Union[None, str, Callable[[torch.Tensor], torch.Tensor]]


@dataclass(frozen=True, eq=False)
class CurveResult:
    """Score curves and their areas, one row per image.

    ``scores[i, :lengths[i]]`` is image i's curve (the rest is NaN when curves differ in length, as
    concept curves do); ``fractions`` is the x of each point: one row shared by all images, or one
    row per image (NaN-padded). ``classes`` is the class whose probability is the score.
    """

    scores: np.ndarray
    auc: np.ndarray
    fractions: np.ndarray
    classes: np.ndarray
    mode: str
    step: int | None
    lengths: np.ndarray

    @property
    def mean_auc(self) -> float:
        """Mean AUC over the images that have one (NaN if none has)."""
        ok = ~np.isnan(self.auc)
        return float(self.auc[ok].mean()) if ok.any() else float("nan")

    def curve(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(fractions, scores) of image ``i``, without padding."""
        n = int(self.lengths[i])
        x = self.fractions if self.fractions.ndim == 1 else self.fractions[i]
        return x[:n].copy(), self.scores[i, :n].copy()


def trapezoid_auc(scores: np.ndarray) -> float:
    """Area under scores taken at uniform steps over [0, 1] (the reference's ``auc``); NaN for < 2 points."""
    a = np.asarray(scores, dtype=np.float64)
    if a.shape[0] < 2:
        return float("nan")
    return float((a.sum() - a[0] / 2 - a[-1] / 2) / (a.shape[0] - 1))


def gaussian_kernel(size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """The reference's blur kernel: a centred delta smoothed by ``gaussian_filter(sigma)``, float32."""
    from scipy.ndimage import gaussian_filter

    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1.0
    # scipy's default reflect boundary folds the tails back in, so the kernel sums to 1 but is not
    # a truncated Gaussian: built this way to match the reference's values exactly.
    return torch.from_numpy(gaussian_filter(delta, sigma).astype(np.float32))


def blur_substrate(x: torch.Tensor) -> torch.Tensor:
    """Each channel of a normalised NCHW batch convolved with :func:`gaussian_kernel`, zero padding."""
    k = gaussian_kernel().to(x.device)
    c = x.shape[1]
    return F.conv2d(x, k.expand(c, 1, *k.shape), padding=BLUR_SIZE // 2, groups=c)


def _zeros(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


def saliency_batch(saliency: torch.Tensor | np.ndarray, images: torch.Tensor) -> torch.Tensor:
    """Saliency as a finite float32 CPU tensor [B, H, W] matching ``images``; InvalidImageError if not."""
    s = torch.as_tensor(np.asarray(saliency) if not isinstance(saliency, torch.Tensor) else saliency)
    s = s.detach().cpu().float()
    expected = (images.shape[0], images.shape[2], images.shape[3])
    if tuple(s.shape) != expected:
        raise InvalidImageError(f"saliency has shape {tuple(s.shape)}; expected [B, H, W] = {list(expected)} "
                                "(one map per image at the image's resolution)")
    if not torch.isfinite(s).all():
        raise InvalidImageError("saliency contains NaN or infinite values")
    return s


def model_space(adapter: ClassifierAdapter, images: Images,
                saliency: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised inputs at input size on the device, saliency [B, h, w] resized the same way, CPU)."""
    x = image_batch(images)
    s = saliency_batch(saliency, x)
    xn = adapter.preprocess(x)
    if tuple(s.shape[-2:]) != tuple(adapter.input_size):
        s = resize(s.unsqueeze(1), adapter.input_size).squeeze(1)
    return xn, s


def saliency_ranks(saliency: torch.Tensor) -> torch.Tensor:
    """[B, h*w] int64: each pixel's position in decreasing-saliency order (stable: ties in raster order)."""
    flat = saliency.flatten(1)
    order = torch.argsort(-flat, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1]).expand_as(order).contiguous())
    return ranks


def batch_size_of(adapter: ClassifierAdapter, batch_size: int | None) -> int:
    """``batch_size``, checked, or the adapter's when None."""
    if batch_size is None:
        return adapter.batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def normalised_logits(adapter: ClassifierAdapter, build: Callable[[int, int], torch.Tensor], total: int,
                      batch_size: int | None, desc: str,
                      pick: Callable[[torch.Tensor, int, int], torch.Tensor]) -> torch.Tensor:
    """Run the model on ``build(start, stop)`` (normalised inputs) in batches; concatenate ``pick``'s results.

    ``pick(logits, start, stop)`` keeps what the caller needs of each batch's logits, so memory is
    bounded by the batch, not by all forwards.
    """
    bs = batch_size_of(adapter, batch_size)
    starts = range(0, total, bs)
    outs = []
    with adapter.evaluating() as model, torch.inference_mode():
        for s in progress(starts, desc=f"{adapter.name} {desc}", total=len(starts),
                          enabled=None if len(starts) > 1 else False):
            e = min(s + bs, total)
            out = model(build(s, e))
            if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != adapter.num_classes:
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ModelSpecError(f"model {adapter.name!r} returned {shape}; expected logits N×"
                                     f"{adapter.num_classes}")
            outs.append(pick(out.float(), s, e).cpu())
    return torch.cat(outs)


def explained_classes(adapter: ClassifierAdapter, xn: torch.Tensor, target: Target | None,
                      batch_size: int | None) -> torch.Tensor:
    """One class per image: ``target`` checked against the model, else the class predicted on ``xn``."""
    if target is not None:
        return torch.tensor(adapter.classes.targets(target, xn.shape[0]), dtype=torch.long)
    return normalised_logits(adapter, lambda s, e: xn[s:e], xn.shape[0], batch_size, "predict",
                             lambda out, s, e: out.argmax(1))


def _substrate_fn(substrate: Substrate, mode: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if substrate is None:
        return _zeros if mode == "deletion" else blur_substrate
    if isinstance(substrate, str) and substrate in ("zeros", "blur"):
        return _zeros if substrate == "zeros" else blur_substrate
    if callable(substrate) and not isinstance(substrate, str):
        return substrate
    raise ConfigError(f"substrate must be None, 'zeros', 'blur' or a function of the normalised batch; "
                      f"got {substrate!r}")


def _step(step: int | None, width: int) -> int:
    if step is None:
        return width
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ConfigError(f"step must be a positive number of pixels, got {step!r}")
    return int(step)


def deletion_insertion(adapter: ClassifierAdapter, images: Images, saliency: torch.Tensor | np.ndarray,
                       mode: str = "deletion", step: int | None = None, substrate: Substrate = None,
                       batch_size: int | None = None, target: Target | None = None) -> CurveResult:
    """Deletion or insertion curves of ``saliency`` maps ([B, H, W], one per image) on ``images``.

    ``step``: pixels changed per step at the model's input size (default: its input width).
    ``substrate``: None (mode's default), ``"zeros"`` (normalised zeros), ``"blur"`` (the 11×11, σ = 5
    blur) or a function of the normalised batch returning a batch of the same shape. ``target``: a
    class (or one per image) to score instead of the predicted one. ``batch_size``: model inputs
    per forward (default the adapter's); every (image, step) pair is one input.
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    fn = _substrate_fn(substrate, mode)
    xn, sal = model_space(adapter, images, saliency)
    b, c, h, w = xn.shape
    hw = h * w
    step = _step(step, w)
    n_steps = math.ceil(hw / step)
    classes = explained_classes(adapter, xn, target, batch_size)
    with torch.inference_mode():
        sub = fn(xn)
    if not isinstance(sub, torch.Tensor) or tuple(sub.shape) != tuple(xn.shape):
        got = tuple(sub.shape) if isinstance(sub, torch.Tensor) else type(sub).__name__
        raise ConfigError(f"substrate returned {got}; expected the input's shape {tuple(xn.shape)}")
    start, finish = (xn, sub) if mode == "deletion" else (sub, xn)
    start, finish = start.flatten(2), finish.to(xn.device, xn.dtype).flatten(2)
    ranks = saliency_ranks(sal).to(xn.device)
    n_points = n_steps + 1
    total = b * n_points
    image_of = torch.arange(total, device=xn.device) // n_points
    changed = (torch.arange(total, device=xn.device) % n_points) * step  # pixels replaced so far
    cls = classes.to(xn.device)

    def build(s: int, e: int) -> torch.Tensor:
        # Pixel p of image i is replaced at step k once its rank is below k * step: the same image the
        # reference reaches by replacing `step` more pixels in place at every step.
        i = image_of[s:e]
        done = (ranks[i] < changed[s:e, None]).unsqueeze(1)
        return torch.where(done, finish[i], start[i]).view(e - s, c, h, w)

    def pick(out: torch.Tensor, s: int, e: int) -> torch.Tensor:
        return torch.softmax(out, dim=1).gather(1, cls[image_of[s:e]].view(-1, 1)).squeeze(1)

    probs = normalised_logits(adapter, build, total, batch_size, mode, pick)
    scores = probs.double().numpy().reshape(b, n_points)
    auc = np.array([trapezoid_auc(row) for row in scores])
    return CurveResult(scores=scores, auc=auc, fractions=np.arange(n_points) / n_steps,
                       classes=classes.numpy(), mode=mode, step=step,
                       lengths=np.full(b, n_points, dtype=np.int64))

