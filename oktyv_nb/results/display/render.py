"""Pictures of a DAG with Graphviz: the levelled graph before, during and after a run (SPEC §11).

:func:`build_digraph` turns a validated :class:`~oktyv_nb.graph.Graph` (and, after a run, its
:class:`~oktyv_nb.engine.RunOutcome`) into a ``graphviz.Digraph``:

* one ``rank=same`` subgraph per level, headed by a ``level k`` label;
* edges run dependency -> dependent;
* node labels show the task id and tool; after a run also the duration (seconds), the
  attempts (a retried task has a double border), for failures the error code (on a line of
  its own), and whether the result was reused from an earlier run or taken from the cache
  (``cached``);
* fill colour by status (pending, ready, running, retrying, success, failed, skipped), with a
  legend; the critical path (measured durations) drawn bold; the dependency whose failure
  made a task skip drawn as a dashed red edge marked ``skip`` (an edge label, which ``dot``
  places beside the edge, clear of it and of the arrowhead).

Labels only ever show ids, tool names, durations, attempts, statuses and error codes, never
params, results or error messages, so secrets cannot reach a picture.

:func:`to_svg`, :func:`save_graph` and :func:`mimebundle` run the ``dot`` program; without it
they raise :class:`~oktyv_nb.errors.GraphvizNotFound` (the notebook bundle falls back to the
DOT text and the install hint). ``digraph.source`` never needs ``dot``.

Every notebook display of a graph (``dag``, ``run``, ``run.graph()``, the live view) is
HTML holding the SVG inline, scaled down to the cell's width (:func:`svg_html`): an
``image/svg+xml`` output is shown by JupyterLab as an ``<img>`` at its full size (a wide
level needs sideways scrolling there) and without the nodes' tooltips.

The module (about 750 lines) is the one home of the graph picture: the static graph, the
live template that recolours it, and the labels and legend both share.
"""

from __future__ import annotations

import html
import re
import time
import warnings
from collections import Counter
from collections.abc import Mapping
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import graphviz

from oktyv_nb.errors import GraphvizNotFound
from oktyv_nb.model.graph import Graph, critical_path
from oktyv_nb.results.display.theme import FAINT, INK, MUTED, STATUS_STYLE, status_colors
from oktyv_nb.results.stats import makespan, skip_cause
from oktyv_nb.units import format_seconds, plural

if TYPE_CHECKING:
    from oktyv_nb.execution.engine import RunOutcome
    from oktyv_nb.execution.records import TaskRecord

__all__ = [
    "COMPACT_THRESHOLD",
    "STATUS_STYLE",
    "DagDigraph",
    "SvgTemplate",
    "build_digraph",
    "format_seconds",
    "mimebundle",
    "save_graph",
    "svg_html",
    "to_svg",
]

#: Graphs with more tasks than this get compact labels (id only) unless ``compact`` is given.
COMPACT_THRESHOLD = 100

_CRITICAL = INK
_SKIP_EDGE = STATUS_STYLE["failed"][1]  # the failed dependency that made a task skip
_EDGE = FAINT
#: The mark on a skip-cause edge: an edge label, padded so that its text keeps clear of the
#: edge and its arrowhead (dot sets a label right beside the edge's middle).
_SKIP_MARK = (f'<<table border="0" cellborder="0" cellpadding="3"><tr><td>'
              f'<font point-size="8" color="{_SKIP_EDGE}">skip</font></td></tr></table>>')
_MAX_LABEL = 48  # characters of an id or tool shown in a label; the tooltip has it all
_FONT = "Helvetica,Arial,sans-serif"
_NoHtml = graphviz.quoting.NoHtml  # what graphviz.nohtml and graphviz.escape return


# ---------------------------------------------------------------------- helpers
def _short(text: str, limit: int = _MAX_LABEL) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _h(text: str, limit: int = _MAX_LABEL) -> str:
    """Text for an HTML-like label: shortened, then entity-escaped."""
    return html.escape(_short(str(text), limit), quote=True)


def _esc(text: str) -> str:
    """A plain (escString) attribute value shown literally: backslashes and <...> disarmed
    (``graphviz.escape``)."""
    return _NoHtml(str(text).replace("\n", " ").replace("\\", "\\\\"))


def _names(graph: Graph) -> dict[str, str]:
    """DOT node names: the task id when DOT can carry it verbatim, else ``#<index>``.

    DOT quoted strings cannot end in a backslash and fold ``\\"`` into ``"``; ids starting
    with ``<`` would read as HTML; in an edge, ``a:b`` names port ``b`` of node ``a``.
    Helper nodes use names starting with ``#`` too, and ids starting with ``#`` are renamed,
    so nothing collides.
    """
    names: dict[str, str] = {}
    for tid, node in graph.nodes.items():
        if "\\" in tid or '"' in tid or ":" in tid or tid[:1] in ("<", "#") or not tid:
            names[tid] = f"#{node.index}"
        else:
            names[tid] = tid
    return names


def _node_name(name: str) -> str:
    return graphviz.nohtml(name)


# DOT quoting, as graphviz.quoting.quote does it (the same rules and the same text), without
# its per-call argument checks: a 1,000-task picture quotes about 15,000 values. Nodes and
# edges are written as body lines with these; graph-level attributes go through graphviz.
_DOT_ID = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*|-?(\.[0-9]+|[0-9]+(\.[0-9]*)?))$").match
_DOT_HTML = re.compile(r"<.*>$", re.DOTALL).match
_DOT_KEYWORDS = frozenset(("node", "edge", "graph", "digraph", "subgraph", "strict"))
_ODD_BACKSLASHES = re.compile(r"(?<!\\)(?:\\{2})*\\$").search
_UNESCAPED_QUOTE = re.compile(r"(?P<escaped_backslashes>(?:\\{2})*)\\?(?P<literal_quote>\")")


def _quote(text: str) -> str:
    """``text`` as a DOT identifier: as is when it is an ID or an HTML-like ``<...>`` string
    (not marked ``nohtml``), else double-quoted with its quotes escaped."""
    if not isinstance(text, _NoHtml) and _DOT_HTML(text):
        return text
    if " " not in text and _DOT_ID(text) and text.lower() not in _DOT_KEYWORDS:
        return text  # (an ID never holds a space: the test is only quicker)
    if text[-1:] == "\\" and _ODD_BACKSLASHES(text):
        warnings.warn(f"expect syntax error scanning invalid quoted string: {text!r}",
                      category=graphviz.DotSyntaxWarning, stacklevel=2)
    if '"' in text:
        text = _UNESCAPED_QUOTE.sub(r"\g<escaped_backslashes>\\\g<literal_quote>", text)
    return f'"{text}"'


_QUOTED: dict[str, str] = {}  # plain strings that repeat (colours, styles, sizes), quoted


def _quote_common(text: str) -> str:
    """:func:`_quote` of a value that repeats, remembered (plain ``str`` only: a ``nohtml``
    string of the same text may quote differently)."""
    if type(text) is not str:
        return _quote(text)
    q = _QUOTED.get(text)
    if q is None:
        q = _quote(text)
        if len(_QUOTED) < 1024:
            _QUOTED[text] = q
    return q


def _attr_list(attrs: Mapping[str, str]) -> str:
    """`` [label=... k=v ...]`` as graphviz writes a node's or an edge's attributes: the
    label first, the others sorted by name (the names are plain DOT IDs)."""
    if not attrs:
        return ""
    quote = _quote
    common = _quote_common
    plain = _COMMON
    parts = [
        f"{key}={common(value) if key in plain else quote(value)}"
        for key, value in sorted(attrs.items()) if value is not None and key != "label"
    ]
    label = attrs.get("label")
    if label is not None:
        parts.insert(0, f"label={quote(label)}")
    return f" [{' '.join(parts)}]" if parts else ""


_COMMON = frozenset(("fillcolor", "color", "style", "fontcolor", "peripheries", "penwidth",
                     "fontsize"))


# ---------------------------------------------------------------------- the graph
class DagDigraph(graphviz.Digraph):
    """A ``graphviz.Digraph`` whose notebook display is the SVG scaled to the cell's width
    (:func:`mimebundle`) and, without the ``dot`` program, the DOT text and the install hint
    instead of an exception (SPEC §11). Its text form (``repr``, and what a notebook stores
    beside the picture) is the one-line summary, not an address."""

    #: ``title: 5 tasks, 3 levels — 5 success; makespan …, critical path a → c → e``
    summary: str = ""

    def __repr__(self) -> str:
        return f"<graph {self.summary}>" if self.summary else super().__repr__()

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython's text/plain
        p.text(repr(self))

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None, **kwargs: Any
    ) -> dict[str, Any]:
        """The scaled SVG as ``text/html``; a format asked for by ``include`` (such as
        ``image/png``) as graphviz makes it."""
        if include is None or "text/html" in include:
            return mimebundle(self)
        try:
            return super()._repr_mimebundle_(include, exclude, **kwargs)
        except graphviz.ExecutableNotFound:
            return _fallback_bundle(self, GraphvizNotFound())


def build_digraph(
    graph: Graph,
    outcome: RunOutcome | None = None,
    *,
    states: Mapping[str, str] | None = None,
    attempts: Mapping[str, int] | None = None,
    title: str | None = None,
    direction: str = "TB",
    compact: bool | None = None,
    legend: bool = True,
    show_critical: bool = True,
) -> graphviz.Digraph:
    """The levelled graph of ``graph`` as a ``graphviz.Digraph``.

    ``outcome`` (a finished or interrupted run) colours nodes by status and adds durations
    (seconds), attempts, error codes, the critical path (bold, from the measured durations)
    and the dependency that made each skipped task skip (dashed red edge). ``states``
    (task id -> status) colours a live frame instead, ``attempts`` (task id -> attempts so
    far) shows retries in it; both override the outcome's records where given.
    ``direction`` is ``TB`` (levels top to bottom) or ``LR``; ``compact`` (default: more
    than :data:`COMPACT_THRESHOLD` tasks) shows only ids, in smaller boxes; ``legend`` adds
    the colour key; ``show_critical`` draws the critical path.
    """
    return _build(graph, outcome, states=states, attempts=attempts, title=title,
                  direction=direction, compact=compact, legend=legend,
                  show_critical=show_critical)


def _build(
    graph: Graph,
    outcome: RunOutcome | None = None,
    *,
    states: Mapping[str, str] | None = None,
    attempts: Mapping[str, int] | None = None,
    title: str | None = None,
    direction: str = "TB",
    compact: bool | None = None,
    legend: bool = True,
    show_critical: bool = True,
    tag: str | None = None,
    summary: bool = True,
    map_slot: str | None = None,
) -> graphviz.Digraph:
    """:func:`build_digraph`; ``tag`` gives each task node the SVG id ``<tag>_<index>``
    (for :class:`SvgTemplate`); ``summary=False`` leaves status counts out of the title."""
    direction = direction.upper()
    if direction not in ("TB", "LR", "BT", "RL"):
        raise ValueError(f"direction must be 'TB' or 'LR' (or 'BT', 'RL'), got {direction!r}")
    n = len(graph.nodes)
    if compact is None:
        compact = n > COMPACT_THRESHOLD
    records = outcome.records if outcome is not None else {}
    coloured = outcome is not None or states is not None

    status: dict[str, str] = {}
    tries: dict[str, int] = {}
    if coloured and states is None and attempts is None:  # a finished run: its records
        for tid in graph.nodes:
            rec = records.get(tid)
            if rec is None:
                status[tid], tries[tid] = "pending", 0
            else:
                status[tid], tries[tid] = rec.status, rec.attempts
    elif coloured:
        for tid in graph.nodes:
            rec = records.get(tid)
            st = states.get(tid) if states is not None else None
            status[tid] = st or (rec.status if rec is not None else "pending")
            a = attempts.get(tid) if attempts is not None else None
            tries[tid] = a if a is not None else (rec.attempts if rec is not None else 0)

    crit_nodes: set[str] = set()
    crit_edges: set[tuple[str, str]] = set()
    crit_s = 0.0
    path: list[str] = []
    if show_critical and outcome is not None and records:
        durations = {tid: r.duration for tid, r in records.items() if tid in graph.nodes}
        if any(d > 0 for d in durations.values()):
            path, crit_s = critical_path(graph, durations)
            crit_nodes = set(path)
            crit_edges = set(pairwise(path))

    causes: dict[str, str] = {}
    for tid, rec in records.items():
        cause = skip_cause(rec)
        if cause in graph.nodes and status.get(tid, rec.status) == "skipped":
            causes[tid] = cause  # type: ignore[assignment]

    names = _names(graph)
    quoted = {tid: _quote(_node_name(name)) for tid, name in names.items()}
    dot = DagDigraph(name=graphviz.nohtml(re.sub(r'["\\]', "_", _short(title or "dag", 80))))
    dot.attr(
        rankdir=direction,
        newrank="true",
        nodesep="0.15" if compact else "0.3",
        ranksep="0.45" if compact else "0.55",
        fontname=_FONT,
        bgcolor="white",
        pad="0.2",
    )
    if n > 300:  # keep dot's crossing minimisation quick on big graphs
        dot.attr(mclimit="0.5", nslimit="2", nslimit1="2", searchsize="20")
    dot.attr(
        "node",
        shape="box",
        style="rounded,filled",
        fontname=_FONT,
        fontsize="9" if compact else "11",
        margin="0.05,0.02" if compact else "0.12,0.06",
        height="0.25" if compact else "0.4",
        penwidth="1",
    )
    dot.attr("edge", color=_EDGE, arrowsize="0.5" if compact else "0.7", penwidth="1",
             fontname=_FONT)

    text = summary_text(graph, outcome, status, crit_s if crit_nodes else None)
    label = _graph_label(title, graph, outcome, status if summary else {}, coloured, legend,
                         crit_s, bool(crit_nodes), bool(causes),
                         any(a > 1 for a in tries.values()), text if summary else None)
    if label:
        dot.attr(label=label, labelloc="t", labeljust="l", fontsize="12")

    # One rank per level, headed by its label; invisible edges keep the labels in order.
    # Written as the lines dot.subgraph()/node()/edge() would write (see _quote).
    body = dot.body
    for k, level in enumerate(graph.levels):
        body.append(f"\tsubgraph level_{k} {{\n")
        body.append("\t\trank=same\n")
        head = _attr_list({
            "label": f"level {k}", "shape": "plaintext", "style": "", "fontsize": "9",
            "fontcolor": FAINT, "tooltip": f"level {k}: {plural(len(level), 'task')}",
            "margin": "0",
            "height": "0.2",
        })
        body.append(f'\t\t"#level{k}"{head}\n')
        for tid in level:
            body.append("\t" + _node_line(graph, tid, quoted[tid], status, tries, coloured,
                                           compact, tid in crit_nodes, records.get(tid), tag,
                                           map_slot))
        body.append("\t}\n")
    for k in range(1, len(graph.levels)):
        body.append(f'\t"#level{k - 1}" -> "#level{k}" [style=invis]\n')

    dot.summary = f"{title or 'dag'}: " + text + (
        f" ({' → '.join(path)})" if crit_nodes else ""
    )
    for dep, tid in graph.edges():
        if not (tid in causes or (crit_edges and (dep, tid) in crit_edges)
                or (coloured and status.get(tid) == "skipped")):
            body.append(f"\t{quoted[dep]} -> {quoted[tid]}\n")  # no attributes
            continue
        attrs: dict[str, str] = {}
        if (dep, tid) in crit_edges:
            attrs.update(penwidth="2.5", color=_CRITICAL, style="bold")
        if causes.get(tid) == dep:
            attrs.update(style="dashed", color=_SKIP_EDGE, penwidth="1.5",
                         tooltip=_esc(f"{tid} skipped because {dep} did not succeed"))
            if not compact:  # a label (not an xlabel): dot keeps it clear of the edge
                attrs.update(label=_SKIP_MARK)
        elif coloured and status.get(tid) == "skipped":
            attrs.setdefault("style", "dashed")
        body.append(f"\t{quoted[dep]} -> {quoted[tid]}{_attr_list(attrs)}\n")
    return dot


def _node_line(
    graph: Graph,
    tid: str,
    name: str,
    status: Mapping[str, str],
    tries: Mapping[str, int],
    coloured: bool,
    compact: bool,
    critical: bool,
    rec: TaskRecord | None,
    tag: str | None,
    map_slot: str | None = None,
) -> str:
    """The DOT statement of task ``tid``'s node (``name``: its quoted DOT name);
    ``map_slot`` is the text a mapped node shows in place of its child counts (the live
    template's placeholder)."""
    node = graph.nodes[tid]
    st = status.get(tid, "pending") if coloured else None
    fill, border = STATUS_STYLE.get(st, STATUS_STYLE["pending"]) if st else status_colors(None)
    n_try = tries.get(tid, 0)
    max_try = node.retry.max_attempts
    tip = f"{tid} · tool {node.tool} · level {node.level}"
    mapped = node.map is not None
    if mapped:
        over = node.map.over
        tip += (f" · mapped over {over if isinstance(over, str) else plural(len(over), 'item')}"
                f" as {node.map.param}")
        if node.map.max_concurrent:
            tip += f" · at most {node.map.max_concurrent} at once"
    if node.pool is not None:
        tip += f" · pool {node.pool}"
    if st:
        tip += f" · {st}"
        if n_try > 1 or (n_try and max_try > 1):
            tip += f" · attempt {n_try}/{max_try}"
        err = rec.error if rec is not None and st in ("failed", "skipped") else None
        if err is not None:  # the code and the first line of the message
            first = (err.message or "").strip().splitlines()[0] if err.message else ""
            tip += f" · {err.code}: {_short(first, 160)}" if first else f" · {err.code}"
    if mapped:
        label, tip = _map_label(tid, node.tool, st, rec, n_try, max_try, compact, map_slot, tip)
    elif compact:
        label = _esc(_short(tid, 24))
    else:
        label = _html_label(tid, node.tool, _detail(st, rec, n_try, max_try))
    # The attributes as graphviz writes them: the label first, then sorted by name (an
    # attribute added here goes in its place in that order).
    common = _quote_common
    parts = [f"label={_quote(label)}", f"color={common(_CRITICAL if critical else border)}",
             f"fillcolor={common(fill)}"]
    if st == "skipped":
        parts.append(f"fontcolor={common('#868e96')}")
    if tag is not None:
        parts.append(f"id={_quote(f'{tag}_{node.index}')}")
    if mapped:  # clear of the 3-D edges
        parts.append(f"margin={common('0.1,0.03' if compact else '0.22,0.08')}")
    if critical:
        parts.append(f"penwidth={common('3')}")
    if n_try > 1:
        parts.append(f"peripheries={common('2')}")  # retried: double border
    if mapped:  # a stack: its children are not drawn one by one
        parts.append(f"shape={common('box3d')}")
        parts.append(f"style={common('filled,dashed' if st == 'skipped' else 'filled')}")
    elif st == "skipped":
        parts.append(f"style={common('rounded,filled,dashed')}")
    parts.append(f"tooltip={_quote(_esc(tip))}")
    return f"\t{name} [{' '.join(parts)}]\n"


def _map_label(
    tid: str, tool: str, st: str | None, rec: TaskRecord | None, n_try: int, max_try: int,
    compact: bool, map_slot: str | None, tip: str,
) -> tuple[str, str]:
    """A mapped node's label (``fetch ×40``, its child counts by status, its error code and
    span) and tooltip."""
    kids = rec.children if rec is not None else None
    head = f"{tid} ×{len(kids) if kids is not None else '?'}"
    if kids is not None:
        tip += f" · {map_counts([c.status for c in kids])}"
    if compact:
        return _esc(_short(head, 28)), tip
    counts = map_slot if map_slot is not None else (
        _h(map_counts([c.status for c in kids])) if kids else None)
    detail = _detail(st, rec, n_try, max_try) if not kids else None
    if counts is not None:
        colour = status_colors(st)[1]
        if map_slot is None and st in ("success", "failed") and rec is not None \
                and rec.end is not None:
            counts += f" · {format_seconds(rec.duration)}"
        detail = f'<font point-size="9" color="{colour}">{counts}</font>'
        if st == "failed" and rec is not None and rec.error is not None:
            detail = (f'<font point-size="9" color="{colour}"><b>'
                      f"{_h(rec.error.code, 28)}</b></font><br/>{detail}")
    return _html_label(head, tool, detail), tip


#: What the live template's mapped nodes show before :meth:`SvgTemplate.recolour` puts their
#: child counts in: as wide as a large count, so that the box fits one.
_MAP_SLOT = "0000 ✓ 0000 ✗ / 0000"
#: The marks of a map's child counts, by status.
_MAP_MARKS = (("success", "✓"), ("failed", "✗"), ("skipped", "⊘"), ("running", "▶"),
              ("retrying", "↻"))


def map_counts(statuses: list[str]) -> str:
    """A mapped task's children by status, as its node shows them: ``38 ✓ 2 ✗ / 40``."""
    counts = Counter(statuses)
    parts = [f"{counts[st]} {mark}" for st, mark in _MAP_MARKS if counts[st]]
    return f"{' '.join(parts) or '0 ✓'} / {len(statuses)}"


def _html_label(tid: str, tool: str, detail: str | None) -> str:
    rows = [f"<b>{_h(tid)}</b>", f'<font point-size="9" color="{MUTED}">{_h(tool)}</font>']
    if detail:
        rows.append(detail)
    return "<" + "<br/>".join(rows) + ">"


def _detail(st: str | None, rec: TaskRecord | None, n_try: int, max_try: int) -> str | None:
    """The label's lines under the tool (HTML): a failure's error code on a line of its own,
    then duration, attempts or state."""
    if st is None:
        return None
    colour = status_colors(st)[1]
    lines: list[str] = []
    if st == "failed" and rec is not None and rec.error is not None:
        lines.append(f'<font point-size="9" color="{colour}"><b>{_h(rec.error.code, 28)}'
                     "</b></font>")
    parts: list[str] = []
    if st in ("success", "failed") and rec is not None and rec.end is not None:
        parts.append(format_seconds(rec.duration))
    if st in ("running", "retrying", "ready"):
        parts.append(st)
    if st in ("running", "retrying", "ready") and max_try > 1 and n_try:
        parts.append(f"attempt {n_try}/{max_try}")
    elif n_try > 1:
        parts.append(plural(n_try, "attempt"))
    if st == "skipped":
        parts.append("skipped")
    if rec is not None and rec.reused:
        parts.append("reused")
    if rec is not None and rec.cached:
        parts.append("cached")
    if rec is not None and rec.rolled_back:
        parts.append("rolled back")
    if rec is not None and rec.rollback_error is not None:
        parts.append("rollback failed")
    if parts:
        lines.append(f'<font point-size="9" color="{colour}">' + " · ".join(parts) + "</font>")
    return "<br/>".join(lines) or None


def summary_text(
    graph: Graph,
    outcome: RunOutcome | None,
    status: Mapping[str, str],
    critical_s: float | None,
) -> str:
    """The one-line summary a graph picture is headed by, and its plain-text form: tasks and
    levels, the count of each status, the makespan and critical path (seconds)."""
    summary = f"{plural(len(graph.nodes), 'task')}, {plural(len(graph.levels), 'level')}"
    if status:
        counts: dict[str, int] = {}
        for st in status.values():
            counts[st] = counts.get(st, 0) + 1
        summary += " — " + ", ".join(
            f"{counts[s]} {s}" for s in STATUS_STYLE if counts.get(s)
        )
    if outcome is not None and outcome.perf_end is not None:
        if any(r.spans for r in outcome.ran()):
            summary += f"; makespan {format_seconds(makespan(outcome.records.values()))}"
        if critical_s is not None:
            summary += f", critical path {format_seconds(critical_s)}"
        if outcome.interrupted or outcome.aborted:
            summary += " (interrupted: what ran until then)"
    return summary


def _graph_label(
    title: str | None,
    graph: Graph,
    outcome: RunOutcome | None,
    status: Mapping[str, str],
    coloured: bool,
    legend: bool,
    crit_s: float,
    has_critical: bool,
    has_skip_cause: bool,
    has_retry: bool,
    summary_line: str | None = None,
) -> str | None:
    """The graph's HTML-like label; ``summary_line``: the :func:`summary_text` of these
    arguments when the caller has it already."""
    rows: list[str] = []
    head = f"<b>{_h(title, 80)}</b>  " if title else ""
    summary = summary_line if summary_line is not None else summary_text(
        graph, outcome, status if coloured else {}, crit_s if has_critical else None)
    rows.append(f'<tr><td align="left">{head}'
                f'<font point-size="10" color="{MUTED}">{html.escape(summary)}</font></td></tr>')
    if legend and coloured:
        cells = []
        for st, (fill, border) in STATUS_STYLE.items():
            cells.append(
                f'<td bgcolor="{fill}" color="{border}" border="1" style="rounded">'
                f'<font point-size="9">{st}</font></td>'
            )
        if has_critical:
            cells.append('<td border="0"><font point-size="9"><b>▬ critical path</b></font></td>')
        if has_skip_cause:
            cells.append(f'<td border="0"><font point-size="9" color="{_SKIP_EDGE}">'
                         f"- - → skip cause</font></td>")
        if has_retry:
            cells.append('<td border="0"><font point-size="9">double border = retried</font></td>')
        rows.append('<tr><td align="left"><table border="0" cellborder="0" cellspacing="3" '
                    'cellpadding="2"><tr>' + "".join(cells) + "</tr></table></td></tr>")
    if not rows:
        return None
    return ('<<table border="0" cellborder="0" cellspacing="0" cellpadding="0">'
            + "".join(rows) + "</table>>")


# ---------------------------------------------------------------------- live frames
class SvgTemplate:
    """The SVG of a graph laid out once, recoloured per live frame without running ``dot``.

    A live frame only changes node colours, so the layout (``dot``, ~40 ms for a dozen tasks,
    about a second for 500) is computed once; :meth:`recolour` then rewrites each task
    node's fill and border in the SVG text, in time linear in its size (about a millisecond
    for 500 tasks). Raises :class:`~oktyv_nb.errors.GraphvizNotFound` without ``dot``.
    """

    _counter = 0

    def __init__(
        self,
        graph: Graph,
        *,
        title: str | None = None,
        direction: str = "TB",
        compact: bool | None = None,
    ) -> None:
        SvgTemplate._counter += 1
        tag = f"oktyv{SvgTemplate._counter}x{id(self) & 0xFFFFFF:x}"
        self.graph = graph
        pending = dict.fromkeys(graph.nodes, "pending")
        digraph = _build(graph, states=pending, title=title, direction=direction,
                         compact=compact, show_critical=False, tag=tag, summary=False,
                         map_slot=_MAP_SLOT)
        t0 = time.perf_counter()
        svg = to_svg(digraph)
        #: seconds ``dot`` took to lay the graph out
        self.layout_s = time.perf_counter() - t0
        by_index = {node.index: tid for tid, node in graph.nodes.items()}
        self._pieces: list[str] = []  # static text, between slots
        self._slots: list[tuple[str, bool]] = []  # (task id, counts?) of each slot
        pos = 0
        marker = f'<g id="{tag}_'
        slot_text = html.escape(_MAP_SLOT, quote=False)
        for m in re.finditer(re.escape(marker) + r'(\d+)" class="node">', svg):
            tid = by_index.get(int(m.group(1)))
            start = svg.find(' fill="', m.end())
            end = svg.find('"', svg.find(' stroke="', start) + len(' stroke="'))
            if tid is None or start < 0 or end < 0:
                continue
            self._pieces.append(svg[pos:start])
            self._slots.append((tid, False))
            pos = end + 1
            if graph.nodes[tid].map is not None:  # the child counts of a mapped node
                close = svg.find("</g>", pos)
                at = svg.find(slot_text, pos, close)
                if at >= 0:
                    self._pieces.append(svg[pos:at])
                    self._slots.append((tid, True))
                    pos = at + len(slot_text)
        self._pieces.append(svg[pos:])
        self._style = {
            st: f' fill="{fill}" stroke="{border}"'
            + (' stroke-dasharray="5,2"' if st == "skipped" else "")
            + (' stroke-width="2"' if st in ("running", "retrying") else "")
            for st, (fill, border) in STATUS_STYLE.items()
        }

    def recolour(
        self, states: Mapping[str, str], counts: Mapping[str, str] | None = None
    ) -> str:
        """The SVG with each task coloured by ``states`` (task id -> status; missing ids
        are pending) and each mapped task showing ``counts`` (task id -> its child counts,
        :func:`map_counts`; "×?" before it expands)."""
        style = self._style
        pending = style["pending"]
        out = [self._pieces[0]]
        for (tid, is_count), piece in zip(self._slots, self._pieces[1:], strict=True):
            if is_count:
                text = counts.get(tid) if counts else None
                out.append(html.escape(text if text is not None else "×?", quote=False))
            else:
                out.append(style.get(states.get(tid, "pending"), pending))
            out.append(piece)
        return "".join(out)


# ---------------------------------------------------------------------- output
def to_svg(digraph: graphviz.Digraph) -> str:
    """SVG text of ``digraph``; raises :class:`~oktyv_nb.errors.GraphvizNotFound` without
    the ``dot`` program."""
    try:
        return digraph.pipe(format="svg", encoding="utf-8")
    except graphviz.ExecutableNotFound as exc:
        raise GraphvizNotFound() from exc


def save_graph(digraph: graphviz.Digraph, path: str | Path) -> Path:
    """Write ``digraph`` to ``path`` as SVG or PNG (by suffix), creating parent directories;
    returns the path. Raises :class:`~oktyv_nb.errors.GraphvizNotFound` without ``dot``."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("svg", "png"):
        raise ValueError(
            f"save_graph({str(path)!r}): the file name must end in .svg or .png, "
            f"got {path.suffix or 'no suffix'!r}"
        )
    try:
        data = digraph.pipe(format=fmt)
    except graphviz.ExecutableNotFound as exc:
        raise GraphvizNotFound() from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


#: The style that scales a graph's SVG down to the width of its container.
_FIT = "max-width:100%;height:auto;"


def svg_html(svg: str) -> str:
    """SVG text (as :func:`to_svg` gives it) for inline HTML, scaled down to the width of
    its container: without the XML declaration and DOCTYPE, the root ``<svg>`` styled
    ``max-width:100%;height:auto`` (its ``viewBox`` keeps the proportions). The one way
    every notebook display of a graph fits its cell."""
    start = svg.find("<svg")
    if start < 0:
        return svg
    svg = svg[start:]
    end = svg.find(">")
    head = svg[:end]
    if ' style="' in head:
        head = head.replace(' style="', f' style="{_FIT}', 1)
    else:
        head += f' style="{_FIT}"'
    return head + svg[end:]


def mimebundle(digraph: graphviz.Digraph) -> dict[str, Any]:
    """A Jupyter mime bundle: ``text/html`` holding the SVG scaled to the cell's width
    (:func:`svg_html`); without ``dot``, the DOT source and the install hint as
    ``text/plain`` and ``text/html`` (never a traceback)."""
    try:
        return {"text/html": svg_html(to_svg(digraph))}
    except GraphvizNotFound as exc:
        return _fallback_bundle(digraph, exc)


def _fallback_bundle(digraph: graphviz.Digraph, exc: GraphvizNotFound) -> dict[str, Any]:
    hint = str(exc)
    source = digraph.source
    return {
        "text/plain": f"{source}\n{hint}",
        "text/html": (
            '<div class="oktyv-graph-missing-dot">'
            f"<p><b>Graph not rendered:</b> {html.escape(hint)}</p>"
            f"<pre>{html.escape(source)}</pre></div>"
        ),
    }
