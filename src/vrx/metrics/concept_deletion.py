"""C-Deletion and C-Insertion (Fel et al., CRAFT 2023 / "holistic" concept metrics) on image regions.

Per image, a method ranks the detected concepts of the explained class (most important first); each
concept is a region of the image (an H×W mask; regions may overlap). Deletion removes the concepts
cumulatively in that order, painting their pixels with ``adapter.fill_value`` (the colour that
normalises to 0, as vrx masks concepts everywhere else); insertion starts from the image with every
concept removed and puts them back in order (a restored concept gets all its pixels back, including
those it shares with concepts not restored yet). The score after each step is the softmax
probability of the target class, so an image with n concepts has n + 1 points at x = k / n; the
trapezoid rule over [0, 1] gives its AUC. Fel et al. remove concepts in the activation space of
their factorisation; here concepts are image regions, so they are removed in pixel space.

Lower C-Deletion AUC and higher C-Insertion AUC are better; :func:`random_orders` gives the chance
level to compare with.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, InvalidImageError
from ..models.adapter import ClassifierAdapter, Target
from ..models.inputs import Images, resize, to_tensor, validate_images
from ..progress import progress
from .deletion import MODES, CurveResult, batch_size_of, trapezoid_auc

__all__ = ["concept_deletion", "orders_from_scores", "random_orders"]


def orders_from_scores(scores: Sequence[Sequence[float]]) -> list[np.ndarray]:
    """Per image, concept indices by decreasing score (stable: ties keep their given order)."""
    out = []
    for i, s in enumerate(scores):
        a = np.asarray(s, dtype=np.float64).reshape(-1)
        if not np.isfinite(a).all():
            raise ConfigError(f"concept scores of image {i} contain NaN or infinite values")
        out.append(np.argsort(-a, kind="stable"))
    return out


def random_orders(n_per_image: Sequence[int], generator: torch.Generator | int) -> list[np.ndarray]:
    """A uniformly random order of each image's ``n`` concepts, drawn from ``generator`` (or a seed)."""
    g = generator if isinstance(generator, torch.Generator) else torch.Generator().manual_seed(int(generator))
    return [torch.randperm(int(n), generator=g).numpy() for n in n_per_image]


def _images(images: Images) -> list[torch.Tensor]:
    """Each image as a 1×3×H×W tensor in [0, 1]; a list may mix sizes."""
    if isinstance(images, (list, tuple)):
        parts = [to_tensor(im) for im in images]
        parts = [p.unsqueeze(0) if p.ndim == 3 else p for p in parts]
        if any(p.ndim != 4 or p.shape[0] != 1 for p in parts):
            raise InvalidImageError("a list of images must hold one image per item")
    else:
        x = to_tensor(images)
        x = x.unsqueeze(0) if x.ndim == 3 else x
        if x.ndim != 4:
            raise InvalidImageError(f"images must be N×3×H×W, got shape {tuple(x.shape)}")
        parts = list(x.split(1))
    for p in parts:
        validate_images(p, channels=3)
    return parts


def _masks(masks: Any, i: int, size: tuple[int, int]) -> torch.Tensor:
    """Image ``i``'s concept masks as a bool tensor [n, H, W]."""
    if isinstance(masks, torch.Tensor):
        m = masks.detach().cpu()
    else:
        items = [np.asarray(mk.detach().cpu() if isinstance(mk, torch.Tensor) else mk) for mk in masks]
        m = torch.from_numpy(np.stack(items)) if items else torch.zeros((0, *size), dtype=torch.bool)
    if m.ndim != 3 or tuple(m.shape[1:]) != size:
        raise InvalidImageError(f"concept masks of image {i} have shape {tuple(m.shape)}; expected "
                                f"[n, {size[0]}, {size[1]}] (H×W masks at the image's resolution)")
    if m.dtype != torch.bool:
        if not ((m == 0) | (m == 1)).all():
            raise InvalidImageError(f"concept masks of image {i} must be boolean (or 0/1)")
        m = m.bool()
    return m


def _order(order: Any, n: int, i: int) -> torch.Tensor:
    o = np.asarray(order).reshape(-1)
    if o.size and not np.issubdtype(o.dtype, np.integer):
        raise ConfigError(f"order of image {i} must hold integer concept indices, got {o.dtype}")
    if sorted(o.tolist()) != list(range(n)):
        raise ConfigError(f"order of image {i} must rank each of its {n} concepts once "
                          f"(a permutation of 0..{n - 1}), got {o.tolist()}")
    return torch.from_numpy(o.astype(np.int64))


def _fill(adapter: ClassifierAdapter, fill: float | Sequence[float] | torch.Tensor | None) -> torch.Tensor:
    if fill is None:
        return adapter.fill_value.view(3, 1, 1)
    f = torch.as_tensor(fill, dtype=torch.float32).reshape(-1)
    if f.numel() == 1:
        f = f.expand(3)
    if f.numel() != 3 or not torch.isfinite(f).all() or (f < 0).any() or (f > 1).any():
        raise ConfigError(f"fill must be one [0, 1] value or three (R, G, B), got {fill!r}")
    return f.view(3, 1, 1)


def _variants(image: torch.Tensor, masks: torch.Tensor, order: torch.Tensor, mode: str,
              fill: torch.Tensor) -> torch.Tensor:
    """[n + 1, 3, H, W]: the image after each step of the game."""
    n = masks.shape[0]
    done = torch.zeros((n + 1, *masks.shape[1:]), dtype=torch.bool)
    for k in range(n):  # done[k] = union of the first k concepts in the order
        done[k + 1] = done[k] | masks[order[k]]
    removed = done if mode == "deletion" else done[n] & ~done
    return torch.where(removed.unsqueeze(1), fill, image)


def concept_deletion(adapter: ClassifierAdapter, images: Images, concept_masks: Sequence[Any],
                     orders: Sequence[Any], target: Target | None = None, mode: str = "deletion",
                     fill: float | Sequence[float] | None = None,
                     batch_size: int | None = None) -> CurveResult:
    """C-Deletion / C-Insertion curves: concepts removed (or restored) in each image's ``orders[i]``.

    ``concept_masks[i]``: image i's concept regions (a list of H×W bool masks, or an [n, H, W]
    array). ``target``: the class to score (one for all, or one per image; None: the class predicted
    on the clean image). ``fill``: the [0, 1] colour of removed pixels (default ``adapter.fill_value``).
    Curves differ in length; an image without concepts has one point and a NaN AUC.
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    xs = _images(images)
    b = len(xs)
    if len(concept_masks) != b or len(orders) != b:
        raise ConfigError(f"{len(concept_masks)} mask lists and {len(orders)} orders for {b} images; "
                          "give one of each per image")
    colour = _fill(adapter, fill)
    masks = [_masks(concept_masks[i], i, tuple(xs[i].shape[-2:])) for i in range(b)]
    ords = [_order(orders[i], masks[i].shape[0], i) for i in range(b)]
    bs = batch_size_of(adapter, batch_size)
    size = tuple(adapter.input_size)
    at_input = [resize(x, size) if tuple(x.shape[-2:]) != size else x for x in xs]
    if target is None:
        classes = adapter.logits(torch.cat(at_input), bs).argmax(1)
    else:
        classes = torch.tensor(adapter.classes.targets(target, b), dtype=torch.long)

    def variants() -> Iterator[torch.Tensor]:
        for i in progress(range(b), desc=f"{adapter.name} concept {mode}", total=b,
                          enabled=None if b > 1 else False):
            v = _variants(xs[i][0], masks[i], ords[i], mode, colour)
            # The adapter would resize each batch the same way; resizing here lets sizes mix.
            yield resize(v, size) if tuple(v.shape[-2:]) != size else v

    owner = torch.cat([torch.full((m.shape[0] + 1,), i, dtype=torch.long) for i, m in enumerate(masks)])
    probs, pending, n_pending = [], [], 0
    for v in variants():
        pending.append(v)
        n_pending += v.shape[0]
        if n_pending >= bs:
            probs.append(adapter.probabilities(torch.cat(pending), bs))
            pending, n_pending = [], 0
    if pending:
        probs.append(adapter.probabilities(torch.cat(pending), bs))
    p = torch.cat(probs).gather(1, classes[owner].view(-1, 1)).squeeze(1).double().numpy()
    lengths = np.array([m.shape[0] + 1 for m in masks], dtype=np.int64)
    width = int(lengths.max())
    scores = np.full((b, width), np.nan)
    fractions = np.full((b, width), np.nan)
    for i, (s, e) in enumerate(zip(np.cumsum(lengths) - lengths, np.cumsum(lengths))):
        scores[i, :lengths[i]] = p[s:e]
        n = lengths[i] - 1
        fractions[i, :lengths[i]] = np.arange(n + 1) / n if n else 0.0
    auc = np.array([trapezoid_auc(scores[i, :lengths[i]]) for i in range(b)])
    return CurveResult(scores=scores, auc=auc, fractions=fractions, classes=classes.numpy(), mode=mode,
                       step=None, lengths=lengths)
