"""Executors: who segments and featurises images before a stage reads them from the patch cache.

Discovery and graph building read every image's patches through a
:class:`~vrx.concepts.features.PatchFeaturizer` with the run's patch cache. An executor's
:meth:`Executor.fill_patch_cache` computes the missing entries first; the stage then runs as it
always does and finds every image cached, so the bank and the graphs are those of a local run.

- :class:`LocalExecutor` fills nothing: the stage featurises each image in this process, when it
  first needs it (today's behaviour).
- ``vrx.scale.ray_executor.RayExecutor`` (``pip install vrx[ray]``) shards the images over Ray
  workers. Only that module imports ray; :func:`make_executor` imports it when asked for.

What a worker gets is an image *path* (it loads the image itself, so the workers must see the
files where the driver does) or, for in-memory images, the array; what it sends back is the
patches with their masks bit-packed (:func:`vrx.concepts.features.to_arrays`), which the driver
writes into the cache. :func:`vrx.scale.worker.featurise_items` is the whole of a worker's job.
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import Executor, LocalExecutor

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "make_executor"]

EXECUTORS = ("local", "ray")


def make_executor(name: str, address: str | None = None, workers: int | None = None) -> Executor:
    """The executor called ``name`` ("local" or "ray"); ``address``/``workers`` are Ray's (ConfigError otherwise)."""
    if name not in EXECUTORS:
        raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if name == "local":
        if address is not None:
            raise ConfigError("--address is for --executor ray (an existing Ray cluster)")
        return LocalExecutor()
    try:
        from .ray_executor import RayExecutor  # ray is imported only here: an optional extra
    except ImportError as exc:
        raise ConfigError(f"--executor ray needs Ray ({exc}): pip install 'vrx[ray]'") from None
    return RayExecutor(address=address, workers=workers)
