"""Shapes as masks in a part's local frame: u, v in [-0.5, 0.5] span the part's box.

Each shape returns ``(inside, accent)``: the pixels the part covers, and the subset drawn in its
accent colour (hub of a wheel, rungs of a ladder, the red of a cross). The part map labels all of
``inside``, so a part's footprint never depends on its colours.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Mask = np.ndarray
ShapeFn = Callable[[np.ndarray, np.ndarray], tuple[Mask, Mask | None]]


def _box(u: np.ndarray, v: np.ndarray, hu: float = 0.5, hv: float = 0.5) -> Mask:
    return (np.abs(u) <= hu) & (np.abs(v) <= hv)


def rect(u: np.ndarray, v: np.ndarray) -> tuple[Mask, Mask | None]:
    """A filled rectangle."""
    return _box(u, v), None


def rounded(u: np.ndarray, v: np.ndarray) -> tuple[Mask, Mask | None]:
    """A rectangle with rounded corners (corner radius 0.15 of each side)."""
    r = 0.15
    du = np.maximum(np.abs(u) - (0.5 - r), 0.0)
    dv = np.maximum(np.abs(v) - (0.5 - r), 0.0)
    return _box(u, v) & (du * du + dv * dv <= r * r), None


def disk(u: np.ndarray, v: np.ndarray) -> tuple[Mask, Mask | None]:
    """A filled ellipse touching the box sides."""
    return u * u + v * v <= 0.25, None


def wheel(u: np.ndarray, v: np.ndarray) -> tuple[Mask, Mask | None]:
    """A tyre with a lighter hub."""
    rr = u * u + v * v
    return rr <= 0.25, rr <= 0.21 ** 2


def ring(u: np.ndarray, v: np.ndarray) -> tuple[Mask, Mask | None]:
    """An annulus (clutter)."""
    rr = u * u + v * v
    return (rr <= 0.25) & (rr >= 0.3 ** 2), None


def triangle(u: np.ndarray, v: np.ndarray) -> tuple[Mask, Mask | None]:
    """An isosceles triangle pointing up (clutter)."""
    return (v <= 0.5) & (np.abs(u) <= (v + 0.5) / 2), None


def ladder(u: np.ndarray, v: np.ndarray) -> tuple[Mask, Mask | None]:
    """A dark strip with light rails and seven rungs."""
    rungs = np.mod((u + 0.5) * 7.0, 1.0) < 0.35
    return _box(u, v), _box(u, v) & ((np.abs(v) >= 0.28) | rungs)


def cross(u: np.ndarray, v: np.ndarray) -> tuple[Mask, Mask | None]:
    """A red cross with a white rim, visible on a body of any colour."""
    outer = _box(u, v, 0.5, 0.22) | _box(u, v, 0.22, 0.5)
    inner = _box(u, v, 0.42, 0.13) | _box(u, v, 0.13, 0.42)
    return outer, inner


def light_bar(u: np.ndarray, v: np.ndarray) -> tuple[Mask, Mask | None]:
    """A roof light bar, one colour per half."""
    inside = _box(u, v)
    return inside, inside & (u > 0)


def door(u: np.ndarray, v: np.ndarray) -> tuple[Mask, Mask | None]:
    """A panel with a darker frame."""
    inside = _box(u, v)
    return inside, inside & ((np.abs(u) >= 0.34) | (np.abs(v) >= 0.42))


def octagon(u: np.ndarray, v: np.ndarray) -> tuple[Mask, Mask | None]:
    """A sign: red octagon with a white rim."""
    def octa(scale: float) -> Mask:
        return _box(u, v, 0.5 * scale, 0.5 * scale) & (np.abs(u) + np.abs(v) <= 0.707 * scale)
    return octa(1.0), octa(0.74)


def cone(u: np.ndarray, v: np.ndarray) -> tuple[Mask, Mask | None]:
    """An ice-cream cone: a scoop (accent) on a triangular wafer."""
    wafer = (v >= -0.12) & (v <= 0.5) & (np.abs(u) <= 0.36 * (0.5 - v) / 0.62)
    scoop = u * u + (v + 0.2) ** 2 <= 0.3 ** 2
    return wafer | scoop, scoop


def boom(u: np.ndarray, v: np.ndarray) -> tuple[Mask, Mask | None]:
    """A tow boom rising to the back, with a cable and hook hanging from its tip (accent)."""
    bar = (np.abs(u - v) <= 0.16) & (u >= -0.45) & (u <= 0.5) & (v >= -0.5)
    cable = (np.abs(u + 0.42) <= 0.05) & (v >= -0.45) & (v <= 0.28)
    hook = ((u + 0.34) ** 2 + (v - 0.34) ** 2 <= 0.12 ** 2)
    return bar | cable | hook, cable | hook


SHAPES: dict[str, ShapeFn] = {
    "rect": rect, "rounded": rounded, "disk": disk, "wheel": wheel, "ring": ring,
    "triangle": triangle, "ladder": ladder, "cross": cross, "light_bar": light_bar,
    "door": door, "octagon": octagon, "cone": cone, "boom": boom,
}
CLUTTER_SHAPES: list[str] = ["rect", "disk", "ring", "triangle", "rounded"]
