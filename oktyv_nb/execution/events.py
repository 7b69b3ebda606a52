"""The engine's event stream: one source for the live graph, progress bar and callbacks.

A subscriber is a callable ``fn(kind, record, time)``: the :data:`EventKind`; for a task
event the task's :class:`~oktyv_nb.records.TaskRecord`, for ``run_started`` and
``run_finished`` the run's :class:`~oktyv_nb.engine.RunOutcome` (its ``execution_id``,
``config`` and every task's record in ``records``); and the time in seconds since the run
started. Records are the live ones: read them in the call, and copy what must be kept, since
they change as the run moves on. Nothing is allocated per event, so a run of no-op tasks
pays only the calls themselves. :class:`EventLog` is a subscriber that keeps every event as
an :class:`Event`.

A subscriber gets every kind of event unless it has an ``event_kinds`` attribute (an
iterable of kinds, read when it is subscribed): then it is called for those kinds only, and
the others cost it nothing. The live view takes only the run events, for instance, and
reads the records on a timer.

Subscribers are called synchronously on the event loop, in subscription order. A subscriber
that raises (any exception, ``CancelledError`` and ``GeneratorExit`` included, whether or not
the exception or the subscriber can be printed) is reported once with a warning, secrets
scrubbed, and unsubscribed; the run goes on. A ``KeyboardInterrupt`` or ``SystemExit`` raised
by a subscriber (Ctrl-C landing in it) is not the subscriber's fault: the bus keeps it in
:attr:`EventBus.interrupt` and tells the engine, which ends the run (every task recorded) and
then raises it. Emitting costs one lookup when nobody listens to that kind.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

from oktyv_nb.errors import InvalidOptionError
from oktyv_nb.execution.records import TaskRecord

if TYPE_CHECKING:
    from oktyv_nb.execution.engine import RunOutcome

__all__ = [
    "KINDS", "Event", "EventBus", "EventKind", "EventLog", "Subscriber", "subscribers_of",
]

EventKind = Literal[
    "run_started",
    "task_ready",
    "task_started",
    "task_retrying",
    "task_finished",
    "task_rolled_back",
    "run_finished",
]

KINDS: tuple[EventKind, ...] = get_args(EventKind)

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
    """The subscribers, and :attr:`dispatch`: per kind, the one callable an emitter calls.

    ``dispatch[kind]`` is None when no subscriber wants ``kind``, the subscriber itself when
    one does (no loop, no wrapper: the common case costs one call), else a fan-out. An
    emitter calls ``dispatch[kind](kind, record, time)`` and, if that raises anything,
    hands it to :meth:`failed`; :meth:`emit` does both. A fan-out never raises: it
    drops a failing subscriber itself and goes on with the others. ``dispatch`` is one dict
    for the bus's life, updated in place, so an emitter may keep a reference to it.
    """

    __slots__ = ("_kinds", "dispatch", "interrupt", "on_interrupt", "redact", "subscribers")

    def __init__(self, subscribers: Iterable[Subscriber] | None = None) -> None:
        #: The first KeyboardInterrupt or SystemExit a subscriber raised, for the run to raise.
        self.interrupt: BaseException | None = None
        #: Told that interrupt (the engine ends the run); None: nobody is told.
        self.on_interrupt: Callable[[BaseException], None] | None = None
        #: Scrubs secrets from the warning about a dropped subscriber (the run's redactor).
        self.redact: Callable[[str], str] | None = None
        self.subscribers: list[Subscriber] = []
        self._kinds: list[frozenset[str]] = []
        self.dispatch: dict[str, Subscriber | None] = dict.fromkeys(KINDS)
        for fn in subscribers or ():
            self.subscribe(fn)

    def _update(self) -> None:
        for kind in KINDS:
            fns = [fn for fn, ks in zip(self.subscribers, self._kinds, strict=True) if kind in ks]
            self.dispatch[kind] = (
                None if not fns else fns[0] if len(fns) == 1 else self._fan_out(fns)
            )

    def _fan_out(self, fns: list[Subscriber]) -> Subscriber:
        def to_all(kind: EventKind, record: Subject, time: float) -> None:
            for fn in fns:
                try:
                    fn(kind, record, time)
                except BaseException as exc:  # a subscriber must never break the run
                    self.failed(fn, exc)

        return to_all

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Add ``fn`` (for the kinds in its ``event_kinds``, if it has that attribute, else
        for all); returns a function that removes it."""
        if not callable(fn):
            raise InvalidOptionError(
                f"an event subscriber must be callable, got {_shown(fn)}", option="on_event"
            )
        wanted = getattr(fn, "event_kinds", None)
        kinds = frozenset(KINDS if wanted is None else wanted)
        unknown = sorted(kinds.difference(KINDS))
        if unknown:
            raise InvalidOptionError(
                f"event subscriber {_shown(fn)}: unknown event kinds {unknown}; the kinds are "
                f"{', '.join(KINDS)}",
                option="on_event",
            )
        self.subscribers = [*self.subscribers, fn]  # copy on write, like unsubscribe
        self._kinds = [*self._kinds, kinds]
        self._update()
        return lambda: self.unsubscribe(fn)

    def unsubscribe(self, fn: Subscriber) -> None:
        keep = [i for i, f in enumerate(self.subscribers) if f is not fn]
        if len(keep) < len(self.subscribers):
            self.subscribers = [self.subscribers[i] for i in keep]
            self._kinds = [self._kinds[i] for i in keep]
            self._update()

    def __bool__(self) -> bool:
        return bool(self.subscribers)

    def emit(self, kind: EventKind, record: Subject, time: float) -> None:
        """Call the subscribers of ``kind`` with one event; never raises."""
        fn = self.dispatch[kind]
        if fn is not None:
            try:
                fn(kind, record, time)
            except BaseException as exc:  # a subscriber must never break the run
                self.failed(fn, exc)

    def failed(self, fn: Subscriber, exc: BaseException) -> None:
        """``fn`` raised ``exc``: an interrupt is kept and passed on, anything else drops
        ``fn`` (see the module's docstring). Never raises."""
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            if self.interrupt is None:
                self.interrupt = exc
            if self.on_interrupt is not None:
                self.on_interrupt(exc)
            return
        self.drop(fn, exc)

    def drop(self, fn: Subscriber, exc: BaseException) -> None:
        """Unsubscribe ``fn``, which raised ``exc``, with a warning (secrets scrubbed)."""
        self.unsubscribe(fn)
        text = (
            f"event subscriber {_shown(fn)} raised {type(exc).__name__}: {_told(exc)}; "
            "it was unsubscribed"
        )
        if self.redact is not None:
            text = self.redact(text)
        # warnings turned into errors must not break the run either
        with contextlib.suppress(Exception):
            warnings.warn(text, RuntimeWarning, stacklevel=3)


def subscribers_of(on_event: Any) -> list[Subscriber]:
    """The subscribers an ``on_event`` argument names: None, one callable, or a list or
    tuple of callables; anything else is an InvalidOptionError (before the run starts)."""
    if on_event is None:
        return []
    fns = [on_event] if callable(on_event) else on_event
    if not isinstance(fns, (list, tuple)) or not all(callable(fn) for fn in fns):
        raise InvalidOptionError(
            "on_event must be a callable fn(kind, record, time) or a list of them, got "
            f"{_shown(on_event)}",
            option="on_event",
        )
    return list(fns)


_SHOWN = 200  # characters of a subscriber's repr in a warning (an EventLog is a long list)


def _shown(fn: Any) -> str:
    """``repr(fn)``, shortened; a stand-in when that repr raises."""
    try:
        text = repr(fn)
    except Exception:
        return f"<{type(fn).__name__} object>"
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _told(exc: BaseException) -> str:
    """``str(exc)``; a stand-in when that raises."""
    try:
        return str(exc)
    except Exception:
        return f"<str() of the {type(exc).__name__} raised>"
