"""Rendering a scene: a pure function of it, returning the image and its exact part map.

Each thing is rasterised on the pixel-centre grid of its own bounding box, in drawing order, into
the image, the part-type map and the instance map at once, so the maps hold precisely what was
drawn on top at each pixel. Background texture and pixel noise depend only on their seeds and
positions, never on the parts, so an edit changes pixels only where the edited part was or is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...errors import ConfigError
from .classes import PART_IDS
from .scene import Background, Part, Scene
from .shapes import SHAPES


@dataclass(frozen=True)
class Rendering:
    """An image with its maps: part-type ids (0 = background) and part indices (-1 = background)."""

    rgb: np.ndarray
    parts: np.ndarray
    instances: np.ndarray


def _matrix(part: Part) -> np.ndarray:
    """The linear map from the unit box to image pixels (before translation)."""
    w, h = part.size
    t = math.radians(part.angle)
    c, s = math.cos(t), math.sin(t)
    rot = np.array([[c, -s], [s, c]])
    shear = np.array([[1.0, 0.0], [part.shear, 1.0]])
    return rot @ shear @ np.diag([-w if part.mirror else w, h])


def rasterize(part: Part, size: int) -> tuple[int, int, np.ndarray, np.ndarray | None, np.ndarray] | None:
    """(y0, x0, inside, accent, v) of a part over its clipped bounding box, or None if off-image."""
    m = _matrix(part)
    corners = m @ np.array([[-0.5, 0.5, 0.5, -0.5], [-0.5, -0.5, 0.5, 0.5]])
    ex, ey = np.abs(corners).max(axis=1)
    cx, cy = part.center
    x0, x1 = max(0, math.floor(cx - ex) - 1), min(size, math.ceil(cx + ex) + 1)
    y0, y1 = max(0, math.floor(cy - ey) - 1), min(size, math.ceil(cy + ey) + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    try:
        inv = np.linalg.inv(m)
    except np.linalg.LinAlgError:
        raise ConfigError(f"{part.type} part has a degenerate shape (size {part.size}, shear {part.shear})") from None
    dx = (np.arange(x0, x1, dtype=np.float64) + 0.5 - cx)[None, :]
    dy = (np.arange(y0, y1, dtype=np.float64) + 0.5 - cy)[:, None]
    u = inv[0, 0] * dx + inv[0, 1] * dy
    v = inv[1, 0] * dx + inv[1, 1] * dy
    inside, accent = SHAPES[part.shape](u, v)
    return y0, x0, inside, accent, v


def part_mask(part: Part, size: int) -> np.ndarray:
    """The full footprint of one part (ignoring occlusion) as a boolean size x size mask."""
    mask = np.zeros((size, size), dtype=bool)
    r = rasterize(part, size)
    if r is not None:
        y0, x0, inside, _, _ = r
        mask[y0:y0 + inside.shape[0], x0:x0 + inside.shape[1]] = inside
    return mask


def _paint(img: np.ndarray, part: Part, size: int, labels: np.ndarray | None = None,
           instances: np.ndarray | None = None, label: int = 0, index: int = -1) -> None:
    r = rasterize(part, size)
    if r is None:
        return
    y0, x0, inside, accent, v = r
    sl = (slice(y0, y0 + inside.shape[0]), slice(x0, x0 + inside.shape[1]))
    region = img[sl]
    colour = np.asarray(part.color, dtype=np.float32)
    if part.shade:
        # Lit from above in the part's own frame, so shading moves with the part.
        light = (1.0 - part.shade * v).astype(np.float32)[..., None]
        region[inside] = (colour * light)[inside]
        if accent is not None and part.color2 is not None:
            region[accent] = (np.asarray(part.color2, dtype=np.float32) * light)[accent]
    else:
        region[inside] = colour
        if accent is not None and part.color2 is not None:
            region[accent] = np.asarray(part.color2, dtype=np.float32)
    if labels is not None:
        labels[sl][inside] = label
    if instances is not None:
        instances[sl][inside] = index


def background_image(bg: Background, size: int) -> np.ndarray:
    """The background texture (without clutter) as a float32 size x size x 3 array in 0..255."""
    rng = np.random.default_rng(bg.seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    a = math.radians(bg.angle)
    t = x * math.cos(a) + y * math.sin(a)
    f = bg.frequency
    if bg.kind == "gradient":
        w = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    elif bg.kind == "stripes":
        w = 0.5 + 0.5 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    elif bg.kind == "checker":
        t2 = -x * math.sin(a) + y * math.cos(a)
        w = 0.5 + 0.5 * np.tanh(3.0 * np.sin(2 * np.pi * f * t) * np.sin(2 * np.pi * f * t2))
    elif bg.kind == "blotches":
        w = np.zeros_like(x)
        for _ in range(4):
            d = rng.uniform(0, 2 * np.pi)
            fk = f * rng.uniform(0.5, 1.5)
            w += np.sin(2 * np.pi * fk * (x * math.cos(d) + y * math.sin(d)) + rng.uniform(0, 2 * np.pi))
        w = (w - w.min()) / max(float(w.max() - w.min()), 1e-6)
    else:
        raise ConfigError(f"unknown background kind {bg.kind!r}")
    ca = np.asarray(bg.color_a, dtype=np.float32)
    cb = np.asarray(bg.color_b, dtype=np.float32)
    img = ca * (1.0 - w[..., None]) + cb * w[..., None]
    if bg.horizon is not None and bg.ground_color is not None:
        ground = y >= bg.horizon * size
        # The ground darkens towards the viewer a little, which keeps it from being one flat colour.
        depth = np.clip((y - bg.horizon * size) / size, 0, 1)[..., None]
        g = np.asarray(bg.ground_color, dtype=np.float32) * (1.0 - 0.3 * depth)
        img = np.where(ground[..., None], 0.25 * img + 0.75 * g, img)
    return img.astype(np.float32)


def render_layers(scene: Scene, *, noise: bool = True) -> Rendering:
    """Render a scene to RGB, its part-type map and its instance map."""
    size = int(scene.size)
    img = background_image(scene.background, size)
    for item in scene.background.clutter:
        _paint(img, item, size)
    labels = np.zeros((size, size), dtype=np.uint8)
    instances = np.full((size, size), -1, dtype=np.int16)
    for i, part in enumerate(scene.parts):
        _paint(img, part, size, labels, instances, PART_IDS.get(part.type, 0), i)
    if noise and scene.noise_sigma > 0:
        rng = np.random.default_rng(scene.noise_seed)
        img += rng.standard_normal((size, size, 3), dtype=np.float32) * np.float32(scene.noise_sigma)
    rgb = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return Rendering(rgb=rgb, parts=labels, instances=instances)


def render(scene: Scene, *, noise: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Render a scene: (rgb HxWx3 uint8, part-type map HxW uint8 with 0 = background)."""
    r = render_layers(scene, noise=noise)
    return r.rgb, r.parts


def visible_mask(scene: Scene, index: int) -> np.ndarray:
    """Where part ``index`` of the scene is visible (not covered by later parts)."""
    return render_layers(scene, noise=False).instances == index
