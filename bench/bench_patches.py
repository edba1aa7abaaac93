"""Benchmark: making concept patches (segment_image + extract_patches) against SLIC alone.

Target: patching costs at most 1.5x the three plain ``skimage.segmentation.slic`` calls per image.
Images: toyworld-like 128x128 scenes and skimage's bundled photos resized to 224x224 (the
EfficientNet input). Each variant is timed ``--reps`` times per image, interleaved, after one
warm-up; the fastest rep is kept per image (the machine's 2 cores are shared, and the minimum is the
least disturbed estimate), and the table reports the median over images. The load average is
printed before and after: other work on the machine inflates both sides, SLIC and patching alike.
A second table splits patching into segment_image and extract_patches (to the model's input size).
Patching runs on ``--threads`` torch intra-op threads (default 1, what discovery should run with:
extract_patches sets no thread count itself). ``--compare-threads`` instead times extract_patches on
1 and on 2 torch threads, interleaved, and checks that both give the same patches bit for bit
(the measurement quoted in vrx/concepts/patches.py).

    python bench/bench_patches.py [--reps 3] [--toy 10] [--threads 1]
    python bench/bench_patches.py --compare-threads [--reps 5] [--toy 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from skimage import data, transform
from skimage.segmentation import slic

from vrx.concepts.config import ConceptConfig
from vrx.concepts.patches import extract_patches
from vrx.concepts.segmentation import SegmentationConfig, segment_image
from vrx.runtime import threads

FILL = (0.498, 0.498, 0.498)  # EfficientNet-Lite0's zero in [0, 1] space


def toy_images(n: int, seed: int = 0) -> tuple[list[np.ndarray], str]:
    """128x128 scenes from vrx.data.toyworld when available, else toyworld-like random shapes."""
    try:
        from vrx.data.toyworld import DEFAULT_CLASSES, generate_scenes, render
        scenes = generate_scenes(DEFAULT_CLASSES, -(-n // len(DEFAULT_CLASSES)), seed)[:n]
        return [render(sc)[0].astype(np.float32) / 255.0 for sc in scenes], "vrx.data.toyworld"
    except ImportError:
        pass
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:128, :128]
    images = []
    for _ in range(n):
        img = np.empty((128, 128, 3), np.float32)
        img[:] = rng.uniform(0.2, 0.8, 3)
        img += rng.normal(0, 0.03, img.shape).astype(np.float32)  # sensor-like texture
        for _ in range(rng.integers(3, 7)):
            cy, cx = rng.uniform(10, 118, 2)
            ry, rx = rng.uniform(6, 28, 2)
            if rng.random() < 0.5:
                inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            else:
                inside = (abs(yy - cy) <= ry) & (abs(xx - cx) <= rx)
            img[inside] = rng.uniform(0, 1, 3)
        images.append(np.clip(img, 0, 1))
    return images, "stand-in random shapes"


def photos() -> list[np.ndarray]:
    """skimage's bundled photos, with crops and flips, resized to 224x224."""
    out = []
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        im = getattr(data, name)().astype(np.float32) / 255.0
        h, w = im.shape[:2]
        s = min(h, w)
        views = [im, im[:, ::-1], im[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]]
        out += [transform.resize(v, (224, 224), anti_aliasing=True).astype(np.float32) for v in views]
    return out


def slic_alone(image: np.ndarray, config: SegmentationConfig) -> None:
    for n in config.n_segments:
        slic(image, n_segments=n, compactness=config.compactness, sigma=config.sigma,
             min_size_factor=config.min_size_factor, start_label=config.start_label, channel_axis=-1)


def patching(image: np.ndarray, config: SegmentationConfig, size: int) -> int:
    segments = segment_image(image, config)
    return len(extract_patches(image, segments, FILL, (size, size)))


def timed(fn, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def split(images: list[np.ndarray], config: SegmentationConfig, size: int, reps: int) -> dict[str, float]:
    """Median seconds per image of segment_image and of extract_patches alone."""
    seg, ext = [], []
    for image in images:
        segments = segment_image(image, config)
        seg.append(timed(lambda: segment_image(image, config), reps))
        ext.append(timed(lambda: extract_patches(image, segments, FILL, (size, size)), reps))
    return {"segment": statistics.median(seg), "extract": statistics.median(ext)}


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def run(images: list[np.ndarray], config: SegmentationConfig, reps: int) -> dict[str, float]:
    slic_alone(images[0], config)  # warm-up: imports, caches, thread pools
    for size in (224, 128):
        patching(images[0], config, size)
    rows = {"slic": [], "p224": [], "p128": [], "n": []}
    for image in images:
        # Interleaved per image, so drift in machine load hits all variants alike.
        rows["slic"].append(timed(lambda: slic_alone(image, config), reps))
        rows["p224"].append(timed(lambda: patching(image, config, 224), reps))
        rows["p128"].append(timed(lambda: patching(image, config, 128), reps))
        rows["n"].append(patching(image, config, 8))
    med = {k: statistics.median(v) for k, v in rows.items()}
    med["r224"] = statistics.median(a / b for a, b in zip(rows["p224"], rows["slic"]))
    med["r128"] = statistics.median(a / b for a, b in zip(rows["p128"], rows["slic"]))
    return med


def compare_threads(groups: list[tuple[str, list[np.ndarray], SegmentationConfig, int]], reps: int) -> None:
    """Per group, median over images of the best-of-``reps`` extraction time on 1 and 2 torch threads."""
    print(f"extract_patches on 1 vs 2 torch threads; {os.cpu_count()} cores; load average {load_average()}")
    for name, images, config, size in groups:
        segs = [segment_image(im, config) for im in images]
        best: dict[int, list[float]] = {1: [np.inf] * len(images), 2: [np.inf] * len(images)}
        first: dict[int, list[torch.Tensor]] = {}
        for _ in range(reps + 1):  # the first round warms up
            for n in (1, 2):
                with threads(torch_threads=n):
                    for i, (im, sg) in enumerate(zip(images, segs)):
                        t0 = time.perf_counter()
                        out = extract_patches(im, sg, FILL, (size, size))
                        best[n][i] = min(best[n][i], time.perf_counter() - t0)
                        if len(first.setdefault(n, [])) < len(images):
                            first[n].append(out)
        same = all(torch.equal(a, b) for a, b in zip(first[1], first[2]))
        print(f"{name + f' -> {size}':42s} {statistics.median(len(s) for s in segs):5.0f} patches/img  "
              f"1 thread {1000 * statistics.median(best[1]):7.1f} ms  2 threads "
              f"{1000 * statistics.median(best[2]):7.1f} ms  identical: {same}")
    print(f"load average after: {load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--toy", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for patching")
    parser.add_argument("--compare-threads", action="store_true", help="time extract_patches on 1 vs 2 threads")
    args = parser.parse_args()
    if args.compare_threads:
        compare_threads([("toy 128px, toyworld preset", toy_images(args.toy)[0], ConceptConfig.toyworld().segmentation,
                          128), ("photos 224px (skimage.data)", photos()[:6], SegmentationConfig(), 224)], args.reps)
        return
    with threads(torch_threads=args.threads):
        report(args)


def report(args: argparse.Namespace) -> None:
    """The two tables of the module docstring."""
    config = SegmentationConfig()
    toy_config = ConceptConfig.toyworld().segmentation
    toys, source = toy_images(args.toy)
    groups = [(f"toy 128px ({source})", toys, config), ("photos 224px (skimage.data)", photos(), config),
              ("toy 128px, toyworld preset", toys, toy_config)]
    print(f"torch threads {torch.get_num_threads()}; {os.cpu_count()} cores; load average "
          f"{load_average()}; median over images, best of {args.reps} reps each")
    print(f"ACE's settings: {config}\ntoyworld preset: {toy_config}")
    print(f"{'images':42s} {'n':>3s} {'segs':>5s} {'SLIC s/img':>10s} {'patch->224 s/img':>17s} "
          f"{'ratio':>6s} {'patch->128 s/img':>17s} {'ratio':>6s}")
    for name, images, config in groups:
        m = run(images, config, args.reps)
        print(f"{name:42s} {len(images):3d} {m['n']:5.0f} {m['slic']:10.4f} {m['p224']:17.4f} "
              f"{m['r224']:6.2f} {m['p128']:17.4f} {m['r128']:6.2f}")
    print("ratio = (segment_image + extract_patches) / (three slic calls), per image; target <= 1.5")
    print(f"{'split at the model input size':42s} {'segment_image s/img':>20s} {'extract_patches s/img':>22s}")
    for (name, images, config), size in zip(groups, (128, 224, 128)):
        m = split(images, config, size, args.reps)
        print(f"{name + f' -> {size}':42s} {m['segment']:20.4f} {m['extract']:22.4f}")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
