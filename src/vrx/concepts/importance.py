"""Masking effect: how much a class's logit drops when a concept's patches are removed from its images.

TCAV asks whether the class logit rises along a concept's direction; on a network whose class
gradients all point the same way (the toy CNN's at its bottleneck: pairwise cosine about 0.75)
every concept scores 1.0 and the test ranks nothing. Removing the concept's own segments, filled
with the colour the model's normalisation maps to zero (as the graph builder's teacher does),
measures what the classifier loses without it, on the images the concept was found in.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

from ..models.adapter import ClassifierAdapter
from .inputs import resized_batch


def masking_effect(adapter: ClassifierAdapter, images: Sequence[np.ndarray], items: Sequence[tuple[int, np.ndarray]],
                   class_id: int, batch_size: int | None = None, others: Sequence[int] = ()) -> np.ndarray:
    """Per item ``(image index, H×W bool mask)``: the class's score on the image minus on the image masked.

    The score is the class logit, less the mean logit of the ``others`` classes when given: then a
    part every class shares (the body of any vehicle) moves all logits alike and scores little.
    Every image's plain score is computed once; the masked copies go through the model in batches.
    """
    if not items:
        return np.zeros(0, np.float32)
    bs = int(batch_size or adapter.batch_size)
    used = sorted({i for i, _ in items})
    others = [o for o in others if o != class_id]

    def score(logits):
        s = logits[:, class_id]
        return (s - logits[:, others].mean(1) if others else s).numpy()

    plain = score(adapter.logits(resized_batch([images[i] for i in used], adapter.input_size), bs))
    base = dict(zip(used, plain))
    fill = adapter.fill_value.numpy().astype(np.float32)
    out = np.empty(len(items), np.float32)
    for s in range(0, len(items), bs):
        chunk = items[s:s + bs]
        masked = []
        for i, mask in chunk:
            im = images[i].copy()
            im[mask] = fill
            masked.append(im)
        logits = score(adapter.logits(resized_batch(masked, adapter.input_size), bs))
        out[s:s + len(chunk)] = [base[i] - v for (i, _), v in zip(chunk, logits)]
    return out


def effect_significance(drops: np.ndarray) -> float:
    """One-sided one-sample t-test p-value that the mean drop is above 0 (removing the concept matters)."""
    if len(drops) < 2:
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a constant sample
        p = stats.ttest_1samp(drops, 0.0, alternative="greater").pvalue
    return 1.0 if np.isnan(p) else float(p)
