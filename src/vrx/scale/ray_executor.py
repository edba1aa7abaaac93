"""Segmentation and featurisation sharded over Ray workers (``pip install vrx[ray]``).

Each worker is a Ray actor holding one copy of the network (loaded from the run's model spec,
once); images go to whichever worker is free, a few at a time, and every result is written into
the driver's patch cache as it arrives, so an interrupted run keeps what was done. Clustering,
TCAV and the Grad-CAM filter stay on the driver. See docs/scale.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.util import ActorPool

from ..concepts.config import SegmentationConfig
from ..concepts.features import from_arrays, write_entry
from ..concepts.inputs import ImageInput
from ..errors import ConfigError
from .base import Executor
from .worker import featurise_items

log = logging.getLogger(__name__)

#: Images per task: enough to hide a task's round trip (milliseconds) behind its featurisation
#: (a tenth of a second to seconds per image), few enough to balance the load at the end.
CHUNK = 4


class _Worker:
    """One Ray actor: calls :func:`featurise_items`, whose featurizer it keeps between calls."""

    def run(self, *args: Any) -> list[tuple[str, Any]]:
        return featurise_items(*args)


class RayExecutor(Executor):
    """Shards images over ``workers`` Ray actors of one CPU each (default: every CPU of the cluster).

    ``address`` joins a running cluster (``ray start --head`` prints it; "auto" finds a local
    one); without it a local Ray is started with ``workers`` CPUs and shut down on exit.
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None):
        self.address = address
        self.workers = workers
        self._started = False

    def __enter__(self) -> RayExecutor:
        if not ray.is_initialized():
            if self.address is None:
                ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False)
            else:
                try:
                    ray.init(address=self.address, log_to_driver=False)
                except (ConnectionError, RuntimeError, ValueError) as exc:
                    raise ConfigError(f"cannot join the Ray cluster at {self.address!r}: {exc}") from None
            self._started = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            ray.shutdown()
            self._started = False

    def fill_patch_cache(self, model: dict[str, Any], segmentation: SegmentationConfig, batch_size: int | None,
                         items: Sequence[ImageInput], cache_dir: str | Path, model_id: str) -> dict[str, Any]:
        if not ray.is_initialized():
            raise RuntimeError("use the RayExecutor as a context manager: `with RayExecutor() as ex:`")
        n = self.workers or max(int(ray.cluster_resources().get("CPU", 1)), 1)
        # Paths travel as strings (workers load the files); arrays as they are.
        payload = [str(i) if isinstance(i, Path) else i for i in items]
        chunks = [payload[k:k + CHUNK] for k in range(0, len(payload), CHUNK)]
        n = min(n, max(len(chunks), 1))
        remote = ray.remote(num_cpus=1)(_Worker)
        actors = [remote.remote() for _ in range(n)]
        seg, computed, t0 = segmentation.to_dict(), 0, time.perf_counter()
        try:
            # Every worker loads the network first (seconds: a fresh process imports torch), timed apart.
            ray.get([a.run.remote(model, seg, batch_size, model_id, [], None) for a in actors])
            startup, t0 = time.perf_counter() - t0, time.perf_counter()
            pool = ActorPool(actors)
            results = pool.map_unordered(
                lambda actor, chunk: actor.run.remote(model, seg, batch_size, model_id, chunk, str(cache_dir)),
                chunks)
            for chunk_result in results:
                for key, arrays in chunk_result:
                    if arrays is not None:
                        # Ray hands back read-only views of its object store: copy before torch sees them.
                        arrays = {k: np.array(v) for k, v in arrays.items()}
                        write_entry(cache_dir, key, from_arrays(arrays, f"ray worker result {key}"))
                        computed += 1
        finally:
            for actor in actors:
                ray.kill(actor)
        seconds = time.perf_counter() - t0
        log.info("ray: %d images over %d workers, %d computed, %.1f s (+ %.1f s loading the model)",
                 len(items), n, computed, seconds, startup)
        return {"executor": self.name, "images": len(items), "computed": computed, "workers": n,
                "seconds": round(seconds, 3), "startup_seconds": round(startup, 3)}
