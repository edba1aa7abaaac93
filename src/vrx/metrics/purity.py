"""Concept purity: how well discovered concepts line up with ground-truth part types."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..concepts.bank import ConceptBank


def concept_purity(bank: ConceptBank, part_map: Callable[[str], np.ndarray | None],
                   part_names: Sequence[str] | None = None, threshold: float = 0.7) -> dict:
    """Per concept, the share of its members' segment pixels on its most common label.

    ``part_map(image_id)`` returns the HxW part-type map of a member's image (0 = background,
    k = ``part_names[k-1]``) or None when there is none: usually the reader
    :func:`vrx.data.images.part_map_reader` gives, whose ``part_names`` are the default. Background
    counts as a label of its own, so a concept made of background patches is reported as such.
    """
    if part_names is None:
        part_names = part_map.part_names  # type: ignore[attr-defined]
    names = ["background", *part_names]
    cache: dict[str, np.ndarray | None] = {}
    classes: dict[str, list[dict]] = {}
    summary: dict[str, dict] = {}
    for cls, concepts in bank.concepts.items():
        rows = []
        for c in concepts:
            counts = np.zeros(len(names), np.int64)
            for m in c.members:
                if m.image not in cache:
                    cache[m.image] = part_map(m.image)
                pm = cache[m.image]
                if pm is None:
                    continue
                labels = pm[m.full_mask()]
                counts += np.bincount(labels.astype(np.int64), minlength=len(names))[: len(names)]
            total = int(counts.sum())
            top = int(counts.argmax())
            rows.append({"rank": c.rank, "tcav": c.tcav, "purity": counts[top] / total if total else None,
                         "part": names[top] if total else None,
                         "shares": {names[k]: round(float(v / total), 4) for k, v in enumerate(counts) if v}
                         if total else {}})
        classes[cls] = rows
        pure = [r for r in rows if r["purity"] is not None and r["purity"] >= threshold and r["part"] != "background"]
        summary[cls] = {"n_concepts": len(rows), "n_pure": len(pure), "threshold": threshold,
                        "part_types": sorted({r["part"] for r in rows if r["part"] not in (None, "background")})}
    return {"classes": classes, "summary": summary}
