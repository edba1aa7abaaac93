"""The ``#experiments`` section of ``vrx report``: the consistency table (and diagnosis) when written.

Shown only when ``vrx consistency`` (``vrx diagnose``) has written ``RUN/experiments/<name>.json``;
otherwise the section is the empty string.
"""

from __future__ import annotations

import html

from ..errors import ArtifactError
from ..run import Run
from ..store import read_json

__all__ = ["experiments_section"]


def experiments_section(run: Run) -> str:
    """HTML of the experiments' tables, or "" when no experiment result is in the run."""
    from ..compare.report_section import markdown_to_html

    parts = []
    path = run.experiment_result_path("consistency")
    if path.exists():
        from .consistency_records import ConsistencyResult

        try:
            result = ConsistencyResult.from_dict(read_json(path))
        except ArtifactError as exc:
            parts.append(f'<p class="meta">{html.escape(str(path))}: {html.escape(str(exc))}</p>')
        else:
            parts.append("<h3>Logic consistency: edits guided by VRX (paper Table 1)</h3>"
                         + markdown_to_html(result.markdown()))
    path = run.experiment_result_path("diagnosis")
    if path.exists():
        text = read_json(path).get("markdown")
        if isinstance(text, str):
            parts.append("<h3>Diagnosis (paper section 4.4)</h3>" + markdown_to_html(text))
    if not parts:
        return ""
    return '<section id="experiments"><h2>Experiments</h2>' + "".join(parts) + "</section>"
