"""A worker's whole job: segment and featurise images, and hand back their packed patches."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..concepts.config import SegmentationConfig
from ..concepts.inputs import ImageInput, iter_images
from ..errors import ArtifactError


@lru_cache(maxsize=2)
def _featurizer(model_json: str, segmentation_json: str, batch_size: int | None):  # noqa: ANN202
    """A worker's featurizer, made once per worker process and model (loading a network is slow)."""
    from ..concepts.features import PatchFeaturizer
    from ..run import ModelSpec

    adapter = ModelSpec.from_dict(json.loads(model_json)).load()
    return PatchFeaturizer(adapter, SegmentationConfig.from_dict(json.loads(segmentation_json)),
                           batch_size=batch_size)


def featurise_items(model: dict[str, Any], segmentation: dict[str, Any], batch_size: int | None, model_id: str,
                    items: Sequence[ImageInput], cache_dir: str | None = None
                    ) -> list[tuple[str, dict[str, np.ndarray] | None]]:
    """A worker's job: (cache key, packed patches) per item, in order.

    Items whose entry the worker can already see in ``cache_dir`` (a shared file system, or the
    driver's own machine) come back as (key, None) and are not recomputed.
    """
    from ..concepts.features import to_arrays

    featurizer = _featurizer(json.dumps(model, sort_keys=True), json.dumps(segmentation, sort_keys=True),
                             None if batch_size is None else int(batch_size))
    if featurizer.adapter.model_id != model_id:
        raise ArtifactError(f"a worker loaded model {featurizer.adapter.model_id} for spec {model.get('model')!r}, "
                            f"the driver has {model_id}: the workers must see the same model files")
    featurizer.cache_dir = Path(cache_dir) if cache_dir else None
    out = []
    for _, image in iter_images(items, featurizer.adapter.input_size, show_progress=False):
        key = featurizer.key(image)
        out.append((key, None if featurizer.cached(key) else to_arrays(featurizer.compute(image))))
    return out
