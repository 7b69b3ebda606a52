"""The seam between the engine and a backend: :class:`Backend`, the ``done`` callback type
:data:`Done`, and :class:`Channel`, which hands outcomes from worker threads back to the
engine's loop.

It sits apart from :mod:`oktyv_nb.execution.backends` (which re-exports it) so that the
backend modules can subclass :class:`Backend` without importing the package that imports
them.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, ClassVar

__all__ = ["Backend", "Channel", "Done"]

Done = Callable[..., None]
"""``done(ok, value, worker, cpu_s=None)``: how a backend reports the outcome of one call
(see :meth:`Backend.submit`)."""


class Backend(abc.ABC):
    """Where the engine's calls run: the base of every backend.

    The engine owns the schedule, ``${ref}`` resolution, retries, timeouts and records; a
    backend only runs ``fn(**kwargs)`` somewhere and reports the outcome. One backend object
    serves one run at a time; ``get_backend(name)`` makes a fresh object for each run, while
    an object passed as ``backend=`` may serve several runs one after the other (so whatever
    :meth:`open` sets up, :meth:`aclose` must undo).

    **What the engine calls, and when.** Every call below is made on the engine's loop
    thread, from plain (non-async) code unless it is a coroutine:

    0. ``size_for(max_concurrent)`` once, first: the run's ``max_concurrent`` (how many
       calls it may have running at once, an int >= 1), for a backend that starts its own
       workers to start enough of them. The default does nothing.
    1. ``await aopen(loop)`` once, before the run's clock starts and before any task is
       scheduled. ``loop`` is the running :class:`asyncio.AbstractEventLoop` the run lives
       on. The default calls :meth:`open`; override it when opening takes long (starting a
       cluster) so that the loop keeps running meanwhile.
    2. ``submit(fn, kwargs, done)`` for each attempt of each task whose call the backend
       runs (and for each rollback call, in ``failure_mode="rollback"``): every sync tool,
       and async tools too unless :attr:`runs_coroutines_on_loop` is true. ``fn`` is the
       tool (a plain callable; an async tool gives a coroutine when called, which the
       backend must run to completion), ``kwargs`` its resolved keyword arguments (a dict
       the backend may keep, but must not change). It returns a *handle*, any object (or
       None), that the engine passes back to :meth:`abandon`; it must not block: queue the
       call and return. An exception raised by ``submit`` itself fails the attempt (and is
       retried like a failure of the tool).
    3. ``done(ok, value, worker, cpu_s=None)``, once per submitted call, **on the loop's
       thread** (from a
       worker thread use :class:`Channel`, or ``loop.call_soon_threadsafe``). ``ok`` is true
       with the tool's return value as ``value``, false with the exception the tool raised
       (or one standing for why the call could not run) as ``value``; an exception with a
       string ``code`` attribute gives the record that code, any other its class name.
       ``worker`` is a short label of where the call ran (the DataFrame's ``worker``
       column), or None. ``cpu_s`` is the CPU time the call used, in seconds, where the
       backend can measure it (``time.thread_time()`` around the call in the thread that
       ran it; threads the tool starts itself are not counted), else None. ``done`` may be
       called from inside ``submit``. The time between
       ``submit`` and ``done`` is the attempt's duration, and counts towards its
       ``timeout`` (seconds), so a backend that queues calls adds that wait to both.
    4. ``abandon(handle)`` when the engine gives up on a call that has not reported yet: a
       task timeout, an interrupt, a whole-run timeout. It is a best-effort cancel and must
       not block; the engine has already recorded the attempt, and drops the call's late
       ``done`` if it comes. ``handle`` is what ``submit`` returned (possibly None). The
       default does nothing (a call that cannot be stopped runs to its end).
    5. ``await aclose()`` once, after the last ``done`` the engine waits for, also when the
       run failed or was interrupted (errors it raises are ignored; it is not called when
       ``aopen`` raised, so ``aopen`` cleans up after itself). Release what :meth:`aopen`
       took; calls still running (abandoned ones) may be left to finish on their own.

    **Attributes.** :attr:`name` is the run's ``backend`` label (in results and the
    DataFrame); :attr:`runs_coroutines_on_loop` true means async tools are not submitted but
    awaited by the engine as tasks on its own loop (the ``asyncio`` backend).

    **Adding a backend.** Subclass :class:`Backend`, set :attr:`name`, implement
    :meth:`open`, :meth:`submit` and :meth:`aclose` (and :meth:`abandon` when calls can be
    cancelled), then pass an instance as ``backend=`` or make a name for it with
    :func:`~oktyv_nb.execution.backends.register_backend` (``register_backend("mine",
    MyBackend)``: a fresh object per run). An object that does not subclass :class:`Backend`
    is accepted too when it has these methods. For calls that leave the process, the
    helpers of :mod:`~oktyv_nb.execution.backends.wire` pickle a call, run it on the other
    side and turn the reply into ``(ok, value)``.
    """

    name: ClassVar[str]
    runs_coroutines_on_loop: ClassVar[bool] = False

    def size_for(self, max_concurrent: int) -> None:  # noqa: B027 - a no-op unless overridden
        """The next run has up to ``max_concurrent`` calls running at once (default: ignored)."""

    async def aopen(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make the backend ready to take calls for a run on ``loop`` (default: :meth:`open`)."""
        self.open(loop)

    @abc.abstractmethod
    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make the backend ready to take calls for a run on ``loop``; may block."""

    @abc.abstractmethod
    def submit(self, fn: Callable[..., Any], kwargs: dict[str, Any], done: Done) -> Any:
        """Start ``fn(**kwargs)``; report its outcome with ``done`` on the loop's thread.
        Returns a handle for :meth:`abandon`."""

    def abandon(self, handle: Any) -> None:  # noqa: B027 - a no-op unless overridden
        """Best-effort cancel of the call behind ``handle``; its late outcome is dropped."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """The run is over: release what :meth:`open` set up."""


class Channel:
    """Outcomes from worker threads, handed back to one loop in batches.

    ``put(done, ok, value, worker, cpu_s=None)`` may be called from any thread; ``done(ok,
    value, worker, cpu_s)`` then runs on the loop's thread. A worker appends under the lock
    and wakes the loop only when no wake-up is pending, so a burst of quick tasks costs one
    ``call_soon_threadsafe`` instead of one per task. Outcomes put after the loop closed are
    dropped (calls the engine already abandoned).
    """

    __slots__ = ("lock", "loop", "out", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lock = threading.Lock()
        self.out: list[tuple[Done, bool, Any, str | None, float | None]] = []
        self.scheduled = False

    def put(self, done: Done, ok: bool, value: Any, worker: str | None,
            cpu_s: float | None = None) -> None:
        with self.lock:
            self.out.append((done, ok, value, worker, cpu_s))
            if self.scheduled:
                return
            self.scheduled = True
        # A closed loop: a call the engine already abandoned.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.drain)

    def drain(self) -> None:
        with self.lock:
            items, self.out = self.out, []
            self.scheduled = False
        for done, ok, value, worker, cpu_s in items:
            done(ok, value, worker, cpu_s)
