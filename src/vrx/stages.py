"""The pipeline's stages on a run folder, as the CLI and ``vrx demo`` both run them.

Each stage reads what the one before wrote into the :class:`~vrx.run.Run` and writes its own
artifact there: ``discover`` the concept bank, ``build_graphs`` the structural concept graphs,
``train_grn`` the distilled GRN, ``explain`` per-image records and figures, ``report`` the HTML
page. Each stage that writes the run holds its lock (:meth:`~vrx.run.Run.lock`), so a second
command writing the same run fails with a clear message instead of mixing files. The stages take objects (an adapter, an :class:`~vrx.data.images.ImageSet`, settings); parsing
flags and choosing thread counts belongs to the caller.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .run import Run

if TYPE_CHECKING:
    from .concepts.bank import ConceptBank
    from .concepts.config import ConceptConfig
    from .data.images import ImageSet
    from .graphs.builder import MatchConfig
    from .graphs.dataset import GraphDataset
    from .grn.config import DistillConfig, GRNConfig
    from .grn.distill import Split
    from .models.adapter import ClassifierAdapter
    from .scale.executor import Executor

log = logging.getLogger(__name__)


def _run(run: Run | str | os.PathLike) -> Run:
    return run if isinstance(run, Run) else Run(run)


def _writes_run(create: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run ``stage(run, ...)`` with ``run`` as a Run, holding the run folder's lock (``create``: make
    the folder when it does not exist yet)."""
    def wrap(stage: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(stage)
        def locked(run: Run | str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
            run = _run(run)
            with run.lock(create=create):
                return stage(run, *args, **kwargs)
        return locked
    return wrap


@_writes_run(create=True)
def discover(run: Run | str | os.PathLike, adapter: ClassifierAdapter, images: ImageSet,
             config: ConceptConfig | None = None, *, compare_gradcam: bool = False,
             show_progress: bool | None = None, executor: Executor | None = None
             ) -> tuple[ConceptBank, dict[str, Any]]:
    """Discover concepts for ``images``' classes: bank, galleries and a summary in ``RUN/concepts/``.

    When the images come with ground-truth part maps (toyworld), concept purity is written too;
    with ``compare_gradcam`` it holds purity with and without the Grad-CAM filter (the second
    discovery reuses the cached patch features, so only clustering and TCAV rerun). An
    ``executor`` (:mod:`vrx.scale.executor`) featurises the images first, e.g. on Ray workers;
    discovery then finds them all in the patch cache.
    """
    from .concepts.config import ConceptConfig
    from .concepts.extractor import ConceptExtractor
    from .concepts.gallery import save_gallery
    from .data.images import part_map_reader

    run = _run(run)
    config = config or ConceptConfig()
    by_class = {c: list(images.paths[c]) for c in images.classes}

    scale = _fill_cache(run, adapter, executor, config.segmentation, config.batch_size,
                        [p for c in images.classes for p in images.paths[c]] + list(images.random_paths))

    def fit(cfg: ConceptConfig) -> ConceptBank:
        extractor = ConceptExtractor(adapter, cfg, cache_dir=run.patch_cache_dir, show_progress=show_progress)
        return extractor.fit(by_class, list(images.random_paths)).bank_

    bank = fit(config)
    run.save_bank(bank)
    for cls in bank.class_names:
        save_gallery(bank, cls, run.gallery_path(cls))
    summary = {"classes": bank.class_names, "model_id": bank.model_id, "layer": bank.layer,
               "correction": config.tcav.correction, **bank.stats,
               "concepts": {c: [{"rank": k.rank, "tcav": round(k.tcav, 4), "p_value": k.p_value,
                                 "size": k.size} for k in bank[c]] for c in bank.class_names}}
    parts = part_map_reader(images)
    if parts is not None:
        from .metrics.purity import concept_purity

        def variant(cfg: ConceptConfig) -> str:
            return "gradcam" if cfg.gradcam.enabled else "no_gradcam"

        purity = {variant(config): concept_purity(bank, parts, parts.part_names)}
        if compare_gradcam:
            other = dataclasses.replace(config, gradcam=dataclasses.replace(
                config.gradcam, enabled=not config.gradcam.enabled))
            purity[variant(other)] = concept_purity(fit(other), parts, parts.part_names)
        run.write_purity(purity)
        summary["purity"] = {name: p["summary"] for name, p in purity.items()}
    if scale is not None:
        summary["executor"] = scale
    run.write_concepts_summary(summary)
    return bank, summary


@_writes_run()
def add_map_centres(run: Run | str | os.PathLike, adapter: ClassifierAdapter) -> dict[str, Any]:
    """Add map-space centres to the run's concept bank (so graphs can be built with one forward per
    image, ``MatchConfig(features="map")``) and save it; returns the counts and seconds it took.

    The bank's fingerprint changes, so graphs built before must be built again; its purity, which
    the centres do not change, is recorded for the new bank."""
    import time

    from .concepts.map_centres import add_map_centres as add

    run = _run(run)
    bank = run.bank()
    start = time.perf_counter()
    def resolve(p: str) -> str:
        # Member images are recorded as discovery was given them: run-relative, absolute, or
        # relative to the working directory discovery ran in (kept when the run-relative one is absent).
        q = run.resolve(p)
        return str(q) if q.exists() else p

    purity = run.purity()   # checked against the bank as it was
    counts = add(bank, adapter, resolve)
    run.save_bank(bank)
    if purity is not None:  # the concepts and their members are unchanged: so is their purity
        run.write_purity(purity)
    return {**counts, "seconds": round(time.perf_counter() - start, 2)}


def _fill_cache(run: Run, adapter: ClassifierAdapter, executor: Executor | None, segmentation: Any,
                batch_size: int | None, items: list[Any]) -> dict[str, Any] | None:
    """Have ``executor`` compute the patch-cache entries of ``items`` (None: none given, or the local one,
    which leaves featurising to the stage itself)."""
    if executor is None or executor.name == "local":
        return None
    return executor.fill_patch_cache(run.model_spec().to_dict(), segmentation, batch_size, items,
                                     run.patch_cache_dir, adapter.model_id)


@_writes_run()
def build_graphs(run: Run | str | os.PathLike, adapter: ClassifierAdapter, images: ImageSet,
                 config: MatchConfig | None = None, *, show_progress: bool | None = None,
                 executor: Executor | None = None) -> GraphDataset:
    """Graphs of every image in ``images`` (labels kept for reporting only), saved in ``RUN/graphs/``.

    An ``executor`` featurises the images first (as in :func:`discover`); matching and the
    teacher's logits then run here.
    """
    from .graphs.builder import SCGBuilder

    run = _run(run)
    bank = run.bank()
    _fill_cache(run, adapter, executor, bank.config.segmentation, bank.config.batch_size,
                [p for c in images.classes for p in images.paths[c]])
    builder = SCGBuilder(adapter, bank, config, cache_dir=run.patch_cache_dir, show_progress=show_progress)
    paths, labels = [], []
    for cls in images.classes:
        for p in images.paths[cls]:
            paths.append(p)
            labels.append(bank.class_names.index(cls) if cls in bank.class_names else -1)
    dataset, matches = builder.transform(paths, labels, return_matches=True)
    run.save_graphs(dataset, matches)
    figures = localization_figures(run, bank, dataset, images)
    if figures is not None:
        run.write_localization(figures)
    return dataset


def localization_figures(run: Run, bank: ConceptBank, dataset: GraphDataset,
                         images: ImageSet) -> dict[str, Any] | None:
    """Localisation of the run's part-named concepts on ``dataset``'s held-out images, or None
    when the images have no part maps or the run no purity (see :mod:`vrx.metrics.localization`)."""
    from .data.images import part_map_reader
    from .metrics.localization import localization

    parts, purity = part_map_reader(images), run.bank_purity(bank)
    if parts is None or purity is None:
        return None
    concept_parts = {(cls, r["rank"]): (r["part"], r["purity"])
                     for cls, rows in purity["classes"].items() for r in rows}
    discovered = bank.stats.get("discovery_images")
    held_out = None if discovered is None else (
        set(dataset.image_ids) - {i for ids in discovered.values() for i in ids})
    return localization(dataset.graphs.present.numpy(), dataset.graphs.pos.numpy(), dataset.image_ids,
                        dataset.labels, dataset.class_names, concept_parts, parts, parts.part_names, held_out)


@_writes_run()
def train_grn(run: Run | str | os.PathLike, config: GRNConfig | None = None,
              distill: DistillConfig | None = None, *, ablations: bool = True,
              split: Split | None = None, show_progress: bool | None = None) -> dict[str, Any]:
    """Distil the classifier into a GRN from the run's graphs; write ``RUN/grn/``; return the metrics."""
    from .grn.fidelity import fit_and_evaluate

    run = _run(run)
    dataset = run.graphs()
    log.info("training GRN on %d images, classes %s", len(dataset), dataset.class_names)
    distiller, metrics = fit_and_evaluate(dataset, config, distill, ablations=ablations, split=split,
                                          show_progress=show_progress)
    metrics["own_concepts_positive"] = _own_concepts_positive(distiller, dataset)
    run.save_grn(distiller, metrics)
    return metrics


def _own_concepts_positive(distiller: Any, dataset: Any) -> float | None:
    """On held-out images the classifier gets right, the share where the class's own concepts sum positive."""
    import torch

    from .interpret.contributions import own_concepts_positive

    test = dataset.subset(distiller.split_.test)
    labels = torch.tensor(test.labels, dtype=torch.long)
    right = (test.teacher.logits.argmax(-1) == labels).nonzero().flatten()
    if len(right) == 0:
        return None
    return own_concepts_positive(distiller.model_, test.graphs[right], labels[right].tolist())


def explain(run: Run | str | os.PathLike, images: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
            **options: Any) -> list[Path]:
    """Explain image files with a finished run: ``<name>.json`` and ``<name>.png`` per image."""
    from .explain import explain_images

    return explain_images(_run(run), images, out_dir, **options)


def report(run: Run | str | os.PathLike, **options: Any) -> Path:
    """Write the run's self-contained HTML report; returns its path."""
    from .report import write_report

    return write_report(_run(run), **options)
