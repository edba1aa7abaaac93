"""Write a comparison's files into a folder: compare.json, compare.md and the four figures."""

from __future__ import annotations

import os
from pathlib import Path

from ..store import write_bytes, write_json
from .results import Comparison

__all__ = ["OUTPUT_FILES", "write_comparison"]

OUTPUT_FILES = ("compare.json", "compare.md", "grid.png", "deletion.png", "insertion.png", "tradeoff.png")


def write_comparison(c: Comparison, out: str | os.PathLike) -> list[Path]:
    """Every output file of ``c`` in ``out`` (created if needed), in OUTPUT_FILES order."""
    from ..data.images import load_image
    from .figures import write_figures
    from .table import to_json, to_markdown

    folder = Path(out)
    written = [write_json(folder / "compare.json", to_json(c)),
               write_bytes(folder / "compare.md", to_markdown(c).encode("utf-8"))]
    rows = min(len(c.images), int(c.settings.get("grid_images", 6)))
    written += write_figures(c, [load_image(p) for p in c.images[:rows]], folder)
    return written
