"""Which clusters become a class's concepts: those that qualify, the most important first, none twice.

k-means often splits one part into two clusters (the cross seen at two scales, the ladder at 80
and at 150 segments), and two such clusters would both make the top N and crowd out the class's
other parts. A candidate is skipped as a duplicate of a chosen concept when either

- most of its members lie within the chosen concept's detection radius (the graph builder would
  detect the chosen concept on them: in matching terms they are the same concept), or
- on the images where both clusters have patches, most of the smaller one's pixels lie on the
  other's (the same place at two resolutions).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from .clustering import Cluster

#: The detection radius duplicates are judged by: the graph builder's default (MatchConfig.radius_quantile).
RADIUS_QUANTILE = 0.9

#: Images both clusters must share before their overlap is trusted.
MIN_SHARED_IMAGES = 3


def footprints(masks_of: Sequence[tuple[int, np.ndarray]]) -> dict[int, np.ndarray]:
    """Per image index, the union of the given (image index, mask) patches."""
    out: dict[int, np.ndarray] = {}
    for i, m in masks_of:
        out[i] = out[i] | m if i in out else m.copy()
    return out


def overlap(a: dict[int, np.ndarray], b: dict[int, np.ndarray]) -> float:
    """Share of the smaller footprint's pixels covered by the other, on the images both have (0 if < 3)."""
    shared = sorted(set(a) & set(b))
    if len(shared) < MIN_SHARED_IMAGES:
        return 0.0
    inter = sum(int((a[i] & b[i]).sum()) for i in shared)
    smaller = min(sum(int(a[i].sum()) for i in shared), sum(int(b[i].sum()) for i in shared))
    return inter / smaller if smaller else 0.0


def coverage(features: np.ndarray, center: np.ndarray, radius: float) -> float:
    """Share of the feature rows [m, C] within ``radius`` of ``center``."""
    if not len(features):
        return 0.0
    return float(np.mean(np.linalg.norm(features - center[None], axis=1) <= radius))


def select(order: Sequence[int], n: int, max_overlap: float, similarity: Callable[[int, int], float],
           name: Callable[[int], str] = str) -> tuple[list[int], dict[int, str]]:
    """Walk ``order`` (candidate ids, best first), keep up to ``n`` whose ``similarity(candidate, kept)``
    to every kept one is at most ``max_overlap``; returns (kept ids, reason per skipped id, naming
    the kept one by ``name``)."""
    kept: list[int] = []
    why: dict[int, str] = {}
    for c in order:
        if len(kept) >= n:
            why[c] = f"not in the top {n}"
            continue
        worst = max(((similarity(c, k), k) for k in kept), default=(0.0, -1))
        if worst[0] > max_overlap:
            why[c] = f"duplicate of {name(worst[1])} (similarity {worst[0]:.2f} > {max_overlap})"
            continue
        kept.append(c)
    return kept, why


def qualify(rows: list[dict], importance_p: Sequence[float], rank_by: str, alpha: float) -> None:
    """Set each candidate row's ``importance_p`` and, ranking by importance, its ``significant`` flag.

    Either test may show that a cluster matters: TCAV's (which saturates on some networks) or the
    masking test (which needs enough members); removing a concept must lower the class score,
    though, or it is no evidence for the class. Ranking by TCAV keeps ACE's flag.
    """
    for r, p in zip(rows, importance_p):
        r["importance_p"] = float(p)
        if rank_by == "importance":
            r["tcav_significant"] = r["significant"]
            r["significant"] = bool((p < alpha or r["significant"]) and r["importance"] > 0)


def rank_key(rows: list[dict], rank_by: str) -> Callable[[int], tuple]:
    """Sort key of candidate ids, best first: importance (ties TCAV) or ACE's TCAV (ties sensitivity)."""
    if rank_by == "importance":
        return lambda i: (-rows[i]["importance"], -rows[i]["tcav"], rows[i]["cluster"])
    return lambda i: (-rows[i]["tcav"], -rows[i]["sensitivity"], rows[i]["p_value"], rows[i]["cluster"])


def rejection_reason(row: dict, alpha: float) -> str:
    """Why a candidate that did not qualify was left out, in words."""
    if "tcav_significant" in row:
        if row["importance"] <= 0:
            return f"not evidence: masking it does not lower the class score (effect {row['importance']:.3f})"
        return (f"not significant: masking effect {row['importance']:.3f} (p = {row['importance_p']:.3g}) "
                f"and TCAV {row['tcav']:.3f} (p = {row['p_value']:.3g}, random {row['random_tcav']:.3f}) "
                f"both fail alpha {alpha}")
    if row["p_value"] >= alpha:
        return f"not significant: p = {row['p_value']:.3g} >= alpha {alpha}"
    return f"not significant: TCAV {row['tcav']:.3f} not above random {row['random_tcav']:.3f}"


def duplicate_similarity(clusters: Mapping[int, Cluster], features: np.ndarray,
                         mask_of: Callable[[int], tuple[int, np.ndarray]]) -> Callable[[int, int], float]:
    """``similarity(c, k)`` of two candidates (see the module docstring): the larger of the share of
    c's members within k's detection radius and their footprints' overlap."""
    feet = {i: footprints([mask_of(m) for m in (cl.assigned if cl.assigned is not None else cl.members)])
            for i, cl in clusters.items()}
    radius = {i: float(np.quantile(cl.all_distances, RADIUS_QUANTILE)) for i, cl in clusters.items()}

    def similarity(c: int, k: int) -> float:
        near = coverage(features[clusters[c].members], clusters[k].center, radius[k])
        return max(near, overlap(feet[c], feet[k]))

    return similarity
