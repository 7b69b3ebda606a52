"""Results: a finished run as the SPEC §3 model, a pandas DataFrame and statistics.

Everything here reads the engine's records after the fact; nothing reaches back into the
scheduler. The DataFrame and the statistics are in **seconds**; the JSON result keeps
milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from html import escape
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from oktyv_nb.errors import DEPENDENCY_FAILED
from oktyv_nb.execution.records import FAILED, SKIPPED, SUCCESS, ErrorInfo, TaskRecord, utc_datetime
from oktyv_nb.model.graph import critical_path
from oktyv_nb.model.schema import (
    DagInfo,
    ExecutionResult,
    Summary,
    TaskError,
    TaskResult,
    trusted_edge,
    trusted_task_result,
)

if TYPE_CHECKING:
    from oktyv_nb.execution.engine import RunOutcome

__all__ = [
    "STATUSES", "RunStats", "compare", "run_stats", "skip_cause", "to_dataframe", "to_result"
]

# Every status a record can show, in display order.
STATUSES = ["pending", "ready", "running", "retrying", "success", "failed", "skipped"]


def to_result(outcome: RunOutcome) -> ExecutionResult:
    """The SPEC §3 result of a run, secrets scrubbed.

    The engine's records already hold values of the result's field types, so the result is
    assembled without validating them again (:func:`~oktyv_nb.models.trusted_task_result`);
    ``ExecutionResult.model_validate_json(result.to_json())`` gives an equal result.
    """
    redact = outcome.redactor
    base = outcome.base  # perf seconds -> Unix seconds (as RunOutcome.wall, for ${x.startTime})
    tasks: dict[str, TaskResult] = {}
    nsuccess = nfailed = nskipped = 0
    end_perf = outcome.perf_end if outcome.perf_end is not None else outcome.perf_start
    for tid, rec in outcome.records.items():
        status = rec.status
        start = rec.start
        end = rec.end
        if start is None:
            start = end_perf
        if end is None:
            end = end_perf
        result = None
        if status == SUCCESS:
            nsuccess += 1
            result = redact.value(rec.result) if redact else rec.result
        elif status == SKIPPED:
            nskipped += 1
        else:  # failed, or (only in a run that crashed) never finished
            nfailed += 1
            status = FAILED
        tasks[tid] = trusted_task_result(
            tid, status, (end - start) * 1000.0, utc_datetime(base + start),
            utc_datetime(base + end), rec.attempts, result,
            None if rec.error is None else _error(rec.error, redact),
            rec.rolled_back,
            None if rec.rollback_error is None else _error(rec.rollback_error, redact),
            True if rec.reused else None,
        )
    status = "success" if not nfailed else ("partial" if nsuccess else "failure")
    return ExecutionResult.model_construct(
        execution_id=outcome.execution_id,
        status=status,
        start_time=outcome.wall_start,
        end_time=utc_datetime(base + end_perf),
        duration=(end_perf - outcome.perf_start) * 1000.0,
        tasks=tasks,
        summary=Summary.model_construct(
            total=len(tasks), succeeded=nsuccess, failed=nfailed, skipped=nskipped
        ),
        dag=DagInfo.model_construct(
            levels=[list(level) for level in outcome.graph.levels],
            edges=[trusted_edge(a, b) for a, b in outcome.graph.edges()],
        ),
    )


def _error(err: ErrorInfo, redact: Any) -> TaskError:
    d = err.to_dict()
    return TaskError.model_validate(redact.value(d) if redact else d)


def to_dataframe(outcome: RunOutcome) -> pd.DataFrame:
    """One row per task, index ``task_id`` (SPEC §7), in the graph's insertion order.

    Columns: ``tool``, ``level``, ``status`` (categorical), ``attempts``, ``start`` and
    ``end`` (tz-aware UTC timestamps; a skipped task's are the moment it was skipped),
    ``duration_s`` (first start to end, backoff waits included; 0 when skipped),
    ``wait_s`` (ready to first start; NaN when it never started), ``depends_on`` (list of
    ids), ``result`` (None unless it succeeded), ``error_code``, ``error_message``,
    ``worker`` (where it last ran), ``priority``, ``reused`` (taken from an earlier run) and
    ``rolled_back``. Seconds throughout; secrets scrubbed.
    """
    recs = list(outcome.records.values())
    nodes = outcome.graph.nodes
    redact = outcome.redactor if outcome.redactor else None
    p0 = outcome.perf_start
    nan = float("nan")
    start = np.fromiter((nan if r.start is None else r.start for r in recs), float, len(recs))
    end = np.fromiter((nan if r.end is None else r.end for r in recs), float, len(recs))
    ready = np.fromiter(
        (nan if r.ready_at is None else r.ready_at for r in recs), float, len(recs)
    )
    first = np.fromiter((r.spans[0].start if r.spans else nan for r in recs), float, len(recs))
    anchor = pd.Timestamp(outcome.wall_start)
    if anchor.tzinfo is None:
        anchor = anchor.tz_localize("UTC")
    anchor = anchor.tz_convert("UTC")

    def stamps(t: np.ndarray) -> pd.DatetimeIndex:
        return anchor + pd.to_timedelta(t - p0, unit="s")

    errors = [r.error for r in recs]
    data = {
        "tool": [r.tool for r in recs],
        "level": np.fromiter((r.level for r in recs), np.int64, len(recs)),
        "status": pd.Categorical([r.status for r in recs], categories=STATUSES),
        "attempts": np.fromiter((r.attempts for r in recs), np.int64, len(recs)),
        "start": stamps(start),
        "end": stamps(end),
        "duration_s": np.nan_to_num(end - start, nan=0.0),
        "wait_s": first - ready,
        "depends_on": [list(nodes[r.task_id].deps) for r in recs],
        "result": [
            (redact.value(r.result) if redact else r.result) if r.status == SUCCESS else None
            for r in recs
        ],
        "error_code": [e.code if e is not None else None for e in errors],
        "error_message": [
            (redact.text(e.message) if redact else e.message) if e is not None else None
            for e in errors
        ],
        "worker": [r.worker for r in recs],
        "priority": np.fromiter((nodes[r.task_id].priority for r in recs), np.int64, len(recs)),
        "reused": np.fromiter((bool(r.reused) for r in recs), bool, len(recs)),
        "rolled_back": pd.array([r.rolled_back for r in recs], dtype="boolean"),
    }
    df = pd.DataFrame(data, index=pd.Index([r.task_id for r in recs], name="task_id"))
    for col in ("tool", "error_code", "error_message", "worker"):
        df[col] = df[col].astype("string")
    return df


@dataclass(frozen=True, slots=True)
class RunStats:
    """Timing statistics of a run, in seconds (SPEC §7).

    ``speedup`` = work / makespan; ``efficiency`` = speedup / max_concurrent;
    ``lower_bound_s`` = max(critical path, work / max_concurrent), the best any schedule
    could do with these durations; ``bound_ratio`` = makespan / lower bound (1.0 is
    perfect); ``avg_parallelism`` = mean number of tasks running over the makespan.
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

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict (``critical_path`` a fresh list)."""
        return asdict(self)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>"
            f"{escape(_fmt(v))}{escape(_UNITS.get(k, ''))}</td></tr>"
            for k, v in self.to_dict().items()
        )
        return f"<table class='oktyv-stats'>{rows}</table>"

    def __str__(self) -> str:
        return "\n".join(
            f"{k:>16}: {_fmt(v)}{_UNITS.get(k, '')}" for k, v in self.to_dict().items()
        )

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{k}={v!r}" if not isinstance(v, float) else f"{k}={v:.4g}"
            for k, v in self.to_dict().items()
        )
        return f"RunStats({fields})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython's text display
        p.text("RunStats\n" + str(self))


_UNITS = {
    "makespan_s": " s", "work_s": " s", "critical_path_s": " s", "lower_bound_s": " s",
    "speedup": "×",
}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return " → ".join(map(str, v)) if v else "—"
    return str(v)


def _div(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def run_stats(outcome: RunOutcome) -> RunStats:
    """Makespan, work, speedup, critical path and bounds of a finished run."""
    recs = outcome.records.values()
    spans = [(s.start, s.end) for r in recs for s in r.spans]
    durations = {r.task_id: r.duration for r in recs}
    work = sum(durations.values())
    busy = sum(e - s for s, e in spans)
    makespan = max(e for _, e in spans) - min(s for s, _ in spans) if spans else 0.0
    path, path_s = critical_path(outcome.graph, durations)
    mc = outcome.config.max_concurrent
    lower = max(path_s, work / mc)
    counts = {SUCCESS: 0, FAILED: 0, SKIPPED: 0}
    for r in recs:
        if r.status in counts:
            counts[r.status] += 1
    return RunStats(
        makespan_s=makespan,
        work_s=work,
        speedup=_div(work, makespan),
        efficiency=_div(work, makespan) / mc if makespan > 0 else float("nan"),
        critical_path=path,
        critical_path_s=path_s,
        lower_bound_s=lower,
        bound_ratio=_div(makespan, lower),
        avg_parallelism=_div(busy, makespan),
        max_concurrent=mc,
        tasks=len(outcome.records),
        succeeded=counts[SUCCESS],
        failed=counts[FAILED],
        skipped=counts[SKIPPED],
    )


def skip_cause(rec: TaskRecord) -> str | None:
    """The dependency whose failure or skip made ``rec`` skip, if any."""
    if rec.status == SKIPPED and rec.error is not None and rec.error.code == DEPENDENCY_FAILED:
        return rec.error.cause
    return None


def compare(
    runs: Iterable[Any] | Mapping[str, Any], labels: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row of :class:`RunStats` per run, index ``run``: ``Run`` objects (labelled by
    ``labels``, their ``label`` or ``run i``) or a dict label -> run. Adds ``strategy`` and
    ``backend``; the critical path as ``a → b → c`` text. Seconds."""
    if isinstance(runs, Mapping):
        labels, runs = [str(k) for k in runs], list(runs.values())
    runs = list(runs)
    if not runs:
        raise ValueError("compare needs at least one run")
    if labels is None:
        labels = [getattr(r, "label", None) or f"run {i}" for i, r in enumerate(runs)]
    rows = []
    for label, run in zip(labels, runs, strict=True):
        st = run.stats.to_dict()
        st["critical_path"] = " → ".join(st["critical_path"])
        st["strategy"] = run.outcome.config.strategy
        st["backend"] = run.outcome.backend
        rows.append({"run": label, **st})
    return pd.DataFrame(rows).set_index("run")
