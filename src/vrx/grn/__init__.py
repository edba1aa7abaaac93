"""Graph reasoning network (GRN): settings, the model, its distillation from a classifier, its fidelity.

Modules: ``config`` (GRNConfig, DistillConfig; no torch), ``layout`` (EmbeddingLayout), ``layers``
(GRNLayer), ``model`` (GRN), ``io`` (save_grn, load_grn), ``distill`` (Distiller, splits, loss,
masking), ``fidelity`` (evaluate, fit_and_evaluate, ablations), ``synthetic`` (test datasets).
The names below are imported from them on first use, so ``import vrx.grn.config`` loads no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "config": ("GRNConfig", "DistillConfig"),
    "layout": ("EmbeddingLayout",),
    "layers": ("GRNLayer",),
    "model": ("GRN",),
    "io": ("load_grn", "save_grn"),
    "distill": ("Distiller", "Split", "make_split", "distill_loss", "mask_augment"),
    "fidelity": ("ABLATIONS", "evaluate", "fit_and_evaluate", "format_table"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = ["ABLATIONS", "GRN", "DistillConfig", "Distiller", "EmbeddingLayout", "GRNConfig", "GRNLayer",
           "Split", "distill_loss", "evaluate", "fit_and_evaluate", "format_table", "load_grn",
           "make_split", "mask_augment", "save_grn"]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'vrx.grn' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
