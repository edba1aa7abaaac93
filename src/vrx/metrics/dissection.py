"""Network dissection (Bau et al., CVPR 2017) against toyworld's part maps: which units detect which parts?

Per layer and unit k:

1. T_k is the ``quantile`` (default 0.995: the top 0.5 %) of the unit's activations over every
   position of every image (NumPy's linear interpolation between order statistics).
2. The unit's mask on an image is its activation map, upsampled bilinearly to the part map's size
   (``align_corners=False``), where it is strictly above T_k.
3. IoU with part type c over the dataset: the intersections summed over images divided by the unions
   summed over images (not a mean of per-image IoUs). Every toyworld image is annotated with parts,
   so every image counts for every part type (the paper counts only images whose annotation
   category is labelled).
4. The unit's label is its best part (highest IoU, the first part type on ties); it is a detector
   when that IoU is above ``iou_threshold`` (0.04). Per layer: the number of detectors and of
   distinct part types among them.

Background (0 in a part map) is not a part type. Activations of one layer are held in memory at
once (N × K × h × w floats), then upsampled one image at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.toyworld.classes import PART_TYPES
from ..errors import ConfigError, InvalidImageError
from ..models.adapter import ClassifierAdapter
from ..models.inputs import Images
from ..progress import progress
from ..models.inputs import image_batch

__all__ = ["DissectionResult", "LayerDissection", "dissect", "unit_thresholds"]


@dataclass(frozen=True, eq=False)
class LayerDissection:
    """One layer: ``thresholds`` [K] (T_k) and ``iou`` [K, P] (unit × part type)."""

    layer: str
    thresholds: np.ndarray
    iou: np.ndarray
    part_names: tuple[str, ...]
    iou_threshold: float

    @property
    def best_part_index(self) -> np.ndarray:
        """[K] index into ``part_names`` of each unit's highest-IoU part type."""
        return self.iou.argmax(1)

    @property
    def best_iou(self) -> np.ndarray:
        """[K] each unit's highest IoU."""
        return self.iou.max(1)

    @property
    def best_part(self) -> list[str]:
        """Each unit's best part type by name."""
        return [self.part_names[i] for i in self.best_part_index]

    @property
    def detectors(self) -> np.ndarray:
        """Indices of the units whose best IoU is above the threshold."""
        return np.flatnonzero(self.best_iou > self.iou_threshold)

    @property
    def detected_parts(self) -> list[str]:
        """The distinct part types the detectors detect, in ``part_names`` order."""
        found = set(self.best_part_index[self.detectors].tolist())
        return [p for i, p in enumerate(self.part_names) if i in found]

    def summary(self) -> dict:
        """JSON-ready counts: units, detectors, unique part detectors, detectors per part type."""
        best = self.best_part
        per_part: dict[str, int] = {}
        for k in self.detectors:
            per_part[best[k]] = per_part.get(best[k], 0) + 1
        return {"layer": self.layer, "n_units": int(self.iou.shape[0]), "n_detectors": int(self.detectors.size),
                "n_unique_parts": len(self.detected_parts), "parts": per_part}


@dataclass(frozen=True, eq=False)
class DissectionResult:
    """Every dissected layer, by name, with the settings used."""

    layers: dict[str, LayerDissection]
    quantile: float
    iou_threshold: float
    part_names: tuple[str, ...]

    def __getitem__(self, layer: str) -> LayerDissection:
        return self.layers[layer]

    def summary(self) -> dict:
        """JSON-ready settings and per-layer counts."""
        return {"quantile": self.quantile, "iou_threshold": self.iou_threshold,
                "layers": [d.summary() for d in self.layers.values()]}


def unit_thresholds(activations: torch.Tensor, quantile: float) -> np.ndarray:
    """[K] the ``quantile`` of each unit's activations [N, K, h, w] over all images and positions."""
    a = activations.transpose(0, 1).reshape(activations.shape[1], -1).double().numpy()
    return np.quantile(a, quantile, axis=1)


def _image_sizes(images: Images) -> list[tuple[int, int]]:
    """(H, W) of each image; a list may mix sizes (the adapter resizes each)."""
    if isinstance(images, (list, tuple)):
        return [tuple(image_batch(im).shape[-2:]) for im in images]
    x = image_batch(images)
    return [tuple(x.shape[-2:])] * x.shape[0]


def _part_maps(part_maps: Sequence[np.ndarray] | np.ndarray, sizes: list[tuple[int, int]],
               n_parts: int) -> list[torch.Tensor]:
    if len(part_maps) != len(sizes):
        raise ConfigError(f"{len(part_maps)} part maps for {len(sizes)} images; give one per image")
    out = []
    for i, pm in enumerate(part_maps):
        a = np.asarray(pm)
        if a.ndim != 2 or not np.issubdtype(a.dtype, np.integer):
            raise InvalidImageError(f"part map {i} must be an H×W integer array, got shape {a.shape}, "
                                    f"dtype {a.dtype}")
        if a.shape != sizes[i]:
            raise InvalidImageError(f"part map {i} is {a.shape[0]}×{a.shape[1]} but its image is "
                                    f"{sizes[i][0]}×{sizes[i][1]}")
        if a.size and (a.min() < 0 or a.max() > n_parts):
            raise InvalidImageError(f"part map {i} holds labels outside 0..{n_parts} (0 = background, "
                                    f"k = part_names[k-1])")
        out.append(torch.from_numpy(a.astype(np.int64)))
    return out


def _check(quantile: float, iou_threshold: float, layers: Sequence[str]) -> None:
    if not 0.0 < float(quantile) < 1.0:
        raise ConfigError(f"quantile must lie strictly between 0 and 1, got {quantile!r}")
    if not 0.0 <= float(iou_threshold) < 1.0:
        raise ConfigError(f"iou_threshold must lie in [0, 1), got {iou_threshold!r}")
    if isinstance(layers, str) or not layers:
        raise ConfigError(f"layers must be a non-empty list of layer names, got {layers!r}")


def _dissect_layer(acts: torch.Tensor, labels: list[torch.Tensor], thresholds: np.ndarray,
                   n_parts: int, desc: str) -> np.ndarray:
    """[K, P] dataset IoU of each unit's thresholded, upsampled maps with each part type."""
    k = acts.shape[1]
    inter = np.zeros((k, n_parts))
    unit_area = np.zeros(k)
    part_area = np.zeros(n_parts)
    t = torch.from_numpy(thresholds).view(1, k, 1, 1)  # float64: T_k is not rounded to float32
    for i in progress(range(len(labels)), desc=desc, total=len(labels), enabled=None if len(labels) > 1 else False):
        lab = labels[i]
        up = F.interpolate(acts[i:i + 1].float(), size=tuple(lab.shape), mode="bilinear", align_corners=False)
        on = (up.double() > t)[0].flatten(1).float()  # [K, H*W]
        onehot = F.one_hot(lab.flatten(), n_parts + 1)[:, 1:].float()  # [H*W, P], background dropped
        # Per-image counts are exact in float32 (below 2**24); the sums over images are kept in float64.
        inter += (on @ onehot).double().numpy()
        unit_area += on.sum(1).double().numpy()
        part_area += onehot.sum(0).double().numpy()
    union = unit_area[:, None] + part_area[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def dissect(adapter: ClassifierAdapter, images: Images, part_maps: Sequence[np.ndarray] | np.ndarray,
            layers: Sequence[str], quantile: float = 0.995, iou_threshold: float = 0.04,
            part_names: Sequence[str] = PART_TYPES, batch_size: int | None = None) -> DissectionResult:
    """Dissect ``layers`` of the model on ``images`` with their H×W part maps (0 = background,
    k = ``part_names[k-1]``); thresholds and IoUs both come from these images."""
    _check(quantile, iou_threshold, layers)
    names = tuple(part_names)
    labels = _part_maps(part_maps, _image_sizes(images), len(names))
    out: dict[str, LayerDissection] = {}
    for layer in layers:
        acts = adapter.activations(images, layer, batch_size)
        if acts.ndim != 4:
            raise ConfigError(f"layer {layer!r} of model {adapter.name!r} gives activations of shape "
                              f"{tuple(acts.shape)}; dissection needs N×K×h×w maps (a convolutional layer)")
        thresholds = unit_thresholds(acts, quantile)
        iou = _dissect_layer(acts, labels, thresholds, len(names), f"{adapter.name} dissect {layer}")
        out[layer] = LayerDissection(layer=layer, thresholds=thresholds, iou=iou, part_names=names,
                                     iou_threshold=float(iou_threshold))
    return DissectionResult(layers=out, quantile=float(quantile), iou_threshold=float(iou_threshold),
                            part_names=names)
