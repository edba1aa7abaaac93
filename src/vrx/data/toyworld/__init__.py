"""toyworld: procedurally drawn vehicles made of parts, with the ground truth of every part known.

Classes, part types and the structure-only pair are in :mod:`.classes`; the scene format and edits in
:mod:`.scene`; drawing in :mod:`.render`; random scenes in :mod:`.sample`; folders in :mod:`.dataset`.
"""

from .classes import (
    ALL_CLASSES, CLASS_LAYOUTS, DEFAULT_CLASSES, PART_IDS, PART_TYPES, STRUCTURE_PAIR, part_multiset,
)
from .dataset import list_images, load_part_map, load_scene, render_dataset, write_scene
from .render import Rendering, part_mask, render, render_layers, visible_mask
from .sample import (
    RANDOM_CLASS, generate_random_scenes, generate_scenes, sample_loose_part, sample_random_scene,
    sample_scene, scene_rng,
)
from .scene import (
    POSES, Background, Part, Scene, Vehicle, insert_part, move_part, remove_part, replace_part,
    transplant_part,
)

__all__ = [
    "ALL_CLASSES", "CLASS_LAYOUTS", "DEFAULT_CLASSES", "PART_IDS", "PART_TYPES", "POSES", "RANDOM_CLASS",
    "STRUCTURE_PAIR", "Background", "Part", "Rendering", "Scene", "Vehicle", "generate_random_scenes",
    "generate_scenes", "insert_part", "list_images", "load_part_map", "load_scene", "move_part",
    "part_mask", "part_multiset", "remove_part", "render", "render_dataset", "render_layers",
    "replace_part", "sample_loose_part", "sample_random_scene", "sample_scene", "scene_rng",
    "transplant_part", "visible_mask", "write_scene",
]
