"""Graph reasoning network (GRN): the model, its distillation from a classifier, and its fidelity."""

from .distill import Distiller, Split, distill_loss, make_split, mask_augment
from .fidelity import ABLATIONS, evaluate, fit_and_evaluate, format_table, train_and_evaluate
from .model import GRN, EmbeddingLayout, GRNConfig, GRNLayer, load_grn, save_grn

__all__ = ["GRN", "GRNConfig", "GRNLayer", "EmbeddingLayout", "load_grn", "save_grn", "Distiller",
           "Split", "make_split", "distill_loss", "mask_augment", "ABLATIONS", "evaluate",
           "fit_and_evaluate", "train_and_evaluate", "format_table"]
