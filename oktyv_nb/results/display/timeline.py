"""The Gantt chart of a run (SPEC §1, §7): ``run.timeline()`` or ``timeline(outcome)``.

One bar per attempt (:class:`~oktyv_nb.records.AttemptSpan`), coloured by its outcome
(success, failed, timeout, cancelled); retries show as separate bars numbered ``#1``, ``#2``
... with the backoff wait between them drawn as a dotted line; skipped tasks are marked
``×`` at the moment they were skipped, tasks reused from an earlier run or taken from the
result cache ``◇``; the critical
path (from the measured durations) is outlined in black; in the per-task view a thin grey line
before a task's first bar is its wait from ready (all dependencies done) to start (a slot was
free). The time axis is seconds since the run started; ``xmax`` fixes its right end so that
several charts share one scale.

Drawn with the object-oriented matplotlib API only (``matplotlib.figure.Figure``): nothing
touches pyplot's global state, so it is safe under the Agg backend, in threads and in tests,
and a figure needs no ``plt.close``. In Jupyter the returned figure renders itself as PNG.

The artists carry ids (``get_gid()``) for code that inspects a chart: the bars of one outcome
are one ``PolyCollection`` ``attempts:<outcome>`` (``attempts:<outcome>:critical`` on the
critical path), backoff waits are lines ``backoff``, ready-to-start waits one
``LineCollection`` ``wait``, marks ``skipped`` and ``reused``.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from oktyv_nb.execution.records import SKIPPED, TaskRecord
from oktyv_nb.results.display.theme import (
    ACCENT,
    FAINT,
    GRID,
    INK,
    MUTED,
    OUTCOME_COLORS,
    SHADE,
)
from oktyv_nb.results.stats import run_stats
from oktyv_nb.units import plural

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from oktyv_nb.execution.engine import RunOutcome

__all__ = ["OUTCOME_COLORS", "TimelineFigure", "timeline"]

GroupBy = Literal["task", "worker", "level"]

_OTHER = ("#ced4da", MUTED)  # an outcome without a colour of its own
_CRITICAL = INK
_SKIP = FAINT
_BACKOFF = MUTED
_BAR = 0.62  # bar height in row units
_MAX_LABELLED_ROWS = 80  # more rows than this: no tick labels
_MAX_BAR_TEXT = 400  # more bars than this: no text inside bars
_LABEL = 28  # characters of an id shown on the axis
_CHAR = 0.0105  # width of one character of bar text, as a fraction of the time span


class TimelineFigure(Figure):
    """A matplotlib ``Figure`` that renders itself in Jupyter (PNG) without pyplot."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=100)
        return buf.getvalue()


class _Row:
    __slots__ = ("group", "label", "last_end")

    def __init__(self, label: str, group: str) -> None:
        self.label = label
        self.group = group
        self.last_end = float("-inf")


def _short(text: str, n: int = _LABEL) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def timeline(
    outcome: RunOutcome | Any,
    *,
    ax: Axes | None = None,
    group_by: GroupBy = "task",
    show_critical: bool = True,
    highlight: Iterable[str] | None = None,
    show_wait: bool = True,
    xmax: float | None = None,
    title: str | None = None,
) -> Figure:
    """Draw the Gantt chart of a run and return its ``Figure``.

    ``outcome`` is a :class:`~oktyv_nb.engine.RunOutcome` or a :class:`~oktyv_nb.run.Run`.
    ``group_by``: ``"task"`` (one row per task, ordered by level then start; an expanded
    map's children in rows under its own, packed into lanes past :data:`MAP_ROWS`), ``"worker"``
    (one row per thread / loop / process where attempts ran; attempts that overlap on one
    worker, such as async tools on the event loop, get extra lanes) or ``"level"``.
    ``show_critical`` outlines the critical path (the DAG's longest chain by measured
    durations). ``highlight`` outlines the given task ids instead, under the legend entry
    "highlighted": for instance the chain that set a schedule's makespan, which differs from
    the critical path when tasks waited for slots or level barriers (unknown ids are a
    ``ValueError``). ``show_wait`` (``group_by="task"`` only)
    draws each task's wait from ready to its first start as a thin grey line. ``xmax`` (in
    seconds) sets the right end of the time axis instead of fitting it to this run, so that
    charts of several runs compare on one scale: draw them into axes made with
    ``plt.subplots(n, sharex=True)`` and pass the longest makespan (a ``ValueError`` if it is
    not positive). ``ax`` draws into existing axes (the figure returned is then theirs);
    otherwise a new figure sized to the rows is made. Times are seconds since the run started.
    """
    outcome = getattr(outcome, "outcome", outcome)  # a Run
    if group_by not in ("task", "worker", "level"):
        raise ValueError(f"group_by must be 'task', 'worker' or 'level', got {group_by!r}")
    if xmax is not None and not xmax > 0:
        raise ValueError(f"xmax must be a positive number of seconds, got {xmax!r}")
    t0 = outcome.perf_start
    records = outcome.records
    nodes = outcome.graph.nodes
    stats = run_stats(outcome)
    critical = set(stats.critical_path) if show_critical and stats.critical_path_s > 0 else set()
    label = "critical path"
    if highlight is not None:
        critical = set(highlight)
        unknown = sorted(critical - set(outcome.records))
        if unknown:
            raise ValueError(f"highlight names unknown tasks: {', '.join(unknown)}")
        label = "highlighted"

    def first_time(rec: TaskRecord) -> float:
        if rec.spans:
            return rec.spans[0].start
        return rec.end if rec.end is not None else t0

    order = sorted(
        records.values(), key=lambda r: (r.level, first_time(r), nodes[r.task_id].index)
    )
    rows: list[_Row] = []
    # (row, start, end, outcome, critical, text) per attempt; (row, t, task) per mark
    bars: list[tuple[int, float, float, str, bool, str]] = []
    gaps: list[tuple[int, float, float]] = []
    skips: list[tuple[int, float]] = []
    reused: list[tuple[int, float]] = []
    notes: list[tuple[int, float, str]] = []  # text next to skip / reuse marks
    waits: list[tuple[int, float, float]] = []  # (row, ready, first start)

    if group_by == "task":
        for rec in order:
            i = len(rows)
            if rec.children:  # an expanded map: a head row, its children grouped under it
                rows.append(_Row(f"{rec.task_id} ×{len(rec.children)}", f"level {rec.level}"))
                _place_children(rec, rows, t0, critical, bars, gaps, skips, reused, waits,
                                show_wait)
                continue
            rows.append(_Row(rec.task_id, f"level {rec.level}"))
            _place_task(rec, i, t0, critical, bars, gaps, skips, reused)
            ready = rec.ready_at
            if show_wait and rec.spans and ready is not None and rec.spans[0].start > ready:
                waits.append((i, ready - t0, rec.spans[0].start - t0))
            if not rec.spans and rec.finished:
                notes.append((i, (rec.end if rec.end is not None else t0) - t0, _why(rec)))
    else:
        lanes: dict[str, list[int]] = {}
        marks: dict[str, int] = {}

        def lane_for(group: str, start: float, end: float) -> int:
            for i in lanes.setdefault(group, []):
                if rows[i].last_end <= start + 1e-9:
                    rows[i].last_end = end
                    return i
            rows.append(_Row(group if not lanes[group] else "", group))
            rows[-1].last_end = end
            lanes[group].append(len(rows) - 1)
            return len(rows) - 1

        def group_of(rec: TaskRecord, worker: str | None) -> str:
            if group_by == "level":
                return f"level {rec.level}"
            return worker or "(unknown worker)"

        spans = sorted(
            ((s, rec) for rec in outcome.ran() for s in rec.spans), key=lambda x: x[0].start
        )
        for span, rec in spans:
            i = lane_for(group_of(rec, span.worker), span.start, span.end)
            text = rec.task_id if rec.attempts == 1 else f"{rec.task_id} #{_index(rec, span)}"
            bars.append((i, span.start - t0, span.end - t0, span.outcome,
                         rec.task_id in critical, text))
        for rec in order:
            if rec.spans or rec.children:
                continue
            group = f"level {rec.level}" if group_by == "level" else "not run"
            key = f"{group}\0marks"
            if key not in marks:
                rows.append(_Row(group if group not in lanes else "", group))
                marks[key] = len(rows) - 1
            t = (rec.end if rec.end is not None else t0) - t0
            (reused if rec.reused or rec.cached else skips).append((marks[key], t))
            notes.append((marks[key], t, rec.task_id))
        # keep each group's lanes together, groups in order of first use
        rows, remap = _grouped(rows)
        bars = [(remap[i], *rest) for i, *rest in bars]  # type: ignore[misc]
        skips = [(remap[i], t) for i, t in skips]
        reused = [(remap[i], t) for i, t in reused]
        notes = [(remap[i], t, text) for i, t, text in notes]

    fig, ax = _axes(ax, len(rows))
    _draw(ax, rows, bars, gaps, skips, reused, notes, group_by)
    span_end = max([b[2] for b in bars] + [t for _, t in skips] + [0.0])
    # waits shorter than 0.5 % of the chart would be specks: drawn only when visible
    waits = [w for w in waits if w[2] - w[1] >= 0.005 * (xmax or span_end or 1.0)]
    if waits:
        ax.add_collection(LineCollection(
            [[(a, i), (b, i)] for i, a, b in waits], colors=FAINT, linewidths=1.6,
            capstyle="butt", zorder=1, gid="wait",
        ))
    if xmax is not None:
        ax.set_xlim(0.0, xmax)
    else:
        ax.set_xlim(0.0, span_end * 1.04 if span_end > 0 else 1.0)
    ax.set_xlabel("seconds since run start")
    if group_by == "task":
        ax.set_ylabel("task")
    else:
        ax.set_ylabel(group_by)
    ax.set_title(title if title is not None else "Run timeline", loc="left",
                 fontweight="bold", fontsize=11)
    summary = (
        f"makespan {stats.makespan_s:.3g} s · {plural(stats.tasks, 'task')} · "
        f"max_concurrent {stats.max_concurrent}"
    )
    if stats.critical_path_s > 0 and (critical or highlight is not None):
        summary += f" · critical path {stats.critical_path_s:.3g} s"
    if outcome.interrupted:
        summary += " · interrupted"
    ax.set_title(summary, loc="right", fontsize=8.5, color=MUTED)
    _legend(ax, bars, skips, reused, gaps, critical, bool(waits), label)
    return fig


def _why(rec: TaskRecord) -> str:
    """The short note beside a task that never ran."""
    if rec.reused:
        return "reused"
    if rec.cached:
        return "cached"
    err = rec.error
    if err is None:
        return "skipped"
    if err.cause:
        return f"skipped: {err.cause} did not succeed"
    return f"skipped: {err.code}"


def _index(rec: TaskRecord, span: Any) -> int:
    for k, s in enumerate(rec.spans, 1):
        if s is span:
            return k
    return 0


def _place_task(
    rec: TaskRecord,
    i: int,
    t0: float,
    critical: set[str],
    bars: list[tuple[int, float, float, str, bool, str]],
    gaps: list[tuple[int, float, float]],
    skips: list[tuple[int, float]],
    reused: list[tuple[int, float]],
) -> None:
    many = len(rec.spans) > 1
    prev_end = None
    for k, s in enumerate(rec.spans, 1):
        if prev_end is not None and s.start > prev_end:
            gaps.append((i, prev_end - t0, s.start - t0))
        text = f"#{k}" if many else ""
        bars.append((i, s.start - t0, s.end - t0, s.outcome, rec.task_id in critical, text))
        prev_end = s.end
    if not rec.spans:
        t = (rec.end if rec.end is not None else t0) - t0
        if rec.reused or rec.cached:
            reused.append((i, t))
        elif rec.status == SKIPPED or rec.finished:
            skips.append((i, t))


#: A map with more children than this draws them packed into lanes (a child's attempts on
#: the first lane free at their start) instead of one row each; at most this many lanes.
MAP_ROWS = 24


def _place_children(
    rec: TaskRecord,
    rows: list[_Row],
    t0: float,
    critical: set[str],
    bars: list[tuple[int, float, float, str, bool, str]],
    gaps: list[tuple[int, float, float]],
    skips: list[tuple[int, float]],
    reused: list[tuple[int, float]],
    waits: list[tuple[int, float, float]],
    show_wait: bool,
) -> None:
    """An expanded map's children under its head row (SPEC §16): one row each, or, past
    :data:`MAP_ROWS` children, packed into at most that many lanes. On the critical path,
    the map's longest child is outlined."""
    kids = rec.children or []
    group = f"level {rec.level}"
    longest = max(kids, key=lambda c: c.duration).task_id if rec.task_id in critical else None
    marks = critical | {longest} if longest is not None else critical
    if len(kids) <= MAP_ROWS:
        for c in kids:
            i = len(rows)
            rows.append(_Row(f"  [{c.map_index}]", group))
            _place_task(c, i, t0, marks, bars, gaps, skips, reused)
            if show_wait and c.spans and c.ready_at is not None \
                    and c.spans[0].start > c.ready_at:
                waits.append((i, c.ready_at - t0, c.spans[0].start - t0))
        return
    lanes: list[int] = []  # row indices
    ends: list[float] = []  # each lane's last end
    unrun: int | None = None
    for c in sorted(kids, key=lambda c: c.spans[0].start if c.spans else float("inf")):
        if not c.spans:
            if unrun is None:
                unrun = len(rows)
                rows.append(_Row("  not run", group))
            _place_task(c, unrun, t0, marks, bars, gaps, skips, reused)
            continue
        start, end = c.spans[0].start, c.spans[-1].end
        free = next((k for k, e in enumerate(ends) if e <= start + 1e-9), None)
        if free is None:
            if len(lanes) < MAP_ROWS:
                lanes.append(len(rows))
                ends.append(end)
                rows.append(_Row("  children" if len(lanes) == 1 else "", group))
                free = len(lanes) - 1
            else:  # as many lanes as allowed: the one that frees first
                free = min(range(len(ends)), key=ends.__getitem__)
        ends[free] = max(ends[free], end)
        _place_task(c, lanes[free], t0, marks, bars, gaps, skips, reused)


def _grouped(rows: list[_Row]) -> tuple[list[_Row], dict[int, int]]:
    order: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        order.setdefault(r.group, []).append(i)
    new: list[_Row] = []
    remap: dict[int, int] = {}
    for idxs in order.values():
        for n, i in enumerate(idxs):
            rows[i].label = rows[i].group if n == 0 else ""
            remap[i] = len(new)
            new.append(rows[i])
    return new, remap


def _axes(ax: Axes | None, nrows: int) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    height = min(1.6 + 0.32 * max(nrows, 1), 30.0)
    fig = TimelineFigure(figsize=(10.5, height), layout="constrained")
    return fig, fig.add_subplot()


def _rects(items: Iterable[tuple[int, float, float]]) -> list[list[tuple[float, float]]]:
    h = _BAR / 2
    return [[(a, y - h), (a, y + h), (b, y + h), (b, y - h)] for y, a, b in items]


def _draw(
    ax: Axes,
    rows: list[_Row],
    bars: list[tuple[int, float, float, str, bool, str]],
    gaps: list[tuple[int, float, float]],
    skips: list[tuple[int, float]],
    reused: list[tuple[int, float]],
    notes: list[tuple[int, float, str]],
    group_by: str,
) -> None:
    # alternate shading per group (level, worker) so its rows read as one band
    bands: list[tuple[int, int]] = []
    for i, r in enumerate(rows):
        if i == 0 or r.group != rows[i - 1].group:
            bands.append((i, i))
        else:
            bands[-1] = (bands[-1][0], i)
    if 1 < len(bands) <= 2000:
        shade = [
            [(0.0, a - 0.5), (1.0, a - 0.5), (1.0, b + 0.5), (0.0, b + 0.5)]
            for a, b in bands[1::2]
        ]
        ax.add_collection(PolyCollection(
            shade, transform=ax.get_yaxis_transform(), facecolors=SHADE,
            edgecolors="none", zorder=0, gid="bands",
        ))
    if group_by == "task" and 1 < len(bands) <= 40:  # name the level bands
        for a, _b in bands:
            ax.text(0.997, a - 0.47, rows[a].group, transform=ax.get_yaxis_transform(),
                    ha="right", va="top", fontsize=6.5, color=FAINT, zorder=1)
    thin = len(bars) > _MAX_BAR_TEXT  # many small bars: thinner outlines
    for (outcome, crit), items in _by_style(bars).items():
        fill, edge = OUTCOME_COLORS.get(outcome, _OTHER)
        coll = PolyCollection(
            _rects((i, a, b) for i, a, b, *_ in items),
            facecolors=fill,
            edgecolors=_CRITICAL if crit else edge,
            linewidths=(0.9 if thin else 2.2) if crit else (0.3 if thin else 0.8),
            hatch="///" if crit else None,
            zorder=3 if crit else 2,
        )
        coll.set_gid(f"attempts:{outcome}{':critical' if crit else ''}")
        ax.add_collection(coll)
    span_end = max([b[2] for b in bars] + [t for _, t in skips] + [1e-9])
    if len(bars) <= _MAX_BAR_TEXT:
        limit = span_end * 1.04
        starts: dict[int, list[float]] = {}
        for i, a, *_ in bars:
            starts.setdefault(i, []).append(a)
        for i, a, b, _outcome, _crit, text in bars:
            if not text:
                continue
            room = min([x for x in starts[i] if x >= b - 1e-12] + [limit]) - b
            per_char = span_end * _CHAR
            if b - a >= per_char * (len(text) + 1):
                x, ha = (a + b) / 2, "center"
            elif room >= per_char * (len(text) + 2):
                x, ha = b + per_char * 0.5, "left"
            else:  # neither fits: as much as fits inside the bar
                keep = int((b - a) / per_char) - 1
                if keep < 2:
                    continue
                text, x, ha = text[: keep - 1] + "…", (a + b) / 2, "center"
            ax.text(
                x, i, text, ha=ha, va="center", fontsize=7.5, color=INK, zorder=4,
                clip_on=True,
                bbox={"boxstyle": "round,pad=0.12", "fc": "white", "ec": "none", "alpha": 0.75},
            )
    for i, a, b in gaps:
        ax.plot([a, b], [i, i], ls=(0, (1.5, 1.5)), color=_BACKOFF, lw=1.2, zorder=1,
                gid="backoff")
        if len(bars) <= _MAX_BAR_TEXT and b - a >= span_end * 0.08:
            ax.text((a + b) / 2, i - 0.06, f"backoff {b - a:.2g} s", ha="center",
                    va="bottom", fontsize=6.5, color=_BACKOFF, zorder=4)
    if skips:
        ax.scatter([t for _, t in skips], [i for i, _ in skips], marker="X", s=46,
                   color=_SKIP, edgecolors="white", linewidths=0.5, zorder=5, gid="skipped")
    if reused:
        ax.scatter([t for _, t in reused], [i for i, _ in reused], marker="D", s=34,
                   facecolors="white", edgecolors=ACCENT, linewidths=1.4, zorder=5,
                   gid="reused")
    if len(notes) <= _MAX_BAR_TEXT:
        for i, t, text in notes:
            left = t > span_end * 0.6  # near the right edge: write it before the mark
            ax.text(t - span_end * 0.012 if left else t + span_end * 0.012, i, text,
                    ha="right" if left else "left", va="center", fontsize=7.5,
                    color=_SKIP, fontstyle="italic", zorder=4, clip_on=True)
    n = len(rows)
    if n == 0:
        ax.text(0.5, 0.5, "no tasks", transform=ax.transAxes, ha="center", va="center",
                color=_SKIP)
    ax.set_ylim(max(n, 1) - 0.5, -0.5)  # first row on top
    if n <= _MAX_LABELLED_ROWS:
        ax.set_yticks(range(n), [_short(r.label) for r in rows], fontsize=8.5)
        if group_by == "task":
            labels = ax.get_yticklabels()
            skipped_rows = {i for i, _ in skips}
            for i, lab in enumerate(labels):
                if i in skipped_rows:
                    lab.set_color(_SKIP)
                    lab.set_fontstyle("italic")
    else:
        ax.set_yticks([])
        ax.set_ylabel(plural(n, "row"))
    ax.tick_params(axis="y", length=0)
    ax.grid(axis="x", color=GRID, lw=0.7, zorder=0)
    ax.set_axisbelow(True)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)


def _by_style(
    bars: list[tuple[int, float, float, str, bool, str]],
) -> dict[tuple[str, bool], list[tuple[int, float, float, str, bool, str]]]:
    out: dict[tuple[str, bool], list[tuple[int, float, float, str, bool, str]]] = {}
    for bar in bars:
        out.setdefault((bar[3], bar[4]), []).append(bar)
    return out


def _legend(
    ax: Axes,
    bars: list[tuple[int, float, float, str, bool, str]],
    skips: list[tuple[int, float]],
    reused: list[tuple[int, float]],
    gaps: list[tuple[int, float, float]],
    critical: set[str],
    waited: bool = False,
    critical_label: str = "critical path",
) -> None:
    present = {b[3] for b in bars}
    handles: list[Any] = [
        Patch(facecolor=fill, edgecolor=edge, label=name)
        for name, (fill, edge) in OUTCOME_COLORS.items()
        if name in present
    ]
    if critical:
        handles.append(Patch(facecolor="white", edgecolor=_CRITICAL, lw=2.2, hatch="///",
                             label=critical_label))
    if gaps:
        handles.append(Line2D([], [], ls=(0, (1.5, 1.5)), color=_BACKOFF, lw=1.2,
                              label="retry backoff"))
    if waited:
        handles.append(Line2D([], [], color=FAINT, lw=1.6, label="ready, waiting to start"))
    if skips:
        handles.append(Line2D([], [], ls="", marker="X", ms=8, color=_SKIP,
                              markeredgecolor="white", label="skipped"))
    if reused:
        handles.append(Line2D([], [], ls="", marker="D", ms=6, markerfacecolor="white",
                              markeredgecolor=ACCENT, label="reused / cached"))
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  fontsize=8, frameon=False, borderaxespad=0.0)
