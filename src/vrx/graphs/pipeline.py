"""Graph building as a run-folder stage: ``RUN/graphs/`` from the bank in ``RUN/concepts/``."""

from __future__ import annotations

from pathlib import Path

from ..concepts.bank import ConceptBank
from ..concepts.discover import concepts_dir
from ..data.images import ImageSet
from ..models.adapter import ClassifierAdapter
from .builder import MatchConfig, SCGBuilder
from .scg import GRAPHS_DIR, GraphDataset, save_graph_dataset


def build_graphs(adapter: ClassifierAdapter, images: ImageSet, run: str | Path,
                 config: MatchConfig | None = None, *, show_progress: bool | None = None) -> GraphDataset:
    """Graphs of every image in ``images`` (all classes, labels kept for reporting only), saved in RUN."""
    bank = ConceptBank.load(concepts_dir(run))
    builder = SCGBuilder(adapter, bank, config, cache_dir=Path(run) / "cache" / "patches",
                         show_progress=show_progress)
    paths, labels = [], []
    for cls in images.classes:
        for p in images.paths[cls]:
            paths.append(p)
            labels.append(bank.class_names.index(cls) if cls in bank.class_names else -1)
    ds = builder.transform(paths, labels)
    save_graph_dataset(run, ds)
    builder.matches_.save(Path(run) / GRAPHS_DIR / "matches.safetensors")
    return ds
