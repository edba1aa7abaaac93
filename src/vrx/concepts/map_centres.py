"""Map-space centres: let a bank discovered on crops be matched from one forward of an image.

A crop-mode concept's centre lives in the space of cropped patches, so matching it needs one
forward per patch. Its second centre is the mean of its own members' *map-mode* features (each
member's segment pooled from one forward of its whole image), with the members' distances to it
as the detection threshold's calibration. One forward per distinct member image, no re-clustering.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from ..errors import ArtifactError
from ..models.adapter import ClassifierAdapter
from .bank import ConceptBank
from .features import PatchFeaturizer
from .inputs import iter_images


def add_map_centres(bank: ConceptBank, adapter: ClassifierAdapter,
                    resolve: Callable[[str], str] = str) -> dict[str, int]:
    """Give every concept of ``bank`` (in place) its map-space centre and member distances.

    ``resolve`` turns a member's stored image path into a readable one (e.g. ``Run.resolve``).
    Returns ``{"images": forwards run, "members": members pooled}``.
    """
    if bank.model_id != adapter.model_id or bank.layer != adapter.bottleneck:
        raise ArtifactError(f"the concept bank was made with model {bank.model_id} at layer {bank.layer!r}, "
                            f"not {adapter.model_id} at {adapter.bottleneck!r}")
    seg = dataclasses.replace(bank.config.segmentation, features="map")
    featurizer = PatchFeaturizer(adapter, seg, batch_size=bank.config.batch_size)
    concepts = [c for cs in bank.concepts.values() for c in cs]
    by_image: dict[str, list[tuple[int, int]]] = {}   # image -> (concept, member) indices
    for i, c in enumerate(concepts):
        if not c.members:
            raise ArtifactError(f"concept {c.name} has no members to pool a map-space centre from")
        for j, m in enumerate(c.members):
            by_image.setdefault(m.image, []).append((i, j))
    feats: list[dict[int, np.ndarray]] = [{} for _ in concepts]
    images = list(by_image)
    for stored, (_, image) in zip(images, iter_images([resolve(p) for p in images], adapter.input_size)):
        rows = by_image[stored]
        masks = [concepts[i].members[j].full_mask() for i, j in rows]
        if masks[0].shape != image.shape[:2]:
            raise ArtifactError(f"{stored}: the image is {image.shape[1]}x{image.shape[0]}, but the bank's "
                                f"members were segmented at {masks[0].shape[1]}x{masks[0].shape[0]}")
        for (i, j), f in zip(rows, featurizer.context_of(image, masks)):
            feats[i][j] = f
    for i, c in enumerate(concepts):
        x = np.stack([feats[i][j] for j in range(len(c.members))])
        c.map_center = x.mean(0).astype(np.float32)
        c.map_distances = np.sort(np.linalg.norm(x - c.map_center, axis=1)).astype(np.float32)
    return {"images": len(images), "members": sum(len(c.members) for c in concepts)}
