"""What toyworld vehicles are made of: part types, colours, and each class's layout.

A class is a list of parts placed in the vehicle's own frame: x runs from the back (-0.5) to the
front (+0.5) of the body in units of its length L, y runs from the roof (-0.5) to the floor (+0.5)
in units of its height H (image y points down). Body size, body colour, pose, flip, position and
scale are drawn from the same distributions for every class, so only the parts and their
arrangement tell classes apart.
"""

from __future__ import annotations

from dataclasses import dataclass

# Part-type ids are index + 1; 0 in a part map is background (texture and clutter).
PART_TYPES: list[str] = [
    "body", "wheel", "window", "cab", "ladder", "cross", "siren", "stripe",
    "door", "stop_sign", "cone", "hook",
]
PART_IDS: dict[str, int] = {name: i + 1 for i, name in enumerate(PART_TYPES)}

# Drawing shape of each part type (see shapes.py); clutter picks its own shapes.
PART_SHAPES: dict[str, str] = {
    "body": "rounded", "wheel": "wheel", "window": "rect", "cab": "rect", "ladder": "ladder",
    "cross": "cross", "siren": "light_bar", "stripe": "rect", "door": "door",
    "stop_sign": "octagon", "cone": "cone", "hook": "boom",
}

# Body colours: one palette shared by all classes, so colour alone never names the class.
BODY_PALETTE: list[tuple[int, int, int]] = [
    (200, 35, 35), (232, 232, 226), (238, 196, 40), (45, 85, 190), (45, 150, 75),
    (236, 128, 36), (165, 170, 178), (128, 62, 160),
]
# Stripe colours; a stripe takes one that stands out from the body.
STRIPE_PALETTE: list[tuple[int, int, int]] = [
    (245, 245, 245), (30, 30, 34), (235, 200, 40), (40, 70, 200), (210, 40, 40),
]
WINDOW_COLOURS: list[tuple[int, int, int]] = [(160, 205, 235), (55, 75, 100)]
# Fixed colours of parts whose look is their identity: (main, accent).
PART_COLOURS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int] | None]] = {
    "wheel": ((28, 28, 30), (165, 165, 170)),
    "ladder": ((75, 75, 82), (218, 218, 222)),
    "cross": ((250, 250, 250), (215, 25, 30)),
    "siren": ((35, 70, 235), (235, 35, 35)),
    "stop_sign": ((250, 250, 250), (200, 20, 25)),
    "cone": ((214, 168, 98), (240, 148, 190)),
    "hook": ((236, 170, 24), (40, 40, 44)),
}
# Body and cab are lit from above: brightness falls by this share from roof to floor.
SHADE: dict[str, float] = {"body": 0.16, "cab": 0.16}


@dataclass(frozen=True)
class Slot:
    """One part in a class layout: type, centre (fx, fy) and size (fw, fh) in the vehicle frame.

    ``square`` sizes both sides in units of H (wheels, crosses, signs keep their aspect).
    """

    type: str
    fx: float
    fy: float
    fw: float
    fh: float
    square: bool = False


def _wheels(*xs: float) -> list[Slot]:
    return [Slot("wheel", x, 0.5, 0.48, 0.48, square=True) for x in xs]


_CAB_TALL = [Slot("cab", 0.40, -0.14, 0.20, 1.28), Slot("window", 0.40, -0.42, 0.12, 0.35)]
_CAB_LOW = [Slot("cab", 0.60, 0.15, 0.20, 0.70), Slot("window", 0.62, -0.02, 0.12, 0.28)]

# Draw order is list order (body first; later parts cover earlier ones).
CLASS_LAYOUTS: dict[str, list[Slot]] = {
    "fire_engine": [
        Slot("body", 0, 0, 1, 1), *_CAB_TALL,
        Slot("ladder", -0.10, -0.60, 0.72, 0.20),
        Slot("siren", 0.40, -0.90, 0.22, 0.24),
        Slot("stripe", -0.10, 0.12, 0.80, 0.13),
        *_wheels(-0.33, -0.12, 0.36),
    ],
    "ambulance": [
        Slot("body", 0, 0, 1, 1), *_CAB_LOW,
        Slot("cross", -0.10, -0.08, 0.56, 0.56, square=True),
        Slot("siren", 0.35, -0.62, 0.22, 0.24),
        Slot("stripe", 0.0, 0.30, 1.0, 0.13),
        *_wheels(-0.30, 0.58),
    ],
    "school_bus": [
        Slot("body", 0, 0, 1, 1),
        *[Slot("window", x, -0.20, 0.15, 0.40) for x in (-0.36, -0.17, 0.02, 0.21)],
        Slot("door", 0.42, 0.08, 0.10, 0.70),
        Slot("stop_sign", 0.05, 0.24, 0.42, 0.42, square=True),
        *_wheels(-0.32, 0.34),
    ],
    # The structure-only pair: the same parts, the same sizes and colours; only where the stripe
    # sits relative to the windows (below vs above) and where the siren sits on the roof
    # (centre vs one end) differ.
    "police_car": [
        Slot("body", 0, 0, 1, 1),
        Slot("window", -0.16, -0.18, 0.22, 0.28), Slot("window", 0.16, -0.18, 0.22, 0.28),
        Slot("stripe", 0.0, 0.15, 0.90, 0.14),
        Slot("siren", 0.0, -0.62, 0.22, 0.24),
        *_wheels(-0.30, 0.30),
    ],
    "taxi": [
        Slot("body", 0, 0, 1, 1),
        Slot("window", -0.16, 0.02, 0.22, 0.28), Slot("window", 0.16, 0.02, 0.22, 0.28),
        Slot("stripe", 0.0, -0.30, 0.90, 0.14),
        Slot("siren", 0.32, -0.62, 0.22, 0.24),
        *_wheels(-0.30, 0.30),
    ],
    "ice_cream_van": [
        Slot("body", 0, 0, 1, 1), *_CAB_LOW,
        Slot("window", -0.05, -0.12, 0.35, 0.38),
        Slot("cone", -0.22, -0.91, 0.34, 0.82, square=True),
        Slot("stripe", 0.0, 0.30, 1.0, 0.13),
        *_wheels(-0.30, 0.58),
    ],
    "tow_truck": [
        Slot("body", 0, 0, 1, 1), *_CAB_TALL,
        Slot("hook", -0.28, -0.95, 0.35, 0.90),
        Slot("siren", 0.40, -0.90, 0.22, 0.24),
        *_wheels(-0.30, 0.36),
    ],
}

ALL_CLASSES: list[str] = list(CLASS_LAYOUTS)
DEFAULT_CLASSES: list[str] = ["fire_engine", "ambulance", "school_bus"]
# Two classes with the same multiset of part types that differ only in arrangement.
STRUCTURE_PAIR: tuple[str, str] = ("police_car", "taxi")
# Types a part lying loose in a scene can have (a loose body would be a vehicle).
LOOSE_TYPES: list[str] = [t for t in PART_TYPES if t != "body"]
# Size of a loose part, as in a class layout (fw, fh, square), for a vehicle of typical size.
LOOSE_SIZES: dict[str, tuple[float, float, bool]] = {
    "wheel": (0.48, 0.48, True), "window": (0.14, 0.34, False), "cab": (0.20, 1.0, False),
    "ladder": (0.50, 0.20, False), "cross": (0.56, 0.56, True), "siren": (0.22, 0.24, False),
    "stripe": (0.50, 0.13, False), "door": (0.10, 0.70, False),
    "stop_sign": (0.42, 0.42, True), "cone": (0.34, 0.82, True), "hook": (0.35, 0.90, False),
}


def part_multiset(cls: str) -> dict[str, int]:
    """How many parts of each type a class layout holds."""
    counts: dict[str, int] = {}
    for slot in CLASS_LAYOUTS[cls]:
        counts[slot.type] = counts.get(slot.type, 0) + 1
    return counts
