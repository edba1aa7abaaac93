"""Scene edits for the sensitivity experiments: move a part to an implausible place, swap it for
another class's part, invert its colours, or (the control) draw the pixel noise anew.

Each edit returns the new scene and an :class:`EditInfo` naming the parts it touched in the old and
the new scene, so :func:`edited_region` can say where pixels may change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.toyworld.classes import CLASS_LAYOUTS, LOOSE_SIZES, LOOSE_TYPES, PART_SHAPES, SHADE
from ..data.toyworld.render import part_mask
from ..data.toyworld.scene import Part, Scene, insert_part, replace_part
from ..errors import VRXError


class SkipImage(VRXError):
    """An image the experiment cannot use (the reason is recorded, the run goes on)."""


@dataclass
class EditInfo:
    """What an edit did: the parts it touched, before (old scene) and after (new scene), and how."""

    edit: str
    old_indices: list[int]           # indices of the edited parts in the original scene
    new_indices: list[int]           # their indices in the edited scene
    detail: dict[str, Any] = field(default_factory=dict)


def _rows(mask: np.ndarray) -> tuple[int, int]:
    rows = np.flatnonzero(mask.any(1))
    return int(rows[0]), int(rows[-1])


def _union(scene: Scene, indices: Sequence[int]) -> np.ndarray:
    out = np.zeros((scene.size, scene.size), bool)
    for i in indices:
        out |= part_mask(scene.parts[i], scene.size)
    return out


def move_edit(scene: Scene, indices: Sequence[int], *, gap: int = 2, min_inside: float = 0.9,
              ) -> tuple[Scene, EditInfo]:
    """Move parts ``indices`` together to an implausible height: lower-half parts above the body's top,
    upper-half parts under its floor; they keep their look and are drawn on top of everything.

    Raises SkipImage when the scene has no body or the moved parts would leave the image.
    """
    bodies = scene.find("body")
    if not bodies:
        raise SkipImage("the scene has no vehicle body to move parts relative to")
    body = part_mask(scene.parts[bodies[0]], scene.size)
    if not body.any():
        raise SkipImage("the vehicle body is outside the image")
    btop, bbot = _rows(body)
    union = _union(scene, indices)
    if not union.any():
        raise SkipImage("the parts to move are outside the image")
    ptop, pbot = _rows(union)
    if (ptop + pbot) / 2 > (btop + bbot) / 2:
        direction, dy = "up", (btop - 1 - gap) - pbot      # footprint ends gap px above the roof line
    else:
        direction, dy = "down", (bbot + 1 + gap) - ptop    # footprint starts gap px under the floor
    moved = [scene.parts[i].moved(0.0, float(dy)) for i in indices]
    inside = sum(int(part_mask(p, scene.size).sum()) for p in moved)
    full = sum(int(part_mask(scene.parts[i], scene.size).sum()) for i in indices)
    if inside < min_inside * full:
        raise SkipImage(f"no room to move the {scene.parts[indices[0]].type} {direction} "
                    f"({inside}/{full} footprint pixels would stay in the image)")
    # Drawn last, a moved part is seen whole: otherwise a wheel moved onto the roof could hide behind a ladder.
    gone = set(indices)
    keep = [p for i, p in enumerate(scene.parts) if i not in gone]
    new = dataclasses.replace(scene, parts=tuple(keep))
    for p in moved:
        new = insert_part(new, p)
    n = len(new.parts)
    return new, EditInfo("move", list(indices), list(range(n - len(moved), n)),
                         {"dy": int(dy), "direction": direction})


def replacement_types(cls: str, classes: Sequence[str]) -> list[str]:
    """Part types another class of ``classes`` has and ``cls`` has not (else any loose type it lacks)."""
    own = {s.type for s in CLASS_LAYOUTS.get(cls, [])}
    others = {s.type for c in classes if c != cls for s in CLASS_LAYOUTS.get(c, [])}
    found = sorted(others - own - {"body"})
    return found or sorted(set(LOOSE_TYPES) - own)


def swap_edit(scene: Scene, indices: Sequence[int], new_type: str, rng: np.random.Generator,
              ) -> tuple[Scene, EditInfo]:
    """Replace parts ``indices`` by parts of ``new_type`` at the same centres and draw positions,
    sized and coloured as that type is in a vehicle of this scene."""
    from ..data.toyworld.sample import _part_colours  # the sampler's colour rules, so swaps look native

    v = scene.vehicle
    if v is None:
        raise SkipImage("the scene has no vehicle frame to size a replacement part")
    fw, fh, square = LOOSE_SIZES[new_type]
    size = (v.xscale * fw * (v.height if square else v.length), fh * v.height)
    colour, accent = _part_colours(rng, new_type, v.color)
    new = scene
    for i in indices:
        old = scene.parts[i]
        part = Part(new_type, center=old.center, size=size, color=colour, color2=accent,
                    shape=PART_SHAPES[new_type], angle=old.angle, shear=old.shear, mirror=old.mirror,
                    shade=SHADE.get(new_type, 0.0))
        new = replace_part(new, i, part)
    return new, EditInfo("swap", list(indices), list(indices), {"new_type": new_type})


def distort_edit(scene: Scene, indices: Sequence[int]) -> tuple[Scene, EditInfo]:
    """Keep parts ``indices`` where and as big as they are, with their colours inverted."""
    def inv(c):
        return None if c is None else tuple(255 - x for x in c)
    new = scene
    for i in indices:
        p = scene.parts[i]
        new = replace_part(new, i, dataclasses.replace(p, color=inv(p.color), color2=inv(p.color2)))
    return new, EditInfo("distort", list(indices), list(indices), {"inverted": True})


def noise_edit(scene: Scene, rng: np.random.Generator) -> tuple[Scene, EditInfo]:
    """The control: the same scene with its pixel noise drawn anew (no part changes)."""
    seed = int(rng.integers(2**31))
    if seed == scene.noise_seed:
        seed = (seed + 1) % 2**31
    return dataclasses.replace(scene, noise_seed=seed), EditInfo("noise", [], [], {"noise_seed": seed})


def edited_region(old: Scene, new: Scene, info: EditInfo) -> np.ndarray:
    """Where an edit may change pixels: the edited parts' old and new footprints."""
    return _union(old, info.old_indices) | _union(new, info.new_indices)
