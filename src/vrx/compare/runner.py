"""Run attribution methods on the same images and targets and measure them all the same way.

Per image the target is the classifier's predicted class (with a run: its best class among the
run's classes of interest, the only classes VRX can explain); every method explains that class and
every metric scores it. Images are processed in batches of one size (photos may differ in size);
each batch's wall-clock time is split evenly over its images. Per method and image:

* deletion and insertion AUC (:func:`vrx.metrics.deletion.deletion_insertion`, its defaults);
* the trade-off curve: whether the class survives keeping only the top fraction of the map
  (:func:`vrx.metrics.tradeoff.tradeoff_curve`);
* on toyworld (part maps beside the images), the pointing game and the energy pointing game
  against the whole vehicle and against the target class's distinctive parts (an image whose mask
  is empty, e.g. the target's parts are not in it, is left out of that game); a uniformly random
  map's expected values are recorded once, as the chance level.

With a run, C-Deletion / C-Insertion compare concept orders on VRX's detected concepts
(:mod:`.concept_orders`). Methods in ``subset_methods`` run on the first ``subset`` images only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..attribution.base import Attribution, get, method_names
from ..config import Config, check
from ..data.images import load_image
from ..data.toyworld.classes import ALL_CLASSES
from ..errors import ConfigError
from ..metrics.deletion import deletion_insertion
from ..metrics.pointing import distinctive_mask, energy_pointing_game, pointing_game, random_baseline, vehicle_mask
from ..metrics.tradeoff import tradeoff_curve
from ..models.adapter import ClassifierAdapter
from ..models.inputs import to_tensor
from ..progress import progress
from . import vrxmap  # noqa: F401  (registers the ``vrx`` method: it lives here, above the core)
from .concept_orders import add_concept_curves
from .images import CompareImages
from .results import METRICS, Comparison, ConceptResult, MethodResult
from .timing import forward_backward_seconds, timed

if TYPE_CHECKING:
    from ..run import Run

log = logging.getLogger(__name__)

__all__ = ["CompareConfig", "compare", "resolve_methods"]


@dataclass(frozen=True)
class CompareConfig(Config):
    """What to compare and how (the command's flags)."""

    methods: tuple[str, ...] = ()              # empty: every registered method (vrx only with a run)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)   # method -> its keyword settings
    subset_methods: tuple[str, ...] = ()       # costly methods run on the first `subset` images only
    subset: int | None = None
    seed: int = 0                              # every method's seed, and the random concept order's
    batch: int = 8                             # images per attribute() call
    step: int | None = None                    # deletion/insertion pixels per step (None: input width)
    tradeoff_fractions: tuple[float, ...] | None = None   # None: the metric's default grid
    grid_images: int = 6                       # images (rows) in grid.png

    def validate(self) -> None:
        check((isinstance(self.settings, dict) and all(isinstance(v, dict) for v in self.settings.values()),
               "settings must map method names to dicts of settings"),
              (self.subset is None or (isinstance(self.subset, int) and self.subset >= 1),
               f"subset must be a positive number of images, got {self.subset!r}"),
              (not self.subset_methods or self.subset is not None,
               "subset_methods needs subset (how many images those methods run on)"),
              (isinstance(self.batch, int) and self.batch >= 1, f"batch must be >= 1, got {self.batch!r}"),
              (isinstance(self.grid_images, int) and self.grid_images >= 1,
               f"grid_images must be >= 1, got {self.grid_images!r}"))


def resolve_methods(names: Sequence[str], has_run: bool) -> list[str]:
    """Registered names of ``names`` (all methods when empty); ConfigError for an unknown one."""
    if not names:
        return [m for m in method_names() if has_run or not getattr(get(m), "needs_run", False)]
    out = []
    for name in names:
        cls = get(name)   # ConfigError with close matches for an unknown name
        if getattr(cls, "needs_run", False) and not has_run:
            raise ConfigError(f"method {cls.name!r} needs a run: give --run RUN (a finished vrx run)")
        if cls.name not in out:
            out.append(cls.name)
    return out


def _batches(images: Sequence[torch.Tensor], indices: Sequence[int], size: int) -> list[list[int]]:
    """Consecutive runs of at most ``size`` indices whose images share one H×W."""
    out: list[list[int]] = []
    for i in indices:
        if out and len(out[-1]) < size and images[out[-1][0]].shape == images[i].shape:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _targets(adapter: ClassifierAdapter, images: Sequence[torch.Tensor], interest: list[int] | None) -> list[int]:
    """The predicted class of each image (among ``interest`` when given)."""
    out = []
    for x in images:
        logits = adapter.logits(x[None])[0]
        out.append(interest[int(logits[interest].argmax())] if interest else int(logits.argmax()))
    return out


class _GroundTruth:
    """Pointing-game masks of the compared images (toyworld part maps), read once per image."""

    def __init__(self, adapter: ClassifierAdapter, images: CompareImages, targets: list[int]):
        self.enabled = images.has_parts
        self.images, self.targets, self.adapter = images, targets, adapter
        self.classes = list(adapter.class_names)
        self.distinctive_ok = self.enabled and all(c in ALL_CLASSES for c in self.classes)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def masks(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(vehicle mask, distinctive-parts mask of the target class) of image ``i``."""
        if i not in self._cache:
            pm = self.images.part_map(i)
            cls = self.adapter.class_name(self.targets[i])
            dist = distinctive_mask(pm, cls, self.classes) if self.distinctive_ok else np.zeros(pm.shape, bool)
            self._cache[i] = (vehicle_mask(pm), dist)
        return self._cache[i]


def _pointing(maps: torch.Tensor, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    res = pointing_game(maps, masks)
    hits = np.where(res.valid, res.hits.astype(np.float64), np.nan)
    return hits, energy_pointing_game(maps, masks)


def _tradeoff(adapter: ClassifierAdapter, x: torch.Tensor, maps: torch.Tensor, t: torch.Tensor,
              fractions: tuple[float, ...] | None) -> tuple[np.ndarray, np.ndarray]:
    """(shares of pixels kept, [B, F] whether each image keeps its class top-1) of one batch."""
    kwargs = {} if fractions is None else {"fractions": fractions}
    res = tradeoff_curve(adapter, x, maps, target=t, **kwargs)
    return np.asarray(res.kept, dtype=np.float64), np.asarray(res.reidentified, dtype=bool)


def _record(res: MethodResult, adapter: ClassifierAdapter, batch: list[int], x: torch.Tensor,
            t: torch.Tensor, maps: torch.Tensor, seconds: float, truth: _GroundTruth,
            config: CompareConfig, fractions: dict[str, list[float]]) -> None:
    res.images.extend(batch)
    res.seconds.extend([seconds / len(batch)] * len(batch))
    for mode in ("deletion", "insertion"):
        curve = deletion_insertion(adapter, x, maps, mode=mode, step=config.step, target=t)
        res.values[mode].extend(float(v) for v in curve.auc)
        (res.deletion_curves if mode == "deletion" else res.insertion_curves).extend(curve.scores)
        fractions[mode] = [float(v) for v in curve.fractions]
    kept_at, kept = _tradeoff(adapter, x, maps, t, config.tradeoff_fractions)
    fractions["tradeoff"] = [float(v) for v in kept_at]
    res.tradeoff.extend(kept)
    if truth.enabled:
        pairs = [truth.masks(i) for i in batch]
        for which, masks in (("vehicle", np.stack([p[0] for p in pairs])),
                             ("distinctive", np.stack([p[1] for p in pairs]))):
            hits, energy = _pointing(maps, masks)
            res.values[f"pointing_{which}"].extend(hits.tolist())
            res.values[f"energy_{which}"].extend(energy.tolist())
    else:
        for m in METRICS[2:]:
            res.values[m].extend([float("nan")] * len(batch))
    for row, i in enumerate(batch):
        if i < config.grid_images:
            res.maps[i] = maps[row].numpy()


def _chance(truth: _GroundTruth, n: int) -> dict[str, list[float]]:
    """Expected pointing values of a uniformly random map, per image (NaN without ground truth)."""
    out = {m: [float("nan")] * n for m in METRICS[2:]}
    if not truth.enabled:
        return out
    for i in range(n):
        for which, mask in zip(("vehicle", "distinctive"), truth.masks(i)):
            out[f"pointing_{which}"][i] = float(random_baseline(mask[None])[0])
            # Energy share of a random map = the mask's area share: only its own pixels lie within 1 px.
            out[f"energy_{which}"][i] = float(random_baseline(mask[None], tolerance=1)[0])
    return out


def compare(adapter: ClassifierAdapter, images: CompareImages, config: CompareConfig | None = None, *,
            run: Run | None = None, show_progress: bool | None = None) -> Comparison:
    """Every method of ``config`` on ``images``, with metrics, costs and (with ``run``) concept orders."""
    config = config or CompareConfig()
    names = resolve_methods(config.methods, run is not None)
    subset_names = resolve_methods(config.subset_methods, run is not None) if config.subset_methods else []
    extra = [m for m in subset_names if m not in names]
    if extra:
        raise ConfigError(f"--subset-methods {extra} are not among the compared methods {names}")
    unknown = [m for m in config.settings if get(m).name not in names]
    if unknown:
        raise ConfigError(f"settings given for method(s) {unknown} that are not compared ({names})")
    settings = {get(m).name: dict(v) for m, v in config.settings.items()}
    tensors = [to_tensor(load_image(p))[0] for p in images.paths]

    methods: dict[str, Attribution] = {}
    for name in names:
        extra_args = {"run": run} if getattr(get(name), "needs_run", False) else {}
        methods[name] = get(name)(adapter, seed=config.seed, **extra_args, **settings.get(name, {}))
    vrx = methods.get("vrx")
    if run is not None and vrx is None:
        vrx = get("vrx")(adapter, run=run, seed=config.seed)
    interest = list(vrx.class_ids) if vrx is not None else None
    targets = _targets(adapter, tensors, interest)
    truth = _GroundTruth(adapter, images, targets)
    first = _batches(tensors, range(len(tensors)), config.batch)[0]
    unit = forward_backward_seconds(adapter, torch.stack([tensors[i] for i in first]), torch.tensor(
        [targets[i] for i in first]))
    log.info("one forward+backward: %.2f ms per image", unit * 1e3)

    fractions: dict[str, list[float]] = {}
    results: dict[str, MethodResult] = {}
    concepts = ConceptResult() if vrx is not None else None
    gen = torch.Generator().manual_seed(int(config.seed))
    for name, method in methods.items():
        limit = config.subset if name in subset_names else None
        todo = range(len(tensors) if limit is None else min(limit, len(tensors)))
        res = MethodResult(name, bool(method.signed), method.config())
        for batch in progress(_batches(tensors, todo, config.batch), desc=f"compare {name}", enabled=show_progress):
            x = torch.stack([tensors[i] for i in batch])
            t = torch.tensor([targets[i] for i in batch], dtype=torch.long)
            maps, seconds = timed(lambda: method.attribute(x, t))
            _record(res, adapter, batch, x, t, maps, seconds, truth, config, fractions)
            if method is vrx:  # while its detections are memoised
                _concepts(concepts, adapter, vrx, batch, x, t, gen)
        results[name] = res
        log.info("%s: %.3f s per image on %d images", name, res.seconds_per_image, res.n_images)
    if vrx is not None and "vrx" not in methods:
        for batch in _batches(tensors, range(len(tensors)), config.batch):
            x = torch.stack([tensors[i] for i in batch])
            _concepts(concepts, adapter, vrx, batch, x, torch.tensor([targets[i] for i in batch]), gen)
    n_sub = min((r.n_images for r in results.values()), default=0)
    return Comparison(
        model=adapter.name, image_root=str(images.root), images=[str(p) for p in images.paths],
        labels=list(images.labels), targets=[adapter.class_name(t) for t in targets], fwd_bwd_seconds=unit,
        fractions=fractions, methods=results, random=_chance(truth, len(tensors)), settings=config.to_dict(),
        run=None if run is None else str(run.path), concepts=concepts,
        subset=list(range(n_sub)) if n_sub < len(tensors) else [])


def _concepts(result: ConceptResult | None, adapter: ClassifierAdapter, vrx: Attribution, batch: list[int],
              x: torch.Tensor, t: torch.Tensor, gen: torch.Generator) -> None:
    if result is None:
        return
    found = vrx.concepts(x, t)   # type: ignore[attr-defined]
    add_concept_curves(result, adapter, x, batch, found, t, gen)
