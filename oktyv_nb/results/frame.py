"""A run as pandas DataFrames (SPEC §7), and tables comparing runs; seconds throughout.

:func:`to_dataframe` gives one row per task; :func:`compare` one row of statistics per run;
:func:`sweep_frame` the table of a concurrency sweep. This is the only module of the results
layer that imports pandas, so a run that is never looked at as a frame never loads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from oktyv_nb.execution.records import STATUSES, SUCCESS

if TYPE_CHECKING:
    from oktyv_nb.execution.outcome import RunOutcome
    from oktyv_nb.results.run import Run

__all__ = ["compare", "sweep_frame", "to_dataframe"]


def to_dataframe(outcome: RunOutcome) -> pd.DataFrame:
    """One row per task, index ``task_id`` (SPEC §7), in the graph's insertion order.

    Columns: ``tool``, ``level``, ``status`` (categorical), ``attempts``, ``start`` and
    ``end`` (tz-aware UTC timestamps; a skipped task's are the moment it was skipped),
    ``duration_s`` (first start to end, backoff waits included; 0 when skipped),
    ``wait_s`` (ready to first start; NaN when it never started), ``depends_on`` (list of
    ids), ``result`` (None unless it succeeded), ``error_code``, ``error_message``,
    ``worker`` (where it last ran), ``priority``, ``reused`` (taken from an earlier run),
    ``cached`` (taken from the run store's result cache, SPEC §17) and ``rolled_back``.
    Seconds throughout; secrets scrubbed.
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
        "cached": np.fromiter((r.cached is True for r in recs), bool, len(recs)),
        "rolled_back": pd.array([r.rolled_back for r in recs], dtype="boolean"),
    }
    df = pd.DataFrame(data, index=pd.Index([r.task_id for r in recs], name="task_id"))
    for col in ("tool", "error_code", "error_message", "worker"):
        df[col] = df[col].astype("string")
    return df


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


def sweep_frame(runs: Sequence[tuple[int, int, Run]]) -> pd.DataFrame:
    """The sweep table of ``(max_concurrent, repeat, run)`` triples (see :meth:`DAG.sweep`)."""
    rows = []
    for mc, r, run in runs:
        st = run.stats
        rows.append({
            "max_concurrent": mc, "repeat": r, "makespan_s": st.makespan_s,
            "work_s": st.work_s, "speedup": st.speedup, "efficiency": st.efficiency,
            "critical_path_s": st.critical_path_s, "lower_bound_s": st.lower_bound_s,
            "bound_ratio": st.bound_ratio, "avg_parallelism": st.avg_parallelism,
            "status": run.status,
        })
    df = pd.DataFrame(rows)
    first = df.loc[df["max_concurrent"] == runs[0][0], "makespan_s"].mean()
    rel = first / df["makespan_s"]
    df.insert(5, "relative_speedup", rel.where(df["makespan_s"] > 0))
    return df
