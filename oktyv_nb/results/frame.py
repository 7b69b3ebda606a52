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

from oktyv_nb.execution.records import FAILED, STATUSES, SUCCESS

if TYPE_CHECKING:
    from oktyv_nb.execution.outcome import RunOutcome
    from oktyv_nb.results.run import Run

__all__ = ["attempts_frame", "compare", "sweep_frame", "to_dataframe"]


def _anchor(outcome: RunOutcome) -> pd.Timestamp:
    """The run's start as a tz-aware UTC timestamp: perf-counter seconds since
    ``outcome.perf_start`` are added to it."""
    anchor = pd.Timestamp(outcome.wall_start)
    if anchor.tzinfo is None:
        anchor = anchor.tz_localize("UTC")
    return anchor.tz_convert("UTC")


def to_dataframe(outcome: RunOutcome) -> pd.DataFrame:
    """One row per task, index ``task_id`` (SPEC §7), in the graph's insertion order.

    Columns: ``tool``, ``level``, ``status`` (categorical), ``attempts``, ``start`` and
    ``end`` (tz-aware UTC timestamps; a skipped task's are the moment it was skipped),
    ``duration_s`` (first start to end, backoff waits included; 0 when skipped),
    ``wait_s`` (ready to first start; NaN when it never started), ``depends_on`` (list of
    ids), ``result`` (None unless it succeeded), ``error_code``, ``error_message``,
    ``worker`` (where it last ran), ``priority``, ``reused`` (taken from an earlier run),
    ``rolled_back``, ``cached`` (taken from the run store's result cache, SPEC §17),
    ``cpu_s`` (NaN where not measured), ``stdout`` and ``stderr`` (what its attempts
    printed; "" when nothing or capture is off), ``start_s`` and ``end_s`` (``start`` and
    ``end`` as seconds since the run started, the time axis of ``run.timeline()``).
    Seconds throughout; secrets scrubbed.

    A mapped task that expanded is represented by its children's rows (index ``fetch[i]``,
    SPEC §16), with ``map_of`` (the map's id; missing for other rows) and ``map_index``
    (nullable Int64); these two columns are there when the run expanded a map. A child's
    ``depends_on`` and ``priority`` are its map's.
    """
    recs = list(outcome.ran())  # an expanded map's children in its place (SPEC §16)
    graph_nodes = outcome.graph.nodes
    nodes = [graph_nodes[r.map_of or r.task_id] for r in recs]  # a child: its map's node
    redact = outcome.redactor if outcome.redactor else None
    p0 = outcome.perf_start
    nan = float("nan")
    start = np.fromiter((nan if r.start is None else r.start for r in recs), float, len(recs))
    end = np.fromiter((nan if r.end is None else r.end for r in recs), float, len(recs))
    ready = np.fromiter(
        (nan if r.ready_at is None else r.ready_at for r in recs), float, len(recs)
    )
    first = np.fromiter((r.spans[0].start if r.spans else nan for r in recs), float, len(recs))
    anchor = _anchor(outcome)

    def stamps(t: np.ndarray) -> pd.DatetimeIndex:
        return anchor + pd.to_timedelta(t - p0, unit="s")

    errors = [r.error for r in recs]
    ids = pd.Index([r.task_id for r in recs], name="task_id")
    data = {
        "tool": [r.tool for r in recs],
        "level": np.fromiter((r.level for r in recs), np.int64, len(recs)),
        "status": pd.Categorical([r.status for r in recs], categories=STATUSES),
        "attempts": np.fromiter((r.attempts for r in recs), np.int64, len(recs)),
        "start": stamps(start),
        "end": stamps(end),
        "duration_s": np.nan_to_num(end - start, nan=0.0),
        "wait_s": first - ready,
        "depends_on": [list(n.deps) for n in nodes],
        # object dtype: the values the tools returned, never coerced (12 stays 12 beside None)
        "result": pd.Series([
            (redact.value(r.result) if redact else r.result) if r.status == SUCCESS else None
            for r in recs
        ], dtype=object, index=ids),
        "error_code": [
            (redact.text(e.code) if redact else e.code) if e is not None else None
            for e in errors
        ],
        "error_message": [
            (redact.text(e.message) if redact else e.message) if e is not None else None
            for e in errors
        ],
        "worker": [r.worker for r in recs],
        "priority": np.fromiter((n.priority for n in nodes), np.int64, len(recs)),
        "reused": np.fromiter((bool(r.reused) for r in recs), bool, len(recs)),
        "cached": np.fromiter((r.cached is True for r in recs), bool, len(recs)),
        "rolled_back": pd.array([r.rolled_back for r in recs], dtype="boolean"),
        "cpu_s": np.fromiter((nan if r.cpu_s is None else r.cpu_s for r in recs), float,
                             len(recs)),
        "stdout": [r.stdout for r in recs],
        "stderr": [r.stderr for r in recs],
        "start_s": start - p0,
        "end_s": end - p0,
    }
    if any(r.map_of is not None for r in recs):  # which map each child row is of
        data["map_of"] = pd.array([r.map_of for r in recs], dtype="string")
        data["map_index"] = pd.array([r.map_index for r in recs], dtype="Int64")
    df = pd.DataFrame(data, index=ids)
    for col in ("tool", "error_code", "error_message", "worker", "stdout", "stderr"):
        df[col] = df[col].astype("string")
    return df


def attempts_frame(outcome: RunOutcome) -> pd.DataFrame:
    """One row per attempt of every task that ran, in task order then attempt order.

    Columns (SPEC §18): ``task_id``, ``attempt`` (1, 2, ...), ``start`` and ``end``
    (tz-aware UTC timestamps), ``start_s`` and ``end_s`` (seconds since the run started),
    ``duration_s``, ``cpu_s`` (NaN where not measured), ``outcome`` (``success``, ``error``,
    ``timeout``, ``cancelled``), ``error_code`` and ``error_message`` (the attempt's own
    error, secrets scrubbed), ``worker``, ``backoff_s`` (the wait since the previous attempt
    ended: the retry's backoff plus any wait for a slot; NaN for a first attempt),
    ``stdout`` and ``stderr`` (what that attempt printed). Reused and skipped tasks have no
    attempts here.
    """
    redact = outcome.redactor if outcome.redactor else None
    p0 = outcome.perf_start
    nan = float("nan")
    rows: list[tuple[Any, ...]] = []
    for rec in outcome.ran():
        prev_end: float | None = None
        for k, span in enumerate(rec.spans, 1):
            err = span.error
            if err is None and span.outcome != SUCCESS and k == len(rec.spans):
                err = rec.error  # an attempt the record itself describes
            message = None
            if err is not None:
                message = redact.text(err.message) if redact else err.message
            out = span.output or ("", "")
            rows.append((
                rec.task_id, k, span.start - p0, span.end - p0, span.end - span.start,
                nan if span.cpu_s is None else span.cpu_s,
                "error" if span.outcome == FAILED else span.outcome,
                err.code if err is not None else None, message, span.worker,
                nan if prev_end is None else span.start - prev_end, out[0], out[1],
            ))
            prev_end = span.end
    df = pd.DataFrame(rows, columns=[
        "task_id", "attempt", "start_s", "end_s", "duration_s", "cpu_s", "outcome",
        "error_code", "error_message", "worker", "backoff_s", "stdout", "stderr",
    ])
    anchor = _anchor(outcome)
    df.insert(2, "start", anchor + pd.to_timedelta(df["start_s"], unit="s"))
    df.insert(3, "end", anchor + pd.to_timedelta(df["end_s"], unit="s"))
    for col in ("task_id", "outcome", "error_code", "error_message", "worker", "stdout",
                "stderr"):
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
