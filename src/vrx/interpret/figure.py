"""The explanation figure, in the style of the paper's Figure 1: one panel per class of interest.

Each panel shows the image with the concepts of that class's graph as numbered circles and its
strongest relations as arrows, coloured by their signed contribution on a diverging colour map
centred at zero (blue = pushes the class up, red = pushes it down, white = nothing), with a
labelled colour bar. The original code coloured by quartile rank, so some node was always red even
when every contribution was positive; here the colour is the sign and size of the number itself.
Under each panel, the concepts' best example patches from the bank, framed in the same colours.

Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas, never through pyplot, so
nothing is left registered in pyplot's global figure list.
"""

from __future__ import annotations

import io
import logging
import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch

from ..concepts.bank import ConceptBank
from ..errors import ConfigError, InvalidImageError, UnknownClassError
from ..store import write_bytes
from .explanation import ClassExplanation, EdgeContribution, Explanation, NodeContribution

log = logging.getLogger(__name__)

CMAP = "RdBu"        # red = negative, blue = positive, as in the paper's figures
_SCORE, _MARGIN = "score", "margin"


def _as_image(image: np.ndarray) -> np.ndarray:
    """HxWx3 float in [0, 1] (uint8 and greyscale accepted), else InvalidImageError."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or min(arr.shape[:2]) < 1:
        raise InvalidImageError(f"draw_explanation: image must be HxWx3, got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all() or arr.min() < -1e-3 or arr.max() > 1 + 1e-3:
        raise InvalidImageError("draw_explanation: a float image must have values in [0, 1], got range "
                                f"[{np.nanmin(arr):.3g}, {np.nanmax(arr):.3g}]")
    return np.clip(arr, 0.0, 1.0)


def _value(item: NodeContribution | EdgeContribution, mode: str) -> float:
    v = item.margin_contribution if mode == _MARGIN else item.contribution
    return float(v or 0.0)


def _text_colour(rgba: tuple[float, ...]) -> str:
    luminance = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
    return "black" if luminance > 0.55 else "white"


def _fmt(v: float) -> str:
    return f"{v:+.2g}".replace("-", "−")


def _num(v: float) -> str:
    return f"{v:.3g}".replace("-", "−")


def panel_classes(explanation: Explanation, classes: Sequence[str] | None = None) -> list[str]:
    """The classes drawn, in order: by default the explained class first, then the rest by score."""
    if classes is None:
        return [explanation.target] + [c.class_name for c in explanation.why_not]
    for c in classes:
        if c not in explanation.classes:
            raise UnknownClassError(f"class {c!r} is not in the explanation ({explanation.class_names})")
    return list(classes)


def strongest_edges(ce: ClassExplanation, graph: str, max_edges: int, mode: str = _SCORE
                    ) -> list[EdgeContribution]:
    """The ``max_edges`` present relations of ``graph`` with the largest |contribution| (non-zero)."""
    edges = [e for e in ce.edges if e.class_graph == graph and e.present and _value(e, mode) != 0.0]
    return sorted(edges, key=lambda e: -abs(_value(e, mode)))[:max_edges]


def draw_explanation(image: np.ndarray, explanation: Explanation, bank: ConceptBank | None = None,
                     path: str | os.PathLike | None = None, max_edges: int = 6, *,
                     classes: Sequence[str] | None = None,
                     concept_names: Mapping[tuple[str, int], str] | None = None,
                     why_not: str = _SCORE, n_thumbnails: int = 2, dpi: int = 130) -> Figure:
    """Draw one panel per class (image, concepts, relations, colour bar, example patches); save PNG.

    ``why_not="score"`` colours a why-not panel by contribution to that class's own score (as in
    the paper); ``"margin"`` by contribution to y_target - y_class (blue = favours the target).
    """
    if why_not not in (_SCORE, _MARGIN):
        raise ConfigError(f"why_not must be 'score' or 'margin', got {why_not!r}")
    if max_edges < 0 or n_thumbnails < 0:
        raise ConfigError("max_edges and n_thumbnails must be >= 0")
    img = _as_image(image)
    names = dict(concept_names or {})
    panels = panel_classes(explanation, classes)
    with_bank = bank is not None and n_thumbnails > 0
    n_nodes = max((n.concept for n in explanation.why.nodes), default=0)
    # Row heights in inches (image, gap, colour bar, gap for its label and the patch titles,
    # patches), so the image keeps its aspect without leaving holes around it.
    width = 4.0
    rows = [width * img.shape[0] / img.shape[1], 0.1, 0.12]
    if with_bank:
        rows += [0.75, 0.75]
    fig = Figure(figsize=(width * len(panels) * 1.1, sum(rows) + 1.2), dpi=dpi)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1, len(panels), wspace=0.1)
    for p, cname in enumerate(panels):
        sub = grid[p].subgridspec(len(rows), 1, height_ratios=rows, hspace=0.0)
        ce = explanation.classes[cname]
        mode = _MARGIN if (why_not == _MARGIN and ce.margin is not None) else _SCORE
        ax = fig.add_subplot(sub[0])
        norm, cmap = _draw_panel(ax, img, explanation, ce, max_edges, mode, names)
        cax = fig.add_subplot(sub[2])
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax, orientation="horizontal")
        target = explanation.target
        label = (f"contribution to {target} − {cname}" if mode == _MARGIN
                 else f"contribution to {cname}")
        bar.set_label(label, fontsize=9, labelpad=1)
        bar.set_ticks([norm.vmin, 0.0, norm.vmax])
        bar.set_ticklabels([_fmt(norm.vmin), "0", _fmt(norm.vmax)])
        bar.ax.tick_params(labelsize=8, length=2, pad=1)
        ticks = bar.ax.get_xticklabels()
        ticks[0].set_ha("left")     # keep end labels inside the panel, clear of the neighbour's
        ticks[-1].set_ha("right")
        if with_bank:
            thumbs = sub[4].subgridspec(1, max(n_nodes, 1), wspace=0.1)
            _draw_thumbnails(fig, thumbs, bank, ce, cname, norm, cmap, names, n_thumbnails, mode)
    if path is not None:
        save_figure(fig, path, dpi=dpi)
    return fig


def _panel_norm(ce: ClassExplanation, graph: str, edges: list[EdgeContribution], mode: str) -> Normalize:
    vals = [abs(_value(n, mode)) for n in ce.nodes if n.class_graph == graph and n.present]
    vals += [abs(_value(e, mode)) for e in edges]
    m = max(vals, default=0.0)
    m = m if m > 0 and math.isfinite(m) else 1.0
    # Symmetric limits: zero is always the white centre of the map, whatever the signs present.
    return Normalize(vmin=-m, vmax=m)


def _draw_panel(ax, img: np.ndarray, expl: Explanation, ce: ClassExplanation, max_edges: int,
                mode: str, names: Mapping[tuple[str, int], str]) -> tuple[Normalize, Colormap]:
    import matplotlib

    cmap = matplotlib.colormaps[CMAP]
    graph = ce.class_name
    h, w = img.shape[:2]
    ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    edges = strongest_edges(ce, graph, max_edges, mode)
    norm = _panel_norm(ce, graph, edges, mode)
    nodes = {n.concept: n for n in ce.nodes if n.class_graph == graph}
    radius = 0.045 * min(h, w)
    top = max((abs(_value(e, mode)) for e in edges), default=1.0) or 1.0
    for e in edges:
        a, b = nodes[e.source].position, nodes[e.target].position
        if a is None or b is None:
            continue
        _arrow(ax, (a[0] * w, a[1] * h), (b[0] * w, b[1] * h), radius, cmap(norm(_value(e, mode))),
               width=1.2 + 2.8 * abs(_value(e, mode)) / top, gid=f"edge:{graph}:{e.source}:{e.target}")
    missing = []
    for rank, n in sorted(nodes.items()):
        v = _value(n, mode)
        if n.position is None:
            label = names.get((graph, rank))
            missing.append(f"{rank}{' ' + label if label else ''} ({_fmt(v)})")
            continue
        colour = cmap(norm(v))
        xy = (n.position[0] * w, n.position[1] * h)
        ax.add_patch(Circle(xy, radius, facecolor=colour, edgecolor="black", linewidth=1.4, zorder=5,
                            gid=f"node:{graph}:{rank}"))
        ax.text(*xy, str(rank), ha="center", va="center", fontsize=9, fontweight="bold",
                color=_text_colour(colour), zorder=6)
    if missing:
        ax.text(0.01, 0.01, "not found: " + ", ".join(missing), transform=ax.transAxes, fontsize=8,
                color="0.25", va="bottom", ha="left", zorder=7,
                bbox={"facecolor": "white", "edgecolor": "0.6", "alpha": 0.85, "boxstyle": "round"})
    kind = "why" if ce.kind == "why" and mode == _SCORE else "why not"
    head = f"{kind} {graph}?" + ("  (predicted)" if graph == expl.predicted else "")
    values = _graph_values(ce, mode)
    if mode == _MARGIN:
        first = f"{expl.target} − {graph} = {_num(ce.margin or 0.0)}"
    else:
        first = f"score {_num(ce.score)}" + ("" if ce.bias is None else f", bias {_fmt(ce.bias)}")
    own_nodes = sum(_value(n, mode) for n in nodes.values())
    own_edges = [e for e in ce.edges if e.class_graph == graph]
    n_present = sum(e.present for e in own_edges)
    lines = [first, f"this graph: concepts {_fmt(own_nodes)}, relations "
                    f"{_fmt(sum(_value(e, mode) for e in own_edges))} ({len(edges)} of {n_present} drawn)"]
    # Every class graph feeds every output: say how much came from the graphs not drawn here.
    others = [f"{g} {_fmt(v)}" for g, v in values.items() if g != graph]
    if others:
        lines.append(textwrap.shorten("other graphs: " + ", ".join(others), width=60))
    ax.set_title(head, fontsize=11, loc="left", fontweight="bold", pad=4 + 10.5 * len(lines))
    ax.text(0.0, 1.012, "\n".join(lines), transform=ax.transAxes, fontsize=8, va="bottom", ha="left",
            color="0.2", linespacing=1.25)
    return norm, cmap


def _graph_values(ce: ClassExplanation, mode: str) -> dict[str, float]:
    if mode == _MARGIN and ce.margin_graph_contribution is not None:
        return ce.margin_graph_contribution
    return ce.graph_contribution


def _arrow(ax, start: tuple[float, float], end: tuple[float, float], radius: float, colour,
           width: float, gid: str) -> None:
    """An arrow from circle edge to circle edge, curved so that j->i and i->j do not overlap."""
    dx, dy = end[0] - start[0], end[1] - start[1]
    dist = math.hypot(dx, dy)
    if dist < 1e-6:
        # Two concepts at the same place: there is no direction to draw (the original divided by 0).
        log.debug("skipping zero-length arrow %s", gid)
        return
    cut = radius if dist > 2.5 * radius else 0.2 * dist
    ux, uy = dx / dist, dy / dist
    a = (start[0] + ux * cut, start[1] + uy * cut)
    b = (end[0] - ux * cut, end[1] - uy * cut)
    arrow = FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=8 + 3 * width, linewidth=width,
                            color=colour, connectionstyle="arc3,rad=0.18", zorder=4, gid=gid,
                            shrinkA=0, shrinkB=0)
    # A thin dark outline keeps pale (near-zero) arrows visible on any background.
    arrow.set_path_effects([patheffects.withStroke(linewidth=width + 1.6, foreground="0.15"),
                            patheffects.Normal()])
    ax.add_patch(arrow)


def _draw_thumbnails(fig: Figure, grid, bank: ConceptBank, ce: ClassExplanation, graph: str,
                     norm: Normalize, cmap: Colormap, names: Mapping[tuple[str, int], str],
                     n_thumbnails: int, mode: str) -> None:
    concepts = bank.concepts.get(graph, [])
    by_rank = {c.rank: c for c in concepts}
    nodes = sorted((n for n in ce.nodes if n.class_graph == graph), key=lambda n: n.concept)
    for col, n in enumerate(nodes):
        ax = fig.add_subplot(grid[col])
        ax.set_xticks([])
        ax.set_yticks([])
        concept = by_rank.get(n.concept)
        thumbs = None if concept is None else concept.thumbnails
        if thumbs is not None and len(thumbs):
            ax.imshow(_tile(thumbs[:n_thumbnails]), alpha=1.0 if n.present else 0.35)
        else:
            ax.text(0.5, 0.5, "no patch", ha="center", va="center", fontsize=7, color="0.4",
                    transform=ax.transAxes)
        label = names.get((graph, n.concept))
        title = f"{n.concept}" + (f" {label}" if label else "")
        if n.present:
            colour = cmap(norm(_value(n, mode)))
            for s in ax.spines.values():
                s.set_edgecolor(colour)
                s.set_linewidth(3.5)
            ax.set_title(f"{title}\n{_fmt(_value(n, mode))}", fontsize=8, linespacing=1.1)
        else:
            for s in ax.spines.values():
                s.set_edgecolor("0.7")
                s.set_linestyle("--")
            ax.set_title(f"{title}\nnot found", fontsize=8, color="0.45", linespacing=1.1)


def _tile(thumbs: np.ndarray) -> np.ndarray:
    """Example patches side by side with a 2-pixel white gap."""
    thumbs = np.asarray(thumbs)
    if thumbs.ndim != 4 or thumbs.shape[-1] != 3:
        raise InvalidImageError(f"concept thumbnails must be [k, h, w, 3], got {thumbs.shape}")
    gap = np.full((thumbs.shape[1], 2, 3), 255, dtype=thumbs.dtype)
    parts: list[np.ndarray] = []
    for t in thumbs:
        parts += [t, gap]
    return np.concatenate(parts[:-1], axis=1)


def figure_png(fig: Figure, dpi: int = 130) -> bytes:
    """``fig`` as PNG bytes, cropped to what is drawn, on white."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 130) -> Path:
    """Write ``fig`` as PNG atomically (temporary file, then rename)."""
    return write_bytes(Path(path), figure_png(fig, dpi))
