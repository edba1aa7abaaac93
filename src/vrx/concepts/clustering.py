"""k-means over a class's patch features and ACE's rules for which clusters become candidate concepts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans

from .config import ClusterConfig


@dataclass
class Cluster:
    """One accepted cluster: its centre and its members nearest the centre."""

    label: int
    center: np.ndarray      # [C]
    members: np.ndarray     # indices into the clustered patch table, nearest first
    distances: np.ndarray   # each member's L2 distance to the centre
    size: int               # all patches assigned to the cluster
    n_images: int           # distinct images among them
    all_distances: np.ndarray  # sorted distances of every assigned patch (calibrates detection later)
    assigned: np.ndarray | None = None  # indices of every patch assigned to the cluster (de-duplication)


def rejection(size: int, n_images: int, n_discovery: int, min_size: float) -> str | None:
    """Which of ACE's acceptance rules a cluster fails, in words, or None when it is accepted."""
    if size <= min_size:
        return f"size: {size} patches <= minimum {min_size:g}"
    if (n_images > 0.5 * size
            or (n_images > 0.25 * size and n_images > 0.25 * n_discovery)
            or (n_images > 0.1 * size and n_images > 0.5 * n_discovery)):
        return None
    return f"spread: {size} patches from only {n_images} of {n_discovery} images"


def accepted(size: int, n_images: int, n_discovery: int, min_size: float) -> bool:
    """ACE's acceptance rule: big enough, and spread over enough distinct images."""
    return rejection(size, n_images, n_discovery, min_size) is None


def cluster_patches(features: np.ndarray, image_index: np.ndarray, n_discovery: int,
                    config: ClusterConfig, seed: int, rejected: dict[int, str] | None = None) -> list[Cluster]:
    """Cluster ``features`` [P, C] with k-means and keep the clusters ACE's rules accept.

    ``image_index`` [P] names the source image of each patch; ``n_discovery`` is the number of
    discovery images of the class. Clusters come back in label order; ``rejected`` (if given)
    receives the rule each other cluster failed, by label.
    """
    n_clusters = min(config.n_clusters, len(features))
    if n_clusters < 1:
        return []
    km = KMeans(n_clusters=n_clusters, n_init=config.n_init, random_state=seed)
    labels = km.fit_predict(features.astype(np.float64))
    dist = km.transform(features.astype(np.float64))  # [P, K] distances, no P x K x C temporary
    min_size = config.min_size_fraction * n_discovery
    clusters = []
    for label in range(n_clusters):
        idx = np.flatnonzero(labels == label)
        n_img = len(np.unique(image_index[idx]))
        why = rejection(len(idx), n_img, n_discovery, min_size)
        if why is not None:
            if rejected is not None:
                rejected[label] = why
            continue
        d = dist[idx, label]
        order = np.argsort(d, kind="stable")[: config.n_members]
        clusters.append(Cluster(label=label, center=km.cluster_centers_[label].astype(np.float32),
                                members=idx[order], distances=d[order].astype(np.float32),
                                size=len(idx), n_images=n_img, all_distances=np.sort(d).astype(np.float32),
                                assigned=idx))
    return clusters
