"""The run folder and its one owner, :class:`Run`.

A run folder holds everything one explained classifier produces::

    RUN/run.json                  the manifest: how to load the classifier, where the images were
    RUN/concepts/                 the concept bank (bank.json + bank.safetensors), summary.json,
                                  purity.json (toyworld), <class>/gallery.png
    RUN/cache/patches/            patch features, reused by every later stage
    RUN/graphs/                   graphs.json + graphs.safetensors (SCGs, teacher logits), matches
    RUN/grn/                      the distilled GRN: model.safetensors, config.json, metrics.json
    RUN/report.html               the HTML report
    RUN/experiments/<name>/       what an experiment writes
    RUN/experiments/<name>.json   an experiment's result (consistency, diagnosis)

:class:`Run` is the only place that spells these paths. It reads and writes each artifact through
the artifact's own typed reader and turns a missing one into an ArtifactError that names the file
and the command that makes it. Heavy modules (torch, the extractor) are imported only when an
artifact is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Config, check
from .errors import ArtifactError

if TYPE_CHECKING:
    from .concepts.bank import ConceptBank
    from .graphs.builder import MatchConfig, Matches
    from .graphs.dataset import GraphDataset
    from .grn.distill import Distiller, Split
    from .grn.model import GRN
    from .models.adapter import ClassifierAdapter

#: Version of ``run.json``; raise it when a key changes meaning or disappears.
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class ModelSpec(Config):
    """How to load a classifier: a ``--model`` spec and the options a ``python:`` spec needs."""

    model: str = "efficientnet-lite0"
    bottleneck: str | None = None
    input_size: tuple[int, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    labels: str | None = None
    batch_size: int | None = None
    device: str | None = None

    def validate(self) -> None:
        check((isinstance(self.model, str) and bool(self.model), "model: a model spec is required"))

    def load(self) -> ClassifierAdapter:
        """The ClassifierAdapter this spec describes."""
        from .models import load

        return load(self.model, bottleneck=self.bottleneck, input_size=self.input_size, mean=self.mean,
                    std=self.std, class_names=self.labels, batch_size=self.batch_size, device=self.device)


@dataclass(frozen=True)
class Manifest(Config):
    """``RUN/run.json``: the classifier of the run and the image folder it was discovered on."""

    model: ModelSpec = field(default_factory=ModelSpec)
    images: str | None = None
    format_version: int = MANIFEST_VERSION

    def validate(self) -> None:
        check((self.format_version == MANIFEST_VERSION,
               f"format_version {self.format_version!r}, this vrx reads {MANIFEST_VERSION}"))


class _Entry:
    """A fixed path inside the run folder, read as an attribute: ``Run(p).graphs_dir == p / "graphs"``."""

    def __init__(self, *parts: str, doc: str | None = None):
        self.parts = parts
        self.__doc__ = doc or "RUN/" + "/".join(parts)

    def __get__(self, run: Run | None, owner: type | None = None) -> Any:
        return self if run is None else run.path.joinpath(*self.parts)


class Run:
    """A run folder: its layout, and typed access to every artifact in it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------ layout
    manifest_path = _Entry("run.json")
    concepts_dir = _Entry("concepts", doc="The concept bank's folder.")
    purity_path = _Entry("concepts", "purity.json", doc="Concept purity against ground-truth parts (toyworld).")
    concepts_summary_path = _Entry("concepts", "summary.json")
    patch_cache_dir = _Entry("cache", "patches", doc="Patch features shared by discovery, graphs and explaining.")
    graphs_dir = _Entry("graphs")
    matches_path = _Entry("graphs", "matches.safetensors", doc="Where each graph node was found.")
    localization_path = _Entry("graphs", "localization.json", doc="Whether nodes sit on their parts (toyworld).")
    grn_dir = _Entry("grn")
    grn_metrics_path = _Entry("grn", "metrics.json")
    report_path = _Entry("report.html")

    def gallery_path(self, class_name: str) -> Path:
        """The gallery figure of one class's concepts."""
        return self.concepts_dir / class_name / "gallery.png"

    def experiment_dir(self, name: str) -> Path:
        """The folder an experiment writes its records into."""
        return self.path / "experiments" / name

    def experiment_result_path(self, name: str) -> Path:
        """``RUN/experiments/<name>.json``: an experiment's result (``vrx consistency``, ``vrx diagnose``)."""
        return self.path / "experiments" / f"{name}.json"

    # ------------------------------------------------------------------ manifest and classifier
    def manifest(self) -> Manifest:
        """``run.json``; ArtifactError when it is missing or malformed."""
        from .errors import ConfigError
        from .store import read_json

        if not self.manifest_path.exists():
            raise ArtifactError(f"{self.manifest_path}: missing; run `vrx discover --out {self.path}` first")
        try:
            return Manifest.from_dict(read_json(self.manifest_path))
        except ConfigError as exc:
            raise ArtifactError(f"{self.manifest_path}: {exc}") from None

    def write_manifest(self, model: ModelSpec, images: str | os.PathLike | None = None) -> Manifest:
        """Record how the classifier is loaded, so that every later stage loads the same one."""
        from .store import write_json

        manifest = Manifest(model=model, images=None if images is None else str(images))
        write_json(self.manifest_path, manifest.to_dict())
        return manifest

    def adapter(self) -> ClassifierAdapter:
        """The run's classifier, loaded as ``run.json`` says."""
        return self.manifest().model.load()

    # ------------------------------------------------------------------ concepts
    def has_bank(self) -> bool:
        return (self.concepts_dir / "bank.json").exists()

    def bank(self) -> ConceptBank:
        """The concept bank; ArtifactError saying to run ``vrx discover`` when there is none."""
        from .concepts.bank import ConceptBank

        if not self.has_bank():
            raise ArtifactError(f"{self.concepts_dir / 'bank.json'}: missing; run "
                                f"`vrx discover --out {self.path}` first")
        return ConceptBank.load(self.concepts_dir)

    def save_bank(self, bank: ConceptBank) -> Path:
        return bank.save(self.concepts_dir)

    def purity(self) -> dict[str, Any] | None:
        """``purity.json`` (variant -> per-class rows and summary), or None when the run has none."""
        from .store import read_json

        return read_json(self.purity_path) if self.purity_path.exists() else None

    def bank_purity(self, bank: ConceptBank) -> dict[str, Any] | None:
        """The purity of ``bank`` itself: the variant (with or without Grad-CAM) it was discovered with."""
        purity = self.purity()
        if not purity:
            return None
        variant = "gradcam" if bank.config.gradcam.enabled else "no_gradcam"
        chosen = purity.get(variant) or next(iter(purity.values()), None)
        return chosen if isinstance(chosen, dict) else None

    def write_purity(self, purity: dict[str, Any]) -> Path:
        from .store import write_json

        return write_json(self.purity_path, purity)

    def write_concepts_summary(self, summary: dict[str, Any]) -> Path:
        from .store import write_json

        return write_json(self.concepts_summary_path, summary)

    # ------------------------------------------------------------------ graphs
    def has_graphs(self) -> bool:
        from .graphs.dataset import GRAPHS_META

        return (self.graphs_dir / GRAPHS_META).exists()

    def graphs(self, class_names: list[str] | None = None) -> GraphDataset:
        """The graph dataset; with ``class_names``, its classes must be those."""
        from .graphs.dataset import load_graph_dataset

        if not self.has_graphs():
            raise ArtifactError(f"{self.graphs_dir}: no graphs in this run; run "
                                f"`vrx graphs --run {self.path} --images IMAGES` first")
        return load_graph_dataset(self.graphs_dir, class_names)

    def save_graphs(self, dataset: GraphDataset, matches: Matches) -> Path:
        """Write the graphs, then the matches (the stage's completion mark)."""
        from .graphs.dataset import save_graph_dataset

        folder = save_graph_dataset(self.graphs_dir, dataset)
        matches.save(self.matches_path)
        return folder

    def write_localization(self, figures: dict[str, Any]) -> Path:
        from .store import write_json

        return write_json(self.localization_path, figures)

    def graphs_meta(self) -> dict[str, Any]:
        """The graphs' JSON metadata (image ids and paths, settings) without loading the tensors."""
        from .graphs.dataset import GRAPHS_META
        from .store import read_json

        meta = read_json(self.graphs_dir / GRAPHS_META)
        if not isinstance(meta, dict):
            raise ArtifactError(f"{self.graphs_dir / GRAPHS_META}: expected a JSON object")
        return meta

    def match_config(self) -> MatchConfig:
        """The matching settings the run's graphs were built with (teacher off), to build more alike."""
        from .graphs.builder import match_config_from_meta

        meta = self.graphs_meta() if self.has_graphs() else {}
        return match_config_from_meta(meta)

    # ------------------------------------------------------------------ GRN
    def has_grn(self) -> bool:
        from .grn.io import CONFIG_FILE, MODEL_FILE

        return (self.grn_dir / CONFIG_FILE).exists() and (self.grn_dir / MODEL_FILE).exists()

    def grn(self) -> GRN:
        """The distilled GRN; ArtifactError saying to run ``vrx train`` when there is none."""
        from .grn.io import load_grn

        self._require_grn()
        return load_grn(self.grn_dir)

    def bank_and_grn(self) -> tuple[ConceptBank, GRN]:
        """The bank and the GRN, checked to be for the same classes."""
        self._require_grn()
        bank, grn = self.bank(), self.grn()
        if list(grn.class_names or []) != bank.class_names:
            raise ArtifactError(f"{self.grn_dir}: the GRN was trained on classes {grn.class_names}, the "
                                f"concept bank in {self.concepts_dir} has {bank.class_names}; run "
                                "`vrx graphs` and `vrx train` again")
        return bank, grn

    def save_grn(self, distiller: Distiller, metrics: dict[str, Any]) -> Path:
        """Write the fitted GRN (weights, config, split, history) and its metrics."""
        from .store import write_json

        distiller.save(self.grn_dir)
        write_json(self.grn_metrics_path, metrics)
        return self.grn_dir

    def grn_metrics(self) -> dict[str, Any] | None:
        """``grn/metrics.json`` (fidelity and ablations), or None before ``vrx train``."""
        from .store import read_json

        return read_json(self.grn_metrics_path) if self.grn_metrics_path.exists() else None

    def split(self) -> Split | None:
        """The train / validation / test image indices the GRN was trained with (None if not recorded)."""
        from .grn.distill import Split
        from .grn.io import CONFIG_FILE
        from .store import read_json

        self._require_grn()
        data = read_json(self.grn_dir / CONFIG_FILE).get("split")
        if not isinstance(data, dict):
            return None
        try:
            return Split.from_dict(data)
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(f"{self.grn_dir / CONFIG_FILE}: 'split' is not a train/val/test "
                                "object of image indices") from None

    def test_images(self) -> list[Path]:
        """The images of the GRN's test split, as the graphs recorded them."""
        from .grn.io import CONFIG_FILE

        split = self.split()
        if split is None:
            raise ArtifactError(f"{self.grn_dir / CONFIG_FILE}: no train/val/test split recorded")
        meta = self.graphs_meta()
        ids = meta.get("image_paths") or meta.get("image_ids") or []
        try:
            return [Path(ids[int(i)]) for i in split.test]
        except IndexError:
            raise ArtifactError(f"{self.grn_dir / CONFIG_FILE}: test indices do not fit the "
                                f"{len(ids)} images of {self.graphs_dir}") from None

    def _require_grn(self) -> None:
        if not self.has_grn():
            raise ArtifactError(f"{self.grn_dir}: no trained GRN in this run; run "
                                f"`vrx train --run {self.path}` first")
