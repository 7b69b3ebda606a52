"""The engine's event stream: one source for the live graph, progress bar and callbacks.

A subscriber is a callable ``fn(kind, record, time)``: the :data:`EventKind`; for a task
event the task's :class:`~oktyv_nb.records.TaskRecord`, for ``run_started`` and
``run_finished`` the run's :class:`~oktyv_nb.engine.RunOutcome` (its ``execution_id``,
``config`` and every task's record in ``records``); and the time in seconds since the run
started. Records are the live ones: read them in the call, and copy what must be kept, since
they change as the run moves on. Nothing is allocated per event,
so a run of no-op tasks pays only the calls themselves. :class:`EventLog` is a subscriber
that keeps every event as an :class:`Event`.

Subscribers are called synchronously on the event loop, in subscription order. A subscriber
that raises an ``Exception`` is reported once with a warning and unsubscribed; the run goes
on. Emitting costs one attribute test when nobody listens.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from .records import TaskRecord

if TYPE_CHECKING:
    from .engine import RunOutcome

__all__ = ["Event", "EventBus", "EventKind", "EventLog", "Subscriber"]

EventKind = Literal[
    "run_started",
    "task_ready",
    "task_started",
    "task_retrying",
    "task_finished",
    "task_rolled_back",
    "run_finished",
]

#: What an event is about: a task's record, or the run for ``run_started``/``run_finished``.
Subject = "TaskRecord | RunOutcome"

#: ``fn(kind, record, time)``, ``time`` in seconds since the run started.
Subscriber = Callable[[EventKind, Subject, float], Any]


class Event(NamedTuple):
    """One event kept by :class:`EventLog`: ``kind``, ``record`` (the task's record, or the
    run's outcome for run events) and ``time`` in seconds since the run started."""

    kind: EventKind
    record: TaskRecord | RunOutcome
    time: float

    @property
    def task_id(self) -> str | None:
        """The task's id; None for run events."""
        rec = self.record
        return rec.task_id if isinstance(rec, TaskRecord) else None

    def __repr__(self) -> str:
        tid = self.task_id
        who = f" {tid}" if tid is not None else ""
        return f"<Event {self.kind}{who} t={self.time:.6f}s>"


class EventLog(list[Event]):
    """A subscriber that keeps every event, in order: ``log = EventLog();
    dag.run(on_event=log); log.of("a")``. The records are the live ones: a record's fields
    show the task's latest state, not its state at that event."""

    def __call__(self, kind: EventKind, record: Subject, time: float) -> None:
        self.append(Event(kind, record, time))

    def kinds(self) -> list[EventKind]:
        """Every event's kind, in order."""
        return [e.kind for e in self]

    def of(self, task_id: str) -> list[EventKind]:
        """The kinds of ``task_id``'s events, in order."""
        return [e.kind for e in self if e.task_id == task_id]


class EventBus:
    """A list of subscribers and :attr:`dispatch`, the one callable an emitter calls.

    ``dispatch`` is None without subscribers, the subscriber itself when there is one (no
    loop, no wrapper: the common case costs one call), else :meth:`_to_all`. An emitter calls
    ``dispatch(kind, record, time)`` and, if that raises an ``Exception``, :meth:`drop`\\ s
    it; :meth:`emit` does both. ``_to_all`` never raises: it drops a failing subscriber
    itself and goes on with the others.
    """

    __slots__ = ("dispatch", "subscribers")

    def __init__(self, subscribers: list[Subscriber] | None = None) -> None:
        self.subscribers: list[Subscriber] = list(subscribers or ())
        self.dispatch: Subscriber | None = None
        self._update()

    def _update(self) -> None:
        subs = self.subscribers
        self.dispatch = None if not subs else subs[0] if len(subs) == 1 else self._to_all

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Add ``fn``; returns a function that removes it."""
        if not callable(fn):
            raise TypeError(f"an event subscriber must be callable, got {fn!r}")
        self.subscribers = [*self.subscribers, fn]
        self._update()
        return lambda: self.unsubscribe(fn)

    def unsubscribe(self, fn: Subscriber) -> None:
        # Copy on write: a _to_all that is iterating the old list is not disturbed.
        if fn in self.subscribers:
            self.subscribers = [f for f in self.subscribers if f is not fn]
            self._update()

    def __bool__(self) -> bool:
        return self.dispatch is not None

    def emit(self, kind: EventKind, record: Subject, time: float) -> None:
        """Call every subscriber with one event."""
        fn = self.dispatch
        if fn is not None:
            try:
                fn(kind, record, time)
            except Exception as exc:  # a subscriber must never break the run
                self.drop(fn, exc)

    def _to_all(self, kind: EventKind, record: Subject, time: float) -> None:
        for fn in self.subscribers:
            try:
                fn(kind, record, time)
            except Exception as exc:
                self.drop(fn, exc)

    def drop(self, fn: Subscriber, exc: Exception) -> None:
        """Unsubscribe ``fn``, which raised ``exc``, with a warning."""
        self.unsubscribe(fn)
        warnings.warn(
            f"event subscriber {fn!r} raised {type(exc).__name__}: {exc}; it was unsubscribed",
            RuntimeWarning,
            stacklevel=3,
        )
