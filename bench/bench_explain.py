"""Benchmark: seconds to explain one image, crop mode against one-forward ("map") mode, and a
crop-mode bank matched in one forward with its map-space centres ("crop+map").

For the toy CNN (a toyworld scene, 128 px, the toyworld preset's segmentation) and for
EfficientNet-Lite0 (skimage's chelsea, 224 px, ACE's segmentation), and for each feature mode,
it builds a small complete run (discover, graphs, GRN) in ``--work``, then times
``RunExplainer.explain_image`` on one image the run has not seen, with the model already loaded
and no patch cache (everything an explanation costs: segmentation, featurisation, matching, the
classifier's logits, the GRN and its reasons; not the figure). The unit is one forward + backward
of the same image through the same model (input gradient of its top logit): explain time / unit
says how many such passes an explanation costs. Targets (issue 14): on Lite0, map mode at most 10
units and at least 10x faster than crop mode.

Each time is the median of ``--reps`` rounds after one warm-up, the unit and both modes interleaved
in every round (so they share the load), on torch's default threads (what
``vrx explain`` runs with) unless ``--threads`` is given. The load average is printed before and
after: other work on the shared machine inflates every figure.

The runs are small (a few images per class) and exist only to be explained with: their concepts
are not evaluated here. A run already in ``--work`` is reused.

    python bench/bench_explain.py [--work runs/bench-explain] [--reps 3] [--toy-model DIR] [--threads N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data, transform

from vrx import stages
from vrx.concepts.config import ClusterConfig, ConceptConfig, GradCamConfig, TCAVConfig
from vrx.data.images import load_image, load_image_folder
from vrx.explain import RunExplainer
from vrx.grn.config import DistillConfig, GRNConfig
from vrx.models import to_tensor
from vrx.run import ModelSpec, Run
from vrx.runtime import DISCOVERY_THREADS, GRN_THREADS, threads

MODES = ("crop", "map", "crop+map")  # crop+map: the crop run's bank matched in one forward (map-space centres)
SMALL = dict(cluster=ClusterConfig(n_clusters=5, n_init=2, n_members=6, min_size_fraction=0.5),
             tcav=TCAVConfig(n_random_sets=6, random_set_size=10, n_concepts=3, alpha=0.2))


def _save(images: list[np.ndarray], folder: Path, stem: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, im in enumerate(images):
        Image.fromarray((np.clip(im, 0, 1) * 255).round().astype(np.uint8)).save(folder / f"{stem}_{k}.png")


def _square(image: np.ndarray, size: int = 224) -> np.ndarray:
    image = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    h, w = image.shape[:2]
    s = min(h, w)
    sq = image[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s, :3]
    return transform.resize(sq, (size, size), anti_aliasing=True).astype(np.float32)


def _views(image: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """n random crops (70-100% of the short side), some mirrored, resized to 224 px."""
    rng = np.random.default_rng(seed)
    image = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    h, w = image.shape[:2]
    out = []
    for _ in range(n):
        s = int(min(h, w) * rng.uniform(0.7, 1.0))
        y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
        v = image[y:y + s, x:x + s, :3]
        out.append(transform.resize(v[:, ::-1] if rng.random() < 0.5 else v, (224, 224), anti_aliasing=True))
    return out


def photo_images(root: Path, adapter) -> tuple[Path, np.ndarray]:
    """Views of chelsea (Egyptian cat) and coffee (espresso) as class folders, random views of other photos."""
    if not (root / "random").exists():
        _save(_views(data.chelsea(), 4, 0), root / adapter.class_name(285), "chelsea")
        _save(_views(data.coffee(), 4, 1), root / adapter.class_name(967), "coffee")
        others = [data.astronaut(), data.rocket(), data.camera(), data.immunohistochemistry(), data.hubble_deep_field()]
        _save([v for k, im in enumerate(others) for v in _views(im, 2, 10 + k)], root / "random", "random")
    return root, _square(data.chelsea())  # explained: the whole photo, not one of the views


def toy_images(root: Path) -> tuple[Path, np.ndarray]:
    """A small toyworld render (128 px) and one further scene to explain."""
    from vrx.data.toyworld import render_dataset

    if not (root / "toyworld.json").exists():
        render_dataset(root, 8, seed=21, n_random=16, show_progress=False)
    held = root.parent / "toy-heldout"
    if not (held / "toyworld.json").exists():
        render_dataset(held, 1, seed=99, classes=("fire_engine",), n_random=0, show_progress=False)
    return root, load_image(next(p for p in sorted(held.rglob("*.png")) if not p.name.endswith(".parts.png")))


def toy_model(work: Path, given: str | None) -> str:
    if given:
        return given
    from vrx.models.toytrain import train_toy

    model = work / "toy-model"
    if not (model / "metrics.json").exists():
        from vrx.data.toyworld import render_dataset

        render_dataset(work / "toy-train", 120, seed=5, n_random=0, show_progress=False)
        with threads(torch_threads=1):
            train_toy(work / "toy-train", model, epochs=8, seed=0, progress=False)
    return str(model)


def build_run(path: Path, spec: ModelSpec, images: Path, config: ConceptConfig) -> Run:
    """discover -> graphs (the discovery images) -> GRN, unless ``path`` already holds a finished run."""
    run = Run(path)
    if run.has_grn():
        return run
    shutil.rmtree(path, ignore_errors=True)
    run.write_manifest(spec, str(images))
    adapter = spec.load()
    folder = load_image_folder(images)
    t0 = time.perf_counter()
    with threads(**DISCOVERY_THREADS):
        stages.discover(run, adapter, folder, config, show_progress=False)
        stages.build_graphs(run, adapter, folder, show_progress=False)
    with threads(**GRN_THREADS):
        stages.train_grn(run, GRNConfig(hidden=(16, 16), input_proj=16, edge_dim=4),
                         DistillConfig(epochs=60, batch_size=8, val_fraction=0.25, test_fraction=0.25),
                         ablations=False, show_progress=False)
    print(f"  built {path.name} in {time.perf_counter() - t0:.0f} s")
    return run


def map_centred_run(crop_run: Run, path: Path, images: Path) -> tuple[Run, float]:
    """A copy of ``crop_run`` with map-space centres, its graphs built in one-forward mode, GRN
    retrained: what `vrx map-centres` + `vrx graphs --features map` + `vrx train` make; and the
    seconds adding the centres took (0 when the run was already there)."""
    from vrx.graphs.builder import MatchConfig

    run = Run(path)
    if run.has_grn():
        return run, float("nan")
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(crop_run.path, path)
    shutil.rmtree(path / "cache", ignore_errors=True)
    adapter = run.adapter()
    with threads(**DISCOVERY_THREADS):
        added = stages.add_map_centres(run, adapter)
        stages.build_graphs(run, adapter, load_image_folder(images), MatchConfig(features="map"),
                            show_progress=False)
    with threads(**GRN_THREADS):
        stages.train_grn(run, GRNConfig(hidden=(16, 16), input_proj=16, edge_dim=4),
                         DistillConfig(epochs=60, batch_size=8, val_fraction=0.25, test_fraction=0.25),
                         ablations=False, show_progress=False)
    print(f"  map-space centres for {path.name}: {added['members']} members, {added['images']} images, "
          f"{added['seconds']} s")
    return run, added["seconds"]


def interleaved_medians(calls: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median seconds of each call over ``reps`` rounds, the calls interleaved within each round.

    Interleaving puts the unit and both modes under the same load on shared cores (a lone
    forward + backward measured anywhere between 0.05 and 0.5 s here as other work came and went).
    The unit, being short, is the median of 5 calls per round.
    """
    for fn in calls.values():
        fn()  # warm-up: lazy imports, first-call allocations
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(reps):
        for name, fn in calls.items():
            inner = []
            for _ in range(5 if name == "unit" else 1):
                t0 = time.perf_counter()
                fn()
                inner.append(time.perf_counter() - t0)
            times[name].append(statistics.median(inner))
    return {name: statistics.median(t) for name, t in times.items()}


def forward_backward(adapter, image: np.ndarray) -> Callable[[], None]:
    """One forward + backward of ``image``: the input gradient of its top logit."""
    x = to_tensor(image, size=adapter.input_size)

    def run() -> None:
        with adapter.evaluating():
            xi = x.clone().requires_grad_(True)
            out = adapter.forward_module(xi)
            out[0, int(out[0].argmax())].backward()
    return run


def explain_once(explainer: RunExplainer, image: np.ndarray) -> Callable[[], None]:
    """RunExplainer.explain_image without any patch cache (memory or disk): every call computes all."""
    builder = explainer.builder
    builder.featurizer.cache_dir = None
    builder.featurizer.memo = None
    return lambda: explainer.explain_image(image, "bench")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("runs/bench-explain"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--toy-model", help="a trained toy CNN folder (default: train a small one in --work)")
    ap.add_argument("--threads", type=int, help="torch threads while timing (default: torch's own)")
    ap.add_argument("--only", choices=("toy", "lite0"), help="just one model")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()}  torch threads: {args.threads or torch.get_num_threads()}")

    cases = []
    if args.only in (None, "toy"):
        spec = ModelSpec(model=f"toy:{Path(toy_model(args.work, args.toy_model)).resolve()}")
        images, image = toy_images(args.work / "toy-images")
        base = ConceptConfig.toyworld()
        config = dataclasses.replace(base, cluster=SMALL["cluster"],
                                     tcav=dataclasses.replace(SMALL["tcav"], activations="context"))
        cases.append(("toy CNN, toyworld 128 px", "toy", spec, images, image, config))
    if args.only in (None, "lite0"):
        spec = ModelSpec(model="efficientnet-lite0")
        images, image = photo_images(args.work / "photos", spec.load())
        config = ConceptConfig(gradcam=GradCamConfig(min_inside=0.5), **SMALL)
        cases.append(("EfficientNet-Lite0, chelsea 224 px", "lite0", spec, images, image, config))

    rows = []
    for title, tag, spec, images, image, config in cases:
        runs = {}
        for mode in ("crop", "map"):
            cfg = dataclasses.replace(config, segmentation=dataclasses.replace(config.segmentation, features=mode))
            runs[mode] = build_run(args.work / f"{tag}-{mode}", spec, images, cfg)
        runs["crop+map"], centre_s = map_centred_run(runs["crop"], args.work / f"{tag}-cropmap", images)
        with threads(torch_threads=args.threads) if args.threads else nullcontext():
            adapter = spec.load()
            calls = {"unit": forward_backward(adapter, image)}
            for mode, run in runs.items():
                explainer = RunExplainer(run, show_progress=False)
                explainer.__dict__["adapter"] = adapter  # the model already loaded, shared by both modes
                calls[mode] = explain_once(explainer, image)
            median = interleaved_medians(calls, args.reps)
        unit, seconds = median["unit"], {m: median[m] for m in MODES}
        n_patches = len(RunExplainer(runs["map"]).builder.featurizer.compute(image))
        rows.append({"case": title, "patches": n_patches, "forward_backward_s": round(unit, 4),
                     **{f"{m}_s": round(s, 3) for m, s in seconds.items()},
                     **{f"{m}_units": round(s / unit, 2) for m, s in seconds.items()},
                     "crop_over_map": round(seconds["crop"] / seconds["map"], 2),
                     "crop_over_cropmap": round(seconds["crop"] / seconds["crop+map"], 2),
                     "map_centres_s": centre_s})

    print(f"load average after: {os.getloadavg()}")
    print(f"{'case':<36}{'patches':>8}{'fwd+bwd s':>11}{'crop s':>9}{'map s':>8}{'c+m s':>8}{'crop units':>12}"
          f"{'map units':>11}{'c+m units':>11}{'crop/map':>10}{'crop/c+m':>10}")
    for r in rows:
        print(f"{r['case']:<36}{r['patches']:>8}{r['forward_backward_s']:>11.3f}{r['crop_s']:>9.2f}"
              f"{r['map_s']:>8.2f}{r['crop+map_s']:>8.2f}{r['crop_units']:>12.1f}{r['map_units']:>11.1f}"
              f"{r['crop+map_units']:>11.1f}{r['crop_over_map']:>10.1f}{r['crop_over_cropmap']:>10.1f}")
    for r in rows:
        if r["case"].startswith("EfficientNet"):
            print(f"targets on Lite0: map <= 10 units: {r['map_units'] <= 10} ({r['map_units']}); "
                  f"crop/map >= 10: {r['crop_over_map'] >= 10} ({r['crop_over_map']})")
    (args.work / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
