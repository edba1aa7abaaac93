"""Batch sizes from a memory budget: one probe forward per input shape, then as many images as fit.

A constant batch size is either too small for a small model (throughput left on the table) or too
big for a large one at a large input (the machine swaps or CUDA runs out of memory). Instead the
adapter measures, once per input shape, how many bytes one image costs in a forward pass, and
fills a budget: a fraction (``DEFAULT_FRACTION``) of the host's RAM (on the CPU: a fixed figure, so
the same machine always picks the same batch and repeats its results to the bit) or of the free
CUDA memory, or a fixed number of bytes. An explicit batch size (the adapter's ``batch_size`` or a call's) always wins.

How the bytes of one image are measured:

- on CUDA, the peak of ``torch.cuda.max_memory_allocated`` over one forward of a probe batch,
  above what was allocated before it;
- elsewhere, the sizes of every distinct tensor the model's modules output in that forward (read
  by forward hooks), plus the input. That is an upper bound on a forward's peak (which frees
  intermediates as it goes) and about what a backward keeps alive, so one sizing serves both.

On the CPU the batch is also kept within the last-level cache (its largest single activation, times
the batch) and to at most ``MAX_BATCH_CPU`` images: there memory bandwidth, not capacity, limits
throughput (figures in docs/concepts.md).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError

DEFAULT_FRACTION = 0.25   # of the host's RAM (CPU) or free CUDA memory; others share the machine
# Caps on the batch (a MemoryBudget's max_batch overrides both). On the CPU, throughput falls past a
# few dozen images: measured 2.6x slower at 128 than at 32 for the toy CNN and 1.4x for EfficientNet-Lite0
# (bench/bench_concepts.py --batch-sweep). Elsewhere (CUDA) the budget decides, up to MAX_BATCH.
MAX_BATCH_CPU = 32
MAX_BATCH = 1024
PROBE_BATCH = 2           # images in the probe forward (2, not 1: a batch of one can take other kernels)

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30, "gb": 1 << 30,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}


@dataclass(frozen=True)
class MemoryBudget:
    """How much memory a batch may take: ``bytes`` if given, else ``fraction`` of :func:`budget_memory`."""

    fraction: float = DEFAULT_FRACTION
    bytes: int | None = None
    max_batch: int | None = None    # None: MAX_BATCH_CPU on the CPU, MAX_BATCH elsewhere
    fit_cache: bool = True          # on the CPU, also keep a batch's largest activation within the cache
    cache_bytes: int | None = None  # that cache's size; None: the last-level cache, read from the system

    def __post_init__(self) -> None:
        if isinstance(self.fraction, bool) or not isinstance(self.fraction, (int, float)) \
                or not 0 < float(self.fraction) <= 1:
            raise ConfigError(f"memory budget: fraction must be in (0, 1], got {self.fraction!r}")
        if self.bytes is not None and (isinstance(self.bytes, bool) or not isinstance(self.bytes, int)
                                       or self.bytes < 1):
            raise ConfigError(f"memory budget: bytes must be a positive integer, got {self.bytes!r}")
        if self.max_batch is not None and (isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int)
                                           or self.max_batch < 1):
            raise ConfigError(f"memory budget: max_batch must be a positive integer, got {self.max_batch!r}")
        if self.cache_bytes is not None and (isinstance(self.cache_bytes, bool) or not isinstance(self.cache_bytes, int)
                                             or self.cache_bytes < 1):
            raise ConfigError(f"memory budget: cache_bytes must be a positive integer, got {self.cache_bytes!r}")

    @classmethod
    def parse(cls, value: MemoryBudget | str | float | int | None) -> MemoryBudget:
        """A budget from a setting: None (the default), a fraction ("0.3", "30%") or bytes ("2GB", "512MiB")."""
        if value is None:
            return cls()
        if isinstance(value, MemoryBudget):
            return value
        if isinstance(value, bool):
            raise ConfigError(f"memory budget must be a fraction or a size such as 2GB, got {value!r}")
        if isinstance(value, float):
            return cls(fraction=value)
        if isinstance(value, int):
            return cls(bytes=value)
        text = str(value).strip().lower().replace(" ", "")
        if text.endswith("%"):
            try:
                return cls(fraction=float(text[:-1]) / 100)
            except ValueError:
                pass
        else:
            m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)([a-z]*)", text)
            if m and m.group(2) in _UNITS:
                number, unit = float(m.group(1)), m.group(2)
                if unit == "" and "." in m.group(1):
                    return cls(fraction=number)   # "0.3": a fraction
                return cls(bytes=int(number * _UNITS[unit]))
        raise ConfigError(f"memory budget {value!r} is neither a fraction (0.25, 25%) nor a size (2GB, 512MiB)")

    def total(self, device: torch.device) -> int:
        """The budget in bytes on ``device`` (a fraction is taken of :func:`budget_memory`)."""
        if self.bytes is not None:
            return self.bytes
        return max(int(self.fraction * budget_memory(device)), 1)


def cache_size() -> int | None:
    """Bytes of the CPU's last-level cache (Linux sysfs, else sysconf), or None when it cannot be read."""
    best: tuple[int, int] | None = None
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level = int((index / "level").read_text())
            text = (index / "size").read_text().strip().upper()
            size = int(text[:-1]) * _UNITS[text[-1].lower()] if text[-1] in "KMG" else int(text)
        except (OSError, ValueError, KeyError, IndexError):
            continue
        if (index / "type").exists() and (index / "type").read_text().strip() == "Instruction":
            continue
        best = max(best or (level, size), (level, size))
    if best is not None:
        return best[1]
    try:
        size = int(os.sysconf("SC_LEVEL3_CACHE_SIZE")) or int(os.sysconf("SC_LEVEL2_CACHE_SIZE"))
        return size if size > 0 else None
    except (ValueError, OSError, AttributeError):
        return None


def budget_memory(device: torch.device | str = "cpu") -> int:
    """Bytes a fractional budget is taken of: free CUDA memory on a CUDA device, else the host's RAM.

    On the CPU this is the total, not what is free now: free memory changes from run to run, and
    with it the batch and the float rounding of every batched result.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        import psutil  # optional: used only when installed
        return int(psutil.virtual_memory().total)
    except ImportError:
        pass
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        raise ConfigError("cannot tell how much memory this machine has; give the model an explicit batch_size "
                          "or a memory budget in bytes (e.g. 2GB)") from None


def checked_batch_size(value: Any, what: str = "batch_size") -> int | None:
    """``value`` as a positive int, or None when not given; ConfigError naming ``what`` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def probe_bytes_per_image(forward: Callable[[torch.Tensor], Any], model: nn.Module,
                          probe: torch.Tensor) -> tuple[int, int]:
    """(bytes one image of ``probe`` costs in ``forward(probe)``, bytes of its largest single activation).

    ``probe`` is a batch on the model's device. On CUDA the second figure is the first (unused there).
    """
    n = int(probe.shape[0])
    device = probe.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        forward(probe)
        torch.cuda.synchronize(device)
        used = max(-(-int(torch.cuda.max_memory_allocated(device) - before) // n), 1)
        return used, used
    # Storage address -> storage: a module returning its input (or a view of it) counts once. The
    # storages are held until the end, so a freed one's address cannot be reused and miscounted.
    seen: dict[int, torch.UntypedStorage] = {}

    def record(_module: nn.Module, _inputs: Any, output: Any) -> None:
        for t in _tensors(output):
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage

    handles = [m.register_forward_hook(record) for m in model.modules()]
    try:
        forward(probe)
    finally:
        for h in handles:
            h.remove()
    sizes = [st.nbytes() for st in seen.values()] + [probe.numel() * probe.element_size()]
    return max(-(-sum(sizes) // n), 1), max(-(-max(sizes) // n), 1)


class BatchSizer:
    """Images per batch for each input shape, from one probe forward and a MemoryBudget (cached per shape)."""

    def __init__(self, budget: MemoryBudget | str | float | int | None = None):
        self.budget = MemoryBudget.parse(budget)
        self._per_image: dict[tuple[int, ...], int] = {}
        self._sizes: dict[tuple[int, ...], int] = {}

    def bytes_per_image(self, shape: tuple[int, ...]) -> int | None:
        """The measured bytes of one image of ``shape`` (C, H, W), or None before it is measured."""
        return self._per_image.get(tuple(shape))

    def batch_size(self, shape: tuple[int, ...], probe: Callable[[torch.Tensor], Any], model: nn.Module,
                   fill: torch.Tensor, device: torch.device) -> int:
        """Images of ``shape`` (C, H, W) per batch; ``probe(x)`` runs the forward that will be batched."""
        key = tuple(int(s) for s in shape)
        if key not in self._sizes:
            blank = fill.view(1, -1, 1, 1).expand(PROBE_BATCH, key[0], *key[1:]).contiguous().to(device)
            per, largest = probe_bytes_per_image(probe, model, blank)
            self._per_image[key] = per
            total = self.budget.total(device)
            if self.budget.bytes is not None and total < per:
                raise ConfigError(f"memory budget of {total} bytes is less than one {'x'.join(map(str, key))} "
                                  f"image needs ({per} bytes); raise it or give an explicit batch size")
            cap = self.budget.max_batch or (MAX_BATCH_CPU if device.type == "cpu" else MAX_BATCH)
            size = min(max(total // per, 1), cap)
            if self.budget.fit_cache and device.type == "cpu":
                # On a CPU a batch whose layers overflow the cache waits on memory: measured 3.6x slower
                # for EfficientNet-Lite0 at batch 59 than at 8 (bench/bench_concepts.py --batch-sweep).
                cache = self.budget.cache_bytes or cache_size()
                if cache:
                    size = min(size, max(cache // largest, 1))
            self._sizes[key] = int(size)
        return self._sizes[key]
