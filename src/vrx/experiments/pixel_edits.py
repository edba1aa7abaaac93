"""Pixel edits of an image, as the paper's consistency experiment makes them (no scene re-render).

Every edit returns the new image and the boolean **region** it may change; pixels outside the region
are left exactly as they were (the tests check it). Images are H×W×3 float arrays in [0, 1], masks
H×W bool.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError


def _check(image: np.ndarray, mask: np.ndarray) -> None:
    if image.ndim != 3 or mask.shape != image.shape[:2]:
        raise ConfigError(f"mask of shape {mask.shape} does not fit an image of shape {image.shape}")


def centroid(mask: np.ndarray) -> tuple[float, float]:
    """(y, x) centre of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise ConfigError("the mask is empty: it has no centre")
    return float(ys.mean()), float(xs.mean())


def shift_mask(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``mask`` moved by whole pixels (what leaves the frame is dropped)."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    ys, xs = np.nonzero(mask)
    ys, xs = ys + dy, xs + dx
    keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    out[ys[keep], xs[keep]] = True
    return out


def fill(image: np.ndarray, mask: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image with ``mask`` set to ``value`` (the fill of concept discovery: 0 after normalisation)."""
    _check(image, mask)
    out = image.copy()
    out[mask] = np.asarray(value, dtype=image.dtype)
    return out, mask.copy()


def paste(image: np.ndarray, source: np.ndarray, source_mask: np.ndarray, center: tuple[float, float], *,
          clear: np.ndarray | None = None, value: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Paste the pixels of ``source`` under ``source_mask`` so that their centre lands on ``center`` (y, x).

    With ``clear`` (a mask of ``image``), that region is first filled with ``value``: the patch
    being replaced disappears even where the pasted one is smaller. Region: ``clear`` ∪ pasted pixels.
    """
    _check(source, source_mask)
    if source.shape != image.shape:
        raise ConfigError(f"source image of shape {source.shape} differs from the image's {image.shape}")
    out, region = image.copy(), np.zeros(image.shape[:2], bool)
    if clear is not None:
        if value is None:
            raise ConfigError("paste(clear=...) needs the fill value")
        out, region = fill(out, clear, value)
    cy, cx = centroid(source_mask)
    dy, dx = int(round(center[0] - cy)), int(round(center[1] - cx))
    target = shift_mask(source_mask, dy, dx)
    back = shift_mask(target, -dy, -dx)          # the source pixels that stay inside the frame
    out[target] = source[back]
    return out, region | target


def transplant(image: np.ndarray, source: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``mask`` of ``image`` replaced by the pixels of ``source`` under the same mask (same place, same shape)."""
    _check(image, mask)
    if source.shape != image.shape:
        raise ConfigError(f"source image of shape {source.shape} differs from the image's {image.shape}")
    out = image.copy()
    out[mask] = source[mask]
    return out, mask.copy()


def place_elsewhere(mask: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, *, tries: int = 200,
                    min_inside: float = 0.8) -> np.ndarray | None:
    """``mask`` moved to a random place where at least ``min_inside`` of it lies on ``allowed`` and none
    of it on the original mask; None when no such place is found in ``tries`` draws."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    h, w = mask.shape
    area = len(ys)
    for _ in range(tries):
        dy = int(rng.integers(-ys.min(), h - ys.max()))
        dx = int(rng.integers(-xs.min(), w - xs.max()))
        moved = shift_mask(mask, dy, dx)
        if (moved & mask).any():
            continue
        if (moved & allowed).sum() >= min_inside * area:
            return moved
    return None


def top_area(heat: np.ndarray, area: int) -> np.ndarray:
    """The ``area`` pixels where ``heat`` is highest (ties broken by position, so it is deterministic)."""
    flat = np.asarray(heat, dtype=np.float64).ravel()
    area = int(min(max(area, 0), flat.size))
    out = np.zeros(flat.size, bool)
    if area:
        out[np.argsort(-flat, kind="stable")[:area]] = True
    return out.reshape(np.shape(heat))
