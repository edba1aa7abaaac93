"""Localisation: does a detected concept node sit on the ground-truth part its concept is made of?

For each concept named after a part (its dominant part in ``purity.json``), over the images of a
graph dataset that have part maps (toyworld):

- **precision**: of the images where the concept is detected, the share where the node's position
  (its matched patch's centroid) lies on that part, within ``tolerance`` of the image's short side;
- **recall**: of the images where the part is visible (at least ``min_pixels`` of it), the share
  where the concept is detected; **recall_on_part** also asks the node to lie on the part.

Counted on the images of the concept's own class (the headline) and on all images. Held-out means
images that were not used to discover the concepts.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np

#: A node lies on a part when the part is within this share of the short side of its position.
TOLERANCE = 0.015
#: A part is visible when at least this many of its pixels are.
MIN_PIXELS = 16
#: Concepts counted in the overall figures: at least this pure, named after a part other than these.
MIN_PURITY = 0.7
NOT_PARTS = ("body", "background")

_COUNTS = ("detected", "on_part", "visible", "visible_detected", "visible_on_part")


def _on_part(part: np.ndarray, pos: Sequence[float], radius: int) -> bool:
    h, w = part.shape
    x, y = min(int(pos[0] * w), w - 1), min(int(pos[1] * h), h - 1)
    return bool(part[max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1].any())


def _rates(c: Mapping[str, int]) -> dict[str, Any]:
    def div(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None
    return {**c, "precision": div(c["on_part"], c["detected"]), "recall": div(c["visible_detected"], c["visible"]),
            "recall_on_part": div(c["visible_on_part"], c["visible"])}


def localization(present: np.ndarray, pos: np.ndarray, image_ids: Sequence[str], labels: Sequence[int],
                 class_names: Sequence[str], concept_parts: Mapping[tuple[str, int], tuple[str, float]],
                 part_map: Callable[[str], np.ndarray | None], part_names: Sequence[str],
                 held_out: Collection[str] | None = None) -> dict[str, Any]:
    """Localisation figures of every part-named concept; see the module docstring.

    ``present`` [B, K, N] and ``pos`` [B, K, N, 2] (x, y in [0, 1]) are a graph batch's; ``labels``
    index ``class_names`` (-1: another class); ``concept_parts[(class, rank)]`` = (dominant part,
    purity); ``held_out``: the image ids to count (None: all).
    """
    ids = {name: k + 1 for k, name in enumerate(part_names)}
    rows: dict[tuple[int, int], dict[str, dict[str, int]]] = {}
    for (cls, rank), (part, _) in concept_parts.items():
        if cls in class_names and part in ids and rank <= present.shape[2]:
            rows[(class_names.index(cls), rank - 1)] = {"own_class": dict.fromkeys(_COUNTS, 0),
                                                        "all_images": dict.fromkeys(_COUNTS, 0)}
    n_images = 0
    for b, image_id in enumerate(image_ids):
        if held_out is not None and image_id not in held_out:
            continue
        labels_map = part_map(image_id)
        if labels_map is None:
            continue
        n_images += 1
        radius = max(1, round(TOLERANCE * min(labels_map.shape)))
        for (k, n), counts in rows.items():
            part = labels_map == ids[concept_parts[(class_names[k], n + 1)][0]]
            visible = int(part.sum()) >= MIN_PIXELS
            detected = bool(present[b, k, n] > 0.5)
            on = detected and _on_part(part, pos[b, k, n], radius)
            for scope in ("all_images", "own_class") if labels[b] == k else ("all_images",):
                c = counts[scope]
                c["detected"] += detected
                c["on_part"] += on
                c["visible"] += visible
                c["visible_detected"] += visible and detected
                c["visible_on_part"] += visible and on
    concepts, pooled = [], {s: dict.fromkeys(_COUNTS, 0) for s in ("own_class", "all_images")}
    per_class: dict[str, dict[str, int]] = {}
    for (k, n), counts in sorted(rows.items()):
        cls = class_names[k]
        part, purity = concept_parts[(cls, n + 1)]
        counted = purity is not None and purity >= MIN_PURITY and part not in NOT_PARTS
        concepts.append({"class": cls, "rank": n + 1, "part": part, "purity": purity, "counted": counted,
                         **{s: _rates(c) for s, c in counts.items()}})
        if counted:
            for s, c in counts.items():
                for key in _COUNTS:
                    pooled[s][key] += c[key]
            cc = per_class.setdefault(cls, dict.fromkeys(_COUNTS, 0))
            for key in _COUNTS:
                cc[key] += counts["own_class"][key]
    return {"n_images": n_images, "held_out": held_out is not None, "tolerance": TOLERANCE,
            "min_pixels": MIN_PIXELS, "counted": f"concepts of purity >= {MIN_PURITY} named after a part "
            f"other than {' or '.join(NOT_PARTS)}",
            "overall": {s: _rates(c) for s, c in pooled.items()},
            "per_class": {cls: _rates(c) for cls, c in per_class.items()}, "concepts": concepts}
