"""The comparison's figures: the map grid and the mean deletion, insertion and trade-off curves.

Drawn on bare ``matplotlib.figure.Figure`` objects with the Agg canvas (no pyplot, no backend
chosen, nothing global). In the grid each panel has its own scale: signed maps on a diverging
colour map centred at 0 (limits ±max|map|, red = for the class, blue = against), unsigned maps on
a sequential one from their minimum to their maximum.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..store import write_bytes
from .results import Comparison

__all__ = ["grid_figure", "curve_figure", "tradeoff_figure", "write_figures"]

SIGNED_CMAP = "RdBu_r"
UNSIGNED_CMAP = "viridis"


def _png(fig, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _new(figsize: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def grid_figure(c: Comparison, images: Sequence[np.ndarray]):
    """Rows: the first images (H×W×3 in [0, 1]), labelled with the explained class; columns: the
    image, then each method's map ("not run" where a subset method skipped the image)."""
    names = list(c.methods)
    rows = len(images)
    fig = _new((1.6 * (len(names) + 1), 1.7 * rows + 0.3))
    for r, image in enumerate(images):
        ax = fig.add_subplot(rows, len(names) + 1, r * (len(names) + 1) + 1)
        ax.imshow(image)
        label = c.labels[r]
        ax.set_ylabel(c.targets[r] + (f"\n(true: {label})" if label and label != c.targets[r] else ""), fontsize=7)
        if r == 0:
            ax.set_title("image", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        for j, name in enumerate(names):
            m = c.methods[name]
            ax = fig.add_subplot(rows, len(names) + 1, r * (len(names) + 1) + j + 2)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name + (" (±)" if m.signed else ""), fontsize=8)
            if r not in m.maps:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", fontsize=7, transform=ax.transAxes)
                continue
            a = m.maps[r]
            if m.signed:
                lim = float(np.abs(a).max()) or 1.0
                ax.imshow(a, cmap=SIGNED_CMAP, vmin=-lim, vmax=lim)
            else:
                lo, hi = float(a.min()), float(a.max())
                ax.imshow(a, cmap=UNSIGNED_CMAP, vmin=lo, vmax=hi if hi > lo else lo + 1.0)
    fig.tight_layout(pad=0.4)
    return fig


def curve_figure(c: Comparison, mode: str):
    """Mean deletion or insertion curve of each method: class probability vs share of pixels changed."""
    fig = _new((5.5, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    x = np.asarray(c.fractions.get(mode, []))
    for name, m in c.methods.items():
        y = m.mean_curve(mode)
        if y.size and y.size == x.size:
            ax.plot(x, y, label=f"{name} ({m.mean(mode):.3f})", lw=1.4)
    ax.set_xlabel("share of pixels " + ("removed" if mode == "deletion" else "inserted"))
    ax.set_ylabel("probability of the explained class")
    ax.set_title(f"{mode} ({'lower' if mode == 'deletion' else 'higher'} AUC is better)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def tradeoff_figure(c: Comparison):
    """Re-identification rate vs share of the map's top pixels kept, per method."""
    fig = _new((5.5, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    x = np.asarray(c.fractions.get("tradeoff", []))
    for name, m in c.methods.items():
        y = m.tradeoff_rate()
        if y.size and y.size == x.size:
            ax.plot(x, y, marker="o", ms=3, lw=1.4, label=name)
    ax.set_xlabel("share of pixels kept (top of the map)")
    ax.set_ylabel("re-identification rate")
    ax.set_title("trade-off: pixels kept vs class kept")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_figures(c: Comparison, images: Sequence[np.ndarray], out: Path) -> list[Path]:
    """Write grid.png, deletion.png, insertion.png and tradeoff.png into ``out``."""
    figs = {"grid.png": grid_figure(c, images), "deletion.png": curve_figure(c, "deletion"),
            "insertion.png": curve_figure(c, "insertion"), "tradeoff.png": tradeoff_figure(c)}
    return [write_bytes(out / name, _png(fig)) for name, fig in figs.items()]
