"""Compare two finished toyworld runs on the same images, e.g. crop mode against one-forward mode.

For each run: concepts per class with purity >= 0.7 and their part types (``purity.json``), the
GRN's held-out fidelity (``grn/metrics.json``), localisation (``graphs/localization.json``) and the
discovery seconds. Then the **agreement of detected concepts**: over the images that neither run
discovered on, for every class and every part type that both banks have a concept of (a concept is
named after its dominant part when that part holds >= 0.5 of its pixels, background excluded),
whether both runs detect it at the same segment (matched boxes with IoU >= 0.5) or both miss it.
Reported per (image, class, part) and as the share of images on which every such pair agrees.

    python bench/compare_modes.py RUN_A RUN_B
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from vrx.graphs.builder import Matches
from vrx.interpret.sentences import names_from_purity
from vrx.run import Run
from vrx.store import read_json

IOU = 0.5


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    y0, x0 = max(a[0], b[0]), max(a[1], b[1])
    y1, x1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, y1 - y0) * max(0, x1 - x0)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area if area > 0 else 0.0


def summary(run: Run) -> dict:
    bank = run.bank()
    purity = run.bank_purity(bank) or {}
    pure = {c: [(r["part"], round(r["purity"], 2)) for r in rows] for c, rows in purity.get("classes", {}).items()}
    metrics = run.grn_metrics() or {}
    seconds = read_json(run.concepts_dir / "summary.json").get("seconds", {})
    loc = read_json(run.localization_path) if run.localization_path.exists() else None
    return {"run": str(run.path), "mode": bank.config.segmentation.features, "layer": bank.layer,
            "concepts": pure,
            "pure_per_class": {c: sum(p >= 0.7 for _, p in v) for c, v in pure.items()},
            "fidelity": {k: v for k, v in metrics.items() if "fidelity" in k and not isinstance(v, (dict, list))},
            "localization": None if loc is None else loc.get("summary", loc.get("overall")),
            "discovery_seconds": round(sum(seconds.values()), 1)}


def detections(run: Run) -> tuple[list[str], dict[tuple[str, str], list[int]], Matches, set[str]]:
    bank = run.bank()
    names = names_from_purity(run.bank_purity(bank) or {}, min_purity=0.5)
    by_part: dict[tuple[str, str], list[int]] = {}
    for k, cls in enumerate(bank.class_names):
        for n, concept in enumerate(bank[cls]):
            part = names.get((cls, concept.rank))
            if part and part != "background":
                by_part.setdefault((cls, part), []).append(n)
    ids = list(run.graphs_meta()["image_ids"])
    discovered = {i for v in (bank.stats.get("discovery_images") or {}).values() for i in v}
    return ids, by_part, Matches.load(run.matches_path), discovered


def agreement(a: Run, b: Run) -> dict:
    ids_a, parts_a, m_a, disc_a = detections(a)
    ids_b, parts_b, m_b, disc_b = detections(b)
    classes = a.bank().class_names
    if classes != b.bank().class_names:
        raise SystemExit("the two runs have different classes")
    index_b = {i: k for k, i in enumerate(ids_b)}
    shared = sorted(set(parts_a) & set(parts_b))
    pairs = agree = images = images_agree = 0
    for ia, image in enumerate(ids_a):
        if image in disc_a or image in disc_b or image not in index_b:
            continue
        ib = index_b[image]
        ok_all = True
        for cls, part in shared:
            k = classes.index(cls)
            boxes_a = [m_a.bbox[ia, k, n] for n in parts_a[(cls, part)] if m_a.patch[ia, k, n] >= 0]
            boxes_b = [m_b.bbox[ib, k, n] for n in parts_b[(cls, part)] if m_b.patch[ib, k, n] >= 0]
            ok = (not boxes_a and not boxes_b) or any(_iou(x, y) >= IOU for x in boxes_a for y in boxes_b)
            pairs += 1
            agree += ok
            ok_all &= ok
        images += 1
        images_agree += ok_all
    return {"shared_part_concepts": [f"{c}/{p}" for c, p in shared], "held_out_images": images,
            "pairs": pairs, "pair_agreement": round(agree / max(pairs, 1), 3),
            "image_agreement": round(images_agree / max(images, 1), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs=2)
    args = ap.parse_args()
    a, b = (Run(r) for r in args.runs)
    print(json.dumps({"a": summary(a), "b": summary(b), "agreement": agreement(a, b)}, indent=1))


if __name__ == "__main__":
    main()
