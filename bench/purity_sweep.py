"""Concept purity of toyworld discovery under changed settings, on a demo run's patch cache.

Each argument is a JSON object of overrides of ``ConceptConfig.toyworld()``: ``"group.key"`` for a
field of a group (``"cluster.n_members": 50``) or a top-level key (``"seed": 1``); ``{}`` is the
preset itself. Discovery reruns on the run's first 50 images per class, reading patches from
``RUN/run/cache/patches`` (so only changed segmentation settings featurise anew), and one line per
setting gives each class's pure concepts (purity >= 0.7 on a non-background part) and part types.
docs/concepts.md quotes these lines.

    python bench/purity_sweep.py runs/demo '{}' '{"seed": 1}' '{"gradcam.enabled": false}'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from vrx.concepts.config import ConceptConfig
from vrx.concepts.extractor import ConceptExtractor
from vrx.data.images import load_image_folder, part_map_reader
from vrx.data.toyworld import DEFAULT_CLASSES
from vrx.metrics.purity import concept_purity
from vrx.models import load
from vrx.runtime import threads


def with_overrides(config: ConceptConfig, overrides: dict) -> ConceptConfig:
    """``config`` with ``{"group.key": value}`` or ``{"key": value}`` replaced."""
    for key, value in overrides.items():
        if "." not in key:
            config = dataclasses.replace(config, **{key: value})
            continue
        group, field = key.split(".", 1)
        config = dataclasses.replace(config, **{group: dataclasses.replace(getattr(config, group), **{field: value})})
    config.validate()
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", type=Path, help="a `vrx demo` output folder (model/, data/images/, run/)")
    parser.add_argument("settings", nargs="+", help="JSON objects of overrides")
    parser.add_argument("--classes", default=",".join(DEFAULT_CLASSES))
    args = parser.parse_args()
    adapter = load(f"toy:{args.demo / 'model'}")
    images = load_image_folder(args.demo / "data" / "images", tuple(args.classes.split(",")), max_images_per_class=50)
    parts = part_map_reader(images)
    if parts is None:
        parser.error(f"{args.demo / 'data' / 'images'} has no toyworld part maps")
    for spec in args.settings:
        config = with_overrides(ConceptConfig.toyworld(), json.loads(spec))
        t0 = time.perf_counter()
        extractor = ConceptExtractor(adapter, config, cache_dir=args.demo / "run" / "cache" / "patches",
                                     show_progress=False)
        with threads(torch_threads=1, blas_threads=1):  # discovery's speed (vrx.concepts.patches)
            bank = extractor.fit({c: list(images.paths[c]) for c in images.classes},
                                 list(images.random_paths)).bank_
        purity = concept_purity(bank, parts)
        cells = []
        for cls in bank.class_names:
            rows = " ".join(f"{r['part']} {r['purity']:.2f}" for r in purity["classes"][cls])
            s = purity["summary"][cls]
            cells.append(f"{cls}: {s['n_pure']} pure {s['part_types']} ({rows})")
        print(f"{spec} [{time.perf_counter() - t0:.0f} s] " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
