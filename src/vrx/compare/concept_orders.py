"""Concept orders for C-Deletion / C-Insertion: how five rankings of the same concepts fare.

For each image the concepts are the detected concepts of the target class's own graph, as VRX
matched them (segment masks at the image's resolution). They are ranked, most important first, by:

* ``vrx``: their node contribution to the target class's GRN output, descending;
* ``tcav``: their TCAV score in the bank, descending: TCAV's class-level importance, the same for
  every image (ties, common at 1.0, keep the bank's order);
* ``importance``: their rank in the concept bank (1 first): the class-level masking effect
  discovery ranked them by, the same for every image;
* ``random``: a uniformly random order from the comparison's seed (the chance level);
* ``oracle``: the drop of the classifier's target probability when that concept *alone* is
  masked (its pixels set to ``adapter.fill_value``), descending: the best single-concept greedy
  order a method could find by occlusion, a reference rather than a competitor.

Ties keep the bank's order (a stable sort on the concepts listed by rank).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..metrics.concept_deletion import concept_deletion, orders_from_scores, random_orders
from ..models.adapter import ClassifierAdapter
from .results import ORDERS, ConceptResult
from .vrxmap import DetectedConcept, ImageConcepts

__all__ = ["occlusion_drops", "concept_orders", "add_concept_curves"]


def occlusion_drops(adapter: ClassifierAdapter, image: torch.Tensor, masks: Sequence[np.ndarray],
                    target: int) -> np.ndarray:
    """Per mask, p(target | image) - p(target | image with only that mask filled)."""
    fill = adapter.fill_value.view(3, 1, 1)
    variants = [image]
    for m in masks:
        variants.append(torch.where(torch.from_numpy(np.asarray(m, bool)), fill, image))
    probs = adapter.probabilities(torch.stack(variants))[:, int(target)].double().numpy()
    return probs[0] - probs[1:]


def concept_orders(found: Sequence[DetectedConcept], drops: np.ndarray,
                   generator: torch.Generator) -> dict[str, np.ndarray]:
    """The five orders of one image's concepts (indices into ``found``)."""
    return {"vrx": orders_from_scores([[c.contribution for c in found]])[0],
            "tcav": orders_from_scores([[float(c.tcav) for c in found]])[0],
            "importance": orders_from_scores([[-float(c.concept) for c in found]])[0],
            "random": random_orders([len(found)], generator)[0],
            "oracle": orders_from_scores([drops])[0]}


def add_concept_curves(result: ConceptResult, adapter: ClassifierAdapter, images: torch.Tensor,
                       indices: Sequence[int], concepts: Sequence[ImageConcepts], targets: torch.Tensor,
                       generator: torch.Generator) -> None:
    """C-Deletion and C-Insertion AUCs of every order for a batch, appended to ``result``."""
    keep, masks, orders = [], [], {o: [] for o in ORDERS}
    for row, (idx, item) in enumerate(zip(indices, concepts)):
        found = sorted(item.of_class(), key=lambda c: c.concept)
        if not found:
            result.skipped += 1
            continue
        m = [c.mask for c in found]
        drops = occlusion_drops(adapter, images[row], m, int(targets[row]))
        for name, order in concept_orders(found, drops, generator).items():
            orders[name].append(order)
        keep.append(row)
        masks.append(m)
        result.images.append(int(idx))
        result.n_concepts.append(len(found))
    if not keep:
        return
    x, t = images[keep], targets[keep]
    for name in ORDERS:
        for mode in ("deletion", "insertion"):
            curve = concept_deletion(adapter, x, masks, orders[name], target=t, mode=mode)
            result.auc[name][mode].extend(float(v) for v in curve.auc)
