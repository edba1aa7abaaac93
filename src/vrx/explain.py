"""Explain images with a finished run: per image a JSON record and a PNG figure (``vrx explain``).

A :class:`RunExplainer` loads what a run folder (a :class:`~vrx.run.Run`) holds once (classifier,
concept bank, GRN, concept names) and turns images, or graphs already built, into
:class:`ImageExplanation` records: the classifier's and the GRN's predictions, and per class of
interest its score, the contributions of its own concepts and relations, and the why / why-not
sentence. The HTML report reuses it.

Padding: a class with fewer concepts than the bank's N still has N nodes in its graph (dummies,
see ``vrx.graphs.scg``). Those slots are no concepts, so they are left out of the nodes, edges,
sentences and figure; the constant they add to each score stays inside ``graph_contribution``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .concepts.bank import ConceptBank
from .data.images import DEFAULT_MAX_PIXELS
from .errors import ConfigError, InvalidImageError
from .graphs.scg import SCGBatch
from .interpret import Explanation, Interpreter, add_sentences, draw_explanation, names_from_purity
from .progress import progress
from .run import Run
from .store import write_json

log = logging.getLogger(__name__)

#: Version of the JSON written per image; raise it when a key changes meaning or disappears.
SCHEMA_VERSION = 1
from .defaults import DEFAULT_MAX_EDGES  # noqa: E402  (shared with the CLI)
#: A concept is named after its dominant ground-truth part only when that part covers at least
#: this share of its members' pixels (purity.json, toyworld); below it the name would mislead.
NAME_MIN_PURITY = 0.5


class ExplainError(InvalidImageError):
    """Some images could not be explained; ``written`` holds the files made for the others."""

    def __init__(self, message: str, written: list[Path], failed: dict[str, str]):
        super().__init__(message)
        self.written = written
        self.failed = failed


@dataclass
class ImageExplanation:
    """The explanation of one image: predictions of the classifier and the GRN, and the GRN's reasons."""

    image: str                              # path (or id) of the image
    explanation: Explanation                # padding removed, sentences filled in
    classifier_logits: dict[str, float]     # over the classes of interest
    n_concepts: dict[str, int]              # concepts per class in the bank
    concept_names: dict[tuple[str, int], str]
    label: str | None = None                # the true class when known (report), else None
    top_class: tuple[str, float] | None = None  # the model's best class over all its classes

    @property
    def classifier_class(self) -> str:
        """The classifier's choice among the classes of interest."""
        return max(self.classifier_logits, key=self.classifier_logits.__getitem__)

    @property
    def grn_class(self) -> str:
        """The GRN's prediction."""
        return self.explanation.predicted

    @property
    def agrees(self) -> bool:
        """Whether the GRN predicts the classifier's class."""
        return self.grn_class == self.classifier_class

    def to_json(self) -> dict[str, Any]:
        """The JSON record written as ``<name>.json`` (schema in docs/report.md)."""
        expl = self.explanation
        names = list(expl.class_names)
        c_prob = _softmax(self.classifier_logits, names)
        g_prob = _softmax(expl.scores, names)
        classes = {}
        for cname in names:
            ce = expl.classes[cname]
            nodes = [{"concept": n.concept, "concept_id": f"{cname}/{n.concept}",
                      "name": self.concept_names.get((cname, n.concept)), "present": bool(n.present),
                      "position": None if n.position is None else [float(v) for v in n.position],
                      "contribution": float(n.contribution), "margin_contribution": _opt(n.margin_contribution)}
                     for n in ce.nodes if n.class_graph == cname]
            edges = [{"source": e.source, "target": e.target, "source_id": f"{cname}/{e.source}",
                      "target_id": f"{cname}/{e.target}", "present": bool(e.present),
                      "contribution": float(e.contribution), "margin_contribution": _opt(e.margin_contribution)}
                     for e in ce.edges if e.class_graph == cname]
            classes[cname] = {
                "kind": ce.kind, "score": float(ce.score), "probability": g_prob[cname],
                "margin": _opt(ce.margin), "bias": _opt(ce.bias), "residual": float(ce.residual),
                "graph_contribution": {k: float(v) for k, v in ce.graph_contribution.items()},
                "n_concepts": self.n_concepts.get(cname, 0), "nodes": nodes, "edges": edges,
                "sentence": ce.sentence}
        return {
            "schema_version": SCHEMA_VERSION,
            "image": self.image,
            "label": self.label,
            "class_names": names,
            "classifier": {"class": self.classifier_class, "probabilities": c_prob,
                           "logits": {c: float(self.classifier_logits[c]) for c in names},
                           "top_class": None if self.top_class is None else
                           {"name": self.top_class[0], "probability": float(self.top_class[1])}},
            "grn": {"class": self.grn_class, "scores": {c: float(expl.scores[c]) for c in names},
                    "probabilities": g_prob, "agrees_with_classifier": self.agrees, "exact": expl.exact},
            "explained_class": expl.target,
            "classes": classes,
            "sentences": {"why": expl.why.sentence,
                          "why_not": {ce.class_name: ce.sentence for ce in expl.why_not}},
        }


def _opt(v: float | None) -> float | None:
    return None if v is None else float(v)


def _softmax(scores: Mapping[str, float], names: Sequence[str]) -> dict[str, float]:
    p = torch.softmax(torch.tensor([float(scores[c]) for c in names], dtype=torch.float64), 0)
    return {c: float(v) for c, v in zip(names, p)}


def drop_padding(expl: Explanation, n_concepts: Mapping[str, int]) -> Explanation:
    """A copy of ``expl`` without the dummy slots that pad a class graph beyond its concepts."""
    def real(graph: str, rank: int) -> bool:
        return rank <= n_concepts.get(graph, 0)

    classes = {}
    for name, ce in expl.classes.items():
        classes[name] = dataclasses.replace(
            ce, nodes=[n for n in ce.nodes if real(n.class_graph, n.concept)],
            edges=[e for e in ce.edges if real(e.class_graph, e.source) and real(e.class_graph, e.target)])
    return dataclasses.replace(expl, classes=classes)


def concept_names_of(run: Run, bank: ConceptBank) -> dict[tuple[str, int], str]:
    """(class, rank) -> part name from the run's concept purity when it has one (toyworld), else {}."""
    from .errors import ArtifactError

    purity = run.bank_purity(bank)
    try:
        return {} if purity is None else names_from_purity(purity, min_purity=NAME_MIN_PURITY)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ArtifactError(f"{run.purity_path}: malformed purity rows ({type(exc).__name__}: {exc})") from None


class RunExplainer:
    """Everything a run needs to explain images, loaded once (the classifier only when first needed)."""

    def __init__(self, run: Run | str | os.PathLike, *, max_edges: int = DEFAULT_MAX_EDGES,
                 show_progress: bool | None = None):
        self.run = run if isinstance(run, Run) else Run(run)
        self.max_edges = int(max_edges)
        self.show_progress = show_progress
        self.bank, self.grn = self.run.bank_and_grn()
        self.class_names = self.bank.class_names
        self.n_concepts = {c: len(self.bank[c]) for c in self.class_names}
        self.concept_names = concept_names_of(self.run, self.bank)
        self.interpreter = Interpreter(self.grn, self.concept_names)

    @cached_property
    def adapter(self):
        """The run's classifier (as its manifest says)."""
        return self.run.adapter()

    @cached_property
    def builder(self):
        """An SCGBuilder with the run's matching settings and patch cache (no teacher logits)."""
        from .graphs.builder import SCGBuilder

        return SCGBuilder(self.adapter, self.bank, self.run.match_config(),
                          cache_dir=self.run.patch_cache_dir, show_progress=False)

    # ------------------------------------------------------------------ explaining
    def explain_graphs(self, graphs: SCGBatch, classifier_logits: torch.Tensor, image_ids: Sequence[str],
                       labels: Sequence[str | None] | None = None) -> list[ImageExplanation]:
        """Explanations of graphs already built (e.g. ``RUN/graphs``) with the classifier's logits [B, K]."""
        if len(graphs) == 0:
            return []
        out = []
        for i, expl in enumerate(self.interpreter.explain(graphs, image_ids=[str(v) for v in image_ids])):
            expl = add_sentences(drop_padding(expl, self.n_concepts), self.concept_names)
            logits = {c: float(v) for c, v in zip(self.class_names, classifier_logits[i].tolist())}
            out.append(ImageExplanation(str(image_ids[i]), expl, logits, dict(self.n_concepts),
                                        self.concept_names, None if labels is None else labels[i]))
        return out

    def explain_image(self, image: np.ndarray, image_id: str) -> ImageExplanation:
        """Build the image's graphs, run the classifier and explain (InvalidImageError for a bad image)."""
        from .models import to_tensor

        adapter = self.adapter
        graphs = self.builder.transform([image]).graphs
        logits = adapter.logits(to_tensor(image, size=adapter.input_size))[0]
        ids = [adapter.class_id(c) for c in self.class_names]
        probs = torch.softmax(logits, 0)
        top = int(probs.argmax())
        item = self.explain_graphs(graphs, logits[ids][None], [image_id])[0]
        item.top_class = (adapter.class_name(top), float(probs[top]))
        return item

    def figure(self, item: ImageExplanation, image: np.ndarray, path: str | os.PathLike | None = None,
               dpi: int = 130):
        """The explanation figure of ``item`` (saved as PNG when ``path`` is given)."""
        return draw_explanation(image, item.explanation, self.bank, path, self.max_edges,
                                concept_names=self.concept_names, dpi=dpi)

    def write(self, item: ImageExplanation, image: np.ndarray, out_dir: str | os.PathLike,
              stem: str) -> tuple[Path, Path]:
        """Write ``<stem>.png`` and ``<stem>.json`` into ``out_dir``; returns (json, png)."""
        out = Path(out_dir)
        png, js = out / f"{stem}.png", out / f"{stem}.json"
        self.figure(item, image, png)
        record = item.to_json()
        record["figure"] = png.name
        write_json(js, record)
        return js, png


def unique_stems(paths: Sequence[str | os.PathLike]) -> list[str]:
    """File stems for ``paths``, with ``-2``, ``-3``, ... added where two images share a stem."""
    taken: set[str] = set()
    out = []
    for p in paths:
        stem = Path(p).stem or "image"
        name, k = stem, 1
        while name in taken:
            k += 1
            name = f"{stem}-{k}"
        taken.add(name)
        out.append(name)
    return out


def check_outputs(images: Sequence[str | os.PathLike], stems: Sequence[str], out_dir: str | os.PathLike) -> None:
    """ConfigError when writing ``<stem>.json`` and ``<stem>.png`` into ``out_dir`` would overwrite an
    input image, a file vrx did not write, or the explanation of another image (checked before any
    image is explained, so nothing is half done)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: is a file, not a folder for the explanations")
    inputs = {os.path.abspath(p) for p in images} | {os.path.realpath(p) for p in images}
    for path, stem in zip(images, stems):
        js, png = out_dir / f"{stem}.json", out_dir / f"{stem}.png"
        for target in (js, png):
            if os.path.abspath(target) in inputs or os.path.realpath(target) in inputs:
                raise ConfigError(f"{target}: is an input image, and the explanation of {path} would "
                                  "overwrite it; write into another --out folder")
            if target.is_dir():
                raise ConfigError(f"{target}: is a folder, where the explanation of {path} goes")
        if js.exists():
            previous = _explained_image(js)
            if previous is None:
                raise ConfigError(f"{js}: exists and is not an explanation vrx wrote; it would be "
                                  f"overwritten by that of {path}; write into another --out folder")
            if os.path.abspath(previous) != os.path.abspath(path):
                raise ConfigError(f"{js}: holds the explanation of {previous}, which that of {path} would "
                                  "overwrite; write into another --out folder")
        elif png.exists():
            raise ConfigError(f"{png}: exists, and no {js.name} beside it says vrx drew it for {path}; "
                              "write into another --out folder")


def _explained_image(record_path: Path) -> str | None:
    """The image a ``<stem>.json`` explanation record names, or None when it is not one."""
    import json

    try:
        record = json.loads(record_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    ok = isinstance(record, dict) and "schema_version" in record and isinstance(record.get("image"), str)
    return record["image"] if ok else None


def explain_images(run: Run | str | os.PathLike, images: Sequence[str | os.PathLike],
                   out_dir: str | os.PathLike, *, max_edges: int = DEFAULT_MAX_EDGES,
                   max_pixels: int | None = DEFAULT_MAX_PIXELS, show_progress: bool | None = None) -> list[Path]:
    """Explain image files with a finished run: ``<name>.json`` and ``<name>.png`` per image in ``out_dir``.

    Returns the written paths (json, png per image, in order). Images that cannot be read are
    skipped and the others still explained; afterwards ExplainError names each failed file (its
    ``written`` attribute holds what was written). No output overwrites an input image or another
    image's explanation (:func:`check_outputs`). ``max_pixels`` (None: no limit) is checked from
    each image's header.
    """
    from .concepts.inputs import MIN_SIDE
    from .data.images import load_image

    if not images:
        raise InvalidImageError("no images given to explain")
    stems = unique_stems(images)
    check_outputs(images, stems, out_dir)
    explainer = RunExplainer(run, max_edges=max_edges, show_progress=show_progress)
    out_dir = Path(out_dir)
    written: list[Path] = []
    failed: dict[str, str] = {}
    for path, stem in progress(list(zip(images, stems)), desc="explain", enabled=show_progress):
        try:
            image = load_image(path, max_pixels=max_pixels)
            if min(image.shape[:2]) < MIN_SIDE:
                raise InvalidImageError(f"{path}: image is {image.shape[1]}x{image.shape[0]}, too small to "
                                        f"segment (at least {MIN_SIDE} px a side)")
            item = explainer.explain_image(image, str(path))
        except InvalidImageError as exc:
            log.debug("skipping %s", exc)
            failed[str(path)] = str(exc)
            continue
        written.extend(explainer.write(item, image, out_dir, stem))
        log.info("%s: classifier %s, GRN %s -> %s", path, item.classifier_class, item.grn_class,
                 out_dir / f"{stem}.json")
    if failed:
        lines = "; ".join(f"{msg}" if msg.startswith(p) else f"{p}: {msg}" for p, msg in failed.items())
        raise ExplainError(f"could not explain {len(failed)} of {len(images)} image(s): {lines}",
                           written, failed)
    return written
