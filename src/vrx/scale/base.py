"""The executor interface, and the local executor (featurise in this process, as the stage reads)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..concepts.config import SegmentationConfig
from ..concepts.inputs import ImageInput


class Executor:
    """Computes patch-cache entries for a stage; a context manager (``with make_executor(...) as ex``)."""

    name = "local"

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def fill_patch_cache(self, model: dict[str, Any], segmentation: SegmentationConfig, batch_size: int | None,
                         items: Sequence[ImageInput], cache_dir: str | Path, model_id: str) -> dict[str, Any]:
        """Make sure ``cache_dir`` holds the patches of every item; returns what was done.

        ``model`` is the run's model spec as a dict (:class:`vrx.run.ModelSpec`), which each
        worker loads itself; ``model_id`` is the driver's fingerprint of it, which a worker's
        model must match (a node with another file under the same path would otherwise fill the
        cache with another network's features).
        """
        raise NotImplementedError


class LocalExecutor(Executor):
    """Featurises nothing ahead: the stage does it in this process, image by image."""

    def fill_patch_cache(self, model: dict[str, Any], segmentation: SegmentationConfig, batch_size: int | None,
                         items: Sequence[ImageInput], cache_dir: str | Path, model_id: str) -> dict[str, Any]:
        return {"executor": self.name, "images": len(items), "computed": 0, "workers": 0}
