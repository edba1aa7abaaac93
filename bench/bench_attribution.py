"""Benchmark: the cost of every registered attribution method, in forward + backward passes.

Three tables, in one run:

1. Each method of ``vrx.attribution.method_names()`` at its default settings: seconds per image
   (the images attributed in one call, ``--images`` of them) beside the model's forward and
   forward + backward (gradient w.r.t. the input) per image on the same batch, and the ratio.
   ``--scale`` < 1 runs RISE, meaningful and extremal perturbation with that fraction of their
   masks / iterations (their cost is linear in them) and extrapolates to the defaults.
2. RISE throughput: masked images per second in ``Rise.attribute`` (``--masks``, default 4000, the
   paper's setting) against bare batched forward passes on the same number of images of the
   model's input size, at the same batch size: through ``adapter.forward_module`` (resize and
   normalise + model) and the model alone on normalised images. Target: ratio >= 0.9.
3. RISE peak memory: in a fresh process for each (batch size, mask count) pair, how far the
   resident set (Linux VmHWM after resetting it; CUDA's peak allocation on a GPU) rises above its
   level before the call. It should grow with the batch size, not with the mask count, since
   masks are made batch by batch.

Images: toyworld scenes for the toy CNN (128 px, untrained, seeded: the cost does not depend on the
weights), scikit-image's photos resized to 224 px for EfficientNet-Lite0. Timings are the fastest
of ``--reps`` interleaved repetitions (the machine's cores are shared; the minimum is the least
disturbed estimate), on ``--threads`` torch threads (default 1); the load average is printed.

    python bench/bench_attribution.py [--model toy] [--images 2] [--reps 2] [--masks 4000]
    python bench/bench_attribution.py --model efficientnet-lite0 --scale 0.1 --masks 1000 --reps 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch

from vrx.attribution import get, method_names
from vrx.models.adapter import ClassifierAdapter
from vrx.runtime import threads

#: Settings that make each method's cost, and the factor ``--scale`` multiplies.
SCALED = {"rise": "n_masks", "meaningful_perturbation": "iterations", "extremal_perturbation": "iterations"}


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def build_adapter(model: str, device: str) -> ClassifierAdapter:
    """The toy CNN (untrained, seed 0) or a zoo model."""
    if model == "toy":
        from vrx.models.toycnn import ToyCNN

        net = ToyCNN(num_classes=3, seed=0)
        return ClassifierAdapter(net, input_size=128, mean=0.5, std=0.25, bottleneck=net.bottleneck,
                                 class_names=["fire_engine", "ambulance", "school_bus"], name="toy", device=device)
    import vrx

    return vrx.load_model(model, device=device)


def bench_images(adapter: ClassifierAdapter, n: int) -> torch.Tensor:
    """``n`` images at the model's input size: toyworld scenes (toy) or skimage photos."""
    size = adapter.input_size
    if adapter.name == "toy":
        from vrx.data.toyworld import DEFAULT_CLASSES, generate_scenes, render

        scenes = generate_scenes(DEFAULT_CLASSES, -(-n // len(DEFAULT_CLASSES)), 0)[:n]
        arrays = [render(sc)[0].astype(np.float32) / 255.0 for sc in scenes]
    else:
        from skimage import data

        names = ["chelsea", "coffee", "astronaut", "rocket"]
        arrays = [getattr(data, names[i % len(names)])().astype(np.float32) / 255.0 for i in range(n)]
    from vrx.models.inputs import to_tensor

    return to_tensor(arrays, size=size).clamp(0, 1)


def timed(fn, reps: int) -> float:
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def model_passes(adapter: ClassifierAdapter, x: torch.Tensor, targets: torch.Tensor, reps: int) -> tuple[float, float]:
    """(forward, forward + input-gradient backward) seconds per image on the batch ``x``."""
    x = x.to(adapter.device)
    tb = targets.to(adapter.device)

    def forward():
        with adapter.evaluating(), torch.inference_mode():
            adapter.forward_module(x)

    def backward():
        with adapter.evaluating():
            v = x.clone().requires_grad_(True)
            out = adapter.forward_module(v)
            torch.autograd.grad(out.gather(1, tb.view(-1, 1)).sum(), [v])

    forward(), backward()  # warm-up
    return timed(forward, reps) / x.shape[0], timed(backward, reps) / x.shape[0]


def method_table(adapter: ClassifierAdapter, x: torch.Tensor, args: argparse.Namespace) -> None:
    targets = adapter.logits(x).argmax(1)
    fwd, fwd_bwd = model_passes(adapter, x, targets, args.reps)
    print(f"\n1. methods at their defaults, {x.shape[0]} image(s) per call, model {adapter.name} "
          f"{adapter.input_size[0]}x{adapter.input_size[1]}: forward {fwd * 1000:.2f} ms/img, "
          f"forward+backward {fwd_bwd * 1000:.2f} ms/img")
    print(f"{'method':24s} {'settings run':28s} {'s/img':>9s} {'s/img at defaults':>18s} "
          f"{'/ fwd+bwd':>10s} {'/ fwd':>9s}")
    for name in method_names():
        cls = get(name)
        settings: dict[str, Any] = {}
        factor = 1.0
        try:
            if name in SCALED and args.scale != 1:
                default = cls(adapter).config()[SCALED[name]]
                settings[SCALED[name]] = max(1, round(default * args.scale))
                factor = default / settings[SCALED[name]]
            method = cls(adapter, **settings)
            method.attribute(x[:1], targets[:1])  # warm-up (and LRP's model copy, Grad-CAM's probe)
            seconds = timed(lambda: method.attribute(x, targets), args.reps) / x.shape[0]
        except Exception as exc:  # another engineer's method that cannot run here: say so, go on
            print(f"{name:24s} skipped: {type(exc).__name__}: {str(exc)[:90]}")
            continue
        shown = ", ".join(f"{k}={v}" for k, v in settings.items()) or "defaults"
        full = seconds * factor
        print(f"{name:24s} {shown:28s} {seconds:9.4f} {full:18.4f} {full / fwd_bwd:10.1f} {full / fwd:9.1f}")


def rise_throughput(adapter: ClassifierAdapter, image: torch.Tensor, args: argparse.Namespace) -> None:
    rise = get("rise")(adapter, n_masks=args.masks)
    bs = rise.batch_size
    batch = image.expand(bs, -1, -1, -1).contiguous().to(adapter.device)
    normalised = adapter.preprocess(batch)
    sizes = [min(bs, args.masks - s) for s in range(0, args.masks, bs)]
    target = adapter.logits(image).argmax(1)

    def bare_module():  # what a caller of the adapter runs: resize/normalise + model
        with adapter.evaluating(), torch.inference_mode():
            for n in sizes:
                adapter.forward_module(batch[:n])

    def bare_model():  # the model alone on normalised images: the least work possible
        with adapter.evaluating() as model, torch.inference_mode():
            for n in sizes:
                model(normalised[:n])

    def masked():
        rise.attribute(image, target)

    variants = {"Rise.attribute": masked, "forward_module (bare)": bare_module, "model alone (bare)": bare_model}
    best = {k: math.inf for k in variants}
    for fn in variants.values():
        fn()  # warm-up
    for _ in range(args.reps):  # interleaved, so load drift hits all alike
        for k, fn in variants.items():
            best[k] = min(best[k], timed(fn, 1))
    print(f"\n2. RISE throughput, {args.masks} masks, batch {bs}, {adapter.input_size[0]} px")
    print(f"{'':24s} {'seconds':>9s} {'images/s':>10s} {'RISE ratio':>11s}")
    for k, t in best.items():
        ratio = "" if k == "Rise.attribute" else f"{t / best['Rise.attribute']:11.3f}"
        print(f"{k:24s} {t:9.3f} {args.masks / t:10.1f} {ratio}")
    print("RISE ratio = RISE images/s over the bare forward's images/s; target >= 0.9")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def memory_child(args: argparse.Namespace) -> None:
    """In a fresh process: how far memory rises above its level before RISE runs (JSON)."""
    with threads(torch_threads=args.threads):
        adapter = build_adapter(args.model, args.device)
        image = bench_images(adapter, 1)
        method = get("rise")(adapter, n_masks=args.child_masks, batch_size=args.child_batch)
        cuda = adapter.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(adapter.device)
            base = torch.cuda.memory_allocated(adapter.device)
        else:
            # Linux: writing 5 to clear_refs resets this process's peak RSS (VmHWM) to the
            # current RSS, so the peak measured next is the peak of the RISE call alone.
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            base = _status_kib("VmRSS") * 1024
        t0 = time.perf_counter()
        method.attribute(image, 0)
        seconds = time.perf_counter() - t0
        peak = (torch.cuda.max_memory_allocated(adapter.device) if cuda else _status_kib("VmHWM") * 1024)
    print(json.dumps({"growth": peak - base, "seconds": seconds}))


def memory_table(args: argparse.Namespace) -> None:
    print(f"\n3. RISE peak memory growth (fresh process each; "
          f"{'CUDA peak allocation' if args.device.startswith('cuda') else 'peak RSS'})")
    print(f"{'batch size':>10s} {'masks':>7s} {'growth MiB':>11s} {'seconds':>8s}  (seconds with every large "
          "block from mmap: slower than table 2)")
    for bs in args.memory_batches:
        for n in args.memory_masks:
            cmd = [sys.executable, __file__, "--model", args.model, "--device", args.device, "--threads",
                   str(args.threads), "--child-batch", str(bs), "--child-masks", str(n)]
            # A fixed mmap threshold makes glibc return every large block when it is freed, so the
            # resident set follows the live tensors; with its adaptive default the peak wandered by
            # ±25 MiB from run to run (measured at batch 64), hiding the effect being measured.
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
            out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                 env=env).stdout.strip().splitlines()[-1]
            res = json.loads(out)
            print(f"{bs:10d} {n:7d} {res['growth'] / 2 ** 20:11.1f} {res['seconds']:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy", help="'toy' or a zoo spec, e.g. efficientnet-lite0")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=2, help="images per attribute call in table 1")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of RISE masks / perturbation iterations to run in table 1")
    parser.add_argument("--masks", type=int, default=4000, help="RISE masks in table 2")
    parser.add_argument("--memory-batches", type=int, nargs=2, default=[8, 64])
    parser.add_argument("--memory-masks", type=int, nargs=2, default=[1000, 4000])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--skip", nargs="*", default=[], choices=["methods", "throughput", "memory"])
    parser.add_argument("--child-batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-masks", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 0 < args.scale <= 1:
        parser.error("--scale must be in (0, 1]")
    if args.child_batch:
        memory_child(args)
        return
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} cores, device {args.device}; "
          f"load average {load_average()}")
    with threads(torch_threads=args.threads):
        adapter = build_adapter(args.model, args.device)
        x = bench_images(adapter, args.images)
        if "methods" not in args.skip:
            method_table(adapter, x, args)
        if "throughput" not in args.skip:
            rise_throughput(adapter, x[:1], args)
    if "memory" not in args.skip:
        memory_table(args)
    print(f"\nload average after: {load_average()}")


if __name__ == "__main__":
    main()
