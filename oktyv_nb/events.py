"""The engine's event stream: one source for the live graph, progress bar and callbacks.

Subscribers are called synchronously on the event loop, in subscription order. A subscriber
that raises is reported once with a warning and unsubscribed; the run goes on. Emitting costs
nothing when nobody listens.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .records import TaskRecord

__all__ = ["Event", "EventBus", "EventKind", "Subscriber"]

EventKind = Literal[
    "run_started",
    "task_ready",
    "task_started",
    "task_retrying",
    "task_finished",
    "task_rolled_back",
    "run_finished",
]


class Event(tuple):  # a tuple: made in C, since a run makes three or four per task
    """One thing that happened: ``kind``, the task's ``record`` (None for run events), and
    ``time`` in seconds since the run started."""

    __slots__ = ()

    def __new__(cls, kind: EventKind, record: TaskRecord | None, time: float) -> Event:
        return tuple.__new__(cls, (kind, record, time))

    kind: EventKind = property(itemgetter(0))  # type: ignore[assignment]
    record: TaskRecord | None = property(itemgetter(1))  # type: ignore[assignment]
    time: float = property(itemgetter(2))  # type: ignore[assignment]

    @property
    def task_id(self) -> str | None:
        rec = self[1]
        return rec.task_id if rec is not None else None

    def __repr__(self) -> str:
        who = f" {self.task_id}" if self[1] is not None else ""
        return f"<Event {self[0]}{who} t={self[2]:.6f}s>"


Subscriber = Callable[[Event], Any]


class EventBus:
    """A list of subscribers; :meth:`emit` calls each with the event."""

    __slots__ = ("subscribers",)

    def __init__(self, subscribers: list[Subscriber] | None = None) -> None:
        self.subscribers: list[Subscriber] = list(subscribers or ())

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Add ``fn``; returns a function that removes it."""
        self.subscribers.append(fn)
        return lambda: self.unsubscribe(fn)

    def unsubscribe(self, fn: Subscriber) -> None:
        # Copy on write: an emit that is iterating the old list is not disturbed.
        if fn in self.subscribers:
            self.subscribers = [f for f in self.subscribers if f is not fn]

    def __bool__(self) -> bool:
        return bool(self.subscribers)

    def emit(self, event: Event) -> None:
        for fn in self.subscribers:
            try:
                fn(event)
            except Exception as exc:  # a subscriber must never break the run
                self.drop(fn, exc)

    def drop(self, fn: Subscriber, exc: Exception) -> None:
        """Unsubscribe ``fn``, which raised ``exc``, with a warning."""
        self.unsubscribe(fn)
        warnings.warn(
            f"event subscriber {fn!r} raised {type(exc).__name__}: {exc}; it was unsubscribed",
            RuntimeWarning,
            stacklevel=3,
        )
