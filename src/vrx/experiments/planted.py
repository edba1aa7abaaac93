"""A shifted toyworld split whose errors have known, planted causes (for ``vrx consistency``).

Each shifted image starts from an ordinary scene of its class and gets one **shift**, cycling
through the kinds in order (image i gets ``SHIFTS[i % 3]``):

* ``swap`` (planted type *concept*): every part of the class's signature type (the part type only
  this class has among the classes of interest: ladder, cross, stop sign or door) is replaced, at
  the same place, by the signature part of another class (a fire engine whose ladder became a cross);
* ``foreign`` (*concept*): another class's signature part is added on the body where that class
  carries it, drawn on top; the class's own parts stay (a fire engine with an ambulance's cross);
* ``misplace`` (*structure*): the signature parts keep their look and move together to an
  implausible height (lower-half parts onto the roof, upper-half parts under the floor, as
  :func:`vrx.experiments.scene_edits.move_edit`).

The cause is stored in the scene's ``meta["planted"]``: kind, type, the part type shifted, and the
parts (old and new, as part dicts) whose footprints make the **planted region**. Nothing is chosen
by looking at a classifier: which images end up misclassified is up to the network.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.toyworld.classes import CLASS_LAYOUTS, LOOSE_SIZES, PART_SHAPES, PART_TYPES, SHADE
from ..data.toyworld.render import part_mask
from ..data.toyworld.sample import _part_colours, sample_scene, scene_rng
from ..data.toyworld.scene import Part, Scene, insert_part
from ..errors import ConfigError, UnknownClassError
from ..store import write_json
from .scene_edits import SkipImage, move_edit, swap_edit

SHIFTS: tuple[str, ...] = ("swap", "foreign", "misplace")
PLANTED_TYPE: dict[str, str] = {"swap": "concept", "foreign": "concept", "misplace": "structure"}
#: Scene streams of the shifted split sit far from those of ``render_dataset`` (index < 10^5).
_STREAM_OFFSET = 500_000
_TRIES = 10
MANIFEST = "toyworld.json"


def signature_types(cls: str, classes: Sequence[str]) -> list[str]:
    """Part types class ``cls`` has and no other class of ``classes`` has, largest first."""
    if cls not in CLASS_LAYOUTS:
        raise UnknownClassError(f"unknown toyworld class {cls!r}")
    others = {s.type for c in classes if c != cls for s in CLASS_LAYOUTS[c]}
    own = [s for s in CLASS_LAYOUTS[cls] if s.type not in others and s.type != "body"]
    area: dict[str, float] = {}
    for s in own:
        area[s.type] = area.get(s.type, 0.0) + s.fw * s.fh
    return sorted(area, key=lambda t: -area[t])


@dataclass(frozen=True)
class PlantedCause:
    """What was shifted in one image: kind, type (concept / structure), part type and region parts."""

    kind: str
    type: str
    part: str
    detail: dict[str, Any]
    region_parts: tuple[Part, ...]   # old and new parts whose footprints make the planted region

    def region(self, size: int) -> np.ndarray:
        """The planted region: union of the footprints of the removed, added or moved parts."""
        out = np.zeros((size, size), bool)
        for p in self.region_parts:
            out |= part_mask(p, size)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "type": self.type, "part": self.part, "detail": dict(self.detail),
                "region_parts": [p.to_dict() for p in self.region_parts]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlantedCause:
        return cls(kind=str(d["kind"]), type=str(d["type"]), part=str(d["part"]), detail=dict(d.get("detail", {})),
                   region_parts=tuple(Part.from_dict(p) for p in d["region_parts"]))


def _frame_part(scene: Scene, type_: str, fx: float, fy: float, rng: np.random.Generator) -> Part:
    """A part of ``type_`` placed at (fx, fy) of the scene's vehicle frame, sized and posed as its parts."""
    v = scene.vehicle
    assert v is not None
    sign = -1.0 if scene.flip else 1.0
    t = math.radians(v.tilt)
    frame = (np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
             @ np.array([[1.0, 0.0], [v.shear, 1.0]]) @ np.diag([sign * v.xscale, 1.0]))
    offset = frame @ np.array([fx * v.length, fy * v.height])
    fw, fh, square = LOOSE_SIZES[type_]
    colour, accent = _part_colours(rng, type_, v.color)
    return Part(type_, center=(v.center[0] + offset[0], v.center[1] + offset[1]),
                size=(v.xscale * fw * (v.height if square else v.length), fh * v.height), color=colour,
                color2=accent, shape=PART_SHAPES[type_], angle=v.tilt, shear=v.shear, mirror=scene.flip,
                shade=SHADE.get(type_, 0.0))


def shift_scene(scene: Scene, kind: str, classes: Sequence[str], rng: np.random.Generator
                ) -> tuple[Scene, PlantedCause]:
    """Apply one shift to ``scene``; raises SkipImage when it cannot (the caller draws another scene)."""
    if kind not in SHIFTS:
        raise ConfigError(f"unknown shift {kind!r}; known: {', '.join(SHIFTS)}")
    own = signature_types(scene.cls, classes)
    others = [c for c in classes if c != scene.cls]
    if not own or not others:
        raise ConfigError(f"class {scene.cls!r} has no part type of its own among {list(classes)}")
    ptype = own[0]
    indices = scene.find(ptype)
    other = others[int(rng.integers(len(others)))]
    foreign = signature_types(other, classes)[0]
    if kind == "swap":
        new, info = swap_edit(scene, indices, foreign, rng)
        region = tuple(scene.parts[i] for i in indices) + tuple(new.parts[i] for i in info.new_indices)
        return new, PlantedCause(kind, PLANTED_TYPE[kind], ptype, {"replaced_by": foreign, "from_class": other},
                                 region)
    if kind == "foreign":
        slot = next(s for s in CLASS_LAYOUTS[other] if s.type == foreign)
        part = _frame_part(scene, foreign, slot.fx, slot.fy, rng)
        # The footprint on a canvas three times as large, the image in its middle: the whole part.
        whole = part_mask(part.moved(scene.size, scene.size), 3 * scene.size).sum()
        if part_mask(part, scene.size).sum() < 0.9 * whole:
            raise SkipImage("the added part would leave the image")
        new = insert_part(scene, part)
        return new, PlantedCause(kind, PLANTED_TYPE[kind], foreign, {"from_class": other}, (part,))
    new, info = move_edit(scene, indices)
    region = tuple(scene.parts[i] for i in indices) + tuple(new.parts[i] for i in info.new_indices)
    return new, PlantedCause(kind, PLANTED_TYPE[kind], ptype, dict(info.detail), region)


def shifted_scenes(classes: Sequence[str], n_per_class: int, seed: int, size: int = 128) -> list[Scene]:
    """``n_per_class`` shifted scenes per class; ``meta["planted"]`` holds each one's cause.

    Scene i of class c comes from its own stream (seed, c, i); a scene that cannot take its shift
    (no room to move a part) is replaced by the next draw of the same stream, never by another shift.
    """
    classes = list(classes)
    if n_per_class < 1:
        raise ConfigError(f"n_per_class must be >= 1, got {n_per_class}")
    out = []
    for cls in classes:
        for i in range(n_per_class):
            kind = SHIFTS[i % len(SHIFTS)]
            rng = scene_rng(seed, cls, _STREAM_OFFSET + i)
            for attempt in range(_TRIES):
                base = sample_scene(cls, rng, size)
                try:
                    scene, cause = shift_scene(base, kind, classes, rng)
                except SkipImage:
                    continue
                scene.meta.update({"seed": int(seed), "index": int(i), "attempt": attempt,
                                   "planted": cause.to_dict()})
                out.append(scene)
                break
            else:
                raise ConfigError(f"could not apply shift {kind!r} to any of {_TRIES} {cls} scenes")
    return out


def planted_cause(scene: Scene) -> PlantedCause | None:
    """The planted cause stored in a shifted scene (None for an ordinary scene)."""
    d = scene.meta.get("planted")
    return None if d is None else PlantedCause.from_dict(d)


def render_shifted(out_dir: str | os.PathLike, classes: Sequence[str], n_per_class: int, seed: int,
                   size: int = 128) -> dict[str, Any]:
    """Render the shifted split as a toyworld folder (``<class>/<id>.png`` + scene JSON with the cause)."""
    from ..data.toyworld.dataset import write_scene

    out = Path(out_dir)
    scenes = shifted_scenes(classes, n_per_class, seed, size)
    for s in scenes:
        write_scene(out / s.cls, f"{s.meta['index']:06d}", s)
    counts: dict[str, dict[str, int]] = {c: {} for c in classes}
    for s in scenes:
        k = s.meta["planted"]["kind"]
        counts[s.cls][k] = counts[s.cls].get(k, 0) + 1
    manifest = {"dataset": "toyworld", "version": 1, "split": "shifted", "classes": list(classes),
                "part_types": list(PART_TYPES),
                "seed": int(seed), "size": int(size), "n_per_class": int(n_per_class), "n_random": 0,
                "shifts": list(SHIFTS), "counts": counts}
    write_json(out / MANIFEST, manifest)
    return manifest
