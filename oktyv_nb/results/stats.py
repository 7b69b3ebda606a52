"""Timing statistics of a run (SPEC §7), in seconds (no pandas).

:func:`run_stats` reads a run's records into a frozen :class:`RunStats`; :func:`makespan`
is the one home of the makespan (the statistics, the graph's summary and the live view's
final line all show it); :func:`skip_cause` names the dependency that made a task skip.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from html import escape
from typing import TYPE_CHECKING, Any

from oktyv_nb.errors import DEPENDENCY_FAILED
from oktyv_nb.execution.records import FAILED, SKIPPED, SUCCESS, TaskRecord, ran
from oktyv_nb.model.graph import critical_path

if TYPE_CHECKING:
    from oktyv_nb.execution.outcome import RunOutcome

__all__ = ["PARTIAL_FIGURES", "RunStats", "makespan", "run_stats", "skip_cause"]


@dataclass(frozen=True, slots=True)
class RunStats:
    """Timing statistics of a run, in seconds (SPEC §7).

    * ``makespan_s``: first attempt's start to last attempt's end.
    * ``work_s``: busy time, the sum of every attempt's duration. A retry's backoff is not
      work: the task holds no slot while it waits.
    * ``speedup`` = work / makespan: how many attempts ran at once on average, which is the
      gain over a serial run only when the tools do not share a core (threads running
      pure-Python code under the GIL do; ``backend="processes"`` does not).
    * ``efficiency`` = speedup / max_concurrent.
    * ``critical_path`` / ``critical_path_s``: the chain of dependencies with the longest sum
      of task durations (first start to end, so a chain's backoffs count: they delay it).
    * ``lower_bound_s`` = max(critical path, work / max_concurrent): no schedule of these
      durations could finish sooner. ``bound_ratio`` = makespan / lower bound (1.0 is perfect).
    * ``avg_parallelism``: the same as ``speedup`` (busy time over the makespan), kept for
      the name it has in scheduling texts.
    * ``cpu_s``: the CPU seconds the attempts used, summed over those whose backend measured
      it (sync tools on threads, processes and Dask; not async tools on the shared loop);
      None when none did. ``cpu_parallelism`` = cpu_s / makespan: how many cores were busy
      on average.
    * ``cpu_serialised``: true when the tasks overlapped in time (speedup >= 1.5) but their
      CPU time shows one core at work (cpu_parallelism <= 1.2, and CPU busy at least 0.3 of
      the makespan): CPU-bound Python on threads, serialised by the GIL. The real gain over
      a serial run is then about 1, whatever ``speedup`` says; ``backend="processes"``
      runs such tools in parallel. On the ``processes`` and ``dask`` backends the same
      figures mean the worker processes did not get a core each (a busy machine, or fewer
      cores than workers), and :attr:`note` says that instead.
    * ``backend``: the name of the backend the run used (the note depends on it).
    * ``interrupted``: the run was stopped before it ended (an interrupt, a cancelled
      ``arun``): every figure covers only what ran until then, and :attr:`note` says so.
      Listed by :meth:`to_dict` only when true.
    """

    makespan_s: float
    work_s: float
    speedup: float
    efficiency: float
    critical_path: list[str]
    critical_path_s: float
    lower_bound_s: float
    bound_ratio: float
    avg_parallelism: float
    max_concurrent: int
    tasks: int
    succeeded: int
    failed: int
    skipped: int
    cpu_s: float | None = None
    cpu_parallelism: float | None = None
    backend: str | None = None
    interrupted: bool = False

    @property
    def cpu_serialised(self) -> bool:
        c = self.cpu_parallelism
        return c is not None and self.speedup >= 1.5 and 0.3 <= c <= 1.2

    @property
    def note(self) -> str | None:
        """A plain sentence when a figure would mislead, else None."""
        if self.interrupted:
            return ("the run was interrupted: these figures cover only what ran before it "
                    "stopped, not the whole DAG (speedup and bounds are of that part)")
        if not self.cpu_serialised:
            return None
        if self.backend in ("processes", "dask"):
            return (
                f"CPU time shows about one core at work ({self.cpu_parallelism or 0:.2f} cores "
                f"busy on average): the speedup of {self.speedup:.2f}× is time overlapped; the "
                f"{self.backend} workers did not get a core each (a busy machine, or fewer "
                "cores than workers)"
            )
        return (
            f"CPU time shows the tasks ran one at a time ({self.cpu_parallelism or 0:.2f} cores "
            f"busy on average): the speedup of {self.speedup:.2f}× is time overlapped, not "
            "work done in parallel; CPU-bound Python tools share one core under the GIL on "
            'threads: try backend="processes"'
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict (``critical_path`` a fresh list; ``interrupted`` only when
        true)."""
        d = asdict(self)
        if not d["interrupted"]:
            del d["interrupted"]
        return d

    def _shown(self) -> list[tuple[str, str]]:
        """(field, value text with its unit) for the text and HTML forms; an interrupted
        run's :data:`PARTIAL_FIGURES` say that they are of what ran."""
        rows = []
        for k, v in self.to_dict().items():
            text = f"{_fmt(v)}{_UNITS.get(k, '') if v is not None else ''}"
            if self.interrupted and k in PARTIAL_FIGURES:
                text += " (of what ran)"
            rows.append((k, text))
        return rows

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>"
            f"{escape(v)}</td></tr>"
            for k, v in self._shown()
        )
        note = self.note
        extra = f"<p class='oktyv-note'><b>Note:</b> {escape(note)}</p>" if note else ""
        if self.interrupted:  # said before any figure is read
            return f"{extra}<table class='oktyv-stats'>{rows}</table>"
        return f"<table class='oktyv-stats'>{rows}</table>{extra}"

    def __str__(self) -> str:
        lines = [f"{k:>16}: {v}" for k, v in self._shown()]
        note = self.note
        if note and self.interrupted:
            lines.insert(0, f"{'note':>16}: {note}")
        elif note:
            lines.append(f"{'note':>16}: {note}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{k}={v!r}" if not isinstance(v, float) else f"{k}={v:.4g}"
            for k, v in self.to_dict().items()
        )
        return f"RunStats({fields})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython's text display
        p.text("RunStats\n" + str(self))


#: The figures that compare a run with the whole DAG or with its best schedule: of an
#: interrupted run they describe only the part that ran, and are shown as such.
PARTIAL_FIGURES = frozenset((
    "speedup", "efficiency", "critical_path", "critical_path_s", "lower_bound_s",
    "bound_ratio", "avg_parallelism", "cpu_parallelism",
))

_UNITS = {
    "makespan_s": " s", "work_s": " s", "critical_path_s": " s", "lower_bound_s": " s",
    "cpu_s": " s",
    "speedup": "×",
}


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return " → ".join(map(str, v)) if v else "—"
    return str(v)


def _div(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def makespan(records: Iterable[TaskRecord]) -> float:
    """Seconds from the first attempt's start to the last attempt's end among ``records``
    (an expanded map's children in its place); 0.0 when nothing ran. An interrupted run's
    makespan ends with the last attempt that ended, not with the interrupt."""
    first = last = None
    for rec in ran(records):
        bounds = rec.span_bounds()
        if bounds is None:
            continue
        start, end = bounds
        if first is None or start < first:
            first = start
        if last is None or end > last:
            last = end
    return last - first if first is not None and last is not None else 0.0


def run_stats(outcome: RunOutcome) -> RunStats:
    """Makespan, work, speedup, critical path and bounds of a finished run."""
    recs = outcome.records.values()
    done = list(outcome.ran())  # a map's children in its place: their work counts
    spans = [(s.start, s.end) for r in done for s in r.spans]
    cpus = [r.cpu_s for r in done if r.cpu_s is not None]
    cpu = sum(cpus) if cpus else None
    # a map's children run side by side: on a chain it weighs its longest child
    durations = {
        r.task_id: r.duration if not r.children else max(c.duration for c in r.children)
        for r in recs
    }
    work = sum(e - s for s, e in spans)
    span = makespan(done)
    path, path_s = critical_path(outcome.graph, durations)
    mc = outcome.config.max_concurrent
    lower = max(path_s, work / mc)
    counts = {SUCCESS: 0, FAILED: 0, SKIPPED: 0}
    for r in recs:
        if r.status in counts:
            counts[r.status] += 1
    return RunStats(
        makespan_s=span,
        work_s=work,
        speedup=_div(work, span),
        efficiency=_div(work, span) / mc if span > 0 else float("nan"),
        critical_path=path,
        critical_path_s=path_s,
        lower_bound_s=lower,
        bound_ratio=_div(span, lower),
        avg_parallelism=_div(work, span),
        max_concurrent=mc,
        tasks=len(outcome.records),
        succeeded=counts[SUCCESS],
        failed=counts[FAILED],
        skipped=counts[SKIPPED],
        cpu_s=cpu,
        cpu_parallelism=_div(cpu, span) if cpu is not None else None,
        backend=getattr(outcome, "backend", None),
        interrupted=bool(outcome.interrupted or outcome.aborted),
    )


def skip_cause(rec: TaskRecord) -> str | None:
    """The dependency whose failure or skip made ``rec`` skip, if any."""
    if rec.status == SKIPPED and rec.error is not None and rec.error.code == DEPENDENCY_FAILED:
        return rec.error.cause
    return None
