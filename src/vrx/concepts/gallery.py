"""Concept galleries: per class, one row of best example patches per concept.

Drawn on a bare ``matplotlib.figure.Figure`` (no pyplot, no backend chosen, nothing global), and
written atomically under a unique temporary name, so two runs writing the same gallery cannot collide.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

from ..store import write_bytes
from .bank import ConceptBank


def save_gallery(bank: ConceptBank, class_name: str, path: str | Path, max_examples: int = 8) -> Path:
    """Draw ``class_name``'s concepts (rank, TCAV score, p-value as row titles) into a PNG."""
    concepts = bank[class_name]
    rows = max(len(concepts), 1)
    fig = Figure(figsize=(1.3 * max_examples, 1.55 * rows))
    axes = fig.subplots(rows, max_examples, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    if not concepts:
        axes[0, 0].text(0, 0.5, f"{class_name}: no significant concept", fontsize=10)
    for r, c in enumerate(concepts):
        thumbs = c.thumbnails if c.thumbnails is not None else []
        for k, thumb in enumerate(thumbs[:max_examples]):
            axes[r, k].imshow(thumb)
        flag = "" if c.significant else " (not significant)"
        axes[r, 0].set_title(f"concept {c.rank}: importance {c.importance:.2f}, TCAV {c.tcav:.2f}{flag}",
                             loc="left", fontsize=9)
    fig.suptitle(f"{class_name}: concepts by TCAV rank", fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return write_bytes(path, buf.getvalue())
