"""Planted training biases for ``vrx diagnose`` (paper section 4.4), and the data that fixes them.

Two scenarios on the default classes:

* ``structure`` (as the paper's iLab-20M setting): in training each class is seen in one pose only
  (fire engine: side, ambulance: three_quarter, school bus: tilted); the test set has all poses.
* ``concept``: training images are ordinary, so every fire engine carries its ladder; in the test
  set every second fire engine has none (the other classes are unbiased). The school bus's stop
  sign, the first choice, was no bias at all: the demo's CNN classified every school bus without
  one correctly (its windows and door suffice), a fire engine without its ladder in 10% of cases.

Scenes come from their own streams (seed, class, index + a per-split offset), so the training,
VRX, test and added sets never share a scene. An added set follows one of the recommendations:
``poses`` (the class in every pose, equally many), ``without`` (the class without one part type,
in its training pose) or ``same`` (more of the class as in training).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..data.toyworld.classes import DEFAULT_CLASSES, PART_TYPES
from ..data.toyworld.dataset import write_scene
from ..data.toyworld.sample import generate_random_scenes, sample_scene, scene_rng
from ..data.toyworld.scene import POSES, Scene, remove_part
from ..errors import ConfigError
from ..store import write_json

SCENARIOS: tuple[str, ...] = ("structure", "concept")
TRAIN_POSE: dict[str, str] = {"fire_engine": "side", "ambulance": "three_quarter", "school_bus": "tilted"}
CONCEPT_CLASS, CONCEPT_PART = "fire_engine", "ladder"
PLANTED: dict[str, str] = {"structure": "structure", "concept": "concept"}
ADDITIONS: tuple[str, ...] = ("poses", "without", "same")
_SPLITS = {"train": 600_000, "vrx": 700_000, "test": 800_000, "added": 900_000}


def _scene(cls: str, seed: int, split: str, index: int, pose: str | None, drop: str | None) -> Scene:
    scene = sample_scene(cls, scene_rng(seed, cls, _SPLITS[split] + index), pose=pose)
    if drop is not None:
        for i in sorted(scene.find(drop), reverse=True):
            scene = remove_part(scene, i)
    scene.meta.update({"seed": int(seed), "index": int(index), "split": split, "pose": scene.pose,
                       "dropped": drop})
    return scene


def scenario_scenes(scenario: str, split: str, n_per_class: int, seed: int,
                    classes: Sequence[str] = tuple(DEFAULT_CLASSES)) -> list[Scene]:
    """The ``train``, ``vrx`` (same distribution as train) or ``test`` scenes of a scenario."""
    if scenario not in SCENARIOS:
        raise ConfigError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    if split not in ("train", "vrx", "test"):
        raise ConfigError(f"unknown split {split!r}; known: train, vrx, test")
    if scenario == "structure" and set(classes) - set(TRAIN_POSE):
        raise ConfigError(f"the structure scenario has a training pose only for {sorted(TRAIN_POSE)}")
    out = []
    for cls in classes:
        for i in range(n_per_class):
            pose = TRAIN_POSE[cls] if scenario == "structure" and split != "test" else None
            drop = CONCEPT_PART if (scenario == "concept" and split == "test" and cls == CONCEPT_CLASS
                                    and i % 2 == 0) else None
            out.append(_scene(cls, seed, split, i, pose, drop))
    return out


def added_scenes(scenario: str, cls: str, addition: str, n: int, seed: int, *, part: str | None = None) -> list[Scene]:
    """``n`` extra training scenes of ``cls``: ``poses`` (every pose, equally many), ``without``
    (no ``part``, training pose) or ``same`` (as in the scenario's training set)."""
    if addition not in ADDITIONS:
        raise ConfigError(f"unknown addition {addition!r}; known: {', '.join(ADDITIONS)}")
    if addition == "without" and not part:
        raise ConfigError("an addition 'without' needs the part type to leave out")
    pose = TRAIN_POSE.get(cls) if scenario == "structure" else None
    out = []
    for i in range(n):
        p = POSES[i % len(POSES)] if addition == "poses" else pose
        out.append(_scene(cls, seed, "added", i, p, part if addition == "without" else None))
    return out


def write_scenes(out_dir: str | os.PathLike, scenes: Sequence[Scene], classes: Sequence[str], *,
                 n_random: int = 0, seed: int = 0, extra: Mapping[str, Any] | None = None) -> Path:
    """Render scenes as a toyworld folder (``<class>/<split>-<id>.png`` + scene JSON) with its manifest."""
    out = Path(out_dir)
    counts: dict[str, int] = {}
    for s in scenes:
        write_scene(out / s.cls, f"{s.meta['split']}-{s.meta['index']:06d}", s)
        counts[s.cls] = counts.get(s.cls, 0) + 1
    for s in generate_random_scenes(n_random, seed):
        write_scene(out / "random", f"{s.meta['index']:06d}", s)
    write_json(out / "toyworld.json", {"dataset": "toyworld", "version": 1, "classes": list(classes),
                                       "part_types": list(PART_TYPES),
                                       "seed": int(seed), "counts": counts | {"random": n_random},
                                       "n_random": n_random} | dict(extra or {}))
    return out
