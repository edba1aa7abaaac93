"""Agreement of two graph builds of the SAME concept bank, e.g. crop-mode matching against one-forward
matching with the bank's map-space centres (``vrx graphs --features map``).

Over the images the bank did not discover on, for every (image, class, concept): whether both builds
detect the concept (or both miss it): *detected agreement*; and whether, in addition, both detections
lie at overlapping segments (matched boxes with IoU >= 0.5, as bench/compare_modes.py counts): *agreement*.
Also each build's detection rate, and agreement per concept.

    python bench/compare_matching.py RUN_A RUN_B        # two run folders holding the same bank's graphs
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from vrx.graphs.builder import Matches
from vrx.run import Run

IOU = 0.5


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes (..., 4) (y0, x0, y1, x1), elementwise."""
    y0, x0 = np.maximum(a[..., 0], b[..., 0]), np.maximum(a[..., 1], b[..., 1])
    y1, x1 = np.minimum(a[..., 2], b[..., 2]), np.minimum(a[..., 3], b[..., 3])
    inter = np.clip(y1 - y0, 0, None) * np.clip(x1 - x0, 0, None)
    area = lambda t: (t[..., 2] - t[..., 0]) * (t[..., 3] - t[..., 1])  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def agreement(a: Run, b: Run) -> dict:
    bank = a.bank()
    if bank.class_names != b.bank().class_names:
        raise SystemExit("the two runs have different classes")
    ids_a, ids_b = list(a.graphs_meta()["image_ids"]), list(b.graphs_meta()["image_ids"])
    m_a, m_b = Matches.load(a.matches_path), Matches.load(b.matches_path)
    discovered = {i for v in (bank.stats.get("discovery_images") or {}).values() for i in v}
    index_b = {i: k for k, i in enumerate(ids_b)}
    rows_a = [k for k, i in enumerate(ids_a) if i not in discovered and i in index_b]
    rows_b = [index_b[ids_a[k]] for k in rows_a]
    det_a, det_b = m_a.patch[rows_a] >= 0, m_b.patch[rows_b] >= 0          # [B, K, N]
    same_seg = box_iou(m_a.bbox[rows_a], m_b.bbox[rows_b]) >= IOU
    real = ~np.isnan(m_a.radius)                                           # [K, N] not padding
    det_agree = (det_a == det_b)[:, real]
    agree = ((~det_a & ~det_b) | (det_a & det_b & same_seg))[:, real]
    per_concept = {}
    for k, cls in enumerate(bank.class_names):
        for n, c in enumerate(bank[cls]):
            per_concept[c.name] = {"detected_a": round(float(det_a[:, k, n].mean()), 3),
                                   "detected_b": round(float(det_b[:, k, n].mean()), 3),
                                   "agreement": round(float(((~det_a & ~det_b) | (det_a & det_b & same_seg))[:, k, n].mean()), 3)}
    return {"held_out_images": len(rows_a), "triples": int(agree.size),
            "detected_agreement": round(float(det_agree.mean()), 3), "agreement": round(float(agree.mean()), 3),
            "detected_a": round(float(det_a[:, real].mean()), 3), "detected_b": round(float(det_b[:, real].mean()), 3),
            "same_segment_when_both_detect": round(float(same_seg[:, real][(det_a & det_b)[:, real]].mean()), 3),
            "per_concept": per_concept}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs=2)
    ap.add_argument("--brief", action="store_true", help="leave out the per-concept rows")
    args = ap.parse_args()
    out = agreement(*(Run(r) for r in args.runs))
    if args.brief:
        out.pop("per_concept")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
