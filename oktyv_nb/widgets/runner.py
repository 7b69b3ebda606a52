"""The form's *Run* and *Stop* buttons, its progress bar and its result table.

:class:`RunPanel` runs the form's DAG in the kernel: on the kernel's running loop as an
asyncio task (so *Stop* can cancel it; every task still gets its record), or synchronously
where no loop runs (a script, a test). Progress comes from the engine's event stream: the
panel is one of the run's subscribers (never wired into the scheduler). It counts the tasks'
events and, at most about ten times a second (less often when painting costs more than
``_BUDGET`` of the time), paints the counts and the graph coloured by the records' statuses
(the graph laid out once by ``dot`` when the run starts, then only recoloured,
:class:`~oktyv_nb.results.display.render.SvgTemplate`). The result table follows the run.
After *Stop* the bar shows the tasks that ended before it, not the ones it cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from oktyv_nb.errors import CANCELLED, OktyvError
from oktyv_nb.execution.events import EventKind
from oktyv_nb.execution.records import TaskRecord
from oktyv_nb.widgets.common import guarded, row, set_msg
from oktyv_nb.widgets.results import counts_html, inline_svg, live_template, result_html

if TYPE_CHECKING:
    from oktyv_nb.dag import DAG
    from oktyv_nb.execution.outcome import RunOutcome
    from oktyv_nb.results.display.render import SvgTemplate
    from oktyv_nb.results.run import Run

__all__ = ["RunPanel", "stopped_ids"]

_PAINT_INTERVAL = 0.1  # seconds between progress updates during a run
_BUDGET = 0.05  # at most this share of the run's time goes to painting its progress
_OUTPUT_RATE = 2e6  # bytes of graph per second sent to the page, at most


class RunPanel:
    """Runs ``dag`` when *Run* is clicked; ``last_run`` holds the run it started.

    ``show_run(run)`` is called when a run has finished, before its table is shown (the form
    colours its graph); ``refresh()`` when a run ended without a record to show;
    ``show_graph(svg)``, when given, during the run with the graph coloured by the tasks'
    statuses so far.
    """

    #: Its widgets, public attributes of the form too.
    WIDGETS = ("run_button", "stop_button", "progress", "counts_label", "run_msg",
               "result_html")

    def __init__(self, dag: DAG, show_run: Callable[[Run], None],
                 refresh: Callable[[], None],
                 show_graph: Callable[[str], None] | None = None) -> None:
        self.dag = dag
        self._show_run = show_run
        self._refresh = refresh
        self._show_graph = show_graph
        self.last_run: Run | None = None
        self.run_task: asyncio.Future[Any] | None = None
        self._run_counts: dict[str, int] = {}
        self._running_ids: set[str] = set()
        self._cancelled = 0  # tasks a stop cancelled or skipped, once the run has ended
        self._due = 0.0  # perf_counter time before which nothing is painted
        self._paint_timer: asyncio.TimerHandle | None = None
        #: The run's graph laid out for recolouring (None: no live graph), the run's live
        #: records (from ``run_started``) and the statuses the graph shows now.
        self._template: SvgTemplate | None = None
        self._records: Mapping[str, TaskRecord] = {}
        self._shown: list[str] | None = None
        #: Live graphs painted during the last run (the final one is the form's).
        self.graph_frames = 0
        self.run_button = W.Button(description="Run", icon="play", button_style="success",
                                   layout=W.Layout(width="90px"))
        self.stop_button = W.Button(description="Stop", icon="stop", button_style="warning",
                                    disabled=True, layout=W.Layout(width="90px"))
        self.run_button.add_class("oktyv-run")
        self.stop_button.add_class("oktyv-stop")
        self.run_button.on_click(self._on_run)
        self.stop_button.on_click(self._on_stop)
        self.progress = W.IntProgress(value=0, min=0, max=1, layout=W.Layout(width="240px"))
        # the counts keep their one line; the message beside them wraps instead
        self.counts_label = W.HTML(layout=W.Layout(margin="0 0 0 8px", flex="0 0 auto"))
        self.counts_label.add_class("oktyv-counts")
        self.run_msg = W.HTML(layout=W.Layout(margin="0 0 0 8px", flex="1 1 auto",
                                              min_width="0"))
        self.result_html = W.HTML(layout=W.Layout(width="100%", overflow="auto"))
        self.result_html.add_class("oktyv-result-area")

    def controls(self) -> W.HBox:
        """The buttons, the progress bar and the run's message, in one row."""
        return row(self.run_button, self.stop_button, self.progress, self.counts_label,
                   self.run_msg)

    @property
    def running(self) -> bool:
        return self.run_task is not None and not self.run_task.done()

    @guarded("run_msg")
    def _on_run(self, _btn: W.Button | None = None) -> None:
        if self.running:
            return
        try:
            graph = self.dag.validate()
        except OktyvError as exc:
            set_msg(self.run_msg, "error", exc.message)
            return
        if not graph.nodes:
            set_msg(self.run_msg, "error", "nothing to run: add a task first")
            return
        set_msg(self.run_msg, "info", "running…")
        self.progress.max = len(graph.nodes)
        self.progress.value = 0
        self.progress.bar_style = "info"
        self._run_counts = {"success": 0, "failed": 0, "skipped": 0}
        self._running_ids = set()
        self._cancelled = 0
        self._records = {}
        self._shown = None
        self.graph_frames = 0
        self._template = live_template(graph, self.dag.name) if self._show_graph else None
        self._paint(force=True)
        self.result_html.value = ""
        before = self.dag.last_run
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._set_running(True)
            try:
                run = self.dag.run(on_event=self._on_event, live=False)
            except BaseException as exc:  # KeyboardInterrupt: record what there is, re-raise
                self._finish(self._run_of(before), error=exc)
                if not isinstance(exc, Exception):
                    raise
                return
            self._finish(run)
            return
        self._set_running(True)
        self.run_task = asyncio.ensure_future(self._arun(before))
        self.run_task.add_done_callback(lambda t: self._done(t, before))

    def _run_of(self, before: Run | None) -> Run | None:
        run = self.dag.last_run
        return run if run is not before else None

    async def _arun(self, before: Run | None) -> Run | None:
        try:
            run = await self.dag.arun(on_event=self._on_event, live=False)
        except asyncio.CancelledError:
            self._finish(self._run_of(before), stopped=True)
            return self.last_run
        except Exception as exc:
            self._finish(self._run_of(before), error=exc)
            return None
        self._finish(run)
        return run

    def _done(self, task: asyncio.Future[Any], before: Run | None) -> None:
        if task.cancelled():  # stopped before the run started
            self._finish(self._run_of(before), stopped=True)
        elif task.exception() is not None:  # KeyboardInterrupt, SystemExit
            self._finish(self._run_of(before), error=task.exception())

    @guarded("run_msg")
    def _on_stop(self, _btn: W.Button | None = None) -> None:
        if self.running:
            assert self.run_task is not None
            self.run_task.cancel()
            set_msg(self.run_msg, "info", "stopping…")

    def _set_running(self, running: bool) -> None:
        self.run_button.disabled = running
        self.stop_button.disabled = not running

    def _on_event(self, kind: EventKind, rec: TaskRecord | RunOutcome | None,
                  t: float) -> None:
        """The panel's subscription to the run's events: counts from the task events, the
        run's live records from ``run_started``; then a (throttled) paint."""
        if isinstance(rec, TaskRecord):
            if kind == "task_started":
                self._running_ids.add(rec.task_id)
            elif kind == "task_retrying":
                self._running_ids.discard(rec.task_id)
            elif kind == "task_finished":
                self._running_ids.discard(rec.task_id)
                if rec.map_of is None:  # a mapped task's child is not one of the tasks
                    self._run_counts[rec.status] = self._run_counts.get(rec.status, 0) + 1
        elif kind == "run_started" and rec is not None:
            self._records = rec.records
        self._paint(force=kind == "run_finished")

    def _paint(self, force: bool = False) -> None:
        """Show the counts and the live graph; throttled to ``_PAINT_INTERVAL`` (longer when
        painting costs more than ``_BUDGET``) unless ``force``; the last state always
        shows."""
        now = time.perf_counter()
        done = sum(self._run_counts.values())
        wait = self._due - now
        if not force and wait > 0 and done < self.progress.max:
            if self._paint_timer is None:
                with contextlib.suppress(RuntimeError):
                    self._paint_timer = asyncio.get_running_loop().call_later(
                        wait, self._paint, True)
            return
        if self._paint_timer is not None:
            self._paint_timer.cancel()
            self._paint_timer = None
        self.progress.value = min(done, self.progress.max)
        self.counts_label.value = counts_html(done, self.progress.max, self._run_counts,
                                              len(self._running_ids), self._cancelled)
        sent = self._paint_graph()
        end = time.perf_counter()
        self._due = now + max(_PAINT_INTERVAL, (end - now) / _BUDGET, sent / _OUTPUT_RATE)

    def _paint_graph(self) -> int:
        """Recolour the live graph by the records' statuses when they changed since it was
        last shown; returns the characters sent (0 when nothing was)."""
        if self._template is None or self._show_graph is None:
            return 0
        statuses = [rec.status for rec in self._records.values()]
        if statuses == self._shown:
            return 0
        self._shown = statuses
        try:
            svg = inline_svg(self._template.recolour(
                dict(zip(self._records, statuses, strict=True)), _map_counts(self._records)))
            self._show_graph(svg)
        except Exception as exc:  # the counts go on; the graph waits for the run's end
            self._template = None
            set_msg(self.run_msg, "error", f"live graph stopped: {type(exc).__name__}: {exc}")
            return 0
        self.graph_frames += 1
        return len(svg)

    def _finish(self, run: Run | None, *, stopped: bool = False,
                error: BaseException | None = None) -> None:
        self._set_running(False)
        self.last_run = run
        self._template = None  # the form shows the finished run's graph itself
        self._records = {}
        if run is None:
            self.progress.bar_style = "danger"
            text = "stopped before it started" if stopped else f"run failed: {error}"
            set_msg(self.run_msg, "error", text)
            self._refresh()
            return
        cancelled = set(stopped_ids(run)) if stopped or run.interrupted else set()
        self._run_counts = {"success": 0, "failed": 0, "skipped": 0}
        for tid, rec in run.records.items():  # the tasks that ended before a stop
            if tid not in cancelled:
                self._run_counts[rec.status] = self._run_counts.get(rec.status, 0) + 1
        self._cancelled = len(cancelled)
        self._running_ids = set()
        self._paint(force=True)
        self.progress.bar_style = {"success": "success", "partial": "warning"}.get(
            run.status, "danger")
        if stopped or run.interrupted:
            set_msg(self.run_msg, "error", "stopped: running tasks were cancelled, the rest "
                    "skipped (see form.last_run)")
        else:
            set_msg(self.run_msg, "ok" if run.status == "success" else "error",
                    f"{run.status} in {run.stats.makespan_s:.3f} s")
        self._show_run(run)  # first: the table appearing means the whole result is shown
        self.result_html.value = result_html(run)
        self.run_button.disabled = False


def stopped_ids(run: Run) -> list[str]:
    """The tasks of ``run`` that a stop (or an interrupt) ended: recorded ``CANCELLED``."""
    return [tid for tid, rec in run.records.items()
            if rec.error is not None and rec.error.code == CANCELLED]


def _map_counts(records: Mapping[str, TaskRecord]) -> dict[str, str]:
    """Per expanded map among ``records``, its children's counts by status."""
    from oktyv_nb.results.display.render import map_counts

    return {tid: map_counts([c.status for c in rec.children])
            for tid, rec in records.items() if rec.children is not None}
