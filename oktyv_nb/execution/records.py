"""Task records: what the engine writes about every task, and nothing else writes.

One :class:`TaskRecord` per task, created before the run starts and finished exactly once
(status ``success``, ``failed`` or ``skipped``). Times are ``time.perf_counter()`` seconds;
the run's anchor turns them into wall-clock timestamps at the output edge.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "STATUSES", "AttemptSpan", "ErrorInfo", "NotStored", "TaskRecord", "error_from_exception",
    "ran", "utc_datetime",
]

# Record states: pending -> ready -> running [-> retrying -> ready -> running]* -> final.
PENDING, READY, RUNNING, RETRYING = "pending", "ready", "running", "retrying"
SUCCESS, FAILED, SKIPPED = "success", "failed", "skipped"
FINAL = frozenset((SUCCESS, FAILED, SKIPPED))
#: Every status a record can show, in display order.
STATUSES = (PENDING, READY, RUNNING, RETRYING, SUCCESS, FAILED, SKIPPED)


def utc_datetime(unix_s: float) -> datetime:
    """Unix seconds as a UTC datetime (to the microsecond): the one conversion behind the
    result's timestamps and the ``${task.startTime}``/``${task.endTime}`` references."""
    return datetime.fromtimestamp(unix_s, UTC)


class ErrorInfo:
    """``code``, ``message`` and (for raised exceptions) ``stack`` of a failure."""

    __slots__ = ("cause", "code", "message", "root", "stack")

    def __init__(
        self, code: str, message: str, stack: str | None = None, cause: str | None = None,
        root: str | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.stack = stack
        self.cause = cause  # for skips: the dependency that caused it
        self.root = root  # for skips: the failed task that started the chain of skips

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.stack is not None:
            d["stack"] = self.stack
        return d

    def __repr__(self) -> str:
        return f"ErrorInfo({self.code!r}, {self.message!r})"


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__}: str() of the exception raised>"


def error_from_exception(exc: BaseException, code: str | None = None) -> ErrorInfo:
    """The record of ``exc``: its ``code`` attribute when a non-empty string, else its class
    name (unless the engine gives a fixed ``code``), ``str(exc)`` and the traceback."""
    if code is None:
        try:
            c = getattr(exc, "code", None)
        except Exception:  # a ``code`` property that raises
            c = None
        code = c if isinstance(c, str) and c else type(exc).__name__
    try:
        stack = "".join(traceback.format_exception(exc))
    except Exception:
        stack = None
    return ErrorInfo(code, _message(exc), stack)


class AttemptSpan:
    """One attempt of a task: ``start``/``end`` perf-counter seconds, ``outcome``, where it
    ran, its ``error`` when it failed, and the CPU seconds it used (``cpu_s``; None where
    the backend cannot tell, as for async tools sharing the loop)."""

    __slots__ = ("cpu_s", "end", "error", "outcome", "output", "start", "worker")

    def __init__(
        self, start: float, end: float, outcome: str, worker: str | None,
        cpu_s: float | None = None, error: ErrorInfo | None = None,
        output: tuple[str, str] | None = None,
    ) -> None:
        self.start = start
        self.end = end
        self.outcome = outcome  # "success" | "failed" | "timeout" | "cancelled"
        self.worker = worker
        self.cpu_s = cpu_s
        self.error = error  # why this attempt failed (the record keeps only the last)
        self.output = output  # (stdout, stderr) it printed, None if nothing or not captured

    def __repr__(self) -> str:
        return f"AttemptSpan({self.start:.6f}, {self.end:.6f}, {self.outcome!r})"


class TaskRecord:
    """The fate of one task. ``start``/``end``/``ready_at`` are perf-counter seconds."""

    __slots__ = (
        "_spans", "attempts", "cache_key", "cache_note", "cached", "children", "cpu_s", "end",
        "error", "level", "map_index", "map_of", "output", "ready_at", "result", "reused",
        "rollback_error", "rolled_back", "start", "status", "task_id", "tool", "worker",
    )

    def __init__(self, task_id: str, tool: str, level: int) -> None:
        self.task_id = task_id
        self.tool = tool
        self.level = level
        self.status = PENDING
        self.attempts = 0
        self.ready_at: float | None = None
        self.start: float | None = None
        self.end: float | None = None
        self.result: Any = None
        self.error: ErrorInfo | None = None
        self.rolled_back: bool | None = None
        self.rollback_error: ErrorInfo | None = None
        self.reused: bool | None = None
        # The result cache (SPEC §17), for tasks that ask for it when the run has a store:
        # ``cached`` is True for a hit (no call), False for a call; ``cache_key`` the key its
        # result is stored under; ``cache_note`` why a call could not be cached.
        self.cached: bool | None = None
        self.cache_key: str | None = None
        self.cache_note: str | None = None
        self.worker: str | None = None
        self.cpu_s: float | None = None  # CPU seconds of the attempts that measured it
        self.output: tuple[str, str] | None = None  # every attempt's (stdout, stderr), joined
        self._spans: list[AttemptSpan] | None = None
        # Mapped tasks (SPEC §16): an expanded map's ``children`` (in element order); a
        # child's ``map_of`` (its map's id) and ``map_index``.
        self.children: list[TaskRecord] | None = None
        self.map_of: str | None = None
        self.map_index: int | None = None

    @property
    def spans(self) -> list[AttemptSpan]:
        """Every attempt, in order. A task that succeeded at its first attempt keeps no list:
        its one span is its own start, end and worker (most tasks, so it saves memory)."""
        if self._spans is not None:
            return self._spans
        if self._one_span():
            return [AttemptSpan(self.start, self.end or self.start, SUCCESS, self.worker,
                                self.cpu_s, output=self.output)]  # type: ignore[arg-type]
        return []

    def _one_span(self) -> bool:
        """True when the record itself is its one attempt's span (no list kept)."""
        return self.attempts == 1 and self.status == SUCCESS and self.start is not None

    def span_bounds(self) -> tuple[float, float] | None:
        """The first attempt's start and the last one's end (perf seconds), or None when no
        attempt ran: :attr:`spans`' bounds without making the spans."""
        spans = self._spans
        if spans is not None:
            if not spans:
                return None
            return min(s.start for s in spans), max(s.end for s in spans)
        if self._one_span():
            return self.start, self.end or self.start  # type: ignore[return-value]
        return None

    @property
    def stdout(self) -> str:
        """What the task's attempts wrote to stdout, in order ("" if nothing)."""
        return self.output[0] if self.output is not None else ""

    @property
    def stderr(self) -> str:
        """What they wrote to stderr and logged, in order ("" if nothing)."""
        return self.output[1] if self.output is not None else ""

    def add_output(self, output: tuple[str, str]) -> None:
        """Append one attempt's ``(stdout, stderr)``; each stream keeps its last 1 MB."""
        if self.output is None:
            self.output = output
        else:
            from oktyv_nb.execution.capture import join_output

            self.output = (join_output([self.output[0], output[0]]),
                           join_output([self.output[1], output[1]]))

    def add_span(self, span: AttemptSpan) -> None:
        """Record a finished attempt that the record's own fields do not describe."""
        if self._spans is None:
            self._spans = []
        self._spans.append(span)

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    @property
    def duration(self) -> float:
        """Seconds from first start to end (0 for skipped or unfinished tasks)."""
        if self.start is None or self.end is None:
            return 0.0
        return self.end - self.start

    def __repr__(self) -> str:
        return f"<TaskRecord {self.task_id} {self.status} attempts={self.attempts}>"


def ran(records: Iterable[TaskRecord]) -> Iterator[TaskRecord]:
    """The records of the things that ran: an expanded map's children in its place (SPEC
    §16: one row per child), every other record (a map over an empty list included) as it
    is."""
    for rec in records:
        if not rec.children:
            yield rec
        else:
            yield from ran(rec.children)


class NotStored:
    """A value a run store did not keep, in place of it: ``reason`` says why (``pickle=False``,
    it could not be pickled or unpickled, it held a secret), ``text`` is its ``repr`` (secrets
    scrubbed) where that was kept.

    It never equals anything, itself included, so a task whose result or params were not
    stored is never reused: it runs again.
    """

    __slots__ = ("reason", "text")

    def __init__(self, reason: str, text: str | None = None) -> None:
        self.reason = reason
        self.text = text

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<not stored ({self.reason}){': ' + self.text if self.text else ''}>"
