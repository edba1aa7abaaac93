"""Data for vrx: real image files and class folders (``images``); synthetic scenes (``toyworld``)."""

from .images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageSet,
    load_image,
    load_image_folder,
    part_map_path,
)

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "ImageSet", "load_image", "load_image_folder",
           "part_map_path"]
