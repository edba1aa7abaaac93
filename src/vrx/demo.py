"""``vrx demo``: the whole VRX pipeline on toyworld, stage by stage (through :mod:`vrx.stages`).

Each stage writes its artifact into the output folder and is skipped on a later run when that
artifact exists and was made with the same settings, so a second run reuses what is cached.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import stages
from .config import Config, check
from .run import ModelSpec, Run
from .runtime import DISCOVERY_THREADS, GRN_THREADS, threads
from .store import read_json, write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig(Config):
    """Sizes and seeds of the demo; the defaults finish well inside 15 minutes on 2 cores."""

    seed: int = 0
    classes: tuple[str, ...] = ("fire_engine", "ambulance", "school_bus")
    n_train_per_class: int = 400      # images the toy CNN learns from (as `vrx toyworld render`)
    epochs: int = 12
    n_images_per_class: int = 150     # a separate render for VRX: discovery and graphs
    n_discovery_per_class: int = 50
    n_random: int = 100
    grn_test_fraction: float = 0.35   # of the 450 graph images: >= 150 held out for fidelity
    n_report_samples: int = 6

    def validate(self) -> None:
        check((len(self.classes) >= 2, f"the demo needs at least two classes, got {list(self.classes)}"),
              (min(self.n_train_per_class, self.n_images_per_class, self.n_discovery_per_class) >= 1,
               "image counts must be >= 1"),
              (self.epochs >= 1, "epochs must be >= 1"),
              (0 < self.grn_test_fraction < 1, "grn_test_fraction must be in (0, 1)"))


@dataclass
class Pipeline:
    """Runs the demo stages in order, timing each and skipping those already done."""

    out: Path
    config: DemoConfig = field(default_factory=DemoConfig)
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    ran: bool = False   # a stage has run in this call, so the later ones must run too

    def stage(self, name: str, done: Callable[[], bool], run: Callable[[], Any],
              extra: dict[str, Any] | None = None) -> None:
        """Run ``run`` unless ``done()`` says its artifact is already there, made with the same settings.

        ``extra`` adds the stage's own settings (the discovery configuration, say), so a change of
        those in a newer vrx reruns the stage instead of reusing a stale artifact. Once a stage
        has run, every later one runs too: each reads what the one before wrote.
        """
        key = self.out / ".stages" / f"{name}.json"
        # As stored: tuples become lists.
        settings = json.loads(json.dumps(self.config.to_dict() | ({"stage": extra} if extra else {})))
        if not self.ran and key.exists() and read_json(key).get("settings") == settings and done():
            log.info("[%s] up to date, skipped", name)
            self.skipped.append(name)
            self.seconds[name] = 0.0
            return
        log.info("[%s] ...", name)
        self.ran = True
        t0 = time.perf_counter()
        run()
        self.seconds[name] = round(time.perf_counter() - t0, 2)
        write_json(key, {"settings": settings, "seconds": self.seconds[name]})
        log.info("[%s] done in %.1f s", name, self.seconds[name])

    # ------------------------------------------------------------------ stages
    def render(self) -> None:
        """Render the CNN's training set and the separate image set VRX works on."""
        from .data.toyworld import render_dataset

        c = self.config

        def fresh(folder: Path, n: int, seed: int, n_random: int) -> None:
            shutil.rmtree(folder, ignore_errors=True)  # images of a larger earlier render must not linger
            render_dataset(folder, n, seed, classes=c.classes, n_random=n_random)

        self.stage("render_train", lambda: (self.train_data / "toyworld.json").exists(),
                   lambda: fresh(self.train_data, c.n_train_per_class, c.seed, 0))
        self.stage("render_images", lambda: (self.images / "toyworld.json").exists(),
                   lambda: fresh(self.images, c.n_images_per_class, c.seed + 1, c.n_random))

    def train_cnn(self) -> dict[str, Any]:
        """Train the toy CNN (the classifier VRX explains) and return its metrics."""
        from .models.toytrain import DEFAULT_THREADS, train_toy

        def run() -> None:
            with threads(torch_threads=DEFAULT_THREADS):
                train_toy(self.train_data, self.model_dir, epochs=self.config.epochs, seed=self.config.seed)

        self.stage("train_cnn", lambda: (self.model_dir / "metrics.json").exists(), run)
        return read_json(self.model_dir / "metrics.json")

    def discover(self) -> None:
        """Discover each class's concepts on the first ``n_discovery_per_class`` images."""
        from .concepts.config import ConceptConfig
        from .data.images import load_image_folder

        c = self.config
        config = ConceptConfig.toyworld(c.seed)

        def run() -> None:
            self.run.write_manifest(self.model_spec, self.images.resolve())
            images = load_image_folder(self.images, c.classes, max_images_per_class=c.n_discovery_per_class)
            with threads(**DISCOVERY_THREADS):
                stages.discover(self.run, self.model_spec.load(), images, config)

        self.stage("discover", self.run.has_bank, run, config.to_dict())

    def graphs(self) -> None:
        """Build every class's graph (and teacher logits) for every image of the VRX image set."""
        from .data.images import load_image_folder
        from .graphs.builder import MatchConfig

        match = MatchConfig()
        def run() -> None:
            with threads(**DISCOVERY_THREADS):
                stages.build_graphs(self.run, self.model_spec.load(),
                                    load_image_folder(self.images, self.config.classes), match)

        self.stage("graphs", lambda: self.run.matches_path.exists(), run, match.to_dict())

    def train_grn(self) -> dict[str, Any]:
        """Distil the toy CNN into a GRN (with the ablations) and return its metrics."""
        from .grn.config import DistillConfig

        c = self.config

        def run() -> None:
            with threads(**GRN_THREADS):
                stages.train_grn(self.run, distill=DistillConfig(test_fraction=c.grn_test_fraction, seed=c.seed))

        self.stage("train_grn", self.run.grn_metrics_path.exists, run)
        return self.run.grn_metrics()

    def report(self) -> Path:
        """Write ``RUN/report.html`` (galleries, fidelity, explained samples) and copy it to OUT."""
        target = self.out / "report.html"

        def run() -> None:
            shutil.copyfile(stages.report(self.run, n_samples=self.config.n_report_samples), target)

        self.stage("report", target.exists, run)
        return target

    # ------------------------------------------------------------------ paths
    @property
    def model_spec(self) -> ModelSpec:
        """The trained toy CNN, as the run's manifest records it."""
        return ModelSpec(model=f"toy:{self.model_dir.resolve()}")

    @property
    def train_data(self) -> Path:
        """Images the toy CNN is trained on."""
        return self.out / "data" / "train"

    @property
    def images(self) -> Path:
        """Images VRX discovers concepts in and builds graphs for (never seen by the CNN)."""
        return self.out / "data" / "images"

    @property
    def model_dir(self) -> Path:
        """The trained toy CNN."""
        return self.out / "model"

    @property
    def run(self) -> Run:
        """The VRX run folder (concepts, graphs, GRN, explanations)."""
        return Run(self.out / "run")


def run_demo(out: str | Path, config: DemoConfig | None = None) -> dict[str, Any]:
    """Run every demo stage and write ``OUT/summary.json``; returns the summary."""
    p = Pipeline(Path(out), config or DemoConfig())
    t0 = time.perf_counter()
    p.render()
    metrics = p.train_cnn()
    p.discover()
    p.graphs()
    grn = p.train_grn()
    report = p.report()
    summary = {
        "seed": p.config.seed,
        "cnn_test_accuracy": metrics["test_accuracy"],
        "cnn_val_accuracy": metrics["val_accuracy"],
        "concept_purity": concept_purity_summary(p.run),
        "grn_fidelity_top1": grn["fidelity_top1"],
        "grn_fidelity_l1": grn["fidelity_l1"],
        "grn_masked_fidelity_top1": grn.get("masked_fidelity_top1"),
        "grn_masked_effect_corr": grn.get("masked_effect_corr"),
        "grn_position_permuted_top1": grn.get("position_permuted_top1"),
        "own_concepts_positive": grn.get("own_concepts_positive"),
        "grn_n_test": grn["n_test"],
        "grn_ablations": {name: a["fidelity_top1"] for name, a in grn.get("ablations", {}).items()},
        "report": str(report),
        "seconds": p.seconds | {"total": round(time.perf_counter() - t0, 2)},
        "reused_stages": p.skipped,
        "config": p.config.to_dict(),
    }
    write_json(p.out / "summary.json", summary)
    return summary


def concept_purity_summary(run: Run) -> dict[str, Any]:
    """Per class: each concept's purity and part, and how many reach the 0.7 target."""
    variant = run.bank_purity(run.bank()) if run.purity_path.exists() else None
    if variant is None:
        return {}
    result = {}
    for cls, rows in variant["classes"].items():
        s = variant["summary"][cls]
        result[cls] = {"purity": [None if r["purity"] is None else round(r["purity"], 3) for r in rows],
                       "parts": [r["part"] for r in rows], "n_pure": s["n_pure"],
                       "n_concepts": s["n_concepts"], "part_types": s["part_types"]}
    return result
