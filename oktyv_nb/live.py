"""The live view of a run: the graph recoloured in place and a progress bar (SPEC §6, §11).

:class:`LiveView` is a pure subscriber of the engine's event stream, and takes only its run
events (``event_kinds``): ``run_started`` hands it the run, whose records it then reads, so
the tasks' own events cost it nothing. From there a ticker on the event loop looks at the
records every ``min_interval`` seconds (less often when looking and showing cost more than
``budget`` of the elapsed time) and makes a **frame**, a snapshot of every task's status,
when a status changed, and at least every ``_HEARTBEAT_S`` seconds while the run lasts (so
the elapsed time keeps counting while a task waits out a retry backoff and no status
changes); ``run_finished`` stops it and :meth:`LiveView.close` shows the final frame.

Where frames go:

* inside Jupyter (default when ``display`` is None): one output, created when the view is,
  updated in place through its display id. Rendering happens in a background thread, never
  in the thread running the event loop: the graph is laid out once by ``dot`` (off the loop)
  and each frame only recolours that SVG (:class:`~oktyv_nb.render.SvgTemplate`). The graph
  joins the progress bar once laying it out fits in ``budget`` of the run so far. The final
  frame of a finished run is the full picture, the same graph as ``run.graph()``
  (durations, error codes, the critical path) and its time the run's makespan, whatever the
  run's length; only a graph of more than ``GRAPH_LIMIT`` tasks whose layout would take
  longer than ``budget`` of the run is left out, with a note saying ``run.graph()`` draws
  it;
* ``display=callable``: the callable gets each :class:`Frame` synchronously, in the thread
  that emits events (the event loop) — keep it quick; ``display=print`` prints a progress
  line per frame. A frame renders its SVG only when asked (:meth:`Frame.svg`);
* otherwise (outside a notebook, no ``display``) the view does nothing.

:class:`SweepProgress` shows ``dag.sweep()``'s progress on one line: which setting runs, of
how many, and that run's progress line, taken from the frames of a live view of each run.

Times are seconds. The module is one concern, a subscriber and its frames, and stays whole
(about 700 lines): the ticker, the budget and the renderer thread share one lock and one
notion of "the latest frame", which reads best in one place.
"""

from __future__ import annotations

import asyncio
import html
import math
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from oktyv_nb.errors import GraphvizNotFound
from oktyv_nb.jupyter import in_notebook
from oktyv_nb.results.display import GRAPH_LIMIT
from oktyv_nb.results.display.render import (
    SvgTemplate,
    build_digraph,
    map_counts,
    svg_html,
    to_svg,
)
from oktyv_nb.results.display.theme import MUTED, STATUS_STYLE
from oktyv_nb.results.stats import makespan
from oktyv_nb.units import format_seconds, plural

if TYPE_CHECKING:
    from oktyv_nb.execution.engine import RunOutcome
    from oktyv_nb.execution.events import EventKind
    from oktyv_nb.execution.records import TaskRecord
    from oktyv_nb.model.graph import Graph

__all__ = ["Frame", "LiveView", "SweepProgress"]

perf = time.perf_counter
_status = attrgetter("status")

#: Order of the progress bar's segments and of the counts in the progress line.
_BAR_ORDER = ("success", "failed", "skipped", "retrying", "running", "ready")
_FINAL = ("success", "failed", "skipped")
#: Python-side cost of laying out one task (build the DOT text, parse the SVG), seconds:
#: live frames show the graph once this, for every task, fits in ``budget`` of the run so far
#: (``dot`` itself runs in the display thread's subprocess, off the event loop).
_TEMPLATE_COST_PER_TASK = 60e-6
#: ``dot``'s cost per task for a whole layout, seconds (about 1 s for 500 tasks), used to
#: decide whether the final frame of a graph of more than ``GRAPH_LIMIT`` tasks may lay it
#: out (``close()`` waits for it); up to ``GRAPH_LIMIT`` tasks it always does.
_DOT_COST_PER_TASK = 2e-3
#: A frame comes at least this often (seconds) while the run lasts, changed or not, so that
#: the elapsed time keeps counting (or every ``min_interval`` when that is longer).
_HEARTBEAT_S = 1.0
#: Bytes per second of notebook output a live view may send (big SVGs update less often).
_OUTPUT_RATE = 2e6


class Frame:
    """A snapshot of the run shown by a :class:`LiveView`.

    ``states`` maps task id -> status (tasks not yet seen are ``pending``); ``elapsed`` is
    seconds since the run started, and in the final frame the run's makespan (the time
    ``run.graph()`` and ``run.stats`` give); ``final`` marks the last frame, which carries
    the run's ``outcome`` when the run finished (durations and critical path on the graph).
    A final frame may be given the run's ``records`` instead of ``states``: they change no
    more, so its states and counts are worked out only when asked for.
    """

    __slots__ = ("_counts", "_maps", "_records", "_states", "elapsed", "final", "index",
                 "outcome", "view")

    def __init__(
        self,
        view: LiveView,
        states: dict[str, str] | None,
        elapsed: float,
        index: int,
        *,
        final: bool = False,
        outcome: RunOutcome | None = None,
        records: Mapping[str, TaskRecord] | None = None,
        maps: dict[str, str] | None = None,
    ) -> None:
        if states is None and (records is None or not final):
            raise ValueError("Frame: give states, or records for a final frame")
        self.view = view
        self._states = states
        self._records = records
        self.elapsed = elapsed
        self.index = index
        self.final = final
        self.outcome = outcome
        self._counts: dict[str, int] | None = None
        self._maps = maps

    @property
    def maps(self) -> dict[str, str]:
        """Per mapped task that expanded, its children by status (``38 ✓ 2 ✗ / 40``)."""
        if self._maps is None:
            self._maps = _map_counts(self._records or {})
        return self._maps

    @property
    def states(self) -> dict[str, str]:
        """Task id -> status."""
        if self._states is None:
            records = self._records or {}
            self._states = dict(zip(records, map(_status, records.values()), strict=True))
        return self._states

    @property
    def title(self) -> str | None:
        return self.view.title

    @property
    def total(self) -> int:
        return len(self.view.graph.nodes)

    @property
    def counts(self) -> dict[str, int]:
        """Tasks per status (every status, pending included)."""
        if self._counts is None:
            counts = dict.fromkeys(STATUS_STYLE, 0)
            if self._states is None and self._records is not None:
                seen = len(self._records)
                counts.update(Counter(map(_status, self._records.values())))
            else:
                seen = len(self.states)
                counts.update(Counter(self.states.values()))
            counts["pending"] += self.total - seen
            self._counts = counts
        return self._counts

    @property
    def done(self) -> int:
        """Tasks with a final status (success, failed or skipped)."""
        c = self.counts
        return c["success"] + c["failed"] + c["skipped"]

    def line(self) -> str:
        """The progress line without the title, e.g. ``7/12 done (5 success, 1 failed,
        1 skipped) · 2 running · 3 pending · 0.84 s``; the final frame's time is the run's
        makespan (``· makespan 1.28 s``)."""
        c = self.counts
        finished = ", ".join(f"{c[s]} {s}" for s in _FINAL if c[s])
        line = f"{self.done}/{self.total} done" + (f" ({finished})" if finished else "")
        for st in ("running", "retrying", "ready", "pending"):
            if c[st]:
                line += f" · {c[st]} {st}"
        line += f" · {'makespan ' if self.final else ''}{format_seconds(self.elapsed)}"
        if self.final and self.outcome is not None and (
                self.outcome.interrupted or self.outcome.aborted):
            line += " · interrupted"
        elif self.final and self.outcome is None and self.done < self.total:
            line += " · stopped"
        return line

    def text(self) -> str:
        """One progress line, e.g. ``etl: 7/12 done (5 success, 1 failed, 1 skipped) ·
        2 running · 3 pending · 0.84 s``."""
        line = self.line()
        return f"{self.title}: {line}" if self.title else line

    __str__ = text

    def __repr__(self) -> str:
        return f"<Frame {self.index}{' final' if self.final else ''}: {self.text()}>"

    def progress_html(self) -> str:
        """The progress line over a bar with one coloured segment per status."""
        c = self.counts
        total = max(self.total, 1)
        segments = "".join(
            f'<div title="{c[st]} {st}" style="width:{100.0 * c[st] / total:.3f}%;'
            f'background:{STATUS_STYLE[st][1] if st in _FINAL else STATUS_STYLE[st][0]}">'
            "</div>"
            for st in _BAR_ORDER
            if c[st]
        )
        return (
            '<div style="font:12px/1.4 Helvetica,Arial,sans-serif;margin:2px 0 4px 0">'
            f"{html.escape(self.text())}</div>"
            '<div style="display:flex;width:100%;max-width:640px;height:10px;'
            "border-radius:3px;overflow:hidden;background:"
            f'{STATUS_STYLE["pending"][0]};border:1px solid {STATUS_STYLE["pending"][1]}">'
            f"{segments}</div>"
        )

    def svg(self) -> str:
        """The graph coloured by this frame's states (raises GraphvizNotFound without
        ``dot``). Live frames recolour a layout made once; the final frame of a finished
        run is drawn afresh with durations and the critical path when that is cheap."""
        return self.view._svg(self)

    def html(self) -> str:
        """Progress bar and graph as HTML; without ``dot`` the graph is replaced by the
        install hint (never an exception)."""
        graph = self.view._graph_html(self)
        return f'<div class="oktyv-live">{self.progress_html()}{graph}</div>'

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": self.text(), "text/html": self.html()}


class _Parked:
    """Stands in for a pending timer once a view makes no more frames."""

    def cancel(self) -> None:
        pass


_PARKED = _Parked()


class LiveView:
    """Shows a run while it happens; subscribe the view itself to the engine's events
    (``dag.run(on_event=view)``: then only its ``event_kinds`` reach it), then :meth:`close`
    it with the finished run.

    ``display``: None (inside Jupyter: one output updated in place; elsewhere: nothing) or a
    callable receiving each :class:`Frame`. ``min_interval`` is the least time in seconds
    between frames; ``budget`` the largest share of the run's time that showing frames may
    take (the interval grows when frames are costly). ``direction`` and ``compact`` are
    passed to the graph (see :func:`oktyv_nb.render.build_digraph`).

    ``frames`` counts the frames shown and ``display_s`` the seconds spent in the event
    loop's thread looking at the records and making and handing over frames.
    """

    __slots__ = (
        "_due", "_failed", "_has_maps", "_lock", "_no_dot", "_notebook", "_records", "_shown",
        "_shown_maps", "_shown_t", "_sink", "_t0",
        "_template", "_timer", "budget", "closed", "compact", "direction", "display_s",
        "frames", "graph", "min_interval", "title",
    )

    def __init__(
        self,
        graph: Graph,
        title: str | None = None,
        *,
        display: Callable[[Frame], Any] | None = None,
        min_interval: float = 0.25,
        budget: float = 0.02,
        direction: str = "TB",
        compact: bool | None = None,
    ) -> None:
        if min_interval < 0:
            raise ValueError(f"LiveView: min_interval must be >= 0 s, got {min_interval!r}")
        if not 0 < budget <= 1:
            raise ValueError(f"LiveView: budget must be a fraction in (0, 1], got {budget!r}")
        self.graph = graph
        self.title = title
        self.min_interval = float(min_interval)
        self.budget = float(budget)
        self.direction = direction
        self.compact = compact
        self.frames = 0
        self.display_s = 0.0
        self.closed = False
        self._failed = False
        self._records: dict[str, TaskRecord] = {}
        self._shown: list[str] | None = None  # the statuses of the last frame
        self._shown_maps: dict[str, str] | None = None  # and its maps' child counts
        self._shown_t = 0.0  # and its elapsed time, seconds
        self._has_maps = any(n.map is not None for n in graph.nodes.values())
        self._due = 0.0
        self._t0: float | None = None
        self._timer: asyncio.TimerHandle | _Parked | None = None
        self._template: SvgTemplate | None = None
        self._no_dot: GraphvizNotFound | None = None
        self._lock = threading.Lock()
        self._notebook: _NotebookDisplay | None = None
        self._sink: Callable[[Frame], Any] | None
        if display is not None:
            if not callable(display):
                raise TypeError(f"LiveView: display must be a callable, got {display!r}")
            self._sink = display
        elif in_notebook():
            self._notebook = _NotebookDisplay(self)
            self._sink = self._notebook
        else:
            self._sink = None
            self._park()

    def _park(self) -> None:
        """No more frames: no ticker, events change nothing."""
        self._due = math.inf
        if self._timer is not None:
            self._timer.cancel()
        self._timer = _PARKED

    @property
    def layout_s(self) -> float:
        """Seconds ``dot`` took to lay out the live graph (0 before the first graph frame)."""
        t = self._template
        return t.layout_s if t is not None else 0.0

    @property
    def active(self) -> bool:
        """True when frames go somewhere (a notebook output or a display callable)."""
        return self._sink is not None

    @property
    def updates(self) -> int:
        """Notebook output updates actually sent (the display thread drops stale frames)."""
        return self._notebook.updates if self._notebook is not None else self.frames

    # ------------------------------------------------------------------ events
    #: The view takes only the run events (see :mod:`oktyv_nb.execution.events`): per task it costs
    #: nothing, and a ticker on the loop reads the run's records for frames.
    event_kinds: tuple[EventKind, ...] = ("run_started", "run_finished")

    def on_event(self, kind: EventKind, rec: TaskRecord | RunOutcome, t: float) -> None:
        """``run_started``: remember the run's records, show the first frame and start the
        ticker; ``run_finished``: stop it (:meth:`close` shows the final frame). Other
        kinds, when subscribed to all of them, are ignored."""
        if kind == "run_started":
            self._records = rec.records  # type: ignore[union-attr]
            self._t0 = perf() - t
            if self._timer is None:  # not parked: frames go somewhere
                start = perf()
                self._frame(t, {})  # everything is pending yet
                self._spent(start, t)
                self._tick_after(self._due - t)
        elif kind == "run_finished" and self._timer is not _PARKED and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    __call__ = on_event

    def _tick_after(self, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside an event loop: first and final frames only
            return
        self._timer = loop.call_later(max(delay, 0.0), self._tick)

    def _tick(self) -> None:
        """A frame when the states changed since the last one, or when the last one is
        ``_HEARTBEAT_S`` old (its elapsed time would stand still); then the next tick, after
        ``min_interval`` or longer when frames and ticks cost more than ``budget``."""
        self._timer = None
        if self.closed or self._failed or self._t0 is None:
            return
        start = perf()
        t = start - self._t0
        statuses = list(map(_status, self._records.values()))
        maps = _map_counts(self._records) if self._has_maps else None
        stale = t - self._shown_t >= max(self.min_interval, _HEARTBEAT_S)
        if statuses != self._shown or maps != self._shown_maps or stale:
            self._shown = statuses
            self._shown_maps = maps
            try:
                self._frame(t, dict(zip(self._records, statuses, strict=True)), maps)
            except Exception as exc:  # a loop callback, not the event bus: report and stop
                self._park()
                warnings.warn(f"live view display {self._sink!r} raised "
                              f"{type(exc).__name__}: {exc}; the live view stopped",
                              RuntimeWarning, stacklevel=2)
                return
        self._spent(start, t)
        self._tick_after(self._due - (perf() - self._t0))

    def _frame(self, t: float, states: dict[str, str], maps: dict[str, str] | None = None
               ) -> None:
        frame = Frame(self, states, t, self.frames, maps=maps or {})
        try:
            self._sink(frame)  # type: ignore[misc]
        except Exception:
            self._failed = True
            raise
        self.frames += 1
        self._shown_t = t

    def _spent(self, start: float, t: float) -> None:
        """Count the loop time since ``start`` (perf seconds) and set when the next frame may
        come: ``min_interval`` after ``t``, or later when that time exceeds ``budget``."""
        cost = perf() - start
        self.display_s += cost
        self._due = t + max(self.min_interval, cost / self.budget)

    def close(self, run: Any = None) -> None:
        """Show the final frame: the states of ``run`` (a Run or RunOutcome) when given,
        else the last states seen (after an interrupt); its time is the makespan of those
        records. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._park()
        if self._sink is None:
            return
        outcome: RunOutcome | None = getattr(run, "outcome", run)
        records = outcome.records if outcome is not None else self._records
        frame = Frame(self, None, makespan(records.values()), self.frames, final=True,
                      outcome=outcome, records=records)
        try:
            if not self._failed:
                self._sink(frame)
                self.frames += 1
        except Exception as exc:  # the run is over and fine: report, don't break it
            warnings.warn(f"live view display {self._sink!r} raised {type(exc).__name__}: "
                          f"{exc}", RuntimeWarning, stacklevel=2)
        finally:
            if self._notebook is not None:
                self._notebook.close()

    def __repr__(self) -> str:
        where = "notebook" if self._notebook else ("callable" if self._sink else "inactive")
        return f"<LiveView {where}: {plural(self.frames, 'frame')}>"

    # ------------------------------------------------------------------ drawing
    def _how(self, frame: Frame) -> str | None:
        """How a shown frame draws its graph: ``"fresh"`` (laid out anew, with durations,
        error codes and the critical path: ``run.graph()``), ``"recolour"`` (the live
        layout) or None (not at all).

        A live frame lays the graph out once it fits in ``budget`` of the run so far
        (``_TEMPLATE_COST_PER_TASK`` per task). The final frame of a finished run is always
        the full picture, drawn afresh, for up to ``GRAPH_LIMIT`` tasks (the size the
        ``Run`` display draws too); past that only when the layout (measured, else
        ``_DOT_COST_PER_TASK`` per task) fits in ``budget`` of the run, else not at all.
        A final frame without the run (closed after an interrupt) recolours the layout.
        """
        n = len(self.graph.nodes)
        allowance = frame.elapsed * self.budget
        t = self._template
        if not frame.final:
            return "recolour" if t is not None or allowance >= n * _TEMPLATE_COST_PER_TASK else None
        cost = t.layout_s if t is not None else n * _DOT_COST_PER_TASK
        affordable = n <= GRAPH_LIMIT or cost <= allowance
        if frame.outcome is not None:
            return "fresh" if affordable else None
        return "recolour" if t is not None or affordable else None

    def _get_template(self) -> SvgTemplate:
        with self._lock:
            if self._no_dot is not None:
                raise self._no_dot
            if self._template is None:
                try:
                    self._template = SvgTemplate(
                        self.graph, title=self.title, direction=self.direction,
                        compact=self.compact,
                    )
                except GraphvizNotFound as exc:
                    self._no_dot = exc
                    raise
            return self._template

    def _svg(self, frame: Frame, how: str | None = None) -> str:
        """The frame's SVG; by default the final frame of a finished run is drawn afresh."""
        if how is None:
            how = "fresh" if frame.final and frame.outcome is not None else "recolour"
        if how == "fresh":
            if self._no_dot is not None:
                raise self._no_dot
            try:
                return to_svg(build_digraph(
                    self.graph, frame.outcome, title=self.title,
                    direction=self.direction, compact=self.compact,
                ))
            except GraphvizNotFound as exc:
                self._no_dot = exc
                raise
        return self._get_template().recolour(frame.states, frame.maps)

    def _graph_html(self, frame: Frame) -> str:
        how = self._how(frame)
        if how is None:
            if not frame.final:
                return ""
            return (
                f'<div style="font:12px Helvetica,Arial,sans-serif;color:{MUTED}">'
                f"The graph of {plural(len(self.graph.nodes), 'task')} is not drawn here "
                "(laying it out would take longer than the run did); <code>run.graph()</code> "
                "draws it.</div>"
            )
        try:
            svg = self._svg(frame, how)
        except GraphvizNotFound as exc:
            return (
                '<div style="font:12px Helvetica,Arial,sans-serif;'
                f'color:{STATUS_STYLE["failed"][1]}">'
                f"Graph not shown: {html.escape(str(exc))}</div>"
            )
        return f"<div>{svg_html(svg)}</div>"


def _map_counts(records: Mapping[str, TaskRecord]) -> dict[str, str]:
    """Per expanded map among ``records``, its children's counts by status."""
    return {
        tid: map_counts([c.status for c in rec.children])
        for tid, rec in records.items() if rec.children is not None
    }


class _NotebookDisplay:
    """One Jupyter output updated in place; frames are rendered in a background thread,
    and only the newest waiting frame is drawn."""

    def __init__(self, view: LiveView) -> None:
        from IPython.display import display

        self.view = view
        self.updates = 0
        self.render_s = 0.0
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._closing = False
        first = Frame(view, {}, 0.0, -1)
        # Created here, in the caller's thread, so the output belongs to the running cell.
        self.handle = display(
            {"text/plain": first.text(), "text/html": first.progress_html()},
            raw=True, display_id=True,
        )
        self._thread = threading.Thread(target=self._work, name="oktyv-live", daemon=True)
        self._thread.start()

    def __call__(self, frame: Frame) -> None:
        with self._cond:
            self._latest = frame
            self._cond.notify()

    def close(self, timeout: float = 120.0) -> None:
        """Wait until the final frame is shown (at most ``timeout`` seconds)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)

    def _work(self) -> None:
        next_at = 0.0
        while True:
            with self._cond:
                frame = self._latest
                if frame is None:
                    if self._closing:
                        return
                    self._cond.wait()
                    continue
                wait = next_at - perf()
                if wait > 0 and not frame.final and not self._closing:
                    self._cond.wait(wait)
                    continue
                self._latest = None
            start = perf()
            layout_before = self.view.layout_s
            bundle: dict[str, str] | None = None
            try:
                bundle = frame._repr_mimebundle_()
                if self.handle is not None:
                    self.handle.update(bundle, raw=True)
            except Exception as exc:  # a display problem must never break the run
                self.error = exc
            cost = perf() - start
            self.render_s += cost
            self.updates += 1
            cost -= self.view.layout_s - layout_before  # the one-time layout runs in dot
            if frame.final:
                return
            size = sum(len(v) for v in bundle.values()) if bundle else 0
            next_at = perf() + max(
                self.view.min_interval, cost / self.view.budget, size / _OUTPUT_RATE
            )


class SweepProgress:
    """The progress of a concurrency sweep (``dag.sweep()``) on one line: which
    ``max_concurrent`` setting runs, as run k of n, and that run's own progress line, taken
    from the frames of a :class:`LiveView` of the run (the same event stream).

    ``display``: None (inside Jupyter: one line of the cell's output rewritten in place;
    elsewhere: nothing), True (inside Jupyter the same; elsewhere a line printed as each run
    starts, and one at the end), False (nothing) or a callable receiving each line of text.
    ``settings`` are the sweep's ``max_concurrent`` values, each run ``repeat`` times. Times
    are seconds.

    In Jupyter the line is text on the cell's stdout, each version after a carriage return
    (as text progress bars do): the front end shows the latest, and what a notebook stores
    reads as the last line, ``amdahl sweep done: 4 runs (max_concurrent 1, 2, 4, 8)``, which
    nbval compares as it is (an output updated through a display id would be compared in
    its first version).
    Showing a run's frames takes at most the live view's ``budget`` (2 %) of that run's
    time, usually far less; ``display=False`` measures without it.
    """

    def __init__(
        self,
        settings: list[int],
        repeat: int = 1,
        title: str | None = None,
        display: bool | Callable[[str], Any] | None = None,
    ) -> None:
        self.settings = list(settings)
        self.repeat = repeat
        self.title = title
        self._head = ""
        self._print = False
        self._sink: Callable[[str], Any] | None = None
        if callable(display) and not isinstance(display, bool):
            self._sink = display
        elif display is not False and in_notebook():
            self._sink = self._rewrite
        elif display is True:
            self._print = True
            self._sink = print

    @property
    def total(self) -> int:
        """Runs in the sweep."""
        return len(self.settings) * self.repeat

    @property
    def active(self) -> bool:
        """True when lines go somewhere."""
        return self._sink is not None

    def _prefix(self) -> str:
        return f"{self.title} sweep" if self.title else "sweep"

    def start(
        self, index: int, max_concurrent: int, rep: int = 0
    ) -> Callable[[Frame], None] | None:
        """Announce run ``index`` (0-based) of the sweep, with ``max_concurrent`` and its
        repeat ``rep`` (0-based); returns the display callable for that run's live view
        (``dag.run(live=...)``), or None when its frames are not shown."""
        repeat = f" (repeat {rep + 1}/{self.repeat})" if self.repeat > 1 else ""
        self._head = (f"{self._prefix()}: run {index + 1}/{self.total} · "
                      f"max_concurrent={max_concurrent}{repeat}")
        self._emit(self._head)
        if self._sink is None or self._print:
            return None
        return self._frame

    def _frame(self, frame: Frame) -> None:
        self._emit(f"{self._head} · {frame.line()}")

    def finish(self, done: int | None = None) -> None:
        """The last line: how many of the runs ended (``done``; default all). It holds no
        time, so that a stored notebook's output stays the same from one run to the next
        (the table has each run's makespan)."""
        done = self.total if done is None else done
        what = "done:" if done == self.total else f"stopped after {done} of"
        values = ", ".join(map(str, self.settings))
        self._emit(f"{self._prefix()} {what} {plural(self.total, 'run')} "
                   f"(max_concurrent {values})")
        if self._sink == self._rewrite:
            sys.stdout.write("\n")
            sys.stdout.flush()

    def _emit(self, line: str) -> None:
        if self._sink is not None:
            self._sink(line)

    @staticmethod
    def _rewrite(line: str) -> None:
        """The notebook's line: rewritten in place (a carriage return before each version)."""
        sys.stdout.write("\r" + line)
        sys.stdout.flush()
