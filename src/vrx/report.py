"""A self-contained HTML report of a run (``vrx report``): concepts, fidelity, sample explanations.

``RUN/report.html`` carries everything inline (PNG figures as base64 data URIs, a little CSS, no
script, no external file), so it can be mailed or archived alone. Sections have stable ids:
``#classes`` (each class's gallery and concept table), ``#fidelity`` (held-out fidelity of the GRN
and its ablations) and ``#explanations`` (test-split images where the GRN and classifier are right,
and where they are wrong). Explanations come from :class:`vrx.explain.RunExplainer`.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .concepts.bank import ConceptBank
from .errors import ArtifactError, ConfigError, InvalidImageError
from .explain import ImageExplanation, RunExplainer
from .interpret import figure_png
from .run import Run
from .store import write_bytes

log = logging.getLogger(__name__)

from .defaults import DEFAULT_SAMPLES  # noqa: E402  (shared with the CLI)
FIGURE_DPI = 80   # figures are ~1000 px wide at this resolution: sharp enough, a few 100 kB each

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1200px;padding:0 1.2em 3em;
color:#222;line-height:1.45}
h1{margin-top:.8em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
nav a{margin-right:1.2em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f3f3f3}
td.l,th.l{text-align:left}
img{max-width:100%;height:auto;border:1px solid #e3e3e3}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;margin:1em 0}
.ok{color:#1a7f37;font-weight:600}.bad{color:#c62828;font-weight:600}
.note{color:#555;font-style:italic}
ul.sent li{margin:.25em 0}
.meta{color:#444;font-size:.92em}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return f"{float(value):.{digits}f}"


def _pvalue(p: float | None) -> str:
    return "–" if p is None else f"{p:.2g}"


def _img(png: bytes, alt: str, cls: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    extra = f' class="{_e(cls)}"' if cls else ""
    return f'<img{extra} alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], left: int = 1) -> str:
    """An HTML table; cells are already escaped; the first ``left`` columns are left-aligned."""
    th = "".join(f'<th{" class=l" if i < left else ""}>{h}</th>' for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td{" class=l" if i < left else ""}>{c}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


# ---------------------------------------------------------------------------------------- classes
def _purity_rows(run: Run, bank: ConceptBank) -> dict[str, dict[int, dict[str, Any]]] | None:
    """class -> rank -> purity row of the bank's own purity variant; None when the run has no purity."""
    if not run.purity_path.exists():
        return None
    chosen = run.bank_purity(bank) or {}
    return {cls: {int(r["rank"]): r for r in rows} for cls, rows in (chosen.get("classes") or {}).items()}


def classes_section(run: Run, bank: ConceptBank) -> str:
    """``#classes``: per class its concept gallery and a table of its concepts."""
    purity = _purity_rows(run, bank)
    parts = ['<section id="classes"><h2>Classes and their concepts</h2>',
             f'<p class="meta">Concepts were found at layer <code>{_e(bank.layer)}</code> of '
             f'<code>{_e(bank.model_id)}</code> and ranked by TCAV score against random patches; '
             "p-values are corrected for multiple testing.</p>"]
    for cls in bank.class_names:
        concepts = bank[cls]
        n_cand = len(bank.candidates.get(cls, []))
        parts.append(f'<div class="class" id="class-{_e(cls)}"><h3>{_e(cls)}</h3>')
        if not concepts:
            parts.append(f'<p class="note">No significant concept was found for {_e(cls)} '
                         f"({n_cand} candidate cluster(s) tested).</p>")
        head = ["concept", "importance", "TCAV", "± std", "TCAV p-value", "significant", "members", "cluster size",
                "CAV accuracy"]
        if purity is not None:
            head += ["part", "purity"]
        rows = []
        for c in concepts:
            row = [f"{_e(cls)}/{c.rank}", _num(c.importance), _num(c.tcav), _num(c.tcav_std), _pvalue(c.p_value),
                   _num(bool(c.significant)), str(len(c.members)), str(c.size), _num(c.cav_accuracy)]
            if purity is not None:
                p = purity.get(cls, {}).get(c.rank, {})
                row += [_e(p.get("part") or "–"), _num(p.get("purity"))]
            rows.append(row)
        if rows:
            parts.append(_table(head, rows))
        gallery = run.gallery_path(cls)
        if gallery.exists():
            parts.append(_img(gallery.read_bytes(), f"concept gallery of {cls}", "gallery"))
        else:
            parts.append(f'<p class="note">No gallery image ({_e(gallery)} is missing).</p>')
        parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)


# --------------------------------------------------------------------------------------- fidelity
_FID_COLUMNS = [("fidelity_top1", "top-1 agreement"), ("fidelity_l1", "L1 (softmax)"),
                ("masked_fidelity_top1", "masked top-1"), ("masked_fidelity_l1", "masked L1"),
                ("masked_effect_corr", "masked effect corr.")]


def fidelity_section(run: Run) -> str:
    """``#fidelity``: the held-out fidelity table of the GRN and every ablation (grn/metrics.json)."""
    m = run.grn_metrics()
    parts = ['<section id="fidelity"><h2>Fidelity of the GRN</h2>']
    if m is None:
        parts.append(f'<p class="note">No GRN metrics ({_e(run.grn_metrics_path)} is missing): run '
                     f"<code>vrx train --run {_e(run.path)}</code> first.</p></section>")
        return "".join(parts)
    parts.append(
        f'<p class="meta">How closely the GRN imitates the classifier on {_e(m.get("n_test", "?"))} held-out '
        f'test images (train {_e(m.get("n_train", "?"))}, validation {_e(m.get("n_val", "?"))}): top-1 '
        "agreement and mean L1 distance between the softmax outputs; <em>masked</em> columns repeat the "
        f'comparison on {_e(m.get("n_masked_test", 0))} variants with one detected concept masked out, '
        "and the correlation of the effect of that masking on GRN and classifier.</p>")
    head = ["model"] + [label for _, label in _FID_COLUMNS] + ["epochs"]
    rows = [["full GRN"] + [_num(m.get(k)) for k, _ in _FID_COLUMNS] + [_num(m.get("epochs_run"))]]
    for name, a in (m.get("ablations") or {}).items():
        rows.append([_e(name)] + [_num(a.get(k)) for k, _ in _FID_COLUMNS] + [_num(a.get("epochs_run"))])
    parts.append(_table(head, rows))
    if not m.get("ablations"):
        parts.append('<p class="note">No ablations were trained (<code>vrx train --no-ablations</code>).</p>')
    extra = [("majority-class baseline top-1", m.get("baseline_top1")),
             ("classifier accuracy on labels (test)", m.get("teacher_label_accuracy")),
             ("GRN accuracy on labels (test)", m.get("grn_label_accuracy"))]
    parts.append(_table(["reference", "value"], [[_e(k), _num(v)] for k, v in extra]))
    parts.append("</section>")
    return "".join(parts)


# ----------------------------------------------------------------------------------- explanations
def _is_right(item: ImageExplanation) -> bool:
    return item.agrees and (item.label is None or item.classifier_class == item.label)


def select_samples(items: Sequence[ImageExplanation], n: int) -> tuple[list[ImageExplanation],
                                                                          list[ImageExplanation]]:
    """Up to ``n`` samples: about half right (GRN = classifier = label), half wrong, classes mixed."""
    right = [it for it in items if _is_right(it)]
    wrong = [it for it in items if not _is_right(it)]
    n_wrong = min(len(wrong), n // 2)
    n_right = min(len(right), n - n_wrong)
    n_wrong = min(len(wrong), n - n_right)
    return _spread(right, n_right), _spread(wrong, n_wrong)


def _spread(items: Sequence[ImageExplanation], n: int) -> list[ImageExplanation]:
    """``n`` items taken round-robin over the classifier's classes, in the given order within each."""
    groups: dict[str, list[ImageExplanation]] = {}
    for it in items:
        groups.setdefault(it.classifier_class, []).append(it)
    out: list[ImageExplanation] = []
    n = min(n, len(items))
    while len(out) < n:
        for g in groups.values():
            if g and len(out) < n:
                out.append(g.pop(0))
    return out


def _sample_card(explainer: RunExplainer, item: ImageExplanation, path: str | None) -> str:
    from .data.images import load_image

    expl = item.explanation
    probs = item.to_json()
    c_prob = probs["classifier"]["probabilities"][item.classifier_class]
    g_prob = probs["grn"]["probabilities"][item.grn_class]
    status = []
    if item.label is not None:
        ok = item.classifier_class == item.label
        status.append(f'<span class="{"ok" if ok else "bad"}">classifier {"right" if ok else "wrong"}</span>')
    status.append(f'<span class="{"ok" if item.agrees else "bad"}">GRN '
                  f'{"agrees with" if item.agrees else "disagrees with"} the classifier</span>')
    name = "/".join(Path(item.image).parts[-2:])   # class folder and file: file names repeat across classes
    parts = [f'<div class="card sample"><h4>{_e(name)}</h4><p class="meta">',
             f"true class: <b>{_e(item.label or 'unknown')}</b> · classifier: <b>{_e(item.classifier_class)}</b> "
             f"({c_prob:.0%}) · GRN: <b>{_e(item.grn_class)}</b> ({g_prob:.0%}) · "
             + " · ".join(status) + "</p>"]
    figure = None
    if path is not None:
        try:
            figure = figure_png(explainer.figure(item, load_image(path), dpi=FIGURE_DPI), dpi=FIGURE_DPI)
        except InvalidImageError as exc:
            log.warning("report: no figure for %s (%s)", name, exc)
            parts.append(f'<p class="note">No figure: {_e(exc)}</p>')
    else:
        parts.append('<p class="note">No figure: the image file of this graph is not known.</p>')
    if figure is not None:
        parts.append(_img(figure, f"explanation of {name}", "explanation"))
    parts.append('<ul class="sent">')
    parts.append(f"<li>{_e(expl.why.sentence)}</li>")
    parts += [f"<li>{_e(ce.sentence)}</li>" for ce in expl.why_not]
    parts.append("</ul></div>")
    return "".join(parts)


def _test_rows(run: Run, n: int) -> tuple[list[int], str]:
    """Row indices of the GRN's test split (or, when empty, of validation / all images) and their name."""
    split = run.split()
    if split is not None:
        for rows, label in ((split.test, "test"), (split.val, "validation")):
            if len(rows):
                return [int(i) for i in rows], label
    return list(range(n)), "all (no held-out split was recorded)"


def explanations_section(run: Run, n_samples: int, show_progress: bool | None = None) -> str:
    """``#explanations``: sample images of the test split, right and wrong, with figure and sentences."""
    parts = ['<section id="explanations"><h2>Explanations of sample images</h2>']
    if not run.has_grn():
        parts.append(f'<p class="note">No trained GRN: run <code>vrx train --run {_e(run.path)}</code> '
                     "first.</p></section>")
        return "".join(parts)
    explainer = RunExplainer(run, show_progress=show_progress)
    ds = run.graphs(explainer.class_names)
    rows, part = _test_rows(run, len(ds))
    sub = ds.subset(rows)
    names = explainer.class_names
    labels = [names[v] if 0 <= v < len(names) else None for v in sub.labels]
    items = explainer.explain_graphs(sub.graphs, sub.teacher.logits, sub.image_ids, labels)
    paths = dict(zip(sub.image_ids, sub.image_paths or [None] * len(sub)))
    right, wrong = select_samples(items, n_samples)
    n_right = sum(_is_right(it) for it in items)
    parts.append(f'<p class="meta">Images of the {_e(part)} split: {len(items)}; the GRN and the classifier '
                 f"are both right on {n_right} and at least one is wrong on {len(items) - n_right}. "
                 "<em>Right</em> means the GRN predicts the classifier's class and the classifier the true "
                 "class. In each figure, blue concepts and relations push the class up, red ones push it "
                 "down; why-not sentences compare with the explained class.</p>")
    groups = [("right", "Where the GRN and the classifier are right", right, n_right),
              ("wrong", "Where the classifier is wrong or the GRN disagrees with it", wrong,
               len(items) - n_right)]
    for key, title, shown, available in groups:
        parts.append(f'<h3 id="{key}">{title}</h3>')
        if shown:
            parts += [_sample_card(explainer, it, paths.get(it.image)) for it in shown]
        elif available:
            parts.append(f'<p class="note">{available} such image(s) in this split; none shown '
                         f"(--samples {n_samples}).</p>")
        else:
            parts.append('<p class="note">There is no such image in this split.</p>')
    parts.append("</section>")
    return "".join(parts)


# ------------------------------------------------------------------------------------------ page
def render_report(run: Run | str | os.PathLike, *, n_samples: int = DEFAULT_SAMPLES,
                  show_progress: bool | None = None) -> str:
    """The report page of ``run`` as an HTML string."""
    run = run if isinstance(run, Run) else Run(run)
    if n_samples < 0:
        raise ConfigError(f"n_samples must be >= 0, got {n_samples}")
    try:
        bank = run.bank()
    except ArtifactError as exc:
        if run.has_bank():
            raise
        raise ArtifactError(f"{exc} (a report needs at least the concepts)") from None
    title = _e(run.path.name or run.path)
    counts = ", ".join(f"{_e(c)} ({len(bank[c])})" for c in bank.class_names)
    body = [f"<h1>vrx report: {title}</h1>",
            f'<p class="meta">Run folder <code>{_e(run.path)}</code>. Classes of interest with their number of '
            f"concepts: {counts}.</p>",
            '<nav><a href="#classes">Classes and concepts</a><a href="#fidelity">Fidelity</a>'
            '<a href="#explanations">Explanations</a></nav>',
            classes_section(run, bank), fidelity_section(run),
            explanations_section(run, n_samples, show_progress)]
    from .compare.report_section import compare_section  # "" unless `vrx compare --run` wrote output

    body.append(compare_section(run))
    from .experiments.report_section import experiments_section  # "" unless an experiment wrote its result

    body.append(experiments_section(run))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            # An empty inline icon: otherwise the browser asks for /favicon.ico, a request outside the file.
            '<link rel="icon" href="data:,">'
            f"<title>vrx report: {title}</title><style>{_CSS}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")


def write_report(run: Run | str | os.PathLike, *, n_samples: int = DEFAULT_SAMPLES,
                 out: str | os.PathLike | None = None, show_progress: bool | None = None) -> Path:
    """Write the self-contained report of ``run`` (default ``RUN/report.html``) and return its path."""
    run = run if isinstance(run, Run) else Run(run)
    path = Path(out) if out is not None else run.report_path
    with run.lock():
        page = render_report(run, n_samples=n_samples, show_progress=show_progress)
        write_bytes(path, page.encode("utf-8"))
    log.info("wrote %s (%.0f kB)", path, path.stat().st_size / 1024)
    return path
