"""The ``#compare`` section of ``vrx report``: the tables of ``compare.md`` and the map grid.

Shown only when ``vrx compare --run RUN`` has written its output into the run
(``Run.experiment_dir("compare")``); otherwise the section is the empty string. The tables are read
back from ``compare.md`` (its pipe tables become HTML tables, its ``##`` headings sub-headings, its
other lines paragraphs), so the report shows exactly what the command printed.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from ..run import Run

__all__ = ["compare_dir", "compare_section", "markdown_to_html"]


def compare_dir(run: Run) -> Path:
    """Where ``vrx compare --run`` writes its files."""
    return run.experiment_dir("compare")


def _cells(line: str) -> list[str]:
    return [html.escape(c.strip()) for c in line.strip().strip("|").split("|")]


def _inline(text: str) -> str:
    # compare.md uses `code` spans only; everything else is plain text.
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def markdown_to_html(text: str) -> str:
    """The small markdown subset compare.md uses (headings, pipe tables, paragraphs) as HTML."""
    out: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            head, body = table[0], [r for r in table[1:] if not all(set(c) <= {"-", ":"} for c in r)]
            th = "".join(f"<th>{c}</th>" for c in head)
            rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body)
            out.append(f"<table><thead><tr>{th}</tr></thead><tbody>{rows}</tbody></table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(_cells(line))
            continue
        flush()
        if line.startswith("# "):
            continue   # the section has its own title
        if line.startswith("## "):
            out.append(f"<h3>{html.escape(line[3:].strip())}</h3>")
        elif line.strip():
            out.append(f'<p class="meta">{_inline(line.strip())}</p>')
    flush()
    return "".join(out)


def compare_section(run: Run) -> str:
    """``<section id="compare">`` with the comparison's tables and grid, or "" when there is none."""
    folder = compare_dir(run)
    md = folder / "compare.md"
    if not md.is_file():
        return ""
    parts = ['<section id="compare"><h2>Attribution methods compared</h2>',
             f'<p class="meta">From <code>vrx compare --run</code> (<code>{html.escape(str(folder))}</code>).</p>',
             markdown_to_html(md.read_text(encoding="utf-8"))]
    grid = folder / "grid.png"
    if grid.is_file():
        data = base64.b64encode(grid.read_bytes()).decode("ascii")
        parts.append(f'<img alt="attribution maps of every method" src="data:image/png;base64,{data}">')
    parts.append("</section>")
    return "".join(parts)
