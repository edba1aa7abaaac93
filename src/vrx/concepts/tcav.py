"""Concept activation vectors, TCAV scores and the significance test that ranks concepts.

Written here rather than through ``captum.concept``: Captum's TCAV recomputes activations
through its own forward over DataLoaders and writes every activation set and CAV to disk,
while discovery already holds the activations it needs, so scoring is one dot product per
image and CAV. The semantics follow Kim et al. (2018) with the fixes of the reference notes:
gradients of the class *logit*, on properly preprocessed inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import train_test_split


@dataclass
class CAV:
    """A unit direction in bottleneck space pointing from the negative set to the positive one."""

    direction: np.ndarray  # [F]
    accuracy: float        # held-out accuracy of the linear classifier


def train_cav(positive: np.ndarray, negative: np.ndarray, *, seed: int, alpha: float = 0.01) -> CAV:
    """Fit a linear classifier separating ``positive`` [n, F] from ``negative`` [m, F].

    Both sets are truncated to the smaller size (as tcav does) so neither class dominates.
    """
    n = min(len(positive), len(negative))
    x = np.concatenate([positive[:n], negative[:n]]).astype(np.float32)
    y = np.r_[np.ones(n), np.zeros(n)]
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.33, stratify=y, random_state=seed)
    clf = SGDClassifier(alpha=alpha, max_iter=1000, tol=1e-3, random_state=seed).fit(x_tr, y_tr)
    w = clf.coef_[0].astype(np.float32)
    norm = float(np.linalg.norm(w))
    return CAV(direction=w / norm if norm > 0 else w, accuracy=float(clf.score(x_te, y_te)))


def tcav_score(gradients: np.ndarray, cav: CAV) -> float:
    """Fraction of images whose class-logit directional derivative along the CAV is positive."""
    return float(np.mean(gradients @ cav.direction > 0))


def adjust_pvalues(p: np.ndarray, method: str) -> np.ndarray:
    """Holm or Bonferroni family-wise correction of raw p-values."""
    p = np.asarray(p, dtype=np.float64)
    m = len(p)
    if m == 0:
        return p
    if method == "bonferroni":
        return np.minimum(p * m, 1.0)
    if method != "holm":
        raise ValueError(f"unknown correction {method!r}")
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return out


def significance(concept_scores: np.ndarray, random_scores: np.ndarray) -> float:
    """Two-sided Welch t-test p-value of concept TCAV scores against random-vs-random scores."""
    if np.ptp(concept_scores) == 0 and np.ptp(random_scores) == 0:
        return 0.0 if concept_scores[0] != random_scores[0] else 1.0
    return float(stats.ttest_ind(concept_scores, random_scores, equal_var=False).pvalue)
