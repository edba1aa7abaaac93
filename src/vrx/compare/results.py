"""What a comparison produces, as plain data: per method its settings, costs and per-image metrics.

Per-image values are NaN where a metric is not defined for that image (no part map, an empty
distinctive mask, a map with no positive value for the energy game); means skip them and say
over how many images they were taken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["METRICS", "ORDERS", "Comparison", "ConceptResult", "MethodResult", "nanmean"]

#: Per-image metrics of a pixel map; pointing games against the whole vehicle and its distinctive parts.
METRICS = ("deletion", "insertion", "pointing_vehicle", "energy_vehicle",
           "pointing_distinctive", "energy_distinctive")
#: Concept orders compared by C-Deletion / C-Insertion.
ORDERS = ("vrx", "tcav", "importance", "random", "oracle")


def nanmean(values: Any) -> float:
    """Mean of the finite values (NaN when there is none)."""
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


@dataclass
class MethodResult:
    """One method on its images: settings, seconds, per-image metrics, curves and a few maps."""

    name: str
    signed: bool
    settings: dict[str, Any]
    images: list[int] = field(default_factory=list)       # indices into Comparison.images
    seconds: list[float] = field(default_factory=list)    # per image (its batch's time / batch size)
    values: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})
    deletion_curves: list[np.ndarray] = field(default_factory=list)
    insertion_curves: list[np.ndarray] = field(default_factory=list)
    tradeoff: list[np.ndarray] = field(default_factory=list)   # per image: kept class at each fraction
    maps: dict[int, np.ndarray] = field(default_factory=dict)  # image index -> map, for the grid

    @property
    def n_images(self) -> int:
        return len(self.images)

    @property
    def seconds_per_image(self) -> float:
        return float(np.mean(self.seconds)) if self.seconds else float("nan")

    def mean(self, metric: str, among: set[int] | None = None) -> float:
        """Mean of ``metric`` over this method's images (or those of them in ``among``)."""
        vals = [v for i, v in zip(self.images, self.values[metric]) if among is None or i in among]
        return nanmean(vals)

    def count(self, metric: str, among: set[int] | None = None) -> int:
        """Images on which ``metric`` is defined."""
        return int(sum(np.isfinite(v) for i, v in zip(self.images, self.values[metric])
                       if among is None or i in among))

    def mean_curve(self, mode: str) -> np.ndarray:
        """The mean deletion or insertion curve over this method's images."""
        curves = self.deletion_curves if mode == "deletion" else self.insertion_curves
        return np.mean(np.stack(curves), 0) if curves else np.zeros(0)

    def tradeoff_rate(self) -> np.ndarray:
        """Re-identification rate at each kept fraction (share of images still given their class)."""
        return np.mean(np.stack(self.tradeoff).astype(np.float64), 0) if self.tradeoff else np.zeros(0)


@dataclass
class ConceptResult:
    """C-Deletion / C-Insertion AUCs per concept order, on the images with detected concepts."""

    images: list[int] = field(default_factory=list)
    n_concepts: list[int] = field(default_factory=list)
    auc: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: {o: {"deletion": [], "insertion": []} for o in ORDERS})
    skipped: int = 0   # images without any detected concept of the target class

    def mean(self, order: str, mode: str) -> float:
        return nanmean(self.auc[order][mode])


@dataclass
class Comparison:
    """Every method on the same images and targets, with the cost unit and the chance baselines."""

    model: str
    image_root: str
    images: list[str]
    labels: list[str | None]
    targets: list[str]
    fwd_bwd_seconds: float
    fractions: dict[str, list[float]]
    methods: dict[str, MethodResult]
    random: dict[str, list[float]]              # chance value per image of each pointing metric
    settings: dict[str, Any]
    run: str | None = None
    concepts: ConceptResult | None = None
    subset: list[int] = field(default_factory=list)  # images every method ran on, when some ran on fewer
