"""The scene: a plain, JSON-serialisable description from which an image is rendered.

A scene holds everything rendering needs (geometry, colours, background parameters and the seeds of
texture and noise), so rendering is a pure function of it. Edits return new scenes.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ...errors import ArtifactError, ConfigError
from .classes import PART_TYPES
from .shapes import SHAPES

SCENE_VERSION = 1
POSES: tuple[str, ...] = ("side", "three_quarter", "tilted")
# Centres are kept on a 1/64-pixel grid: sums and differences of such numbers are exact in
# floating point, so moving a part by whole pixels moves its footprint by exactly that much.
_GRID = 64.0

RGB = tuple[int, int, int]


def _snap(x: float) -> float:
    return round(float(x) * _GRID) / _GRID


def _rgb(c: Any) -> RGB:
    r, g, b = (int(round(float(x))) for x in c)
    return (min(max(r, 0), 255), min(max(g, 0), 255), min(max(b, 0), 255))


@dataclass(frozen=True)
class Part:
    """One drawn thing: a vehicle part, a loose (distractor) part, or background clutter.

    Geometry maps the unit box u, v in [-0.5, 0.5] to the image: the box is scaled to ``size``
    (w, h) pixels, mirrored in u when ``mirror``, sheared (v += shear * u), rotated by ``angle``
    degrees (clockwise on screen, image y points down) and placed at ``center`` (x, y) pixels.
    """

    type: str
    center: tuple[float, float]
    size: tuple[float, float]
    color: RGB
    shape: str = "rect"
    color2: RGB | None = None
    angle: float = 0.0
    shear: float = 0.0
    mirror: bool = False
    shade: float = 0.0
    distractor: bool = False

    def __post_init__(self) -> None:
        if self.type not in PART_TYPES and self.type != "clutter":
            raise ConfigError(f"unknown part type {self.type!r}; known: {', '.join(PART_TYPES)}, clutter")
        if self.shape not in SHAPES:
            raise ConfigError(f"unknown shape {self.shape!r} for a {self.type} part; known: {', '.join(SHAPES)}")
        w, h = (float(s) for s in self.size)
        if not (w > 0 and h > 0 and math.isfinite(w) and math.isfinite(h)):
            raise ConfigError(f"{self.type} part: size must be two positive numbers, got {self.size}")
        object.__setattr__(self, "center", (_snap(self.center[0]), _snap(self.center[1])))
        object.__setattr__(self, "size", (w, h))
        object.__setattr__(self, "color", _rgb(self.color))
        if self.color2 is not None:
            object.__setattr__(self, "color2", _rgb(self.color2))
        object.__setattr__(self, "angle", float(self.angle))
        object.__setattr__(self, "shear", float(self.shear))
        object.__setattr__(self, "shade", float(self.shade))
        object.__setattr__(self, "mirror", bool(self.mirror))
        object.__setattr__(self, "distractor", bool(self.distractor))

    def moved(self, dx: float, dy: float) -> "Part":
        """This part shifted by (dx, dy) pixels."""
        return replace(self, center=(self.center[0] + dx, self.center[1] + dy))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = asdict(self)
        d["center"], d["size"], d["color"] = list(self.center), list(self.size), list(self.color)
        d["color2"] = list(self.color2) if self.color2 is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Part":
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["center"] = tuple(d["center"])
        d["size"] = tuple(d["size"])
        d["color"] = tuple(d["color"])
        if d.get("color2") is not None:
            d["color2"] = tuple(d["color2"])
        return cls(**d)


@dataclass(frozen=True)
class Background:
    """Seeded texture: a blend of two colours by a pattern, an optional ground, and clutter shapes."""

    kind: str
    color_a: RGB
    color_b: RGB
    angle: float
    frequency: float
    seed: int
    horizon: float | None = None
    ground_color: RGB | None = None
    clutter: tuple[Part, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"kind": self.kind, "color_a": list(self.color_a), "color_b": list(self.color_b),
                "angle": self.angle, "frequency": self.frequency, "seed": self.seed,
                "horizon": self.horizon,
                "ground_color": list(self.ground_color) if self.ground_color is not None else None,
                "clutter": [c.to_dict() for c in self.clutter]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Background":
        """Inverse of :meth:`to_dict`."""
        return cls(kind=d["kind"], color_a=_rgb(d["color_a"]), color_b=_rgb(d["color_b"]),
                   angle=float(d["angle"]), frequency=float(d["frequency"]), seed=int(d["seed"]),
                   horizon=None if d.get("horizon") is None else float(d["horizon"]),
                   ground_color=None if d.get("ground_color") is None else _rgb(d["ground_color"]),
                   clutter=tuple(Part.from_dict(c) for c in d.get("clutter", [])))


@dataclass(frozen=True)
class Vehicle:
    """The frame the vehicle was laid out in (for reference; the drawn body is the ``body`` part)."""

    center: tuple[float, float]
    length: float
    height: float
    xscale: float
    shear: float
    tilt: float
    color: RGB

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"center": list(self.center), "length": self.length, "height": self.height,
                "xscale": self.xscale, "shear": self.shear, "tilt": self.tilt, "color": list(self.color)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Vehicle":
        """Inverse of :meth:`to_dict`."""
        return cls(center=(float(d["center"][0]), float(d["center"][1])), length=float(d["length"]),
                   height=float(d["height"]), xscale=float(d["xscale"]), shear=float(d["shear"]),
                   tilt=float(d["tilt"]), color=_rgb(d["color"]))


@dataclass(frozen=True)
class Scene:
    """A whole image: class, pose, background, parts in drawing order, and the pixel-noise seed.

    ``cls`` is a class name, or ``"random"`` for a scene without a vehicle. ``parts`` lists
    distractors (loose parts, ``distractor=True``) first, then the vehicle's body and parts.
    """

    cls: str
    size: int
    pose: str
    flip: bool
    background: Background
    parts: tuple[Part, ...]
    noise_seed: int
    noise_sigma: float
    vehicle: Vehicle | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if int(self.size) < 8:
            raise ConfigError(f"scene size must be at least 8 pixels, got {self.size}")
        if self.pose not in POSES and self.pose != "none":
            raise ConfigError(f"unknown pose {self.pose!r}; known: {', '.join(POSES)}, none")
        object.__setattr__(self, "parts", tuple(self.parts))

    def find(self, type: str, *, distractor: bool | None = False) -> list[int]:
        """Indices of parts of ``type`` (vehicle parts only by default; None for all)."""
        return [i for i, p in enumerate(self.parts) if p.type == type
                and (distractor is None or p.distractor == distractor)]

    def part_types(self, *, distractor: bool | None = False) -> dict[str, int]:
        """Counts of part types (vehicle parts only by default)."""
        counts: dict[str, int] = {}
        for p in self.parts:
            if distractor is None or p.distractor == distractor:
                counts[p.type] = counts.get(p.type, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"version": SCENE_VERSION, "class": self.cls, "size": self.size, "pose": self.pose,
                "flip": self.flip, "noise_seed": self.noise_seed, "noise_sigma": self.noise_sigma,
                "vehicle": self.vehicle.to_dict() if self.vehicle is not None else None,
                "background": self.background.to_dict(),
                "parts": [p.to_dict() for p in self.parts], "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scene":
        """Inverse of :meth:`to_dict`; raises ArtifactError on malformed input."""
        try:
            if d.get("version") != SCENE_VERSION:
                raise ArtifactError(f"scene version {d.get('version')!r}, expected {SCENE_VERSION}")
            return cls(cls=str(d["class"]), size=int(d["size"]), pose=str(d["pose"]),
                       flip=bool(d["flip"]), noise_seed=int(d["noise_seed"]),
                       noise_sigma=float(d["noise_sigma"]),
                       vehicle=None if d.get("vehicle") is None else Vehicle.from_dict(d["vehicle"]),
                       background=Background.from_dict(d["background"]),
                       parts=tuple(Part.from_dict(p) for p in d["parts"]), meta=dict(d.get("meta", {})))
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise ArtifactError(f"not a valid toyworld scene: {type(exc).__name__}: {exc}") from None

    def to_json(self) -> str:
        """The scene as a JSON string."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "Scene":
        """Parse a scene from a JSON string."""
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"scene JSON is not valid JSON ({exc})") from None


def _check_index(scene: Scene, index: int) -> int:
    n = len(scene.parts)
    if not isinstance(index, (int,)) or isinstance(index, bool) or not -n <= index < n:
        raise ConfigError(f"part index {index!r} out of range for a scene with {n} parts")
    return index % n


def move_part(scene: Scene, index: int, dx: float = 0.0, dy: float = 0.0, *,
              to: tuple[float, float] | None = None) -> Scene:
    """A copy of ``scene`` with part ``index`` moved by (dx, dy) pixels, or centred at ``to``."""
    i = _check_index(scene, index)
    part = scene.parts[i]
    new = replace(part, center=tuple(to)) if to is not None else part.moved(dx, dy)
    return replace(scene, parts=scene.parts[:i] + (new,) + scene.parts[i + 1:])


def remove_part(scene: Scene, index: int) -> Scene:
    """A copy of ``scene`` without part ``index``."""
    i = _check_index(scene, index)
    return replace(scene, parts=scene.parts[:i] + scene.parts[i + 1:])


def insert_part(scene: Scene, part: Part, index: int | None = None) -> Scene:
    """A copy of ``scene`` with ``part`` drawn at position ``index`` (default: on top of all)."""
    if not isinstance(part, Part):
        raise ConfigError(f"insert_part needs a Part, got {type(part).__name__}")
    parts = list(scene.parts)
    if index is None:
        parts.append(part)
    else:
        if not 0 <= index <= len(parts):
            raise ConfigError(f"insert position {index} out of range 0..{len(parts)}")
        parts.insert(index, part)
    return replace(scene, parts=tuple(parts))


def replace_part(scene: Scene, index: int, part: Part, *, keep_center: bool = True) -> Scene:
    """A copy of ``scene`` with part ``index`` swapped for ``part`` (centred where the old one was)."""
    i = _check_index(scene, index)
    if keep_center:
        part = replace(part, center=scene.parts[i].center)
    return replace(scene, parts=scene.parts[:i] + (part,) + scene.parts[i + 1:])


def transplant_part(source: Scene, index: int, target: Scene, *,
                    center: tuple[float, float] | None = None) -> Scene:
    """``target`` with part ``index`` of ``source`` drawn on top, optionally re-centred."""
    part = source.parts[_check_index(source, index)]
    if center is not None:
        part = replace(part, center=tuple(center))
    return insert_part(target, part)
