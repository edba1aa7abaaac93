"""Data for vrx: real image files and class folders (``images``); synthetic scenes (``toyworld``)."""

from .images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    PART_MAP_SUFFIX,
    ImageSet,
    PartMaps,
    load_image,
    load_image_folder,
    part_map_path,
    part_map_reader,
    read_part_map,
)

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "PART_MAP_SUFFIX", "ImageSet", "PartMaps", "load_image",
           "load_image_folder", "part_map_path", "part_map_reader", "read_part_map"]
