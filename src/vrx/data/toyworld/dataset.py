"""Writing and reading rendered toyworld folders.

Layout: ``DIR/<class>/<id>.png`` (RGB), ``<id>.parts.png`` (part-type ids, uint8),
``<id>.json`` (the scene); ``DIR/random/`` likewise for scenes without a vehicle; and
``DIR/toyworld.json`` with classes, part types, seed and counts.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...errors import ArtifactError, ConfigError, EmptyFolderError
from ...progress import progress
from ...store import read_json, write_bytes, write_json
from ..images import PART_MAP_SUFFIX, part_map_path, read_part_map
from .classes import DEFAULT_CLASSES, PART_TYPES, STRUCTURE_PAIR
from .render import render
from .sample import RANDOM_CLASS, generate_random_scenes, generate_scenes
from .scene import Scene

log = logging.getLogger(__name__)
MANIFEST = "toyworld.json"
PARTS_SUFFIX = PART_MAP_SUFFIX


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_scene(folder: str | os.PathLike, name: str, scene: Scene) -> None:
    """Render ``scene`` and write ``name``.png, ``name``.parts.png and ``name``.json into ``folder``."""
    folder = Path(folder)
    rgb, parts = render(scene)
    write_bytes(folder / f"{name}.png", _png(rgb))
    write_bytes(folder / f"{name}{PARTS_SUFFIX}", _png(parts))
    write_json(folder / f"{name}.json", scene.to_dict())


def render_dataset(out_dir: str | os.PathLike, n_per_class: int, seed: int,
                   classes: list[str] | tuple[str, ...] = tuple(DEFAULT_CLASSES),
                   n_random: int | None = None, size: int = 128, *, show_progress: bool | None = None,
                   ) -> dict[str, Any]:
    """Render a toyworld dataset folder and return its manifest (also written as toyworld.json).

    ``n_random`` defaults to ``n_per_class``: ACE/TCAV need as many random images as class images.
    """
    classes = list(classes)
    if len(set(classes)) != len(classes) or RANDOM_CLASS in classes:
        raise ConfigError(f"classes must be distinct and not {RANDOM_CLASS!r}: {classes}")
    n_random = n_per_class if n_random is None else int(n_random)
    if n_random < 0:
        raise ConfigError(f"n_random must be >= 0, got {n_random}")
    out = Path(out_dir)
    jobs = [(s.cls, s) for s in generate_scenes(classes, n_per_class, seed, size)]
    jobs += [(RANDOM_CLASS, s) for s in generate_random_scenes(n_random, seed, size)]
    for cls, scene in progress(jobs, desc="toyworld", total=len(jobs), enabled=show_progress):
        write_scene(out / cls, f"{scene.meta['index']:06d}", scene)
    manifest = {"dataset": "toyworld", "version": 1, "classes": classes, "part_types": list(PART_TYPES),
                "seed": int(seed), "size": int(size), "n_per_class": int(n_per_class),
                "n_random": n_random, "counts": {c: n_per_class for c in classes} | {RANDOM_CLASS: n_random},
                "structure_pair": list(STRUCTURE_PAIR)}
    write_json(out / MANIFEST, manifest)
    log.info("toyworld: wrote %d images to %s", len(jobs), out)
    return manifest


def list_images(data_dir: str | os.PathLike, *, include_random: bool = False) -> tuple[list[str], list[tuple[Path, int]]]:
    """(class names, [(image path, class index)]) of a rendered folder; classes from toyworld.json."""
    root = Path(data_dir)
    if not root.is_dir():
        raise EmptyFolderError(f"{root}: no such folder")
    if (root / MANIFEST).exists():
        classes = list(read_json(root / MANIFEST)["classes"])
    else:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != RANDOM_CLASS
                         and not p.name.startswith("."))
    if include_random:
        classes.append(RANDOM_CLASS)
    items: list[tuple[Path, int]] = []
    for k, cls in enumerate(classes):
        files = sorted(p for p in (root / cls).glob("*.png") if not p.name.endswith(PARTS_SUFFIX)) \
            if (root / cls).is_dir() else []
        if not files:
            raise EmptyFolderError(f"{root / cls}: no images for class {cls!r}")
        items += [(p, k) for p in files]
    return classes, items


def load_scene(path: str | os.PathLike) -> Scene:
    """Read a scene JSON file, naming the file when it is missing or malformed."""
    data = read_json(path)
    try:
        return Scene.from_dict(data)
    except ArtifactError as exc:
        raise ArtifactError(f"{path}: {exc}") from None


def load_part_map(image_path: str | os.PathLike) -> np.ndarray:
    """The part-type map stored beside an image (``x.png`` → ``x.parts.png``); ArtifactError if none.

    A path that is not a ``.png`` is read as the part map itself.
    """
    p = Path(image_path)
    if p.suffix == ".png":
        parts, expected = part_map_path(p), p.with_name(p.stem + PARTS_SUFFIX)
    else:
        parts, expected = (p if p.exists() else None), p
    if parts is None:
        raise ArtifactError(f"{expected}: missing part map for {p}")
    return read_part_map(parts)
