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
    RUN/.vrx.lock                 held while a command writes the run (:meth:`Run.lock`)
    RUN/experiments/<name>.json   an experiment's result (consistency, diagnosis)

:class:`Run` is the only place that spells these paths. It reads and writes each artifact through
the artifact's own typed reader and turns a missing one into an ArtifactError that names the file
and the command that makes it. Heavy modules (torch, the extractor) are imported only when an
artifact is read.

Provenance: the graphs record the content hash of the bank they were built from, the GRN those of
the bank and the graphs it was trained on (``made_from``); every reader checks the chain, so a
``grn/`` copied from another run, or graphs rebuilt without retraining, is an ArtifactError that
says what to rerun, never a silent explanation by the wrong network. Paths inside the run folder
are stored relative to it, paths outside it absolute, so a run reads the same from any directory.
A ``python:`` model spec in ``run.json`` runs code, so :meth:`Run.adapter` refuses it unless the
caller passes the spec itself (``--model``) or trusts the run (``--trust-run``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Config, check
from .errors import ArtifactError, ConfigError, ModelSpecError, RunBusyError

if TYPE_CHECKING:
    from .concepts.bank import ConceptBank
    from .graphs.builder import MatchConfig, Matches
    from .graphs.dataset import GraphDataset
    from .grn.distill import Distiller, Split
    from .grn.model import GRN
    from .models.adapter import ClassifierAdapter

log = logging.getLogger(__name__)

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
    memory_budget: str | None = None   # batches sized to this when batch_size is None (vrx.models.batching)

    def validate(self) -> None:
        check((isinstance(self.model, str) and bool(self.model), "model: a model spec is required"))

    def load(self) -> ClassifierAdapter:
        """The ClassifierAdapter this spec describes."""
        from .models import load

        return load(self.model, bottleneck=self.bottleneck, input_size=self.input_size, mean=self.mean,
                    std=self.std, class_names=self.labels, batch_size=self.batch_size, device=self.device,
                    memory_budget=self.memory_budget)


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
    """A run folder: its layout, and typed access to every artifact in it.

    ``model`` replaces the model spec of ``run.json`` (its other options are kept); ``trust_code``
    lets :meth:`adapter` load a ``python:`` spec that ``run.json`` names (that spec runs code).
    """

    def __init__(self, path: str | os.PathLike, *, model: str | None = None, trust_code: bool = False):
        self.path = Path(path)
        self.model = model
        self.trust_code = trust_code
        self._hashes: dict[tuple[Any, ...], str] = {}
        self._unchecked: set[Path] = set()

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
    lock_path = _Entry(".vrx.lock", doc="Held while a command writes the run.")

    def gallery_path(self, class_name: str) -> Path:
        """The gallery figure of one class's concepts."""
        return self.concepts_dir / class_name / "gallery.png"

    def experiment_dir(self, name: str) -> Path:
        """The folder an experiment writes its records into."""
        return self.path / "experiments" / name

    def experiment_result_path(self, name: str) -> Path:
        """``RUN/experiments/<name>.json``: an experiment's result (``vrx consistency``, ``vrx diagnose``)."""
        return self.path / "experiments" / f"{name}.json"

    # ------------------------------------------------------------------ paths and the lock
    def stored_path(self, path: str | os.PathLike) -> str:
        """``path`` as the run records it: relative to the run folder when inside it, else absolute."""
        target, root = Path(os.path.abspath(path)), Path(os.path.abspath(self.path))
        try:
            return target.relative_to(root).as_posix()
        except ValueError:
            return str(target)

    def resolve(self, stored: str | os.PathLike) -> Path:
        """A path recorded by :meth:`stored_path`, usable from any working directory."""
        p = Path(stored)
        return p if p.is_absolute() else self.path / p

    @contextmanager
    def lock(self, *, create: bool = False, timeout: float = 0) -> Iterator[Run]:
        """Hold the run's lock while writing it; RunBusyError when another process holds it.

        Re-entrant within one process (stages nest inside a command's lock). ``create`` makes the
        run folder when it does not exist (``vrx discover``); otherwise a missing folder is left
        missing (a mistyped ``--run`` leaves no empty folder behind) and the stage's first read
        says which artifact is not there.
        """
        from filelock import FileLock, Timeout

        if self.path.exists() and not self.path.is_dir():
            raise ArtifactError(f"{self.path}: is a file, not a run folder")
        if not self.path.exists():
            if not create:
                yield self
                return
            self.path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.lock_path.absolute()), is_singleton=True)
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise RunBusyError(f"{self.path}: another vrx command is writing this run folder (it holds "
                               f"{self.lock_path}); wait for it to finish, then try again") from None
        try:
            yield self
        finally:
            lock.release()

    # ------------------------------------------------------------------ manifest and classifier
    def manifest(self) -> Manifest:
        """``run.json``; ArtifactError when it is missing or malformed."""
        from .store import read_json

        if not self.manifest_path.exists():
            raise ArtifactError(f"{self.manifest_path}: missing; run `vrx discover --out {self.path}` first")
        data = read_json(self.manifest_path)
        # Without its model spec a manifest would silently load the default classifier instead.
        if not (isinstance(data, dict) and isinstance(data.get("model"), dict)
                and isinstance(data["model"].get("model"), str)):
            raise ArtifactError(f"{self.manifest_path}: no model spec ('model': {{'model': SPEC, ...}}); "
                                f"run `vrx discover --out {self.path}` again, or restore run.json")
        try:
            return Manifest.from_dict(data)
        except ConfigError as exc:
            raise ArtifactError(f"{self.manifest_path}: {exc}") from None

    def write_manifest(self, model: ModelSpec, images: str | os.PathLike | None = None) -> Manifest:
        """Record how the classifier is loaded, so that every later stage loads the same one."""
        from .store import write_json

        manifest = Manifest(model=self._stored_spec(model),
                            images=None if images is None else self.stored_path(images))
        write_json(self.manifest_path, manifest.to_dict())
        return manifest

    def model_spec(self) -> ModelSpec:
        """The model spec :meth:`adapter` loads: ``run.json``'s, with ``self.model`` in its place if set.

        ModelSpecError for a ``python:`` spec taken from ``run.json`` alone: opening a run folder
        must not run the code it names (pass it as ``model`` or set ``trust_code``).
        """
        spec = self.manifest().model
        if self.model is not None:
            return dataclasses.replace(spec, model=self.model)
        if spec.model.startswith("python:") and not self.trust_code:
            raise ModelSpecError(f"{self.manifest_path}: the model spec {spec.model!r} runs Python code, and "
                                 "a run folder never runs code by itself; pass --model "
                                 f"{spec.model} to load it on purpose, or --trust-run if you trust this "
                                 "run folder")
        return self._loaded_spec(spec)

    def adapter(self) -> ClassifierAdapter:
        """The run's classifier, loaded as ``run.json`` says (see :meth:`model_spec`)."""
        return self.model_spec().load()

    def _stored_spec(self, spec: ModelSpec) -> ModelSpec:
        """``spec`` with its file paths (toy:DIR, python:FILE.py, labels) as the run records them."""
        return self._map_spec_paths(spec, self.stored_path)

    def _loaded_spec(self, spec: ModelSpec) -> ModelSpec:
        # A relative path of an older run.json was relative to the working directory: kept when the
        # run-relative reading does not exist.
        def resolve(p: str) -> str:
            q = self.resolve(p)
            return str(q) if q.exists() else p
        return self._map_spec_paths(spec, resolve)

    @staticmethod
    def _map_spec_paths(spec: ModelSpec, fn: Any) -> ModelSpec:
        model = spec.model
        for prefix in ("toy:", "lite0-toy:"):  # specs that name a model folder
            if model.startswith(prefix):
                model = prefix + fn(model[len(prefix):])
        if model.startswith("python:") and ".py:" in model:
            file, func = model[len("python:"):].rsplit(":", 1)
            model = f"python:{fn(file)}:{func}"
        labels = None if spec.labels is None else fn(spec.labels)
        return dataclasses.replace(spec, model=model, labels=labels)

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

    # ------------------------------------------------------------------ provenance
    def bank_hash(self) -> str | None:
        """The content hash of the run's concept bank (None when there is none)."""
        from .concepts.bank import bank_fingerprint

        return self._hash("bank", self.concepts_dir, ("bank.json", "bank.safetensors"), bank_fingerprint)

    def graphs_hash(self) -> str | None:
        """The content hash of the run's graphs (None when there are none)."""
        from .graphs.dataset import GRAPHS_META, GRAPHS_TENSORS, graphs_fingerprint

        return self._hash("graphs", self.graphs_dir, (GRAPHS_META, GRAPHS_TENSORS), graphs_fingerprint)

    def _hash(self, what: str, folder: Path, files: tuple[str, ...], fingerprint: Any) -> str | None:
        if not (folder / files[0]).exists():
            return None
        # Hashed again only when a file changed (every write replaces the file: a new inode).
        stamp = [what]
        for name in files:
            try:
                st = (folder / name).stat()
                stamp.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                stamp.append(None)
        key = tuple(stamp)
        if key not in self._hashes:
            self._hashes[key] = fingerprint(folder)
        return self._hashes[key]

    def _made_from(self, meta_path: Path, meta: Any) -> dict[str, Any] | None:
        """The ``made_from`` record of an artifact's metadata; None (with one warning) when it has none."""
        made = meta.get("made_from") if isinstance(meta, dict) else None
        if isinstance(made, dict):
            return made
        if meta_path not in self._unchecked:
            self._unchecked.add(meta_path)
            log.warning("%s: records no provenance (made by an older vrx, or edited): cannot check that "
                        "it belongs to this run", meta_path)
        return None

    def check_graphs(self) -> None:
        """ArtifactError unless the graphs were built from the run's current concept bank."""
        from .graphs.dataset import GRAPHS_META

        made = self._made_from(self.graphs_dir / GRAPHS_META, self.graphs_meta())
        if made is not None and self.has_bank() and made.get("bank") != self.bank_hash():
            raise ArtifactError(f"{self.graphs_dir}: the graphs were built from another concept bank than "
                                f"{self.concepts_dir} holds; run `vrx graphs --run {self.path} --images "
                                "IMAGES` again (and then `vrx train`)")

    def check_grn(self, *, graphs: bool = False) -> None:
        """ArtifactError unless the GRN was trained on the run's bank (and, with ``graphs``, its graphs).

        ``graphs`` matters where the GRN's train/val/test split indexes the graphs (report, test
        images); explaining new images needs only the bank.
        """
        from .grn.io import CONFIG_FILE, RETRAIN
        from .store import check_seal, read_json

        self._require_grn()
        meta = read_json(self.grn_dir / CONFIG_FILE)
        if isinstance(meta, dict):
            check_seal(meta, self.grn_dir / CONFIG_FILE, RETRAIN)
        made = self._made_from(self.grn_dir / CONFIG_FILE, meta)
        if made is None:
            return
        if self.has_bank() and made.get("bank") != self.bank_hash():
            raise ArtifactError(f"{self.grn_dir}: the GRN was trained on another concept bank than "
                                f"{self.concepts_dir} holds (copied from another run, discovery ran "
                                f"again, or the bank was edited); run `vrx graphs --run {self.path} --images IMAGES` and "
                                f"`vrx train --run {self.path}` again")
        if graphs and made.get("graphs") != self.graphs_hash():
            raise ArtifactError(f"{self.grn_dir}: the GRN and its train/val/test split were made from other "
                                f"graphs than {self.graphs_dir} holds (the graphs were rebuilt or edited); run "
                                f"`vrx train --run {self.path}` again")

    def purity(self) -> dict[str, Any] | None:
        """``purity.json`` (variant -> per-class rows and summary), or None when the run has none.

        ArtifactError when it was computed for another concept bank than the run's: its part
        names would name other concepts.
        """
        from .store import read_json

        if not self.purity_path.exists():
            return None
        data = read_json(self.purity_path)
        if not isinstance(data, dict):
            raise ArtifactError(f"{self.purity_path}: expected a JSON object")
        data = dict(data)
        made = self._made_from(self.purity_path, {"made_from": data.pop("made_from")} if "made_from" in data else {})
        if made is not None and self.has_bank() and made.get("bank") != self.bank_hash():
            raise ArtifactError(f"{self.purity_path}: computed for another concept bank than "
                                f"{self.concepts_dir} holds; run `vrx discover --out {self.path}` again")
        return data

    def bank_purity(self, bank: ConceptBank) -> dict[str, Any] | None:
        """The purity of ``bank`` itself: the variant (with or without Grad-CAM) it was discovered with."""
        purity = self.purity()
        if not purity:
            return None
        variant = "gradcam" if bank.config.gradcam.enabled else "no_gradcam"
        chosen = purity.get(variant) or next(iter(purity.values()), None)
        if chosen is not None and not (isinstance(chosen, dict) and isinstance(chosen.get("classes"), dict)):
            raise ArtifactError(f"{self.purity_path}: '{variant}' is not a purity record with 'classes'")
        return chosen

    def write_purity(self, purity: dict[str, Any]) -> Path:
        """Write ``purity.json`` with the bank it was computed for (write the bank first)."""
        from .store import write_json

        return write_json(self.purity_path, {**purity, "made_from": {"bank": self.bank_hash()}})

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
        self.check_graphs()
        dataset = load_graph_dataset(self.graphs_dir, class_names)
        if dataset.image_paths is not None:
            dataset.image_paths = self._image_paths(self.graphs_meta(), dataset.image_paths)
        return dataset

    def _image_paths(self, meta: dict[str, Any], stored: list[str]) -> list[str]:
        """The graphs' image paths resolved: run-relative ones (``image_paths_base: run``) to the run
        folder; those of an older graphs.json as they were written."""
        if meta.get("image_paths_base") != "run":
            return [str(p) for p in stored]
        return [str(self.resolve(p)) for p in stored]

    def save_graphs(self, dataset: GraphDataset, matches: Matches) -> Path:
        """Write the graphs (with the bank they come from, image paths as :meth:`stored_path` writes
        them), then the matches (the stage's completion mark)."""
        from .graphs.dataset import save_graph_dataset

        stored = dataset
        if dataset.image_paths is not None:
            stored = dataclasses.replace(dataset, image_paths=[self.stored_path(p) for p in dataset.image_paths])
        folder = save_graph_dataset(self.graphs_dir, stored, extra={
            "made_from": {"bank": self.bank_hash()}, "image_paths_base": "run"})
        matches.save(self.matches_path)
        return folder

    def write_localization(self, figures: dict[str, Any]) -> Path:
        from .store import write_json

        return write_json(self.localization_path, figures)

    def graphs_meta(self) -> dict[str, Any]:
        """The graphs' JSON metadata (image ids and paths, settings) without loading the tensors."""
        from .graphs.dataset import GRAPHS_META
        from .store import read_json

        from .graphs.dataset import REBUILD
        from .store import check_seal

        meta = read_json(self.graphs_dir / GRAPHS_META)
        if not isinstance(meta, dict):
            raise ArtifactError(f"{self.graphs_dir / GRAPHS_META}: expected a JSON object")
        check_seal(meta, self.graphs_dir / GRAPHS_META, REBUILD)
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
        self.check_grn()
        return load_grn(self.grn_dir)

    def bank_and_grn(self) -> tuple[ConceptBank, GRN]:
        """The bank and the GRN, checked to be trained on that bank and for the same classes."""
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

        write_json(self.grn_metrics_path, metrics)
        made_from = {"bank": self.bank_hash(), "graphs": self.graphs_hash()}
        distiller.save(self.grn_dir, extra={"made_from": made_from, "metrics_hash": self._metrics_hash()})
        return self.grn_dir

    def grn_metrics(self) -> dict[str, Any] | None:
        """``grn/metrics.json`` (fidelity and ablations), or None before ``vrx train``."""
        from .grn.io import CONFIG_FILE
        from .store import read_json

        if not self.has_grn():
            return read_json(self.grn_metrics_path) if self.grn_metrics_path.exists() else None
        self.check_grn(graphs=True)
        if not self.grn_metrics_path.exists():
            log.warning("%s: missing, so there is no fidelity table; run `vrx train --run %s` again",
                        self.grn_metrics_path, self.path)
            return None
        recorded = read_json(self.grn_dir / CONFIG_FILE).get("metrics_hash")
        if recorded is not None and recorded != self._metrics_hash():
            raise ArtifactError(f"{self.grn_metrics_path}: does not match the GRN in {self.grn_dir} (edited, "
                                f"or from another training); run `vrx train --run {self.path}` again")
        metrics = read_json(self.grn_metrics_path)
        if not isinstance(metrics, dict):
            raise ArtifactError(f"{self.grn_metrics_path}: expected a JSON object")
        return metrics

    def _metrics_hash(self) -> str:
        from .store import content_hash

        return content_hash(self.grn_metrics_path.read_bytes())

    def split(self) -> Split | None:
        """The train / validation / test image indices the GRN was trained with (None if not recorded)."""
        from .grn.distill import Split
        from .grn.io import CONFIG_FILE
        from .store import read_json

        self.check_grn(graphs=True)
        meta = read_json(self.grn_dir / CONFIG_FILE)
        data = meta.get("split") if isinstance(meta, dict) else None
        if not isinstance(data, dict):
            return None
        try:
            split = Split.from_dict(data)
        except ConfigError:
            raise ArtifactError(f"{self.grn_dir / CONFIG_FILE}: 'split' is not a train/val/test "
                                "object of image indices") from None
        n = len(self.graphs_meta().get("image_ids") or [])
        try:
            split.check(n)
        except ConfigError as exc:
            raise ArtifactError(f"{self.grn_dir / CONFIG_FILE}: {exc} of {self.graphs_dir}; run "
                                f"`vrx train --run {self.path}` again") from None
        return split

    def graph_images(self) -> list[str]:
        """The image of each graph, in graph order: its path resolved from any working directory
        (its id where the graphs recorded no paths)."""
        meta = self.graphs_meta()
        if meta.get("image_paths"):
            return self._image_paths(meta, meta["image_paths"])
        return [str(i) for i in meta.get("image_ids") or []]

    def test_images(self) -> list[Path]:
        """The images of the GRN's test split, as the graphs recorded them."""
        from .grn.io import CONFIG_FILE

        split = self.split()
        if split is None:
            raise ArtifactError(f"{self.grn_dir / CONFIG_FILE}: no train/val/test split recorded")
        ids = self.graph_images()
        try:
            return [Path(ids[int(i)]) for i in split.test]
        except IndexError:
            raise ArtifactError(f"{self.grn_dir / CONFIG_FILE}: test indices do not fit the "
                                f"{len(ids)} images of {self.graphs_dir}") from None

    def _require_grn(self) -> None:
        if not self.has_grn():
            raise ArtifactError(f"{self.grn_dir}: no trained GRN in this run; run "
                                f"`vrx train --run {self.path}` first")
