"""Pointing games: does a saliency map's peak (or its positive mass) fall on the ground-truth region?

* Pointing game (Zhang et al. 2016, as TorchRay's benchmark): the point of maximum saliency (the
  first in raster order when several pixels share the maximum) is a hit when some mask pixel lies at
  Euclidean distance strictly below ``tolerance`` pixels from it. Default tolerance: 15 px at 224 px,
  scaled by ``min(H, W) / 224``. Images whose mask is empty are left out (``valid`` is False).
* Energy-based pointing game (Wang et al., Score-CAM 2020): the share of positive saliency energy
  inside the mask; negative values are clipped at 0 first.
* Chance: a uniformly random map points at every pixel with equal probability, so its expected hit
  rate is the share of pixels within ``tolerance`` of the mask (:func:`random_baseline`); its
  expected energy share is the mask's area share (``random_baseline(masks, tolerance=1)``: only the
  mask's own pixels are closer than 1 px).

Toyworld ground truth: :func:`vehicle_mask` (every vehicle part) and :func:`distinctive_mask` (the
parts whose type one class has and the others do not).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..data.toyworld.classes import ALL_CLASSES, PART_IDS, part_multiset
from ..errors import ConfigError, InvalidImageError, UnknownClassError

__all__ = ["PointingResult", "pointing_game", "energy_pointing_game", "random_baseline", "default_tolerance",
           "vehicle_mask", "distinctive_mask", "distinctive_parts"]

REFERENCE_TOLERANCE = 15.0  # pixels, at REFERENCE_SIZE
REFERENCE_SIZE = 224


@dataclass(frozen=True, eq=False)
class PointingResult:
    """Per image: ``hits`` (False where not valid), ``valid`` (mask not empty), ``points`` (row, col)."""

    hits: np.ndarray
    valid: np.ndarray
    points: np.ndarray
    tolerance: float

    @property
    def accuracy(self) -> float:
        """Hits over valid images (NaN when none is valid)."""
        return float(self.hits[self.valid].mean()) if self.valid.any() else float("nan")

    def class_accuracy(self, labels: Sequence[int | str]) -> float:
        """TorchRay's score: accuracy per class (over valid images), then the mean over classes."""
        labels = np.asarray(labels)
        if labels.shape != self.hits.shape:
            raise ConfigError(f"{labels.size} labels for {self.hits.size} images; give one per image")
        accs = [self.hits[self.valid & (labels == c)].mean() for c in np.unique(labels[self.valid])]
        return float(np.mean(accs)) if accs else float("nan")


def default_tolerance(height: int, width: int) -> float:
    """15 px at 224 px, scaled by ``min(height, width) / 224``."""
    return REFERENCE_TOLERANCE * min(height, width) / REFERENCE_SIZE


def _maps(saliency: torch.Tensor | np.ndarray) -> np.ndarray:
    s = saliency.detach().cpu().numpy() if isinstance(saliency, torch.Tensor) else np.asarray(saliency)
    if s.ndim != 3 or 0 in s.shape:
        raise InvalidImageError(f"saliency must be [B, H, W], got shape {s.shape}")
    s = s.astype(np.float64)
    if not np.isfinite(s).all():
        raise InvalidImageError("saliency contains NaN or infinite values")
    return s


def _masks(masks: torch.Tensor | np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    m = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    if m.shape != shape:
        raise InvalidImageError(f"masks have shape {m.shape}; expected {shape}, the saliency maps' shape")
    if m.dtype != np.bool_:
        if not np.isin(m, (0, 1)).all():
            raise InvalidImageError("masks must be boolean (or 0/1)")
        m = m.astype(bool)
    return m


def _tolerance(tolerance: float | None, height: int, width: int) -> float:
    if tolerance is None:
        return default_tolerance(height, width)
    t = float(tolerance)
    if not np.isfinite(t) or t <= 0:
        raise ConfigError(f"tolerance must be a positive number of pixels, got {tolerance!r}")
    return t


def _near_mask(mask: np.ndarray, tolerance: float) -> np.ndarray:
    """Pixels strictly closer than ``tolerance`` to some pixel of a non-empty ``mask``."""
    from scipy.ndimage import distance_transform_edt

    return distance_transform_edt(~mask) < tolerance


def pointing_game(saliency: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray,
                  tolerance: float | None = None) -> PointingResult:
    """Pointing game of maps [B, H, W] against boolean masks [B, H, W]; ``tolerance`` in pixels."""
    s = _maps(saliency)
    m = _masks(masks, s.shape)
    b, h, w = s.shape
    tol = _tolerance(tolerance, h, w)
    flat = s.reshape(b, -1).argmax(1)  # the first maximum in raster order
    points = np.stack([flat // w, flat % w], 1)
    valid = m.reshape(b, -1).any(1)
    hits = np.zeros(b, dtype=bool)
    for i in np.flatnonzero(valid):
        r, c = points[i]
        # The disc of radius tolerance around the point meets the mask (TorchRay's strict <).
        rr, cc = np.nonzero(m[i])
        hits[i] = bool((((rr - r) ** 2 + (cc - c) ** 2) < tol ** 2).any())
    return PointingResult(hits=hits, valid=valid, points=points, tolerance=tol)


def energy_pointing_game(saliency: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray) -> np.ndarray:
    """[B] share of positive saliency inside each mask; NaN for an empty mask or a map with no positive value."""
    s = np.clip(_maps(saliency), 0.0, None)
    m = _masks(masks, s.shape)
    total = s.sum((1, 2))
    inside = (s * m).sum((1, 2))
    out = np.full(s.shape[0], np.nan)
    ok = (total > 0) & m.any((1, 2))
    out[ok] = inside[ok] / total[ok]
    return out


def random_baseline(masks: torch.Tensor | np.ndarray, tolerance: float | None = None) -> np.ndarray:
    """[B] expected pointing-game hit rate of a uniformly random map: the share of pixels near the mask.

    NaN for empty masks (left out of the game). The mean over images is the chance accuracy.
    """
    m = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    if m.ndim != 3 or 0 in m.shape:
        raise InvalidImageError(f"masks must be [B, H, W], got shape {m.shape}")
    m = _masks(m, m.shape)
    tol = _tolerance(tolerance, m.shape[1], m.shape[2])
    out = np.full(m.shape[0], np.nan)
    for i in range(m.shape[0]):
        if m[i].any():
            out[i] = float(_near_mask(m[i], tol).mean())
    return out


def _part_map(part_map: np.ndarray) -> np.ndarray:
    pm = np.asarray(part_map)
    if pm.ndim != 2 or not np.issubdtype(pm.dtype, np.integer):
        raise InvalidImageError(f"part map must be an H×W integer array, got shape {pm.shape}, dtype {pm.dtype}")
    return pm


def vehicle_mask(part_map: np.ndarray) -> np.ndarray:
    """Every labelled part pixel (part map > 0).

    Loose distractor parts carry a part type in the part map too, so they count; a scene's instance
    map (:func:`vrx.data.toyworld.render_layers`) is what tells them apart.
    """
    return _part_map(part_map) > 0


def distinctive_parts(cls: str, classes: Sequence[str]) -> list[str]:
    """Part types class ``cls`` has and none of the other ``classes`` has (by part multiset)."""
    for name in [cls, *classes]:
        if name not in ALL_CLASSES:
            raise UnknownClassError(f"unknown toyworld class {name!r}; known: {', '.join(ALL_CLASSES)}")
    others = set().union(*(part_multiset(c) for c in classes if c != cls))
    return [t for t in part_multiset(cls) if t not in others]


def distinctive_mask(part_map: np.ndarray, cls: str, classes: Sequence[str]) -> np.ndarray:
    """Pixels of the part types only ``cls`` has among ``classes``; empty when there are none.

    (The structure-only pair police_car / taxi has none: the same parts, arranged differently.)
    """
    pm = _part_map(part_map)
    ids = [PART_IDS[t] for t in distinctive_parts(cls, classes)]
    return np.isin(pm, ids)
