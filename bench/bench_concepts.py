"""Benchmark: concept discovery on toyworld — featurising throughput and a whole discovery run.

Reports, in one run:
- patches per second featurising (PatchFeaturizer.features: adapter.activations + spatial mean) against
  the bare batched forward truncated at the bottleneck, on the same patches (target >= 0.8): for the
  toy CNN the ``features`` stack, for EfficientNet-Lite0 the stem and ``_blocks.0-15``, called directly;
- the total time of a toyworld discovery (3 classes x 50 images, default settings), per stage,
  and the concept purity with and without the Grad-CAM filter.

    python bench/bench_concepts.py [--model toy:DIR] [--out runs/bench-concepts]
    python bench/bench_concepts.py --featurise-only [--model SPEC] [--images 4] [--threads 1] [--batch 64]
    python bench/bench_concepts.py --batch-sweep [--model SPEC] [--images 4] [--lite0-images 1] [--reps 2]

Without --model it renders a training set and trains the toy CNN first (a few minutes).
With --featurise-only it measures only the featurising ratio, on --model or, without it, on an
untrained toy CNN (toyworld scenes) and on EfficientNet-Lite0 (skimage's photos), and exits.
With --batch-sweep it times featurising the same patches with the memory-sized batch (the default,
vrx.models.batching), with constant batches of 8, 32 and 128, and the bare forward at the
memory-sized batch, interleaved, on the same models, and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vrx import stages
from vrx.cli.discover import format_summary
from vrx.concepts.config import ConceptConfig
from vrx.concepts.features import PatchFeaturizer
from vrx.concepts.segmentation import segment_image
from vrx.data.images import load_image, load_image_folder
from vrx.data.toyworld import render_dataset
from vrx.models import DEFAULT_THREADS, load
from vrx.models.adapter import ClassifierAdapter
from vrx.models.batching import cache_size
from vrx.models.toytrain import train_toy
from vrx.run import Run
from vrx.runtime import threads

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_patches import photos, toy_images  # noqa: E402  (a sibling script, not a package)


def bare_trunk(adapter: ClassifierAdapter) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's own forward up to the bottleneck, called directly: no hooks, no checks."""
    model = adapter.model
    features = getattr(model, "features", None)
    name = adapter.bottleneck.split(".")
    if isinstance(features, torch.nn.Sequential) and len(name) == 2 and name[0] == "features":
        return features[:int(name[1]) + 1]  # toy CNN: the bottleneck is a block of its features stack
    blocks = getattr(model, "_blocks", None)
    if blocks is not None and len(name) == 2 and name[0] == "_blocks":
        last = int(name[1])
        rate = model._global_params.drop_connect_rate

        def effnet(x: torch.Tensor) -> torch.Tensor:
            # EfficientNet.extract_features, stopped after block ``last`` (drop-connect is off in eval).
            x = model._swish(model._bn0(model._conv_stem(x)))
            for idx in range(last + 1):
                x = blocks[idx](x, drop_connect_rate=rate * idx / len(blocks) if rate else rate)
            return x
        return effnet
    raise SystemExit(f"no bare forward known for {adapter.name} at {adapter.bottleneck}")


def bare_forward(adapter: ClassifierAdapter, patches: torch.Tensor, batch: int) -> Callable[[], torch.Tensor]:
    """The model's own forward up to the bottleneck over ``patches`` in batches of ``batch``: the baseline."""
    trunk = bare_trunk(adapter)
    mean = torch.tensor(adapter.mean).view(1, 3, 1, 1)
    std = torch.tensor(adapter.std).view(1, 3, 1, 1)
    adapter.model.eval()

    def bare() -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([trunk((patches[s:s + batch] - mean) / std) for s in range(0, len(patches), batch)])
    return bare


def featurise_ratio(adapter: ClassifierAdapter, images: list[np.ndarray], reps: int = 3,
                    batch: int | None = None) -> dict:
    """Patches/s of PatchFeaturizer.features against the bare bottleneck forward on the same patches."""
    feat = PatchFeaturizer(adapter, ConceptConfig().segmentation, cache_dir=None, batch_size=batch)
    patches = torch.cat([feat.patches(im, segment_image(im, feat.segmentation)) for im in images])
    batch = adapter.batch_size_for(patches.shape[1:], batch)  # None: the memory-sized batch
    bare = bare_forward(adapter, patches, batch)

    def ours() -> np.ndarray:
        return feat.features(patches)

    want, got = bare().flatten(2).mean(2).numpy(), ours()  # warm-up, and the two must agree
    if not np.allclose(want, got, atol=1e-4, rtol=1e-4):
        raise SystemExit(f"featuriser and bare forward disagree (max diff {np.abs(want - got).max():.3g})")
    t_bare, t_ours = [], []
    for _ in range(reps):  # interleaved, so load drift hits both alike
        t_bare.append(_time(bare))
        t_ours.append(_time(ours))
    n = len(patches)
    tb, to = min(t_bare), min(t_ours)
    return {"model": adapter.name, "patches": n, "size": list(adapter.input_size), "batch": batch,
            "bare_patches_per_s": round(n / tb, 1), "ours_patches_per_s": round(n / to, 1),
            "ratio": round(tb / to, 3), "bare_s": round(tb, 3), "ours_s": round(to, 3),
            "torch_threads": torch.get_num_threads(), "load_avg": [round(v, 2) for v in os.getloadavg()]}


def batch_sweep(adapter: ClassifierAdapter, images: list[np.ndarray], reps: int,
                constants: tuple[int, ...] = (8, 32, 128)) -> None:
    """Print seconds and patches/s of featurising with the memory-sized batch, constant batches and the bare forward."""
    adapter = adapter.replace(batch_size=None)  # memory-sized, the default budget
    seg = ConceptConfig().segmentation
    crop = PatchFeaturizer(adapter, seg)
    patches = torch.cat([crop.patches(im, segment_image(im, seg)) for im in images])
    shape = tuple(patches.shape[1:])
    auto = adapter.batch_size_for(shape)   # the probe forward happens here, outside the timings
    per = adapter.sizer.bytes_per_image(shape)
    bare = bare_forward(adapter, patches, auto)
    variants: dict[str, tuple[int, Callable[[], object]]] = {"bare forward": (auto, bare)}
    variants["memory-sized"] = (auto, PatchFeaturizer(adapter, seg).features)
    for b in constants:
        variants[f"constant {b}"] = (b, PatchFeaturizer(adapter, seg, batch_size=b).features)
    want = bare().flatten(2).mean(2).numpy()  # warm-up, and all must agree
    for name, (_, fn) in variants.items():
        got = fn(patches) if name != "bare forward" else want
        if not np.allclose(want, got, atol=1e-4, rtol=1e-4):
            raise SystemExit(f"{name} disagrees with the bare forward (max diff {np.abs(want - got).max():.3g})")
    best = {name: np.inf for name in variants}
    load_before = os.getloadavg()
    for _ in range(reps):  # interleaved, so load drift hits every variant alike
        for name, (_, fn) in variants.items():
            best[name] = min(best[name], _time(fn if name == "bare forward" else lambda fn=fn: fn(patches)))
    n, budget, cache = len(patches), adapter.sizer.budget.total(adapter.device), cache_size()
    print(f"\n{adapter.name} at {adapter.input_size[0]} px: {n} patches of {len(images)} images; memory-sized "
          f"batch {auto}: budget {budget / 2**20:.0f} MiB / {per / 2**20:.2f} MiB per image (probe bound) = "
          f"{budget // per}, capped by the {(cache or 0) / 2**20:.0f} MiB last-level cache; peak at most "
          f"{min(auto, n) * per / 2**20:.0f} MiB per batch; torch threads {torch.get_num_threads()}; "
          f"load average {' '.join(f'{v:.2f}' for v in load_before)} -> "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}; best of {reps}")
    print(f"{'variant':16s} {'batch':>6s} {'s':>8s} {'patches/s':>10s} {'bare/this':>10s} {'memory-sized/this':>18s}")
    for name, (b, _) in variants.items():
        t = best[name]
        print(f"{name:16s} {b:6d} {t:8.3f} {n / t:10.1f} {best['bare forward'] / t:10.3f} "
              f"{best['memory-sized'] / t:18.3f}", flush=True)


def _untrained_toy() -> ClassifierAdapter:
    from vrx.data.toyworld import DEFAULT_CLASSES
    from vrx.models.toycnn import ToyCNN

    model = ToyCNN(num_classes=len(DEFAULT_CLASSES), seed=0)
    return ClassifierAdapter(model, input_size=(128, 128), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                             bottleneck=model.bottleneck, class_names=list(DEFAULT_CLASSES), name="toy-untrained")


def featurise_only(model: str | None, n_images: int, reps: int, batch: int) -> None:
    """Print the featurising ratio for ``model``, or for an untrained toy CNN and EfficientNet-Lite0."""
    if model is None:
        runs = [(_untrained_toy(), toy_images(n_images)[0]), (load("efficientnet-lite0"), photos()[:n_images])]
    else:
        adapter = load(model)
        # Toyworld scenes for a toyworld-sized model, else photos (patches are resized to its input).
        images = toy_images(n_images)[0] if adapter.input_size == (128, 128) else photos()[:n_images]
        runs = [(adapter, images)]
    for adapter, images in runs:
        print("featurising:", json.dumps(featurise_ratio(adapter, images, reps, batch)), flush=True)


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--out", default="runs/bench-concepts")
    ap.add_argument("--n-per-class", type=int, default=50)
    ap.add_argument("--featurise-only", action="store_true", help="only the featurising ratio, then exit")
    ap.add_argument("--images", type=int, default=4, help="images whose patches are featurised (ratio)")
    ap.add_argument("--reps", type=int, default=3, help="timing repetitions for the ratio (best kept)")
    ap.add_argument("--batch", type=int, help="patches per forward (ratio; default memory-sized)")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--batch-sweep", action="store_true",
                    help="featurising with the memory-sized batch vs constant batches vs the bare forward, then exit")
    ap.add_argument("--constants", type=int, nargs="+", default=[8, 32, 128],
                    help="constant batch sizes to compare in --batch-sweep")
    ap.add_argument("--lite0-images", type=int, default=1, help="photos for EfficientNet-Lite0 in --batch-sweep")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch_sweep:
        if args.model:
            adapter = load(args.model)
            toy = adapter.input_size == (128, 128)
            batch_sweep(adapter, toy_images(args.images)[0] if toy else photos()[:args.images], args.reps,
                        tuple(args.constants))
        else:
            batch_sweep(_untrained_toy(), toy_images(args.images)[0], args.reps, tuple(args.constants))
            if args.lite0_images > 0:
                batch_sweep(load("efficientnet-lite0"), photos()[:args.lite0_images], args.reps,
                            tuple(args.constants))
        return
    if args.featurise_only:
        featurise_only(args.model, args.images, args.reps, args.batch)
        return
    out = Path(args.out)
    if args.model is None:
        if not (out / "model" / "metrics.json").exists():
            render_dataset(out / "train", 400, seed=0, n_random=0)
            with threads(torch_threads=DEFAULT_THREADS):
                train_toy(out / "train", out / "model", seed=0)
        args.model = f"toy:{out / 'model'}"
    adapter = load(args.model)
    images_dir = out / "images"
    if not (images_dir / "toyworld.json").exists():
        render_dataset(images_dir, args.n_per_class, seed=1, n_random=args.n_per_class)
    images = load_image_folder(images_dir)
    ratio = featurise_ratio(adapter, [load_image(p) for p in images.paths[images.classes[0]][:args.images]],
                            args.reps, args.batch)
    print("featurising:", json.dumps(ratio))
    run = Run(out / "run")
    for cache in run.patch_cache_dir.glob("**/*.safetensors"):
        cache.unlink()  # time discovery from a cold cache
    t0 = time.perf_counter()
    # Discovery's thread settings (see vrx.concepts.patches): one BLAS thread, one torch thread
    # unless --threads says otherwise.
    with threads(torch_threads=args.threads or 1, blas_threads=1):
        _, summary = stages.discover(run, adapter, images, ConceptConfig(), compare_gradcam=True,
                                     show_progress=False)
    total = time.perf_counter() - t0
    print(format_summary(summary))
    print(f"total discovery time, {len(images.classes)} classes x {args.n_per_class} images "
          f"(with the no-Grad-CAM comparison run): {total:.1f} s")
    purity = json.loads(run.purity_path.read_text())
    for variant, p in purity.items():
        for cls, rows in p["classes"].items():
            print(f"[{variant}] {cls}: " + ", ".join(
                f"c{r['rank']} {r['part']} {r['purity']:.2f} (TCAV {r['tcav']:.2f})" for r in rows))
    np.set_printoptions(precision=3)


if __name__ == "__main__":
    main()
