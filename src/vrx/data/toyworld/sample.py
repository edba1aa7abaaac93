"""Drawing random scenes: vehicles of a class, and "random" scenes with no vehicle at all.

Every random choice comes from the ``numpy.random.Generator`` passed in; ``generate_scenes`` gives
scene ``i`` of a class its own stream (seed, class, i), so a scene does not depend on how many
others were asked for or which other classes were switched on.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import ConfigError, UnknownClassError
from .classes import (
    ALL_CLASSES, BODY_PALETTE, CLASS_LAYOUTS, LOOSE_SIZES, LOOSE_TYPES, PART_COLOURS, PART_SHAPES,
    SHADE, STRIPE_PALETTE, WINDOW_COLOURS,
)
from .render import _matrix
from .scene import POSES, Background, Part, Scene, Vehicle
from .shapes import CLUTTER_SHAPES

RANDOM_CLASS = "random"
BACKGROUND_KINDS: tuple[str, ...] = ("gradient", "stripes", "checker", "blotches")
# Stream ids for generate_scenes; random scenes sit after every class.
_RANDOM_STREAM = 1000


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: int = 12) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def _far_colour(rng: np.random.Generator, palette: list, avoid: tuple, min_dist: float) -> tuple:
    """A palette colour at least ``min_dist`` (RGB distance) from ``avoid``, so parts stand out."""
    ok = [c for c in palette if math.dist(c, avoid) >= min_dist] or palette
    return ok[int(rng.integers(len(ok)))]


def _extent(parts: list[Part]) -> tuple[float, float, float, float]:
    """Bounding box (x0, y0, x1, y1) of parts' boxes."""
    x0 = y0 = math.inf
    x1 = y1 = -math.inf
    for p in parts:
        c = _matrix(p) @ np.array([[-0.5, 0.5, 0.5, -0.5], [-0.5, -0.5, 0.5, 0.5]])
        x0, x1 = min(x0, p.center[0] + c[0].min()), max(x1, p.center[0] + c[0].max())
        y0, y1 = min(y0, p.center[1] + c[1].min()), max(y1, p.center[1] + c[1].max())
    return x0, y0, x1, y1


def _part_colours(rng: np.random.Generator, type_: str, body: tuple,
                  window: tuple | None = None) -> tuple[tuple, tuple | None]:
    """(colour, accent) of a part on a body of colour ``body``."""
    if type_ in PART_COLOURS:
        main, accent = PART_COLOURS[type_]
        return _jitter(rng, main, 6), accent
    if type_ == "window":
        return window if window is not None else _jitter(rng, WINDOW_COLOURS[int(rng.integers(2))], 10), None
    if type_ == "stripe":
        return _jitter(rng, _far_colour(rng, STRIPE_PALETTE, body, 130), 8), None
    if type_ == "cab":
        return _jitter(rng, _far_colour(rng, BODY_PALETTE, body, 110)), None
    if type_ == "door":
        return tuple(int(c * 0.62) for c in body), tuple(int(c * 0.38) for c in body)
    if type_ == "body":
        return body, None
    raise ConfigError(f"no colour rule for part type {type_!r}")


def sample_background(rng: np.random.Generator, size: int = 128, n_clutter: int | None = None) -> Background:
    """A textured background with clutter shapes (all labelled background in part maps)."""
    k = size / 128.0
    kind = BACKGROUND_KINDS[int(rng.integers(len(BACKGROUND_KINDS)))]
    period = {"gradient": 1.0, "stripes": rng.uniform(10, 28), "checker": rng.uniform(16, 40),
              "blotches": rng.uniform(30, 80)}[kind] * k
    horizon = ground = None
    if rng.random() < 0.6:
        horizon = float(rng.uniform(0.45, 0.8))
        ground = tuple(int(c) for c in rng.integers(50, 170, 3))
    n = int(rng.integers(3, 8)) if n_clutter is None else n_clutter
    clutter = tuple(
        Part("clutter", center=tuple(rng.uniform(0, size, 2)), size=tuple(rng.uniform(5, 20, 2) * k),
             color=tuple(int(c) for c in rng.integers(20, 236, 3)),
             shape=CLUTTER_SHAPES[int(rng.integers(len(CLUTTER_SHAPES)))], angle=rng.uniform(0, 360))
        for _ in range(n))
    return Background(kind=kind, color_a=tuple(int(c) for c in rng.integers(40, 215, 3)),
                      color_b=tuple(int(c) for c in rng.integers(40, 215, 3)),
                      angle=float(rng.uniform(0, 180)), frequency=float(1.0 / period),
                      seed=int(rng.integers(2**31)), horizon=horizon, ground_color=ground, clutter=clutter)


def sample_loose_part(rng: np.random.Generator, size: int = 128, *, scale: float | None = None,
                      avoid: tuple[float, float, float, float] | None = None) -> Part:
    """A part lying loose (``distractor=True``): any type but body, any angle, away from ``avoid``."""
    k = size / 128.0
    s = (scale if scale is not None else rng.uniform(0.88, 1.12)) * k
    L, H = 77.0 * s, 30.5 * s
    type_ = LOOSE_TYPES[int(rng.integers(len(LOOSE_TYPES)))]
    fw, fh, square = LOOSE_SIZES[type_]
    f = rng.uniform(0.85, 1.1)
    w, h = fw * (H if square else L) * f, fh * H * f
    body = BODY_PALETTE[int(rng.integers(len(BODY_PALETTE)))]
    colour, accent = _part_colours(rng, type_, body)
    angle, mirror = float(rng.uniform(0, 360)), bool(rng.random() < 0.5)
    part = None
    for _ in range(30):
        r = 0.5 * math.hypot(w, h)
        c = tuple(rng.uniform(r * 0.6, size - r * 0.6, 2)) if size > 1.2 * r else (size / 2, size / 2)
        part = Part(type_, center=c, size=(w, h), color=colour, color2=accent, shape=PART_SHAPES[type_],
                    angle=angle, mirror=mirror, distractor=True)
        if avoid is None:
            break
        x0, y0, x1, y1 = _extent([part])
        if x1 < avoid[0] - 2 or x0 > avoid[2] + 2 or y1 < avoid[1] - 2 or y0 > avoid[3] + 2:
            break
    assert part is not None
    return part


def _pose(rng: np.random.Generator, pose: str) -> tuple[float, float, float]:
    """(xscale, shear, tilt degrees) of a viewpoint."""
    if pose == "side":
        return 1.0, 0.0, 0.0
    if pose == "three_quarter":
        # Foreshortened along the length, with the far end raised: a cheap perspective.
        return float(rng.uniform(0.72, 0.86)), float(rng.choice([-1, 1]) * rng.uniform(0.1, 0.2)), 0.0
    if pose == "tilted":
        return 1.0, 0.0, float(rng.choice([-1, 1]) * rng.uniform(4, 10))
    raise ConfigError(f"unknown pose {pose!r}; known: {', '.join(POSES)}")


def sample_scene(cls: str, rng: np.random.Generator, size: int = 128, *, pose: str | None = None,
                 flip: bool | None = None, n_distractors: int | None = None) -> Scene:
    """A random scene holding one vehicle of class ``cls``."""
    if cls not in CLASS_LAYOUTS:
        raise UnknownClassError(f"unknown toyworld class {cls!r}; known: {', '.join(ALL_CLASSES)}")
    if size < 32:
        raise ConfigError(f"toyworld images must be at least 32 pixels, got {size}")
    k = size / 128.0
    s = rng.uniform(0.88, 1.12) * k
    L, H = rng.uniform(66, 88) * s, rng.uniform(27, 34) * s
    pose = pose if pose is not None else POSES[int(rng.integers(len(POSES)))]
    xscale, shear, tilt = _pose(rng, pose)
    flip = bool(rng.random() < 0.5) if flip is None else bool(flip)
    sign = -1.0 if flip else 1.0
    t = math.radians(tilt)
    frame = (np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
             @ np.array([[1.0, 0.0], [shear, 1.0]]) @ np.diag([sign * xscale, 1.0]))

    body = _jitter(rng, BODY_PALETTE[int(rng.integers(len(BODY_PALETTE)))])
    window = _jitter(rng, WINDOW_COLOURS[int(rng.integers(2))], 10)
    body_shape = "rounded" if rng.random() < 0.5 else "rect"
    parts: list[Part] = []
    colours: dict[str, tuple] = {}
    for slot in CLASS_LAYOUTS[cls]:
        # Small per-part jitter keeps layouts from being pixel templates, far below the layout gaps.
        f = 1.0 if slot.type == "body" else rng.uniform(0.9, 1.1)
        w = slot.fw * (H if slot.square else L) * f
        h = slot.fh * H * f
        jx, jy = (0.0, 0.0) if slot.type == "body" else rng.uniform(-0.015, 0.015, 2)
        offset = frame @ np.array([(slot.fx + jx) * L, (slot.fy + jy) * H])
        if slot.type not in colours:  # same-type parts of one vehicle share a colour
            colours[slot.type] = _part_colours(rng, slot.type, body, window)
        colour, accent = colours[slot.type]
        parts.append(Part(slot.type, center=tuple(offset), size=(xscale * w, h), color=colour,
                          color2=accent, shape=body_shape if slot.type == "body" else PART_SHAPES[slot.type],
                          angle=tilt, shear=shear, mirror=flip, shade=SHADE.get(slot.type, 0.0)))
    x0, y0, x1, y1 = _extent(parts)
    cx = rng.uniform(1 - x0, size - 1 - x1) if size - 2 > x1 - x0 else size / 2 - (x0 + x1) / 2
    cy = rng.uniform(1 - y0, size - 1 - y1) if size - 2 > y1 - y0 else size / 2 - (y0 + y1) / 2
    parts = [p.moved(cx, cy) for p in parts]
    box = (x0 + cx, y0 + cy, x1 + cx, y1 + cy)

    n = int(rng.choice([0, 1, 2], p=[0.35, 0.4, 0.25])) if n_distractors is None else n_distractors
    loose = [sample_loose_part(rng, size, scale=s / k, avoid=box) for _ in range(n)]
    background = sample_background(rng, size)
    vehicle = Vehicle(center=(float(cx), float(cy)), length=float(L), height=float(H), xscale=xscale,
                      shear=shear, tilt=tilt, color=body)
    return Scene(cls=cls, size=size, pose=pose, flip=flip, background=background,
                 parts=tuple(loose + parts), noise_seed=int(rng.integers(2**31)),
                 noise_sigma=float(rng.uniform(2.0, 7.0)), vehicle=vehicle)


def sample_random_scene(rng: np.random.Generator, size: int = 128, *, n_loose: int | None = None) -> Scene:
    """A scene with no vehicle: background, clutter, and a few loose parts (ACE/TCAV "random" images)."""
    if size < 32:
        raise ConfigError(f"toyworld images must be at least 32 pixels, got {size}")
    background = sample_background(rng, size, n_clutter=int(rng.integers(4, 10)))
    n = int(rng.integers(1, 5)) if n_loose is None else n_loose
    loose = tuple(sample_loose_part(rng, size) for _ in range(n))
    return Scene(cls=RANDOM_CLASS, size=size, pose="none", flip=False, background=background,
                 parts=loose, noise_seed=int(rng.integers(2**31)), noise_sigma=float(rng.uniform(2.0, 7.0)))


def scene_rng(seed: int, cls: str, index: int) -> np.random.Generator:
    """The generator of scene ``index`` of class ``cls`` (or "random") under ``seed``."""
    stream = _RANDOM_STREAM if cls == RANDOM_CLASS else ALL_CLASSES.index(cls)
    return np.random.default_rng(np.random.SeedSequence([int(seed), stream, int(index)]))


def generate_scenes(classes: list[str] | tuple[str, ...], n_per_class: int, seed: int,
                    size: int = 128) -> list[Scene]:
    """``n_per_class`` scenes of each class, class by class, each with its own seeded stream."""
    for c in classes:
        if c not in CLASS_LAYOUTS:
            raise UnknownClassError(f"unknown toyworld class {c!r}; known: {', '.join(ALL_CLASSES)}")
    if n_per_class < 0:
        raise ConfigError(f"n_per_class must be >= 0, got {n_per_class}")
    return [_with_meta(sample_scene(c, scene_rng(seed, c, i), size), seed, i)
            for c in classes for i in range(n_per_class)]


def generate_random_scenes(n: int, seed: int, size: int = 128) -> list[Scene]:
    """``n`` scenes without a vehicle, each with its own seeded stream."""
    return [_with_meta(sample_random_scene(scene_rng(seed, RANDOM_CLASS, i), size), seed, i)
            for i in range(n)]


def _with_meta(scene: Scene, seed: int, index: int) -> Scene:
    scene.meta.update({"seed": int(seed), "index": int(index)})
    return scene
