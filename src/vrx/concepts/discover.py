"""Discovery as a run-folder stage: bank, galleries, purity and a summary under ``RUN/concepts/``."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import ImageSet, part_map_path
from ..models.adapter import ClassifierAdapter
from ..store import read_json, write_json
from .bank import ConceptBank
from .config import ConceptConfig
from .extractor import ConceptExtractor
from .gallery import save_gallery

log = logging.getLogger(__name__)


def concepts_dir(run: str | Path) -> Path:
    """Where a run keeps its concept bank."""
    return Path(run) / "concepts"


def discover(adapter: ClassifierAdapter, images: ImageSet, run: str | Path,
             config: ConceptConfig | None = None, *, compare_gradcam: bool = False,
             show_progress: bool | None = None) -> tuple[ConceptBank, dict[str, Any]]:
    """Discover concepts for ``images``' classes and write them into ``RUN/concepts/``.

    When the images come with ground-truth part maps (toyworld), concept purity is written to
    ``purity.json``; with ``compare_gradcam`` it holds purity with and without the Grad-CAM
    filter (the second run reuses the cached patch features, so only clustering and TCAV rerun).
    """
    config = config or ConceptConfig()
    out = concepts_dir(run)
    cache = Path(run) / "cache" / "patches"
    by_class = {c: list(images.paths[c]) for c in images.classes}
    extractor = ConceptExtractor(adapter, config, cache_dir=cache, show_progress=show_progress)
    bank = extractor.fit(by_class, list(images.random_paths))
    bank.save(out)
    for cls in bank.class_names:
        save_gallery(bank, cls, out / cls / "gallery.png")
    summary = {"classes": bank.class_names, "model_id": bank.model_id, "layer": bank.layer,
               "correction": config.tcav.correction, **bank.stats,
               "concepts": {c: [{"rank": k.rank, "tcav": round(k.tcav, 4), "p_value": k.p_value,
                                 "size": k.size} for k in bank[c]] for c in bank.class_names}}
    purity_fn = part_map_reader(images)
    if purity_fn is not None:
        from ..metrics.purity import concept_purity

        part_names = purity_fn.part_names
        purity = {"gradcam" if config.gradcam.enabled else "no_gradcam":
                  concept_purity(bank, purity_fn, part_names)}
        if compare_gradcam:
            other = dataclasses.replace(config, gradcam=dataclasses.replace(
                config.gradcam, enabled=not config.gradcam.enabled))
            other_bank = ConceptExtractor(adapter, other, cache_dir=cache,
                                          show_progress=show_progress).fit(by_class, list(images.random_paths))
            purity["gradcam" if other.gradcam.enabled else "no_gradcam"] = \
                concept_purity(other_bank, purity_fn, part_names)
        write_json(out / "purity.json", purity)
        summary["purity"] = {variant: p["summary"] for variant, p in purity.items()}
    write_json(out / "summary.json", summary)
    return bank, summary


class _PartMaps:
    """Reads ground-truth part maps beside images (``<id>.parts.png``), with the part names."""

    def __init__(self, part_names: list[str]):
        self.part_names = part_names

    def __call__(self, image_id: str) -> np.ndarray | None:
        from PIL import Image

        path = part_map_path(image_id)
        return None if path is None else np.asarray(Image.open(path))


def part_map_reader(images: ImageSet) -> _PartMaps | None:
    """The reader of a toyworld image set's ground-truth part maps, or None for other images."""
    manifest = images.root / "toyworld.json"
    if not manifest.exists():
        return None
    first = next(iter(images.paths.values()))[0]
    if part_map_path(first) is None:
        return None
    return _PartMaps(list(read_json(manifest)["part_types"]))
