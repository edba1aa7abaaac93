"""Logic consistency and correction (paper section 4.2, Table 1), on errors with planted causes.

For every image of a shifted toyworld split (:mod:`vrx.experiments.planted`) that the classifier
gets wrong (true class t, predicted p; none is dropped):

1. build its graphs with the run's bank and explain with the run's GRN; VRX's **account**
   (:func:`vrx.experiments.error_typing.account_error`): the error's type from the margin
   y_p - y_t's node and edge parts, and the culprit;
2. make four pixel edits of the image and ask the classifier again (``corrected`` = it now says t):

   * ``vrx``, guided by the culprit: a concept of t (a flawed one) has its patch filled and the
     concept's best-matching patch from a discovery image of t pasted there (``replace``); a
     concept of another class has its patch filled as in discovery (``fill``); a relation of t's
     graph has its misplaced end (the one farther from where t's images put that concept relative
     to the others) cut out and pasted there (``move``); a relation of another class's graph has the
     end with the larger margin contribution filled;
   * ``random`` (control): the same patch replaced by the pixels under the same mask of a random
     image of the run's folder (``transplant``); for a ``fill``, a region of the same shape on the
     vehicle that VRX does not blame is filled instead;
   * ``good_concept`` (control): the detected concept of t with the largest contribution to y_t
     (other than the culprit) gets the ``replace`` edit;
   * ``gradcam``: the pixels Grad-CAM for p marks most, as many as the VRX edit changed, filled;

3. the culprit is **on the planted cause** when at least ``overlap`` of its patch (of either end for
   a relation) lies in the planted region, or, for a concept that was not found (no patch), when its
   part is the planted part; VRX's type **agrees** when it equals the planted type.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Collection, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..concepts.features import PatchMemo
from ..concepts.inputs import resized_batch
from ..data.images import load_image
from ..data.toyworld.dataset import list_images, load_scene
from ..errors import ArtifactError, EmptyFolderError
from ..graphs.builder import SCGBuilder
from ..interpret.contributions import Interpreter
from ..progress import progress
from ..run import Run
from ..store import read_json
from .consistency_edits import ErrorView, GuidedEdits, vehicle_mask
from .consistency_records import EDITS, ConsistencyConfig, ConsistencyRecord, ConsistencyResult, EditOutcome
from .error_typing import account_error
from .pixel_edits import fill, top_area
from .planted import planted_cause

log = logging.getLogger(__name__)

BATCH = 64


class ConsistencyExperiment(GuidedEdits):
    """Loads a run once (classifier, bank, GRN, reference layout) and accounts for and edits errors."""

    def __init__(self, run: Run | str | os.PathLike, config: ConsistencyConfig | None = None, *,
                 show_progress: bool | None = None):
        self.run_folder = run if isinstance(run, Run) else Run(run)
        self.config = config or ConsistencyConfig()
        self.show_progress = show_progress
        self.bank, self.grn = self.run_folder.bank_and_grn()
        self.class_names = self.bank.class_names
        self.n_concepts = [len(self.bank[c]) for c in self.class_names]
        self.adapter = self.run_folder.adapter()
        self.class_ids = [self.adapter.class_id(c) for c in self.class_names]
        self.interpreter = Interpreter(self.grn, self._concept_names())
        self.edges = list(self.grn.layout.edges) if self.grn.layout.num_edges else []
        self.fill_value = self.adapter.fill_value.numpy().astype(np.float32)
        # No disk cache: shifted and edited images would fill the run's patch cache.
        self.builder = SCGBuilder(self.adapter, self.bank, self.run_folder.match_config(), cache_dir=None,
                                  memo=PatchMemo(4), show_progress=False)

    def _concept_names(self) -> dict[tuple[str, int], str]:
        from ..explain import concept_names_of

        return concept_names_of(self.run_folder, self.bank)

    # ------------------------------------------------------------------ what the run knows
    @cached_property
    def typical_margin(self) -> np.ndarray:
        """[T, P, N] mean margin contribution (to y_p - y_t) of node n of graph t when it is detected,
        over the run's graphs of images of class t; NaN where never detected."""
        ds = self.run_folder.graphs(self.class_names)
        node = self.interpreter.contributions(ds.graphs).node.double().numpy()   # [B, C, K, N]
        present = ds.graphs.present.numpy() > 0
        labels = np.asarray(ds.labels)
        k_, n_ = present.shape[1:3]
        out = np.full((k_, k_, n_), np.nan)
        for t in range(k_):
            for n in range(self.n_concepts[t]):
                rows = np.flatnonzero((labels == t) & present[:, t, n])
                if len(rows):
                    for p in range(k_):
                        out[t, p, n] = float(np.mean(node[rows, p, t, n] - node[rows, t, t, n]))
        return out

    @cached_property
    def random_pool(self) -> list[Path]:
        """The images the run's graphs were built from: where the random control takes its patches."""
        paths = [Path(p) for p in self.run_folder.graph_images() if Path(p).is_file()]
        if not paths:
            raise ArtifactError(f"{self.run_folder.graphs_dir}: no image files recorded with the graphs, so "
                                "the random control has no images to take patches from")
        return paths

    def classify(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """[B, K] classifier logits over the classes of interest."""
        out = []
        for s in range(0, len(images), BATCH):
            with torch.no_grad():
                lg = self.adapter.logits(resized_batch(list(images[s:s + BATCH]), self.adapter.input_size))
            out.append(lg[:, self.class_ids].double().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.class_names)))

    # ------------------------------------------------------------------ one error
    def look(self, image: np.ndarray, p: int, t: int, exclude: Collection[tuple] = ()) -> ErrorView:
        """Graphs, contributions and VRX's account of ``image`` for the error p (predicted) vs t (true)."""
        dataset, matches = self.builder.transform([image], return_matches=True)
        graphs = dataset.graphs
        con = self.interpreter.contributions(graphs)
        node_d = (con.node[0, p] - con.node[0, t]).double().numpy()
        edge_d = (con.edge[0, p] - con.edge[0, t]).double().numpy()
        present = graphs.present[0].numpy() > 0
        look = ErrorView(graphs, matches.patch[0], self.builder.featurizer(image), con.node[0, t, t].double().numpy(),
                     node_d, present, graphs.pos[0].double().numpy(), None, self.config.patch == "box")
        blame = np.full(node_d.shape, np.nan)
        for n in range(self.n_concepts[t]):
            if not present[t, n] and self.expected_position(look, t, n + 1) is not None:
                blame[t, n] = node_d[t, n] - self.typical_margin[t, p, n]
        look.account = account_error(node_d, edge_d, present, self.edges, self.n_concepts, self.class_names,
                                     missing_blame=blame, exclude=exclude, low=self.config.low, high=self.config.high)
        return look

    def measure(self, path: str | os.PathLike, predicted: str | None = None) -> ConsistencyRecord:
        """VRX's account of one misclassified shifted image, and the four edits' outcomes."""
        path = str(path)
        scene = load_scene(Path(path).with_suffix(".json"))
        cause = planted_cause(scene)
        if cause is None:
            raise ArtifactError(f"{path}: its scene has no planted cause (not an image of the shifted split)")
        image = load_image(path)
        t = self.class_names.index(scene.cls)
        if predicted is None:
            predicted = self.class_names[int(self.classify([image])[0].argmax())]
        p = self.class_names.index(predicted)
        look = self.look(image, p, t)
        acc, culprit = look.account, look.account.culprit
        expl = self.interpreter.explain(look.graphs, target=p)[0]
        region = cause.region(image.shape[0])
        ends = [] if culprit is None else [culprit.concept] + ([culprit.target] if culprit.target else [])
        overlap, on_cause = None, False
        if culprit is not None and culprit.kind == "missing":
            # A concept that was not found has no patch: VRX names the concept, so its part must be the
            # planted one (the part taken away, or the part put in its place).
            part = self.interpreter.concept_names.get((culprit.class_graph, culprit.concept))
            on_cause = part is not None and part in {cause.part, cause.detail.get("replaced_by")}
        elif culprit is not None:
            overlap = max(float((m & region).sum() / max(m.sum(), 1)) for m in self._where(look, culprit))
            on_cause = overlap >= self.config.overlap
        edits: dict[str, EditOutcome] = {}

        # VRX-guided: edit the culprit, ask the classifier; while it is still wrong, explain the
        # edited image and edit its culprit, up to max_steps edits in all.
        steps: list[dict[str, Any]] = []
        masks: list[tuple[str, np.ndarray]] = []     # (action, edited patch) per step, for the controls
        current, cur_look, cur_p = image, look, p
        total = np.zeros(image.shape[:2], bool)
        done: set[tuple] = set()
        for step in range(self.config.max_steps):
            c = cur_look.account.culprit
            if c is None:
                steps.append({"action": "none", "reason": "no detected concept in any graph"})
                break
            done.add(c.key)
            k = self.class_names.index(c.class_graph)
            action, n_edit, new, reg, detail = self._guided(current, c, k, t, cur_look, path)
            masks.append((action, reg if action == "paste" else cur_look.mask(k, n_edit)))
            total |= reg
            current = new
            q = int(self.classify([current])[0].argmax())
            steps.append({"culprit": c.to_dict(), "type": cur_look.account.type, "action": action,
                          "concept": f"{c.class_graph}/{n_edit}", "predicted": self.class_names[q]} | detail)
            if q == t or step + 1 == self.config.max_steps:
                break
            cur_p = q
            cur_look = self.look(current, cur_p, t, done)
        n_steps = len(masks)
        if n_steps:
            q = int(self.classify([current])[0].argmax())
            edits["vrx"] = EditOutcome(steps[0]["action"], self.class_names[q], q == t, int(total.sum()),
                                       {"steps": steps})
        else:
            edits["vrx"] = EditOutcome("none", predicted, False, 0, {"steps": steps})
        controls: dict[str, tuple[np.ndarray, np.ndarray, dict[str, Any]] | str] = {}
        controls["random"] = self._random_control(image, masks, vehicle_mask(scene) & ~total, path) \
            if n_steps else "no VRX edit to mirror"
        controls["good_concept"] = self._good_control(image, look, t, culprit, ends, max(n_steps, 1), path)
        if self.config.gradcam:
            if n_steps:
                heat = self._gradcam(image, p)
                new, reg = fill(image, top_area(heat, int(total.sum())), self.fill_value)
                controls["gradcam"] = (new, reg, {"class": predicted, "action": "fill"})
            else:
                controls["gradcam"] = "no VRX edit to take the area from"
        names = [n for n, v in controls.items() if not isinstance(v, str)]
        preds = self.classify([controls[n][0] for n in names]).argmax(1) if names else []
        for name, value in controls.items():
            if isinstance(value, str):
                edits[name] = EditOutcome("none", predicted, False, 0, {"reason": value})
        for name, q in zip(names, preds):
            _, reg, detail = controls[name]
            detail = dict(detail)
            edits[name] = EditOutcome(detail.pop("action"), self.class_names[int(q)], int(q) == t,
                                      int(reg.sum()), detail)
        planted = {"kind": cause.kind, "type": cause.type, "part": cause.part, "detail": cause.detail,
                   "region_pixels": int(region.sum())}
        return ConsistencyRecord(
            image=path, true_class=scene.cls, predicted=predicted, grn_predicted=expl.predicted,
            planted=planted, account=acc.to_dict(), culprit_overlap=overlap,
            culprit_on_cause=bool(on_cause),
            type_agrees=acc.type == cause.type,
            sentences={"why_predicted": expl.why.sentence, "why_not_true": expl.classes[scene.cls].sentence},
            edits={k: edits[k] for k in EDITS if k in edits})

    def run(self, images: str | os.PathLike, *, limit: int | None = None) -> ConsistencyResult:
        """Classify every image of a shifted split folder and account for and edit each error."""
        start = time.perf_counter()
        classes, items = list_images(images)
        unknown = [c for c in classes if c not in self.class_names]
        if unknown:
            raise EmptyFolderError(f"{images}: classes {unknown} are not classes of interest {self.class_names}")
        paths = [p for p, _ in items]
        truth = [self.class_names.index(classes[k]) for _, k in items]
        preds = []
        for s in progress(range(0, len(paths), BATCH), desc="classify shifted split", enabled=self.show_progress):
            preds.append(self.classify([load_image(p) for p in paths[s:s + BATCH]]).argmax(1))
        pred = np.concatenate(preds) if preds else np.zeros(0, int)
        wrong = [i for i in range(len(paths)) if pred[i] != truth[i]]
        if limit is not None:
            wrong = wrong[:limit]
        records = [self.measure(paths[i], self.class_names[int(pred[i])])
                   for i in progress(wrong, desc="consistency", enabled=self.show_progress)]
        return ConsistencyResult(records=records, n_images=len(paths),
                                 accuracy=float(np.mean(pred == np.asarray(truth))) if len(paths) else float("nan"),
                                 test_accuracy=self._test_accuracy(), config=self.config.to_dict(),
                                 run=str(self.run_folder.path), images=str(images),
                                 seconds=time.perf_counter() - start)

    def _test_accuracy(self) -> float | None:
        spec = self.run_folder.manifest().model.model
        if spec.startswith("toy:"):
            metrics = Path(spec[4:]) / "metrics.json"
            if metrics.exists():
                return float(read_json(metrics)["test_accuracy"])
        return None


def shifted_split(run: Run, config: ConsistencyConfig) -> Path:
    """The run's shifted split (``RUN/experiments/consistency/images``), rendered when missing or
    made with other settings; its classes are the run's classes of interest."""
    from .planted import MANIFEST, render_shifted

    folder = run.experiment_dir("consistency") / "images"
    classes = run.bank().class_names
    want = {"classes": classes, "seed": int(config.seed), "n_per_class": int(config.n_per_class)}
    manifest = folder / MANIFEST
    if manifest.exists():
        have = read_json(manifest)
        if {k: have.get(k) for k in want} == want:
            return folder
    import shutil

    shutil.rmtree(folder, ignore_errors=True)   # images of a larger earlier split must not linger
    render_shifted(folder, classes, config.n_per_class, config.seed)
    return folder


def run_consistency(run: Run | str | os.PathLike, images: str | os.PathLike | None = None,
                    config: ConsistencyConfig | None = None, *, limit: int | None = None,
                    show_progress: bool | None = None) -> ConsistencyResult:
    """The whole experiment on a run: render the shifted split unless ``images`` is given, account for
    and edit every error, write ``RUN/experiments/consistency.json``; returns the result."""
    from ..store import write_json

    run = run if isinstance(run, Run) else Run(run)
    config = config or ConsistencyConfig()
    with run.lock():  # it renders into the run folder and writes its result there
        exp = ConsistencyExperiment(run, config, show_progress=show_progress)
        folder = Path(images) if images is not None else shifted_split(run, config)
        result = exp.run(folder, limit=limit)
        write_json(run.experiment_result_path("consistency"), result.to_dict())
    return result
