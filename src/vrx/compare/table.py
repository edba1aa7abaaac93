"""A comparison as ``compare.json`` (versioned, every per-image value) and ``compare.md`` (the tables).

``compare.json`` (``schema_version`` 1): ``model``, ``image_root``, ``run``, ``settings`` (the
comparison's), ``fwd_bwd_seconds_per_image`` (the cost unit), ``images`` (path, label, target per
image), ``fractions`` (x of the deletion, insertion and trade-off curves), ``methods`` (per method:
``signed``, ``settings``, ``n_images``, ``images`` (indices), ``seconds_per_image``,
``fwd_bwd_units``, ``means`` and ``counts`` per metric, ``per_image`` values, ``mean_curves``,
``tradeoff``), ``random`` (chance level of the pointing metrics), ``concepts`` (C-Deletion /
C-Insertion per order, or null without a run) and ``subset`` (means of every method on the images
all of them ran on, or null). Values that are not defined are null.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .results import METRICS, ORDERS, Comparison, MethodResult, nanmean

__all__ = ["SCHEMA_VERSION", "to_json", "to_markdown", "COLUMNS"]

SCHEMA_VERSION = 1

#: compare.md's metric columns: (metric, header).
COLUMNS = [("deletion", "deletion ↓"), ("insertion", "insertion ↑"),
           ("pointing_vehicle", "pointing vehicle ↑"), ("pointing_distinctive", "pointing distinctive ↑"),
           ("energy_vehicle", "energy pointing vehicle ↑"), ("energy_distinctive", "energy pointing distinctive ↑")]
_SKIP_SETTINGS = {"seed", "run", "match"}


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None, NumPy values plain Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _method_json(m: MethodResult, unit: float) -> dict[str, Any]:
    return {"signed": m.signed, "settings": m.settings, "n_images": m.n_images, "images": m.images,
            "seconds_per_image": m.seconds_per_image, "fwd_bwd_units": m.seconds_per_image / unit,
            "means": {k: m.mean(k) for k in METRICS}, "counts": {k: m.count(k) for k in METRICS},
            "per_image": {**{k: m.values[k] for k in METRICS}, "seconds": m.seconds},
            "mean_curves": {"deletion": m.mean_curve("deletion"), "insertion": m.mean_curve("insertion")},
            "tradeoff": {"rate": m.tradeoff_rate()}}


def to_json(c: Comparison) -> dict[str, Any]:
    """The ``compare.json`` record (see the module docstring)."""
    concepts = None
    if c.concepts is not None:
        k = c.concepts
        concepts = {"n_images": len(k.images), "skipped": k.skipped, "images": k.images,
                    "n_concepts": k.n_concepts, "orders": list(ORDERS),
                    "means": {o: {mode: k.mean(o, mode) for mode in ("deletion", "insertion")} for o in ORDERS},
                    "per_image": k.auc}
    subset = None
    if c.subset:
        among = set(c.subset)
        subset = {"images": c.subset,
                  "means": {n: {k: m.mean(k, among) for k in METRICS} for n, m in c.methods.items()}}
    return _clean({
        "schema_version": SCHEMA_VERSION, "model": c.model, "image_root": c.image_root, "run": c.run,
        "n_images": len(c.images), "settings": c.settings, "fwd_bwd_seconds_per_image": c.fwd_bwd_seconds,
        "images": [{"path": p, "label": lab, "target": t} for p, lab, t in zip(c.images, c.labels, c.targets)],
        "fractions": c.fractions,
        "methods": {n: _method_json(m, c.fwd_bwd_seconds) for n, m in c.methods.items()},
        "random": {"means": {k: nanmean(v) for k, v in c.random.items()}, "per_image": c.random},
        "concepts": concepts, "subset": subset})


def _f(value: float, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _settings(m: MethodResult) -> str:
    items = [f"{k}={v}" for k, v in m.settings.items()
             if k not in _SKIP_SETTINGS and not isinstance(v, (dict, list))]
    return ", ".join(items) or "–"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _metric_table(c: Comparison, among: set[int] | None) -> list[str]:
    # Pointing columns only where some method has a value (toyworld part maps).
    cols = [(k, h) for k, h in COLUMNS
            if k in ("deletion", "insertion") or any(m.count(k) for m in c.methods.values())]
    head = ["method", "images"] + [h for _, h in cols]
    lines = [_row(head), _row(["---"] * len(head))]
    for name, m in c.methods.items():
        n = m.n_images if among is None else sum(i in among for i in m.images)
        lines.append(_row([name, str(n)] + [_f(m.mean(k, among)) for k, _ in cols]))
    if len(cols) > 2:
        sel = range(len(c.images)) if among is None else sorted(among)
        lines.append(_row(["random map (chance)", str(len(sel)), "–", "–"]
                          + [_f(nanmean([c.random[k][i] for i in sel])) for k, _ in cols[2:]]))
    return lines


def to_markdown(c: Comparison) -> str:
    """``compare.md``: the method table, costs and settings, the subset table, the concept-order table."""
    unit_ms = c.fwd_bwd_seconds * 1e3
    out = [f"# vrx compare: {c.model} on {len(c.images)} images", "",
           f"Images from `{c.image_root}`; each map explains the model's predicted class"
           + (" among the run's classes of interest" if c.run else "") + ". "
           f"Cost unit: one forward+backward of the model, {unit_ms:.2f} ms per image in this run.", "",
           "## Faithfulness and localisation", ""]
    out += _metric_table(c, None)
    out += ["", "Deletion / insertion: area under the class-probability curve as the map's top pixels are "
            "removed / restored (RISE protocol). Pointing: share of images whose map maximum lies on (within "
            "15 px at 224 px of) the vehicle or the target class's distinctive parts; energy pointing: share "
            "of the map's positive mass inside that mask (pointing columns only for images with part maps).", "",
            "## Cost and settings", ""]
    head = ["method", "images", "s/image", "fwd+bwd units", "settings"]
    out += [_row(head), _row(["---"] * len(head))]
    for name, m in c.methods.items():
        out.append(_row([name, str(m.n_images), _f(m.seconds_per_image, 4),
                         _f(m.seconds_per_image / c.fwd_bwd_seconds, 1), _settings(m)]))
    if c.subset:
        out += ["", f"## All methods on the {len(c.subset)} images every method ran on", ""]
        out += _metric_table(c, set(c.subset))
    if c.concepts is not None and c.concepts.images:
        k = c.concepts
        out += ["", "## Concept orders (C-Deletion / C-Insertion)", "",
                f"{len(k.images)} images with detected concepts of the target class "
                f"(mean {np.mean(k.n_concepts):.1f} concepts; {k.skipped} image(s) without any left out).", ""]
        head = ["order", "C-Deletion ↓", "C-Insertion ↑"]
        out += [_row(head), _row(["---"] * len(head))]
        for o in ORDERS:
            out.append(_row([o, _f(k.mean(o, "deletion")), _f(k.mean(o, "insertion"))]))
    return "\n".join(out) + "\n"
