"""Cost of a method in seconds per image and in units of the model's own forward+backward pass.

The unit is measured in the same process, on the same images and threads, just before the
methods run: one forward of a batch through ``adapter.forward_module`` (resize + normalise + model,
from [0, 1] pixels) and one backward of the target logits to the input, per image, median over a
few repeats after one warm-up. A method's cost divided by it is roughly "how many gradient
computations" the method is worth, which travels between machines better than seconds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import torch

from ..models.adapter import ClassifierAdapter

__all__ = ["forward_backward_seconds", "timed"]

T = TypeVar("T")
REPEATS = 5


def forward_backward_seconds(adapter: ClassifierAdapter, images: torch.Tensor, targets: torch.Tensor,
                             repeats: int = REPEATS) -> float:
    """Median seconds per image of one forward + backward pass (gradient w.r.t. the input)."""
    n = min(images.shape[0], adapter.batch_size)
    x = images[:n].to(adapter.device)
    t = targets[:n].to(adapter.device).view(-1, 1)
    times = []
    with adapter.evaluating(), torch.inference_mode(False), torch.enable_grad():
        for r in range(repeats + 1):
            xi = x.clone().requires_grad_(True)
            start = time.perf_counter()
            out = adapter.forward_module(xi)
            (grad,) = torch.autograd.grad(out.gather(1, t).sum(), xi)
            float(grad.sum())   # wait for the device, so the time is the work's
            if r:               # the first pass warms up allocators and kernels
                times.append(time.perf_counter() - start)
    return statistics.median(times) / n


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()`` and the wall-clock seconds it took."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start
