"""A finished (or interrupted) run: records, DataFrame, statistics and pictures."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from html import escape
from typing import TYPE_CHECKING, Any

from oktyv_nb.execution.outcome import RunOutcome
from oktyv_nb.execution.records import FAILED, SKIPPED, SUCCESS, NotStored, TaskRecord
from oktyv_nb.model.graph import Graph
from oktyv_nb.model.schema import ExecutionResult, TaskSpec
from oktyv_nb.results.display import GRAPH_LIMIT
from oktyv_nb.results.result import to_result
from oktyv_nb.results.stats import RunStats, run_stats

if TYPE_CHECKING:
    import graphviz
    import pandas as pd
    from matplotlib.figure import Figure

    from oktyv_nb.dag import DAG

__all__ = ["LogText", "Run", "reusable"]


class Run:
    """The outcome of ``dag.run()``: ``.df``, ``.result``, ``.stats``, ``.graph()``,
    ``.timeline()`` and ``.rerun_failed()``. Times in seconds; the JSON result in ms."""

    def __init__(
        self,
        outcome: RunOutcome,
        dag: DAG | None = None,
        label: str | None = None,
        settings: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        self.outcome = outcome
        self.dag = dag
        self.label = label
        self._name = name
        #: The settings this run was given (max_concurrent, vault, ...), reused by
        #: :meth:`rerun_failed`.
        self.settings: dict[str, Any] = dict(settings or {})

    @property
    def name(self) -> str | None:
        """The DAG's name (a run loaded from a store keeps it without its DAG)."""
        return self.dag.name if self.dag is not None else self._name

    @property
    def complete(self) -> bool:
        """True for a run that ended normally; False for an interrupted one, or a stored run
        whose process died before it ended (SPEC §17)."""
        o = self.outcome
        return not (o.interrupted or o.aborted) and o.perf_end is not None

    @property
    def records(self) -> dict[str, TaskRecord]:
        return self.outcome.records

    @property
    def execution_id(self) -> str:
        return self.outcome.execution_id

    @property
    def interrupted(self) -> bool:
        """True when the run was interrupted (cancelled, stop button, Ctrl-C)."""
        return self.outcome.interrupted

    @property
    def reused(self) -> list[str]:
        """Ids of the tasks whose results were taken from an earlier run (``resume``)."""
        return [tid for tid, r in self.outcome.records.items() if r.reused]

    @property
    def cached(self) -> list[str]:
        """Ids of the tasks whose results came from the run store's cache (SPEC §17)."""
        return [tid for tid, r in self.outcome.records.items() if r.cached]

    @property
    def failed(self) -> list[str]:
        """Ids of the tasks that failed."""
        return [tid for tid, r in self.outcome.records.items() if r.status == FAILED]

    @property
    def skipped(self) -> list[str]:
        """Ids of the tasks that were skipped."""
        return [tid for tid, r in self.outcome.records.items() if r.status == SKIPPED]

    @cached_property
    def result(self) -> ExecutionResult:
        """The SPEC §3 result model."""
        return to_result(self.outcome)

    @property
    def status(self) -> str:
        """``success``, ``partial`` or ``failure``."""
        return self.result.status

    @cached_property
    def df(self) -> pd.DataFrame:
        """One row per task (SPEC §7); see :func:`oktyv_nb.results.to_dataframe`."""
        from oktyv_nb.results.frame import to_dataframe

        return to_dataframe(self.outcome)

    @cached_property
    def attempts(self) -> pd.DataFrame:
        """One row per attempt: outcome, times since the run started, the backoff before
        it, its own error, worker and CPU time; see
        :func:`oktyv_nb.results.frame.attempts_frame`."""
        from oktyv_nb.results.frame import attempts_frame

        return attempts_frame(self.outcome)

    def logs(self, task_id: str | None = None) -> LogText:
        """What the tasks printed and logged (SPEC §18): ``task_id``'s, or every task's that
        wrote anything, each under a ``== <task> (stdout|stderr) ==`` heading, in task
        order. A ``str``; in Jupyter it shows as preformatted blocks."""
        recs = self.records
        if task_id is not None and task_id not in recs:
            raise KeyError(f"no task {task_id!r} in this run; tasks: {', '.join(recs)}")
        chosen = [recs[task_id]] if task_id is not None else list(recs.values())
        blocks: list[tuple[str, str]] = []
        for rec in chosen:
            for stream, text in (("stdout", rec.stdout), ("stderr", rec.stderr)):
                if text:
                    blocks.append((f"== {rec.task_id} ({stream}) ==", text))
        return LogText(blocks)

    def to_dataframe(self) -> pd.DataFrame:
        """A copy of :attr:`df`."""
        return self.df.copy()

    @cached_property
    def stats(self) -> RunStats:
        """Makespan, work, speedup, critical path, bounds (seconds), SPEC §7."""
        return run_stats(self.outcome)

    def graph(self, **options: Any) -> graphviz.Digraph:
        """The graph coloured by status, durations on nodes, critical path bold."""
        from oktyv_nb.results.display.render import build_digraph

        return build_digraph(self.outcome.graph, self.outcome, title=self.name, **options)

    def to_svg(self, **options: Any) -> str:
        from oktyv_nb.results.display.render import to_svg

        return to_svg(self.graph(**options))

    def save_graph(self, path: Any, **options: Any) -> Any:
        from oktyv_nb.results.display.render import save_graph

        return save_graph(self.graph(**options), path)

    def timeline(self, **options: Any) -> Figure:
        """A Gantt chart of the run (a matplotlib ``Figure``): one bar per attempt coloured
        by outcome, retries and skips marked, the critical path outlined; seconds from the
        run's start. Options as :func:`oktyv_nb.timeline.timeline`."""
        from oktyv_nb.results.display.timeline import timeline

        if "title" not in options and self.name:
            options["title"] = self.name
        return timeline(self.outcome, **options)

    def _resume_args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.dag is None:
            raise RuntimeError(
                "this run has no DAG to rerun (a run loaded from a store keeps no tools); "
                "build the DAG, or ok.DAG.from_request(request, tools), and call "
                "dag.run(resume=run)"
            )
        return {**self.settings, **kwargs, "resume": self}

    def rerun_failed(self, **kwargs: Any) -> Run:
        """Run the DAG again, re-running only the tasks that failed or were skipped (and
        those that depend on them, and tasks changed since); the others' results are reused
        and their records say ``reused``. Same settings as this run unless given."""
        args = self._resume_args(kwargs)  # first: it says why when there is no DAG
        return self.dag.run(**args)  # type: ignore[union-attr]

    async def arerun_failed(self, **kwargs: Any) -> Run:
        """:meth:`rerun_failed` on the running loop."""
        args = self._resume_args(kwargs)
        return await self.dag.arun(**args)  # type: ignore[union-attr]

    def _summary(self) -> str:
        s = self.result.summary
        text = (
            f"{self.status}: {s.succeeded} succeeded, {s.failed} failed, {s.skipped} skipped "
            f"of {s.total} in {self.stats.makespan_s:.3f} s"
        )
        reused = len(self.reused)
        if reused:
            text += f" ({reused} reused)"
        cached = len(self.cached)
        if cached:
            text += f" ({cached} cached)"
        if self.outcome.aborted:
            text += " (aborted)"
        elif self.interrupted:
            text += " (interrupted)"
        return text

    def __repr__(self) -> str:
        name = f" {self.name!r}" if self.name else ""
        return f"<Run{name} {self._summary()}>"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython's text display
        lines = [repr(self)]
        df = self.df
        if len(df):
            cols = ["tool", "status", "attempts", "duration_s", "error_code"]
            lines.append(df[cols].to_string(max_rows=30, float_format=lambda v: f"{v:.4f}"))
        p.text("\n".join(lines))

    def _repr_html_(self) -> str:
        st = self.stats
        name = f" {escape(self.name)}" if self.name else ""
        if st.interrupted:  # no speedup as if the whole DAG had run
            figures = f"<br/><i>{escape(st.note or '')}</i>"
        else:
            figures = (f"; speedup {st.speedup:.2f}×, critical path "
                       f"{st.critical_path_s:.3f} s")
        head = f"<p><b>Run{name}</b> {escape(self._summary())}{figures}</p>"
        graph_html = ""
        if len(self.outcome.records) <= GRAPH_LIMIT:
            try:
                from oktyv_nb.results.display.render import svg_html, to_svg

                graph_html = f"<div>{svg_html(to_svg(self.graph()))}</div>"
            except Exception as exc:  # no dot: the table still shows, with the hint
                graph_html = f"<pre>{escape(str(exc))}</pre>"
        cols = ["tool", "level", "status", "attempts", "duration_s", "wait_s", "error_code"]
        table = self.df[cols].to_html(max_rows=60, float_format=lambda v: f"{v:.4f}")
        return head + graph_html + table


class LogText(str):
    """The text of :meth:`Run.logs`, with an HTML form for Jupyter."""

    blocks: list[tuple[str, str]]

    def __new__(cls, blocks: list[tuple[str, str]]) -> LogText:
        text = "\n".join(f"{head}\n{body}" if body.endswith("\n") else f"{head}\n{body}\n"
                         for head, body in blocks)
        self = super().__new__(cls, text)
        self.blocks = blocks
        return self

    def _repr_html_(self) -> str:
        if not self.blocks:
            return "<i>no output</i>"
        return "".join(
            f"<div><b>{escape(head.strip('= '))}</b><pre style='margin:2px 0 8px 0'>"
            f"{escape(body)}</pre></div>"
            for head, body in self.blocks
        )

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self) or "(no output)")


def reusable(graph: Graph, resume: Run) -> dict[str, TaskRecord]:
    """The records of ``resume`` a new run of ``graph`` may reuse: tasks that succeeded,
    are unchanged since, and depend on nothing that runs again. A stored run's task whose
    result or params the store did not keep (:class:`NotStored`) runs again."""
    old = resume.outcome
    rerun: set[str] = set()
    reuse: dict[str, TaskRecord] = {}
    for tid in graph.order:  # dependencies first
        node = graph.nodes[tid]
        rec = old.records.get(tid)
        old_node = old.graph.nodes.get(tid)
        if (
            rec is not None
            and rec.status == SUCCESS
            and not isinstance(rec.result, NotStored)
            and old_node is not None
            and _spec_equal(old_node.spec, node.spec)
            and not any(d in rerun for d in node.deps)
        ):
            reuse[tid] = rec
        else:
            rerun.add(tid)
    return reuse


def reusable_maps(
    graph: Graph, resume: Run, reuse: Mapping[str, TaskRecord]
) -> dict[str, tuple[list[Any], list[TaskRecord]]]:
    """Per mapped task of ``graph`` that runs again but expanded, unchanged, in ``resume``:
    the elements it mapped over and its children's records. The new run reuses the children
    that succeeded when the elements are equal (SPEC §16)."""
    old = resume.outcome
    maps: dict[str, tuple[list[Any], list[TaskRecord]]] = {}
    for tid, node in graph.nodes.items():
        rec = old.records.get(tid)
        old_node = old.graph.nodes.get(tid)
        if (
            node.map is not None and tid not in reuse and rec is not None
            and rec.children and tid in old.map_items and old_node is not None
            and _spec_equal(old_node.spec, node.spec)
        ):
            maps[tid] = (old.map_items[tid], rec.children)
    return maps


def _spec_equal(a: TaskSpec, b: TaskSpec) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # params that do not compare (arrays, frames): treat as changed
        return False
