"""Classifiers for vrx: the ClassifierAdapter and a zoo of ready models (``vrx.models.load``)."""

from .adapter import ClassifierAdapter, LayerGradients, Prediction, to_tensor, validate_images
from .zoo import SPEC_FORMS, load, read_class_names

__all__ = ["ClassifierAdapter", "LayerGradients", "Prediction", "SPEC_FORMS", "load",
           "read_class_names", "to_tensor", "validate_images"]
