"""Model diagnosis (paper section 4.4): over a test set's errors, why the network fails, per class.

Every image the classifier gets wrong gets VRX's account (:mod:`vrx.experiments.error_typing`,
the same as ``vrx consistency``: type from the margin's node and edge parts, culprit). Per
(true class, predicted class) the types are counted and the culprits ranked; per true class the
majority type gives a **recommendation** in plain words, naming the class and what its training
data lacks:

* structure: "<class>: concepts match, relations fail — add <class> images in other poses";
* concept: "<class>: concept n (<part>) missing — add <class> images without it" when the most
  blamed concept of the class is one that was not found (or "... misleads ..." when it was found
  but counts against the class); with another class's concept to blame, its name is given;
* both: the two together.

``addition`` in each recommendation says which training data follows from it
(:data:`vrx.experiments.bias.ADDITIONS`): ``poses`` or ``without`` a part type.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import load_image
from ..data.toyworld.dataset import list_images
from ..errors import EmptyFolderError
from ..run import Run
from .consistency import BATCH, ConsistencyExperiment
from .consistency_records import ConsistencyConfig
from .error_typing import ERROR_TYPES

FORMAT_VERSION = 1


def _name(exp: ConsistencyExperiment, graph: str, concept: int) -> str:
    part = exp.interpreter.concept_names.get((graph, concept))
    return f"{graph}/{concept}" + (f" ({part})" if part else "")


def recommend(cls: str, counts: Counter, blamed: Counter, names: dict[tuple[str, int], str]) -> dict[str, Any]:
    """The recommendation for class ``cls`` from its errors' type counts and blamed culprit keys
    (:attr:`Culprit.key`); ``names`` maps (class, rank) to a concept's part name."""
    kind = max(ERROR_TYPES, key=lambda t: (counts.get(t, 0), -ERROR_TYPES.index(t)))
    own = [(n, key) for key, n in blamed.most_common() if key[0] in ("node", "missing") and key[1] == cls]
    any_node = [(n, key) for key, n in blamed.most_common() if key[0] in ("node", "missing")]
    part, concept_text = None, None
    if own or any_node:
        _, key = (own or any_node)[0]
        part = names.get((key[1], key[2]))
        how = "missing" if key[0] == "missing" else "misleads"
        concept_text = f"concept {key[2]}" + (f" ({part})" if part else "") + f" {how}" if key[1] == cls \
            else f"{key[1]}'s concept {key[2]}" + (f" ({part})" if part else "") + " found"
    lacks_poses = f"add {cls} images in other poses"
    lacks_part = f"add {cls} images without {part}" if part else f"add more varied {cls} images"
    if kind == "structure":
        text, addition = f"{cls}: concepts match, relations fail — {lacks_poses}", "poses"
    elif kind == "concept":
        text = f"{cls}: {concept_text or 'concepts fail'} — {lacks_part}"
        addition = "without" if part else "same"
    else:
        text = f"{cls}: concepts and relations fail ({concept_text or 'no concept to name'}) — {lacks_poses}, " \
               f"and {lacks_part.removeprefix('add ')}"
        addition = "poses"
    return {"class": cls, "type": kind, "part": part, "addition": addition, "text": text}


def diagnose(run: Run | str | os.PathLike, images: str | os.PathLike, *, config: ConsistencyConfig | None = None,
             planted_type: str | None = None, show_progress: bool | None = None) -> dict[str, Any]:
    """Diagnose the run's classifier on a labelled image folder; writes ``RUN/experiments/diagnosis.json``.

    ``planted_type`` (concept / structure), when the cause of the errors is known, adds the share of
    errors whose VRX type names it.
    """
    from ..store import write_json

    start = time.perf_counter()
    run = run if isinstance(run, Run) else Run(run)
    exp = ConsistencyExperiment(run, config, show_progress=show_progress)
    classes, items = list_images(images)
    unknown = [c for c in classes if c not in exp.class_names]
    if unknown:
        raise EmptyFolderError(f"{images}: classes {unknown} are not classes of interest {exp.class_names}")
    paths = [p for p, _ in items]
    truth = np.array([exp.class_names.index(classes[k]) for _, k in items])
    pred = np.concatenate([exp.classify([load_image(p) for p in paths[s:s + BATCH]]).argmax(1)
                           for s in range(0, len(paths), BATCH)])
    errors = []
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    by_class: dict[str, tuple[Counter, Counter]] = {}
    for i in np.flatnonzero(pred != truth):
        t, p = int(truth[i]), int(pred[i])
        acc = exp.look(load_image(paths[i]), p, t).account
        c = acc.culprit
        culprit = None if c is None else (_name(exp, c.class_graph, c.concept) if c.kind != "edge" else
                                          f"{c.class_graph}/{c.concept}->{c.target}")
        errors.append({"image": str(paths[i]), "true_class": exp.class_names[t], "predicted": exp.class_names[p],
                       "type": acc.type, "structure_share": acc.structure_share,
                       "culprit": None if c is None else c.to_dict() | {"name": culprit}})
        row = pairs.setdefault((exp.class_names[t], exp.class_names[p]), {t_: 0 for t_ in ERROR_TYPES} | {"culprits": Counter()})
        row[acc.type] += 1
        if c is not None:
            row["culprits"][culprit] += 1
        counts, blamed = by_class.setdefault(exp.class_names[t], (Counter(), Counter()))
        counts[acc.type] += 1
        if c is not None:
            blamed[c.key] += 1
    recs = [recommend(cls, counts, blamed, exp.interpreter.concept_names) for cls, (counts, blamed) in
            sorted(by_class.items(), key=lambda kv: -sum(kv[1][0].values()))]
    result = {
        "version": FORMAT_VERSION, "run": str(run.path), "images": str(images), "n_images": len(paths),
        "accuracy": float(np.mean(pred == truth)), "n_errors": len(errors),
        "pairs": [{"true_class": t, "predicted": p, "n": sum(row[k] for k in ERROR_TYPES),
                   **{k: row[k] for k in ERROR_TYPES}, "culprits": row["culprits"].most_common(3)}
                  for (t, p), row in sorted(pairs.items())],
        "recommendations": recs, "planted_type": planted_type,
        "type_agreement": None if planted_type is None or not errors else
        sum(e["type"] == planted_type for e in errors) / len(errors),
        "errors": errors, "seconds": time.perf_counter() - start}
    result["markdown"] = diagnosis_markdown(result)
    with run.lock():
        write_json(run.experiment_result_path("diagnosis"), result)
    return result


def diagnosis_markdown(d: dict[str, Any]) -> str:
    """The diagnosis as markdown: a table per (true, predicted) pair and the recommendations."""
    lines = [f"{d['n_errors']} errors of {d['n_images']} test images (accuracy {d['accuracy']:.3f})"
             + ("" if d.get("type_agreement") is None else
                f"; VRX's type = planted type ({d['planted_type']}) for {d['type_agreement']:.3f} of them"), "",
             "| true class | predicted | errors | concept | structure | both | most blamed |", "|---|---|---|---|---|---|---|"]
    for r in d["pairs"]:
        blamed = ", ".join(f"{name} ({n})" for name, n in r["culprits"])
        lines.append(f"| {r['true_class']} | {r['predicted']} | {r['n']} | {r['concept']} | {r['structure']} | "
                     f"{r['both']} | {blamed} |")
    lines += [""] + [f"Recommendation: {r['text']}" for r in d["recommendations"]]
    return "\n".join(lines) + "\n"


def diagnosis_path(run: Run | str | os.PathLike) -> Path:
    """Where ``vrx diagnose`` writes its result."""
    return (run if isinstance(run, Run) else Run(run)).experiment_result_path("diagnosis")
