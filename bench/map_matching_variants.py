"""Variants of one-forward matching of a crop-mode bank, scored against its crop-mode matches.

RUN_CROPMAP is a run whose bank has map-space centres (``vrx map-centres``; its patch cache may
hold the map-mode entries). Over the images the bank did not discover on, for every
(image, class, concept), the agreement with RUN_CROP's matches (both miss, or both detect at
overlapping segments, box IoU >= 0.5; see bench/compare_matching.py) of:

- ``centre``: the map-space centres, detection threshold the members' map distances at each
  ``--quantiles`` value (what ``MatchConfig(features="map", radius_quantile=q)`` does);
- ``nearest member``: each member's own map feature as a prototype (a patch's distance is to the
  nearest member), threshold the members' leave-one-out nearest-member distances at quantile 0.9.

    python bench/map_matching_variants.py RUN_CROP RUN_CROPMAP [--quantiles 0.5,0.75,0.9]
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
from scipy.optimize import linear_sum_assignment

from compare_matching import box_iou
from vrx.concepts.features import PatchFeaturizer
from vrx.concepts.inputs import iter_images
from vrx.graphs.builder import Matches, MatchConfig, SCGBuilder
from vrx.run import Run


def score(m_crop: Matches, rows: list[int], detected: np.ndarray, bbox: np.ndarray) -> dict:
    da = m_crop.patch[rows] >= 0
    same = box_iou(m_crop.bbox[rows], bbox) >= 0.5
    real = ~np.isnan(m_crop.radius)
    agree = ((~da & ~detected) | (da & detected & same))[:, real]
    return {"detected": round(float(detected[:, real].mean()), 3), "agreement": round(float(agree.mean()), 3),
            "detected_agreement": round(float((da == detected)[:, real].mean()), 3),
            "same_segment_when_both_detect": round(float(same[:, real][(da & detected)[:, real]].mean()), 3)}


def nearest_member(run: Run, images: list[str], quantile: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    bank, adapter = run.bank(), run.adapter()
    fz = PatchFeaturizer(adapter, dataclasses.replace(bank.config.segmentation, features="map"), run.patch_cache_dir)
    protos, radius = {}, {}
    for cls in bank.class_names:
        for c in bank[cls]:
            feats = [fz.context_of(next(iter_images([m.image], adapter.input_size))[1], [m.full_mask()])[0]
                     for m in c.members]
            p = np.stack(feats)
            d = np.linalg.norm(p[:, None] - p[None], axis=2)
            np.fill_diagonal(d, np.inf)
            protos[c.name], radius[c.name] = p, float(np.quantile(d.min(1), quantile))
    k_, n_ = len(bank.class_names), bank.n_concepts
    det = np.zeros((len(images), k_, n_), bool)
    box = np.full((len(images), k_, n_, 4), -1)
    for r, (_, image) in enumerate(iter_images(images, adapter.input_size)):
        p = fz(image)
        for k, cls in enumerate(bank.class_names):
            cost = np.stack([np.linalg.norm(p.features[:, None] - protos[c.name][None], axis=2).min(1)
                             for c in bank[cls]])
            for n, j in zip(*linear_sum_assignment(cost)):
                if cost[n, j] <= radius[bank[cls][n].name]:
                    det[r, k, n], box[r, k, n] = True, p.bboxes[j]
    return det, box


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs=2)
    ap.add_argument("--quantiles", default="0.5,0.75,0.9")
    args = ap.parse_args()
    crop, cropmap = Run(args.runs[0]), Run(args.runs[1])
    bank = cropmap.bank()
    ids = list(crop.graphs_meta()["image_ids"])
    discovered = {i for v in bank.stats["discovery_images"].values() for i in v}
    rows = [k for k, i in enumerate(ids) if i not in discovered]
    images = [ids[k] for k in rows]
    m_crop = Matches.load(crop.matches_path)
    for q in (float(v) for v in args.quantiles.split(",")):
        builder = SCGBuilder(cropmap.adapter(), bank, MatchConfig(features="map", teacher=False, radius_quantile=q),
                             cache_dir=cropmap.patch_cache_dir, show_progress=False)
        _, m = builder.transform(images, return_matches=True)
        print(json.dumps({"variant": "centre", "quantile": q, **score(m_crop, rows, m.patch >= 0, m.bbox)}), flush=True)
    det, box = nearest_member(cropmap, images)
    print(json.dumps({"variant": "nearest member", "quantile": 0.9, **score(m_crop, rows, det, box)}), flush=True)


if __name__ == "__main__":
    main()
