"""GRN training as a run-folder stage: ``RUN/graphs/`` in, ``RUN/grn/`` (weights, config, metrics) out."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..graphs.scg import load_graph_dataset
from ..store import write_json
from .distill import Split
from .fidelity import fit_and_evaluate
from .model import GRN_DIR, GRNConfig

log = logging.getLogger(__name__)


def train_grn(run: str | Path, config: GRNConfig | None = None, *, ablations: bool = True,
              split: Split | None = None) -> dict[str, Any]:
    """Distil the classifier into a GRN from the run's graphs; write ``RUN/grn/``; return the metrics."""
    dataset = load_graph_dataset(run)
    log.info("training GRN on %d images, classes %s", len(dataset), dataset.class_names)
    distiller, metrics = fit_and_evaluate(dataset, config or GRNConfig(), ablations=ablations, split=split)
    out = Path(run) / GRN_DIR
    distiller.save(out)
    write_json(out / "metrics.json", metrics)
    return metrics
