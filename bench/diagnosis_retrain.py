"""Diagnosis and guided retraining (paper section 4.4, Table 2) on toyworld's two planted biases.

For each seed and scenario (``vrx.experiments.bias``):

1. the scenario's CNN and VRX run: the demo's pipeline (same CNN recipe, same discovery, graphs and
   GRN) on the scenario's training distribution; for ``concept`` that distribution is toyworld's
   own, so an existing ``vrx demo`` folder of the same seed is reused when ``--demo-runs`` names it;
2. ``vrx diagnose`` on the scenario's test set (150 images per class), with the planted type;
3. retraining, the same recipe and seed, test accuracy on that test set: the original; setting 1,
   450 images of the diagnosed class as its recommendation says (``poses``: 150 per pose;
   ``without``: without the named part); setting 2, 450 of that class as in training; and the other
   scenario's recommendation as a mismatched control (``poses`` for concept, ``without`` the class's
   own signature part for structure); and, for reference, the remedy of the planted cause whatever
   VRX says (``oracle``: every pose for structure, fire engines without their ladder for concept).

``--settings`` runs only some of the rows; finished stages of a scenario's run are reused.

Writes ``OUT/diagnosis.json`` and ``OUT/diagnosis.md`` (per seed, and mean ± std over seeds) and
prints its own run time.

    OMP_NUM_THREADS=1 python bench/diagnosis_retrain.py --out runs/diag --seeds 0 1 2 --demo-runs runs/s{seed}
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vrx.data.toyworld.dataset import list_images
from vrx.demo import DemoConfig, Pipeline
from vrx.experiments.bias import ADDITIONS, CONCEPT_PART, PLANTED, SCENARIOS, added_scenes, scenario_scenes, write_scenes
from vrx.experiments.diagnose import diagnose
from vrx.experiments.planted import signature_types
from vrx.models import load
from vrx.models.toytrain import DEFAULT_THREADS, train_toy
from vrx.run import Run
from vrx.runtime import threads

N_TEST, N_ADDED = 150, 450
SETTINGS = ("setting1", "setting2", "mismatched", "oracle")


class ScenarioPipeline(Pipeline):
    """The demo's stages with the scenario's training and VRX images instead of toyworld's own."""

    scenario: str = "structure"

    def render(self) -> None:
        c = self.config

        def fresh(folder: Path, split: str, n: int, n_random: int) -> None:
            shutil.rmtree(folder, ignore_errors=True)
            write_scenes(folder, scenario_scenes(self.scenario, split, n, c.seed, c.classes), c.classes,
                         n_random=n_random, seed=c.seed, extra={"scenario": self.scenario, "split": split})

        self.stage("render_train", lambda: (self.train_data / "toyworld.json").exists(),
                   lambda: fresh(self.train_data, "train", c.n_train_per_class, 0), {"scenario": self.scenario})
        self.stage("render_images", lambda: (self.images / "toyworld.json").exists(),
                   lambda: fresh(self.images, "vrx", c.n_images_per_class, c.n_random), {"scenario": self.scenario})


def build(scenario: str, seed: int, out: Path, demo: Path | None) -> tuple[Path, Path, Path]:
    """(run folder, model folder, training folder) of a scenario's CNN and VRX run."""
    if scenario == "concept" and demo is not None and (demo / "run" / "grn").is_dir():
        return demo / "run", demo / "model", demo / "data" / "train"
    p = ScenarioPipeline(out, DemoConfig(seed=seed))
    p.scenario = scenario
    p.render()
    p.train_cnn()
    p.discover()
    p.graphs()
    p.train_grn()
    return p.run.path, p.model_dir, p.train_data


def accuracy(model_dir: Path, test: Path) -> float:
    adapter = load(f"toy:{model_dir}")
    classes, items = list_images(test)
    from vrx.data.images import load_image

    ids = [adapter.class_id(c) for c in classes]
    right = 0
    for s in range(0, len(items), 64):
        chunk = items[s:s + 64]
        with torch.no_grad():
            lg = adapter.logits([load_image(p) for p, _ in chunk])[:, ids]
        right += int((lg.argmax(1).numpy() == np.array([k for _, k in chunk])).sum())
    return right / len(items)


def retrain(train: Path, extra: list, out: Path, seed: int, classes: list[str]) -> Path:
    """Train the toy CNN on ``train`` plus the ``extra`` scenes (links to the original files)."""
    data = out / "data"
    shutil.rmtree(data, ignore_errors=True)
    for cls in classes:
        (data / cls).mkdir(parents=True)
        for f in (train / cls).iterdir():
            (data / cls / f.name).symlink_to(f.resolve())
    write_scenes(data, extra, classes, seed=seed)      # adds the scenes and writes the manifest
    with threads(torch_threads=DEFAULT_THREADS):
        train_toy(data, out / "model", seed=seed, progress=False)
    return out / "model"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/diag"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    ap.add_argument("--demo-runs", help="demo folders to reuse for the concept scenario, e.g. runs/s{seed}")
    ap.add_argument("--no-retrain", action="store_true")
    ap.add_argument("--reuse-diagnosis", action="store_true",
                    help="read RUN/experiments/diagnosis.json when it was made on the same test folder")
    ap.add_argument("--result", default="diagnosis", help="name of the result files OUT/NAME.json, OUT/NAME.md")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS,
                    help="retraining rows to run (oracle: the remedy of the planted cause, whatever VRX says)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    classes = list(DemoConfig().classes)
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        for scenario in args.scenarios:
            ts = time.perf_counter()
            base = args.out / f"{scenario}-s{seed}"
            demo = Path(args.demo_runs.format(seed=seed)) if args.demo_runs else None
            run, model, train = build(scenario, seed, base, demo)
            test = base / "test"
            if not (test / "toyworld.json").exists():
                write_scenes(test, scenario_scenes(scenario, "test", N_TEST, seed, classes), classes, seed=seed)
            done = Run(run).experiment_result_path("diagnosis")
            if args.reuse_diagnosis and done.exists() and json.loads(done.read_text())["images"] == str(test):
                diag = json.loads(done.read_text())
            else:
                with threads(torch_threads=1):
                    diag = diagnose(run, test, planted_type=PLANTED[scenario])
            rec = diag["recommendations"][0] if diag["recommendations"] else None
            row = {"seed": seed, "scenario": scenario, "run": str(run), "n_errors": diag["n_errors"],
                   "type_agreement": diag["type_agreement"], "recommendation": rec and rec["text"],
                   "diagnosed_class": rec and rec["class"], "addition": rec and rec["addition"],
                   "part": rec and rec["part"], "accuracy": {"original": accuracy(model, test)}}
            if rec is not None and not args.no_retrain:
                cls = rec["class"]
                own_part = signature_types(cls, classes)[0]
                plans = {"setting1": (rec["addition"], rec["part"]), "setting2": ("same", None),
                         "mismatched": ("without", own_part) if scenario == "structure" else ("poses", None),
                         "oracle": ("poses", None) if scenario == "structure" else ("without", CONCEPT_PART)}
                for name, (addition, part) in plans.items():
                    if name not in args.settings:
                        continue
                    assert addition in ADDITIONS
                    extra = added_scenes(scenario, cls, addition, N_ADDED, seed, part=part)
                    m = retrain(train, extra, base / "retrain" / name, seed, classes)
                    row["accuracy"][name] = accuracy(m, test)
                    row.setdefault("plans", {})[name] = {"addition": addition, "part": part}
            row["seconds"] = round(time.perf_counter() - ts, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for scenario in args.scenarios:
        rs = [r for r in rows if r["scenario"] == scenario]
        agg = {"type_agreement": [r["type_agreement"] for r in rs if r["type_agreement"] is not None]}
        for key in ("original", *SETTINGS):
            agg[key] = [r["accuracy"][key] for r in rs if key in r["accuracy"]]
        summary[scenario] = {k: {"mean": statistics.mean(v), "std": statistics.pstdev(v), "n": len(v)}
                             for k, v in agg.items() if v}
    seconds = round(time.perf_counter() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.result}.json").write_text(json.dumps({"rows": rows, "summary": summary, "seconds": seconds}, indent=1))
    lines = ["| scenario | VRX type = planted | original | setting 1 (recommended) | setting 2 (same kind) | mismatched "
             "| oracle (planted remedy) |", "|---|---|---|---|---|---|---|"]
    for scenario, s in summary.items():
        cell = lambda k: f"{s[k]['mean']:.3f} ± {s[k]['std']:.3f}" if k in s else "–"  # noqa: E731
        lines.append(f"| {scenario} | {cell('type_agreement')} | {cell('original')} | {cell('setting1')} | "
                     f"{cell('setting2')} | {cell('mismatched')} | {cell('oracle')} |")
    (args.out / f"{args.result}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"total {seconds} s")


if __name__ == "__main__":
    main()
