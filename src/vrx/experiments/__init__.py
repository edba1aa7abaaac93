"""The paper's experiments as functions that return tables (records with a ``to_dict``)."""

from .scene_edits import EditInfo, SkipImage, distort_edit, edited_region, move_edit, noise_edit, swap_edit
from .sensitivity import (
    SensitivityConfig, SensitivityExperiment, SensitivityRecord, SensitivityResult, structural_sensitivity,
    test_split_images, visual_sensitivity,
)

__all__ = ["EditInfo", "SensitivityConfig", "SensitivityExperiment", "SensitivityRecord", "SensitivityResult",
           "SkipImage", "distort_edit", "edited_region", "move_edit", "noise_edit", "structural_sensitivity",
           "swap_edit", "test_split_images", "visual_sensitivity"]
