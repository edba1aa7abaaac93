"""Benchmark: concept discovery on toyworld — featurising throughput and a whole discovery run.

Reports, in one run:
- patches per second featurising (PatchFeaturizer: adapter.activations + spatial mean) against the
  bare batched forward of the toy CNN's ``features`` stack on the same patches (target >= 0.8);
- the total time of a toyworld discovery (3 classes x 50 images, default settings), per stage,
  and the concept purity with and without the Grad-CAM filter.

    python bench/bench_concepts.py [--model toy:DIR] [--out runs/bench-concepts]

Without --model it renders a training set and trains the toy CNN first (a few minutes).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from vrx.cli.discover import format_summary
from vrx.concepts.config import ConceptConfig
from vrx.concepts.discover import discover
from vrx.concepts.features import PatchFeaturizer
from vrx.concepts.segmentation import segment_image
from vrx.data.images import load_image, load_image_folder
from vrx.data.toyworld import render_dataset
from vrx.models import load
from vrx.models.toytrain import train_toy


def featurise_ratio(adapter, paths: list[Path]) -> dict:
    """Patches/s of PatchFeaturizer against the bare bottleneck forward on the same patches."""
    feat = PatchFeaturizer(adapter, ConceptConfig().segmentation, cache_dir=None)
    images = [load_image(p) for p in paths]
    patches = torch.cat([feat.patches(im, segment_image(im, feat.segmentation)) for im in images])
    trunk = adapter.layer_module()  # the toy CNN's bottleneck is the end of model.features
    mean = torch.tensor(adapter.mean).view(1, 3, 1, 1)
    std = torch.tensor(adapter.std).view(1, 3, 1, 1)
    model = adapter.model

    def bare():
        with torch.inference_mode():
            for start in range(0, len(patches), 64):
                model.features((patches[start:start + 64] - mean) / std)

    def ours():
        adapter.activations(patches, batch_size=64).flatten(2).mean(2)

    assert trunk is model.features[-1]
    bare(), ours()  # warm-up
    t_bare = min(_time(bare) for _ in range(3))
    t_ours = min(_time(ours) for _ in range(3))
    n = len(patches)
    return {"patches": n, "bare_patches_per_s": round(n / t_bare, 1), "ours_patches_per_s": round(n / t_ours, 1),
            "ratio": round(t_bare / t_ours, 3), "bare_s": round(t_bare, 3), "ours_s": round(t_ours, 3)}


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--out", default="runs/bench-concepts")
    ap.add_argument("--n-per-class", type=int, default=50)
    args = ap.parse_args()
    out = Path(args.out)
    if args.model is None:
        if not (out / "model" / "metrics.json").exists():
            render_dataset(out / "train", 400, seed=0, n_random=0)
            train_toy(out / "train", out / "model", seed=0)
        args.model = f"toy:{out / 'model'}"
    adapter = load(args.model)
    images_dir = out / "images"
    if not (images_dir / "toyworld.json").exists():
        render_dataset(images_dir, args.n_per_class, seed=1, n_random=args.n_per_class)
    images = load_image_folder(images_dir)
    ratio = featurise_ratio(adapter, list(images.paths[images.classes[0]][:10]))
    print("featurising:", json.dumps(ratio))
    run = out / "run"
    for cache in (run / "cache").glob("**/*.safetensors"):
        cache.unlink()  # time discovery from a cold cache
    t0 = time.perf_counter()
    _, summary = discover(adapter, images, run, ConceptConfig(), compare_gradcam=True, show_progress=False)
    total = time.perf_counter() - t0
    print(format_summary(summary))
    print(f"total discovery time, {len(images.classes)} classes x {args.n_per_class} images "
          f"(with the no-Grad-CAM comparison run): {total:.1f} s")
    purity = json.loads((run / "concepts" / "purity.json").read_text())
    for variant, p in purity.items():
        for cls, rows in p["classes"].items():
            print(f"[{variant}] {cls}: " + ", ".join(
                f"c{r['rank']} {r['part']} {r['purity']:.2f} (TCAV {r['tcav']:.2f})" for r in rows))
    np.set_printoptions(precision=3)


if __name__ == "__main__":
    main()
