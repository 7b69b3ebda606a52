"""The form's *Run* and *Stop* buttons, its progress bar and its result table.

:class:`RunPanel` runs the form's DAG in the kernel: on the kernel's running loop as an
asyncio task (so *Stop* can cancel it; every task still gets its record), or synchronously
where no loop runs (a script, a test). Progress comes from the engine's event stream,
painted at most about ten times a second; the result table follows the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from oktyv_nb.errors import OktyvError
from oktyv_nb.execution.events import EventKind
from oktyv_nb.widgets.common import guarded, message_area, row, set_msg
from oktyv_nb.widgets.results import counts_html, result_html

if TYPE_CHECKING:
    from oktyv_nb.dag import DAG
    from oktyv_nb.execution.records import TaskRecord
    from oktyv_nb.results.run import Run

__all__ = ["RunPanel"]

_PAINT_INTERVAL = 0.1  # seconds between progress updates during a run


class RunPanel:
    """Runs ``dag`` when *Run* is clicked; ``last_run`` holds the run it started.

    ``show_run(run)`` is called when a run has finished, before its table is shown (the form
    colours its graph); ``refresh()`` when a run ended without a record to show.
    """

    #: Its widgets, public attributes of the form too.
    WIDGETS = ("run_button", "stop_button", "progress", "counts_label", "run_msg",
               "result_html")

    def __init__(self, dag: DAG, show_run: Callable[[Run], None],
                 refresh: Callable[[], None]) -> None:
        self.dag = dag
        self._show_run = show_run
        self._refresh = refresh
        self.last_run: Run | None = None
        self.run_task: asyncio.Future[Any] | None = None
        self._run_counts: dict[str, int] = {}
        self._running_ids: set[str] = set()
        self._last_paint = 0.0
        self._paint_timer: asyncio.TimerHandle | None = None
        self.run_button = W.Button(description="Run", icon="play", button_style="success",
                                   layout=W.Layout(width="90px"))
        self.stop_button = W.Button(description="Stop", icon="stop", button_style="warning",
                                    disabled=True, layout=W.Layout(width="90px"))
        self.run_button.add_class("oktyv-run")
        self.stop_button.add_class("oktyv-stop")
        self.run_button.on_click(self._on_run)
        self.stop_button.on_click(self._on_stop)
        self.progress = W.IntProgress(value=0, min=0, max=1, layout=W.Layout(width="240px"))
        self.counts_label = W.HTML(layout=W.Layout(margin="0 0 0 8px"))
        self.counts_label.add_class("oktyv-counts")
        self.run_msg = message_area()
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
        self._paint_counts(force=True)
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

    def _on_event(self, kind: EventKind, rec: TaskRecord | None, t: float) -> None:
        if rec is not None:
            if kind == "task_started":
                self._running_ids.add(rec.task_id)
            elif kind == "task_retrying":
                self._running_ids.discard(rec.task_id)
            elif kind == "task_finished":
                self._running_ids.discard(rec.task_id)
                self._run_counts[rec.status] = self._run_counts.get(rec.status, 0) + 1
        self._paint_counts(force=kind == "run_finished")

    def _paint_counts(self, force: bool = False) -> None:
        now = time.perf_counter()
        done = sum(self._run_counts.values())
        wait = _PAINT_INTERVAL - (now - self._last_paint)
        if not force and wait > 0 and done < self.progress.max:
            # throttled: at most ~10 updates a second, and the last state always shows
            if self._paint_timer is None:
                with contextlib.suppress(RuntimeError):
                    self._paint_timer = asyncio.get_running_loop().call_later(
                        wait, self._paint_counts, True)
            return
        if self._paint_timer is not None:
            self._paint_timer.cancel()
            self._paint_timer = None
        self._last_paint = now
        self.progress.value = min(done, self.progress.max)
        self.counts_label.value = counts_html(done, self.progress.max, self._run_counts,
                                              len(self._running_ids))

    def _finish(self, run: Run | None, *, stopped: bool = False,
                error: BaseException | None = None) -> None:
        self._set_running(False)
        self.last_run = run
        if run is None:
            self.progress.bar_style = "danger"
            text = "stopped before it started" if stopped else f"run failed: {error}"
            set_msg(self.run_msg, "error", text)
            self._refresh()
            return
        summary = run.result.summary
        self._run_counts = {"success": summary.succeeded, "failed": summary.failed,
                            "skipped": summary.skipped}
        self._running_ids = set()
        self._paint_counts(force=True)
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
