"""What the form shows of a DAG and of a run, as HTML: the graph preview, the progress line
and the result table; and the graph laid out once for a run's live colours.

Pure functions of a :class:`~oktyv_nb.dag.DAG` or a :class:`~oktyv_nb.results.run.Run`;
they make no widgets. pandas loads only when a result table is made.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from html import escape
from typing import TYPE_CHECKING, Any

from oktyv_nb.errors import GraphvizNotFound
from oktyv_nb.results.display.theme import status_colors
from oktyv_nb.widgets.common import ERR_COLOUR, OK_COLOUR, message
from oktyv_nb.widgets.draft import dag_error

if TYPE_CHECKING:
    from oktyv_nb.dag import DAG
    from oktyv_nb.model.graph import Graph
    from oktyv_nb.results.display.render import SvgTemplate
    from oktyv_nb.results.run import Run

__all__ = ["counts_html", "graph_html", "inline_svg", "live_template", "result_html",
           "svg_width_px"]

#: The width attribute of Graphviz's SVG, in points (``width="492pt"``) or pixels.
_SVG_WIDTH = re.compile(r'<svg\b[^>]*?\swidth="(?P<n>[\d.]+)(?P<unit>pt|px)?"')


def graph_html(dag: DAG, run: Run | None = None) -> str:
    """The levelled graph of ``dag`` (coloured by ``run`` when given) as inline SVG; without
    Graphviz ``dot``, its DOT text and the install hint."""
    exc = dag_error(dag) if run is None else None
    if exc is not None:
        return message("error", f"no graph: {exc.message}")
    if not dag.specs and run is None:
        return message("info", "Add a task to see the levelled graph.")
    try:
        digraph = run.graph() if run is not None else dag.graph()
    except Exception as exc:
        return message("error", f"no graph: {exc}")
    try:
        from oktyv_nb.results.display.render import to_svg

        svg = to_svg(digraph)
    except GraphvizNotFound as exc:
        return (message("info", str(exc))
                + f'<pre style="font-size:11px">{escape(digraph.source)}</pre>')
    return inline_svg(svg)


def inline_svg(svg: str) -> str:
    """SVG text for inline HTML: from its ``<svg`` tag on (no XML declaration, DOCTYPE or
    comment)."""
    i = svg.find("<svg")
    return svg[i:] if i > 0 else svg


def svg_width_px(svg: str) -> float | None:
    """The width an SVG asks for, in CSS pixels (Graphviz writes points: 1 pt = 4/3 px);
    None when it gives none."""
    m = _SVG_WIDTH.search(svg)
    if m is None:
        return None
    n = float(m.group("n"))
    return n * 4 / 3 if m.group("unit") == "pt" else n


def live_template(graph: Graph, title: str | None = None) -> SvgTemplate | None:
    """``graph`` laid out once by ``dot`` for a run's live colours; None without ``dot``
    (the preview then shows the DOT text and the install hint)."""
    from oktyv_nb.results.display.render import SvgTemplate

    try:
        return SvgTemplate(graph, title=title)
    except GraphvizNotFound:
        return None


def counts_html(done: int, total: int, counts: Mapping[str, int], running: int,
                cancelled: int = 0) -> str:
    """The progress line of a run, on one line: finished of total, by status, and how many
    run now; after a stop, how many it cancelled instead."""
    now = f"{cancelled} stopped" if cancelled else f"{running} running"
    return (
        f'<span style="white-space:nowrap"><b>{done}/{total}</b> finished: '
        f'<span style="color:{OK_COLOUR}">{counts.get("success", 0)} succeeded</span>, '
        f'<span style="color:{ERR_COLOUR}">{counts.get("failed", 0)} failed</span>, '
        f'{counts.get("skipped", 0)} skipped; {now}</span>'
    )


def _cell(value: Any, limit: int = 120) -> str:
    import pandas as pd

    if value is None or (not isinstance(value, (list, dict, tuple)) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if hasattr(value, "isoformat") and hasattr(value, "tzinfo"):
        return value.strftime("%H:%M:%S.%f")[:-3]
    try:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def result_html(run: Run) -> str:
    """The run's summary line and its DataFrame as a table, statuses coloured."""
    df = run.df
    cols = [c for c in ("tool", "level", "status", "attempts", "duration_s", "wait_s",
                        "result", "error_code", "error_message") if c in df.columns]
    head = "".join(f"<th>{escape(c)}</th>" for c in ["task_id", *cols])
    body = []
    for tid, row in df[cols].iterrows():
        cells = [f'<td class="oktyv-task-id"><b>{escape(str(tid))}</b></td>']
        for c in cols:
            value = row[c]
            if c == "status":
                bg, fg = status_colors(str(value))
                cells.append(f'<td class="oktyv-status" style="background:{bg};color:{fg}">'
                             f"{escape(str(value))}</td>")
            else:
                cells.append(f'<td class="oktyv-col-{c}">{escape(_cell(value))}</td>')
        body.append(f'<tr data-task="{escape(str(tid))}">{"".join(cells)}</tr>')
    s = run.result.summary
    st = run.stats
    summary = (
        f'<div class="oktyv-summary" style="margin:4px 0"><b>Run {escape(run.status)}</b>: '
        f"{s.succeeded} succeeded, {s.failed} failed, {s.skipped} skipped of {s.total}; "
        f"makespan {st.makespan_s:.3f} s, speedup {st.speedup:.2f}×</div>"
    )
    return (f'{summary}<table class="oktyv-result"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')
