"""Reading real image files and class folders into H×W×3 float32 arrays in [0, 1].

Rules (also in docs/models.md):
- every Pillow mode is turned into RGB: grey (L, 1-bit) is repeated over three channels, 16-bit
  (I;16, and I when its values fit 0..65535) is divided by 65535, CMYK/YCbCr/LAB are converted;
- transparency (RGBA, LA, P with a transparent colour) is composited on **white** by default
  (``background=``), the usual backdrop of cut-out photos; the EXIF orientation is applied;
- the pixel count is checked from the header before decoding (``max_pixels``, default 50 MP);
- any file that cannot be decoded (corrupt, truncated, not an image) raises InvalidImageError
  naming the file; nothing is skipped without a warning that says which file and why.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from ..errors import ConfigError, EmptyFolderError, ImageTooLargeError, InvalidImageError, VRXError

DEFAULT_MAX_PIXELS = 50_000_000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# Files written beside images (toyworld: <id>.parts.png part maps, <id>.json scenes) that are not
# images of the class and are ignored without a warning.
PART_MAP_SUFFIX = ".parts.png"
COMPANION_SUFFIXES = (PART_MAP_SUFFIX, ".json")
RANDOM_DIR = "random"

Background = float | Sequence[float]


def load_image(path: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               background: Background = 1.0) -> np.ndarray:
    """Read an image file as an H×W×3 float32 array in [0, 1] (see the module notes for the rules)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidImageError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        with _open(path) as im:
            check_size(path, im.size, max_pixels)  # from the header, before any pixel is decoded
            im.load()
            im = ImageOps.exif_transpose(im)
            return _to_rgb_float(im, path, background)
    except VRXError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{path}: image too large to decode safely ({exc})") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ... on bad data
        raise InvalidImageError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None


def _open(path: Path) -> Image.Image:
    """Image.open without Pillow's size warning: our own max_pixels check decides instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


def check_size(path: str | os.PathLike, size: tuple[int, int], max_pixels: int | None) -> None:
    """Raise ImageTooLargeError when a width×height exceeds ``max_pixels`` (None: no limit)."""
    w, h = size
    if w < 1 or h < 1:
        raise InvalidImageError(f"{path}: image has an empty size {w}×{h}")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageTooLargeError(f"{path}: {w}×{h} = {_megapixels(w * h)} megapixels exceeds the limit "
                                 f"of {_megapixels(max_pixels)} (raise max_pixels to allow it)")


def _megapixels(pixels: int) -> str:
    # One decimal for photos; small limits (--max-megapixels 0.01) keep their significant digits.
    mp = pixels / 1e6
    return f"{mp:.1f}" if mp >= 1 else f"{mp:.2g}"


def _to_rgb_float(im: Image.Image, path: Path, background: Background) -> np.ndarray:
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("LA", "La", "PA"):
        im = im.convert("LA") if mode != "PA" else im.convert("RGBA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im).astype(np.float64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise InvalidImageError(f"{path}: 32-bit integer image with values in [{a.min():g}, "
                                    f"{a.max():g}], outside 0..65535; cannot map it to [0, 1]")
        rgb = np.repeat((a / 65535.0)[..., None], 3, axis=2)
    elif mode == "F":
        a = np.asarray(im).astype(np.float64)
        if a.size and (not np.isfinite(a).all() or a.min() < 0 or a.max() > 1):
            raise InvalidImageError(f"{path}: float image with values outside [0, 1]")
        rgb = np.repeat(a[..., None], 3, axis=2)
    elif mode == "L":
        rgb = np.repeat((np.asarray(im, dtype=np.float64) / 255.0)[..., None], 3, axis=2)
    elif mode in ("LA", "RGBA"):
        a = np.asarray(im, dtype=np.float64) / 255.0
        colour = np.repeat(a[..., :1], 3, axis=2) if mode == "LA" else a[..., :3]
        alpha = a[..., -1:]
        rgb = colour * alpha + _background(background, path) * (1.0 - alpha)
    else:  # RGB, CMYK, YCbCr, LAB, HSV: Pillow converts these to RGB
        rgb = np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0
    return np.ascontiguousarray(np.clip(rgb, 0.0, 1.0), dtype=np.float32)


def _background(background: Background, path: Path) -> np.ndarray:
    bg = np.asarray(background, dtype=np.float64).reshape(-1)
    if bg.size == 1:
        bg = np.repeat(bg, 3)
    if bg.size != 3 or bg.min() < 0 or bg.max() > 1:
        raise InvalidImageError(f"{path}: background must be one or three values in [0, 1], got {background!r}")
    return bg.reshape(1, 1, 3)


def part_map_path(image_path: str | os.PathLike) -> Path | None:
    """The ``<id>.parts.png`` part map written beside a toyworld image, if it exists."""
    p = Path(image_path)
    candidate = p.with_name(f"{p.stem}{PART_MAP_SUFFIX}")
    return candidate if candidate.is_file() and candidate != p else None


def read_part_map(path: str | os.PathLike) -> np.ndarray:
    """The H×W part-type ids stored in a part map file (0 = background, k = the k-th part type)."""
    with Image.open(path) as im:
        return np.asarray(im)


# ---- folders ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSet:
    """Image paths of a class-folder layout; images are decoded only when asked for."""

    root: Path
    classes: tuple[str, ...]
    paths: dict[str, tuple[Path, ...]]
    random_paths: tuple[Path, ...] = ()
    random_dir: Path | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    on_error: Literal["warn", "raise"] = "warn"
    skipped: tuple[tuple[Path, str], ...] = field(default=(), compare=False)

    def __len__(self) -> int:
        return sum(len(p) for p in self.paths.values())

    def class_index(self, name: str) -> int:
        """Position of a class in ``classes``."""
        if name not in self.paths:
            raise EmptyFolderError(f"{self.root}: no class {name!r} in this image set; "
                                   f"classes: {list(self.classes)}")
        return self.classes.index(name)


def load_image_folder(root: str | os.PathLike, classes: Iterable[str] | None = None, *,
                      random_dir: str | os.PathLike | None = None,
                      extensions: Sequence[str] = IMAGE_EXTENSIONS,
                      max_images_per_class: int | None = None, seed: int | None = None,
                      max_pixels: int | None = DEFAULT_MAX_PIXELS,
                      on_error: Literal["warn", "raise"] = "warn") -> ImageSet:
    """Index ``root/<class>/*.png|jpg|...`` plus random images (``root/random`` or ``random_dir``).

    Classes default to every sub-folder except the random one. Files are sorted by name; with
    ``max_images_per_class`` the first ones are kept, or a seeded random sample when ``seed`` is
    given. Every header is read now (cheap) so unreadable and oversized files are found at once;
    each one is warned about by name (or raises, with ``on_error="raise"``).
    """
    if on_error not in ("warn", "raise"):
        raise ConfigError(f"on_error must be 'warn' or 'raise', got {on_error!r}")
    if max_images_per_class is not None and max_images_per_class < 1:
        raise ConfigError(f"max_images_per_class must be positive, got {max_images_per_class}")
    root = Path(root)
    if not root.is_dir():
        raise EmptyFolderError(f"{root}: image folder does not exist" if not root.exists()
                               else f"{root}: not a folder")
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    rand = Path(random_dir) if random_dir is not None else root / RANDOM_DIR
    available = sorted(d.name for d in root.iterdir()
                       if d.is_dir() and not d.name.startswith(".") and d.resolve() != rand.resolve())
    if classes is None:
        wanted = available
        if not wanted:
            raise EmptyFolderError(f"{root}: no class folders (expected {root}/<class_name>/*.png)")
    else:
        wanted = [str(c) for c in classes]
        missing = [c for c in wanted if not (root / c).is_dir()]
        if missing:
            raise EmptyFolderError(f"{root}: no folder for class(es) {missing}; "
                                   f"class folders here: {available}")
        if len(set(wanted)) != len(wanted):
            raise ConfigError(f"{root}: classes listed twice: {wanted}")
    skipped: list[tuple[Path, str]] = []
    paths = {}
    for name in wanted:
        found = _scan(root / name, exts, max_pixels, on_error, skipped)
        if not found:
            raise EmptyFolderError(f"{root / name}: no readable images for class {name!r}")
        paths[name] = _subset(found, max_images_per_class, seed)
    random_paths: tuple[Path, ...] = ()
    if random_dir is not None or rand.is_dir():
        if not rand.is_dir():
            raise EmptyFolderError(f"{rand}: random-image folder does not exist")
        random_paths = tuple(_scan(rand, exts, max_pixels, on_error, skipped))
        if not random_paths:
            raise EmptyFolderError(f"{rand}: no readable random images")
    return ImageSet(root=root, classes=tuple(wanted), paths=paths, random_paths=random_paths,
                    random_dir=rand if random_paths else None, max_pixels=max_pixels,
                    on_error=on_error, skipped=tuple(skipped))


def _is_companion(name: str) -> bool:
    lower = name.lower()
    return any(lower.endswith(s) for s in COMPANION_SUFFIXES)


def _scan(folder: Path, exts: tuple[str, ...], max_pixels: int | None, on_error: str,
          skipped: list[tuple[Path, str]]) -> list[Path]:
    found = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or _is_companion(entry.name):
            continue  # hidden files (.DS_Store) and toyworld's part maps and scene JSON
        if entry.is_dir():
            reason = "a sub-folder (only files directly in the class folder are read)"
        elif entry.suffix.lower() not in exts:
            reason = f"extension {entry.suffix or '(none)'!r} is not an image type {list(exts)}"
        else:
            problem = _header_problem(entry, max_pixels)
            if problem is None:
                found.append(entry)
                continue
            if on_error == "raise":
                raise problem
            reason = str(problem).removeprefix(f"{entry}: ")
        skipped.append((entry, reason))
        warnings.warn(f"skipping {entry}: {reason}", stacklevel=3)
    return found


def _header_problem(path: Path, max_pixels: int | None) -> InvalidImageError | None:
    """The error this file's header shows (unreadable or too large), without decoding pixels."""
    try:
        with _open(path) as im:
            check_size(path, im.size, max_pixels)
    except InvalidImageError as exc:
        return exc
    except Image.DecompressionBombError as exc:
        return ImageTooLargeError(f"{path}: image too large to decode safely ({exc})")
    except Exception as exc:
        return InvalidImageError(f"{path}: not a readable image ({type(exc).__name__}: {exc})")
    return None


def _subset(paths: list[Path], limit: int | None, seed: int | None) -> tuple[Path, ...]:
    if limit is None or len(paths) <= limit:
        return tuple(paths)
    if limit < 1:
        raise ConfigError(f"max_images_per_class must be positive, got {limit}")
    if seed is None:
        return tuple(paths[:limit])
    keep = np.random.default_rng(seed).choice(len(paths), size=limit, replace=False)
    return tuple(paths[i] for i in sorted(keep))


class PartMaps:
    """Reads the ground-truth part maps beside an image set's images (``<id>.parts.png``)."""

    def __init__(self, part_names: list[str]):
        self.part_names = part_names

    def __call__(self, image_id: str | os.PathLike) -> np.ndarray | None:
        """The H×W part-type map of an image (0 = background, k = ``part_names[k-1]``), or None."""
        path = part_map_path(image_id)
        return None if path is None else read_part_map(path)


def part_map_reader(images: ImageSet) -> PartMaps | None:
    """The reader of a toyworld image set's ground-truth part maps, or None for other images."""
    from ..store import read_json

    manifest = images.root / "toyworld.json"
    if not manifest.exists() or not images.paths or part_map_path(next(iter(images.paths.values()))[0]) is None:
        return None
    return PartMaps(list(read_json(manifest)["part_types"]))
