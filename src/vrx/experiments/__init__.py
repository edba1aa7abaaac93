"""The paper's experiments as functions that return tables (records with a ``to_dict``)."""

from .records import SensitivityConfig, SensitivityRecord, SensitivityResult
from .scene_edits import EditInfo, SkipImage, distort_edit, edited_region, move_edit, noise_edit, swap_edit
from .sensitivity import SensitivityExperiment, interleaved_images

__all__ = ["EditInfo", "SensitivityConfig", "SensitivityExperiment", "SensitivityRecord", "SensitivityResult",
           "SkipImage", "distort_edit", "edited_region", "interleaved_images", "move_edit", "noise_edit",
           "swap_edit"]
