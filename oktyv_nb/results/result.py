"""The SPEC §3 result of a run, built from its records (no pandas).

:func:`to_result` turns a :class:`~oktyv_nb.execution.outcome.RunOutcome` into the
:class:`~oktyv_nb.model.schema.ExecutionResult` model (durations in milliseconds), secrets
scrubbed. It reads the engine's records after the fact; nothing reaches back into the
scheduler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oktyv_nb.execution.records import (
    FAILED,
    SKIPPED,
    SUCCESS,
    ErrorInfo,
    TaskRecord,
    utc_datetime,
)
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
    from oktyv_nb.execution.outcome import RunOutcome

__all__ = ["to_result"]


def to_result(outcome: RunOutcome, *, release_graph: bool = False) -> ExecutionResult:
    """The SPEC §3 result of a run, secrets scrubbed.

    The engine's records already hold values of the result's field types, so the result is
    assembled without validating them again (:func:`~oktyv_nb.models.trusted_task_result`);
    ``ExecutionResult.model_validate_json(result.to_json())`` gives an equal result.

    ``release_graph``: the caller owns the outcome and drops it afterwards (a one-off
    ``execute_request`` without subscribers): once its levels and edges are taken, the
    graph's nodes are let go before the task results are made, and each record once its
    task result is made (the outcome's records then read None), so that neither the nodes
    nor the records are in memory whole beside the results.
    """
    graph = outcome.graph
    dag = DagInfo.model_construct(
        levels=[list(level) for level in graph.levels],
        edges=[  # as graph.edges(), without a list of pairs first
            trusted_edge(d, node.id) for node in graph.nodes.values() for d in node.deps
        ],
    )
    if release_graph:
        graph.nodes = {}
    redact = outcome.redactor
    base = outcome.clock_offset  # perf s -> Unix s (as RunOutcome.wall, for ${x.startTime})
    records = outcome.records
    tasks: dict[str, Any] = dict.fromkeys(records)  # sized once: no regrowth
    nsuccess = nfailed = nskipped = 0
    end_perf = outcome.perf_end if outcome.perf_end is not None else outcome.perf_start
    for tid, rec in records.items():
        status = rec.status
        if status == SUCCESS:
            nsuccess += 1
        elif status == SKIPPED:
            nskipped += 1
        else:  # failed, or (only in a run that crashed) never finished
            nfailed += 1
        tasks[tid] = _task_result(rec, redact, base, end_perf)
        if release_graph:
            records[tid] = None  # type: ignore[assignment]
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
        dag=dag,
    )


def _task_result(rec: TaskRecord, redact: Any, base: float, end_perf: float) -> TaskResult:
    """One record as the result's :class:`TaskResult`; an expanded map's with its
    children's, and its list of their results even when it failed (SPEC §16)."""
    status = rec.status
    start = rec.start
    end = rec.end
    if start is None:
        start = end_perf
    if end is None:
        end = end_perf
    result = None
    children = rec.children
    if children is not None:
        children = [_task_result(c, redact, base, end_perf) for c in children]
    if status == SUCCESS or (status == FAILED and children is not None):
        result = redact.value(rec.result) if redact else rec.result
    elif status != SKIPPED:
        status = FAILED
    error = rec.error
    output = rec.output  # already redacted by the engine; None where a stream is empty
    return trusted_task_result(
        rec.task_id, status, (end - start) * 1000.0, utc_datetime(base + start),
        utc_datetime(base + end), rec.attempts, result,
        None if error is None else _error(error, redact),
        rec.rolled_back,
        None if rec.rollback_error is None else _error(rec.rollback_error, redact),
        True if rec.reused else None,
        None if output is None else output[0] or None,
        None if output is None else output[1] or None,
        rec.cached,
        rec.cache_note,
        children,
    )


def _error(err: ErrorInfo, redact: Any) -> TaskError:
    d = err.to_dict()
    return TaskError.model_validate(redact.value(d) if redact else d)
