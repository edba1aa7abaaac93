"""Benchmark: images per second segmenting and featurising, in this process and on 1 and 2 Ray workers.

What ``vrx discover --executor ray`` shards: each image segmented and featurised into the patch
cache. Timed into a fresh cache folder each time: ``local`` is the in-process loop that discovery
runs without an executor (one torch thread, as ``vrx discover`` runs it), ``ray-N`` is
:class:`vrx.scale.ray_executor.RayExecutor` with N workers of one CPU each, timed from the first
task to the last result written, on a Ray started once (its start-up, a few seconds, is printed
apart) and after every worker has loaded the network (also printed apart: a fresh worker
process imports torch and builds the model, seconds that a long run pays once). Every Ray cache is checked to be byte for byte the local one.

Images: toyworld scenes at 128 px with the toy CNN in crop mode (the toyworld preset's
segmentation, about 250 patches each), and skimage photo views at 224 px with EfficientNet-Lite0
in map mode (ACE's segmentation). The load average is printed before and after.

    python bench/bench_scale.py [--toy N] [--photos N] [--work runs/bench-scale]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data, transform

from vrx.concepts.config import ConceptConfig, SegmentationConfig
from vrx.concepts.features import PatchFeaturizer
from vrx.concepts.inputs import iter_images
from vrx.run import ModelSpec
from vrx.runtime import threads


def toy_case(work: Path, n: int) -> tuple[ModelSpec, SegmentationConfig, list[str]]:
    from vrx.data.toyworld import DEFAULT_CLASSES, render_dataset
    from vrx.models.toycnn import ToyCNN, init_toy_cnn, save_toy_model

    model = work / "toy-model"
    if not model.exists():  # featurising costs the same for any weights: an untrained, seeded CNN
        net = init_toy_cnn(ToyCNN(num_classes=3), torch.Generator().manual_seed(0))
        save_toy_model(model, net, {"class_names": list(DEFAULT_CLASSES), "mean": [0.5] * 3, "std": [0.25] * 3})
    images = work / f"toy-images-{n}"
    if not (images / "toyworld.json").exists():
        render_dataset(images, -(-n // 3), seed=31, n_random=0, show_progress=False)
    paths = sorted(str(p) for p in images.rglob("*.png") if not p.name.endswith(".parts.png"))[:n]
    return ModelSpec(model=f"toy:{model.resolve()}"), ConceptConfig.toyworld().segmentation, paths


def photo_case(work: Path, n: int) -> tuple[ModelSpec, SegmentationConfig, list[str]]:
    folder = work / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    names = ("chelsea", "coffee", "astronaut", "rocket", "camera", "immunohistochemistry")
    paths = []
    for k in range(n):
        path = folder / f"view_{k:03d}.png"
        rng = np.random.default_rng(k)  # each view its own crop, however many exist already
        if not path.exists():
            im = getattr(data, names[k % len(names)])().astype(np.float32) / 255.0
            im = np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im[..., :3]
            h, w = im.shape[:2]
            s = int(min(h, w) * rng.uniform(0.7, 1.0))
            y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
            v = transform.resize(im[y:y + s, x:x + s], (224, 224), anti_aliasing=True)
            Image.fromarray((np.clip(v, 0, 1) * 255).round().astype(np.uint8)).save(path)
        paths.append(str(path))
    return ModelSpec(model="efficientnet-lite0"), SegmentationConfig(features="map"), paths


def local_seconds(spec: ModelSpec, seg: SegmentationConfig, paths: list[str], cache: Path) -> float:
    adapter = spec.load()
    featurizer = PatchFeaturizer(adapter, seg, cache)
    t0 = time.perf_counter()
    with threads(torch_threads=1, blas_threads=1):
        for _, image in iter_images(paths, adapter.input_size, show_progress=False):
            featurizer(image)
    return time.perf_counter() - t0


def main() -> None:
    import ray

    from vrx.scale.ray_executor import RayExecutor

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--toy", type=int, default=48, help="toyworld images")
    ap.add_argument("--photos", type=int, default=24, help="photo views")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-scale"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()}, {os.cpu_count()} CPUs")
    cases = [("toy CNN, toyworld 128 px, crop", *toy_case(args.work, args.toy)),
             ("Lite0, photos 224 px, map", *photo_case(args.work, args.photos))]
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"ray start: {time.perf_counter() - t0:.1f} s")
    rows = []
    try:
        for title, spec, seg, paths in cases:
            adapter = spec.load()
            caches = {}
            local_cache = args.work / "cache-local"
            shutil.rmtree(local_cache, ignore_errors=True)
            seconds = {"local": local_seconds(spec, seg, paths, local_cache)}
            caches["local"] = {p.name: p.read_bytes() for p in local_cache.glob("*.safetensors")}
            for workers in (1, 2):
                cache = args.work / f"cache-ray{workers}"
                shutil.rmtree(cache, ignore_errors=True)
                with RayExecutor(workers=workers) as ex:   # Ray is up already: not started or stopped here
                    done = ex.fill_patch_cache(spec.to_dict(), seg, 64, paths, cache, adapter.model_id)
                assert done["computed"] == len(paths), done
                seconds[f"ray-{workers}"] = done["seconds"]
                seconds[f"ray-{workers} model loading"] = done["startup_seconds"]
                caches[f"ray-{workers}"] = {p.name: p.read_bytes() for p in cache.glob("*.safetensors")}
            same = all(c == caches["local"] for c in caches.values())
            rows.append((title, len(paths), seconds, same))
    finally:
        ray.shutdown()
    print(f"load average after: {os.getloadavg()}")
    print(f"{'case':<34}{'images':>7}{'local im/s':>12}{'ray-1 im/s':>12}{'ray-2 im/s':>12}{'2 vs 1':>8}  same cache")
    for title, n, s, same in rows:
        print(f"{title:<34}{n:>7}{n / s['local']:>12.2f}{n / s['ray-1']:>12.2f}{n / s['ray-2']:>12.2f}"
              f"{s['ray-1'] / s['ray-2']:>8.2f}  {same}")
        print(f"{'':<34}seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in s.items()))


if __name__ == "__main__":
    main()
