"""A finished (or interrupted) run: records, DataFrame, statistics and pictures."""

from __future__ import annotations

from functools import cached_property
from html import escape
from typing import TYPE_CHECKING, Any

from .engine import RunOutcome
from .models import ExecutionResult
from .records import TaskRecord
from .results import RunStats, run_stats, to_dataframe, to_result

if TYPE_CHECKING:
    import graphviz
    import pandas as pd
    from matplotlib.figure import Figure

    from .dag import DAG

__all__ = ["Run"]


class Run:
    """The outcome of ``dag.run()``: ``.df``, ``.result``, ``.stats``, ``.graph()``,
    ``.timeline()`` and ``.rerun_failed()``. Times in seconds; the JSON result in ms."""

    def __init__(self, outcome: RunOutcome, dag: DAG | None = None, label: str | None = None):
        self.outcome = outcome
        self.dag = dag
        self.label = label

    @property
    def records(self) -> dict[str, TaskRecord]:
        return self.outcome.records

    @property
    def execution_id(self) -> str:
        return self.outcome.execution_id

    @property
    def interrupted(self) -> bool:
        return self.outcome.interrupted

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
        return to_dataframe(self.outcome)

    def to_dataframe(self) -> pd.DataFrame:
        return self.df.copy()

    @cached_property
    def stats(self) -> RunStats:
        return run_stats(self.outcome)

    def graph(self, **options: Any) -> graphviz.Digraph:
        """The graph coloured by status, durations on nodes, critical path bold."""
        from .render import build_digraph

        return build_digraph(self.outcome.graph, self.outcome,
                             title=self.dag.name if self.dag else None, **options)

    def to_svg(self, **options: Any) -> str:
        from .render import to_svg

        return to_svg(self.graph(**options))

    def save_graph(self, path: Any, **options: Any) -> Any:
        from .render import save_graph

        return save_graph(self.graph(**options), path)

    def timeline(self, **options: Any) -> Figure:
        """A Gantt chart of the run (matplotlib): one bar per attempt, by status."""
        from .timeline import timeline

        return timeline(self.outcome, **options)

    def rerun_failed(self, **kwargs: Any) -> Run:
        """Run again only the tasks that failed or were skipped, reusing the rest."""
        if self.dag is None:
            raise RuntimeError("this run has no DAG to rerun; use DAG.from_request(...).run()")
        return self.dag.run(resume=self, **kwargs)

    async def arerun_failed(self, **kwargs: Any) -> Run:
        if self.dag is None:
            raise RuntimeError("this run has no DAG to rerun; use DAG.from_request(...).arun()")
        return await self.dag.arun(resume=self, **kwargs)

    def __repr__(self) -> str:
        s = self.result.summary
        return (
            f"<Run {self.status}: {s.succeeded} succeeded, {s.failed} failed, "
            f"{s.skipped} skipped of {s.total} in {self.stats.makespan_s:.3f} s>"
        )

    def _repr_html_(self) -> str:
        s = self.result.summary
        st = self.stats
        head = (
            f"<p><b>Run {escape(self.status)}</b>: {s.succeeded} succeeded, {s.failed} failed, "
            f"{s.skipped} skipped of {s.total}; makespan {st.makespan_s:.3f} s, speedup "
            f"{st.speedup:.2f}×</p>"
        )
        graph_html = ""
        try:
            from .render import to_svg

            graph_html = f"<div>{to_svg(self.graph())}</div>"
        except Exception as exc:  # no dot: the table still shows
            graph_html = f"<pre>{escape(str(exc))}</pre>"
        cols = ["tool", "level", "status", "attempts", "duration_s", "wait_s", "error_code"]
        table = self.df[cols].to_html(float_format=lambda v: f"{v:.4f}")
        return head + graph_html + table
