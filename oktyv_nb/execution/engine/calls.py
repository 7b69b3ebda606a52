"""Preparing a call: a task's params with ``${ref}`` resolved, its credentials, redaction.

:func:`call_kwargs` gives the keyword arguments of one call; :class:`RecordView` is the
reference resolver's window on the run's records, in their JSON form (SPEC §5): the fields
of :data:`~oktyv_nb.model.variables.RECORD_FIELDS`, with durations in milliseconds,
timestamps as ISO-8601 text and secrets scrubbed from errors. :func:`redacted` scrubs an
error record, so that no record ever holds a secret.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from oktyv_nb.errors import VariableResolutionError
from oktyv_nb.execution.records import FAILED, FINAL, SUCCESS, ErrorInfo, TaskRecord
from oktyv_nb.model.variables import resolve
from oktyv_nb.model.vault import Redactor, lookup_secrets

if TYPE_CHECKING:
    from oktyv_nb.execution.outcome import RunOutcome
    from oktyv_nb.model.graph import TaskNode

__all__ = ["RecordView", "call_kwargs", "redacted"]


def call_kwargs(
    node: TaskNode, view: RecordView, vault: Mapping[str, Any] | None, redactor: Redactor,
    params: Any = None,
) -> dict[str, Any]:
    """The call's keyword arguments: ``params`` (default the node's) with references
    resolved, plus ``credentials`` (the task's vault set, whose values ``redactor`` learns)
    when the task names one. Raises VariableResolutionError or VaultNotFoundError."""
    if params is None:
        params = node.params
        kwargs = resolve(params, view) if node.has_refs else params
    else:
        kwargs = resolve(params, view)
    if node.vault is not None:
        secrets = lookup_secrets(vault, node.vault, node.id)
        redactor.add(secrets.values())
        kwargs = {**kwargs, "credentials": secrets}
    return kwargs


class RecordView:
    """``view(task_id)(field)``: a field of a task's record in its JSON form (SPEC §5)."""

    __slots__ = ("outcome", "records", "redactor")

    def __init__(
        self, records: Mapping[str, TaskRecord], redactor: Redactor,
        outcome: RunOutcome | None = None,
    ) -> None:
        self.records = records
        self.redactor = redactor
        self.outcome = outcome

    def __call__(self, task_id: str) -> Callable[[str], Any]:
        rec = self.records[task_id]
        outcome = self.outcome
        redactor = self.redactor

        def error_dict(err: ErrorInfo | None) -> dict[str, Any] | None:
            if err is None:
                return None
            d = err.to_dict()
            return redactor.value(d) if redactor else d

        def field(name: str) -> Any:
            if name == "result":
                # a failed map keeps its list (None where a child failed) for all_done
                # dependents (SPEC §16)
                if rec.status != SUCCESS and not (rec.status == FAILED and rec.children):
                    raise VariableResolutionError(
                        f"task {task_id} {rec.status if rec.status in FINAL else 'has not run'}"
                        f"; it has no result to reference (use ${{{task_id}.status}} or "
                        f"${{{task_id}.error.message}})",
                        task_id=task_id,
                    )
                return rec.result
            if name == "status":
                return rec.status
            if name == "taskId":
                return task_id
            if name == "duration":
                return rec.duration * 1000.0  # ms, as the result's duration
            if name == "attempts":
                return rec.attempts
            if name == "error":
                return error_dict(rec.error)
            if name == "rollbackError":
                return error_dict(rec.rollback_error)
            if name in ("startTime", "endTime"):
                t = rec.start if name == "startTime" else rec.end
                return outcome.wall(t).isoformat() if (t is not None and outcome) else None
            return {"rolledBack": rec.rolled_back, "reused": rec.reused}[name]

        return field


def redacted(err: ErrorInfo, redactor: Redactor) -> ErrorInfo:
    """``err`` with the secrets ``redactor`` knows scrubbed from its code, message and stack
    (an exception's ``code`` attribute is whatever the tool put there, a secret included:
    ``SystemExit(token)``)."""
    text = redactor.text
    return ErrorInfo(
        text(err.code), text(err.message), text(err.stack) if err.stack else err.stack,
        err.cause, err.root,
    )
