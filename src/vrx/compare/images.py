"""Which images ``vrx compare`` uses, and the ground truth that toyworld images carry.

A folder is either flat (photos directly inside) or a class-folder layout (``DIR/<class>/*.png``,
the ``random`` folder left out). With ``n``, a seeded sample is taken: in a class layout each
class's images are shuffled with the seed and then interleaved (one of each class, then the next),
so any prefix of the list is balanced over classes. Toyworld images have a part map beside them
(``<id>.parts.png``): pointing-game masks come from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.images import COMPANION_SUFFIXES, IMAGE_EXTENSIONS, RANDOM_DIR, part_map_path, read_part_map
from ..errors import ConfigError, EmptyFolderError

__all__ = ["CompareImages", "select_images"]


@dataclass(frozen=True)
class CompareImages:
    """The compared images: paths, their class folder (None in a flat folder), part-map paths."""

    root: Path
    paths: tuple[Path, ...]
    labels: tuple[str | None, ...]
    part_maps: tuple[Path | None, ...]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def has_parts(self) -> bool:
        """Whether every image has a toyworld part map (then pointing games are computed)."""
        return bool(self.paths) and all(p is not None for p in self.part_maps)

    def part_map(self, index: int) -> np.ndarray:
        """The H×W part-type map of image ``index`` (0 = background)."""
        path = self.part_maps[index]
        if path is None:
            raise EmptyFolderError(f"{self.paths[index]}: no part map beside it")
        return read_part_map(path)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.name.lower().endswith(COMPANION_SUFFIXES))


def select_images(folder: str | os.PathLike, n: int | None = None, seed: int = 0) -> CompareImages:
    """Up to ``n`` images of ``folder`` (all by default), chosen as the module docstring says."""
    root = Path(folder)
    if n is not None and (isinstance(n, bool) or int(n) < 1):
        raise ConfigError(f"the number of images must be a positive integer, got {n!r}")
    if not root.is_dir():
        raise EmptyFolderError(f"{root}: image folder does not exist" if not root.exists()
                               else f"{root}: not a folder")
    rng = np.random.default_rng(int(seed))
    flat = _files(root)
    if flat:
        keep = flat if n is None or n >= len(flat) else [flat[i] for i in sorted(rng.choice(len(flat), n, replace=False))]
        labels: list[str | None] = [None] * len(keep)
    else:
        groups = {d.name: _files(d) for d in sorted(root.iterdir())
                  if d.is_dir() and not d.name.startswith(".") and d.name != RANDOM_DIR}
        groups = {c: [files[i] for i in rng.permutation(len(files))] for c, files in groups.items() if files}
        keep, labels = [], []
        for row in range(max((len(v) for v in groups.values()), default=0)):
            for c, files in groups.items():
                if row < len(files):
                    keep.append(files[row])
                    labels.append(c)
        if n is not None:
            keep, labels = keep[:n], labels[:n]
    if not keep:
        raise EmptyFolderError(f"{root}: no images (expected image files in it, or in class folders "
                               f"{root}/<class>/*.png)")
    return CompareImages(root, tuple(keep), tuple(labels), tuple(part_map_path(p) for p in keep))
