"""Loop workers: a few long-lived asyncio tasks that run the async tools' calls on the loop.

Reusing a few tasks instead of creating one per call saves a task creation and a trip
through the loop per call; the tool still runs inside a real task, so
``asyncio.current_task()`` and ``asyncio.timeout()`` work in it.

State (touched only on the loop's thread):

``jobs``
    attempts whose call waits for a worker, in order.
``idle``
    per worker waiting for a job, the future it waits on (in the order they began to
    wait); :meth:`LoopWorkers.staff` resolves them.
``workers``
    every worker task of the run.
``coming``
    workers woken or started that have not looked at ``jobs`` yet.
``in_worker``
    True while a worker reports an outcome: it takes the next job itself afterwards, so a
    chain of quick async tools runs without a single task switch.
``closing``
    set by :meth:`LoopWorkers.aclose`; workers then return.

A timeout or a halt cancels the worker while it awaits the abandoned call; the worker
withdraws that cancellation and takes up the next job. A tool that swallows the cancellation
keeps its worker: the run goes on with other workers, and at its end the engine gives it
:data:`CANCEL_GRACE` seconds and then lets it go (:func:`let_go`). A worker yields to the
loop at least every :data:`WORKER_SLICE` seconds. Calls on one worker share its context: a
``contextvars`` value a tool sets stays visible to later calls on that worker (set them
inside ``copy_context().run`` to keep them private).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from oktyv_nb.errors import CANCELLED
from oktyv_nb.execution.capture import Capture, current
from oktyv_nb.execution.records import ErrorInfo

if TYPE_CHECKING:
    from oktyv_nb.execution.engine.scheduler import Attempt, Engine

__all__ = ["CANCEL_GRACE", "LOOP_WORKER", "WORKER_SLICE", "LoopWorkers", "let_go"]

LOOP_WORKER = "event-loop"  # the ``worker`` of a call run by a loop worker
# Seconds a cancelled async tool is given to unwind, from its cancellation (its timeout, or
# the run's end); one still running then ignores cancellation and is let go (:func:`let_go`).
CANCEL_GRACE = 1.0
WORKER_SLICE = 0.005  # seconds a loop worker may run quick calls before yielding to the loop

perf = time.perf_counter


class LoopWorkers:
    """The loop workers of one run. The engine queues an attempt's call (``att.kwargs``
    set) by appending it to :attr:`jobs`, and calls :meth:`staff` when the queued calls
    outnumber the workers about to take them (``len(jobs) > coming + in_worker``)."""

    __slots__ = ("closing", "coming", "engine", "idle", "in_worker", "jobs", "loop", "workers")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.loop: asyncio.AbstractEventLoop | None = None
        self.jobs: deque[Attempt] = deque()
        self.idle: dict[asyncio.Future[None], asyncio.Task[None]] = {}
        self.workers: set[asyncio.Task[None]] = set()
        self.in_worker = False
        self.coming = 0
        self.closing = False

    def staff(self) -> None:
        """Make sure a loop worker will take each queued async call."""
        wanted = len(self.jobs) - self.coming - (1 if self.in_worker else 0)
        idle = self.idle
        while wanted > 0 and idle:
            fut, _ = idle.popitem()
            if not fut.done():
                fut.set_result(None)
                self.coming += 1
                wanted -= 1
        while wanted > 0:
            self.workers.add(self.loop.create_task(self._worker()))  # type: ignore[union-attr]
            self.coming += 1
            wanted -= 1

    async def _worker(self) -> None:
        """Run queued calls one after another until :attr:`closing`."""
        me = asyncio.current_task()
        assert me is not None
        engine = self.engine
        jobs = self.jobs
        last = perf()
        self.coming -= 1  # started by staff()
        # Capture (SPEC §18): one Capture for this worker's calls, emptied before each call
        # and current only while the tool runs (the engine's own code, subscribers
        # included, also runs in this task between calls and must not be captured).
        cap = Capture() if engine.capture else None
        token = None
        while not self.closing:
            if not jobs:
                fut = self.loop.create_future()  # type: ignore[union-attr]
                self.idle[fut] = me
                try:
                    await fut
                except asyncio.CancelledError:
                    if self.closing:
                        return
                    _uncancel(me)
                if fut.done() and not fut.cancelled():
                    self.coming -= 1  # woken by staff()
                else:
                    self.idle.pop(fut, None)
                last = perf()
                continue
            att = jobs.popleft()
            if att.closed:  # halted before it started
                continue
            att.task = me
            kwargs = att.kwargs
            att.kwargs = None
            retryable = True
            if cap is not None:
                if cap.out is not None or cap.err is not None:  # the last call wrote
                    cap.out = cap.err = None
                    cap.out_n = cap.err_n = 0
                token = current.set(cap)
            try:
                try:
                    value = await att.node.fn(**kwargs)  # type: ignore[arg-type]
                    ok = True
                finally:
                    if token is not None:
                        current.reset(token)
                        token = None
            except asyncio.CancelledError:
                if att.closed or self.closing:  # our timeout or halt: go on with the next
                    _uncancel(me)
                    if self.closing:
                        return
                    continue
                ok, retryable = False, False  # cancelled by the tool itself or by others
                value = ErrorInfo(CANCELLED, f"Task {att.node.id} was cancelled")
                _uncancel(me)
            except (KeyboardInterrupt, SystemExit):  # landed in this tool: stop the run first
                engine.interrupt()
                raise
            except BaseException as exc:  # other BaseExceptions are errors, not retried
                ok, value, retryable = False, exc, isinstance(exc, Exception)
            att.task = None
            if att.closed:  # finished after its timeout: the outcome is dropped
                _uncancel(me)
                continue
            self.in_worker = True
            try:
                engine._attempt_done(
                    att, ok, value, LOOP_WORKER, retryable,
                    output=None if cap is None or (cap.out is None and cap.err is None)
                    else cap.output(),
                )
            except BaseException as exc:  # an engine bug: end the run, never hang it
                engine._crash(exc)
            finally:
                self.in_worker = False
            value = None
            now = perf()
            if now - last > WORKER_SLICE:  # let timers, I/O and displays run
                await asyncio.sleep(0)
                last = perf()

    def close(self) -> list[asyncio.Task[None]]:
        """Stop taking jobs: idle workers are woken and return, busy ones (still awaiting a
        call) are cancelled; returns the worker tasks.

        Waking rather than cancelling the idle ones lets them end as plain finished tasks:
        a cancelled worker's error would hold its frame, and that frame the task, a cycle
        that only the cyclic collector frees, so that every run would leave its workers
        in asyncio's set of tasks until then."""
        self.closing = True
        self.jobs.clear()
        idle = set(self.idle.values())
        for fut in self.idle:
            if not fut.done():
                fut.set_result(None)
        self.idle.clear()
        for w in self.workers:
            if w not in idle:
                w.cancel()
        return list(self.workers)


def _uncancel(task: asyncio.Task[Any]) -> None:
    """Withdraw the cancellation requests that were meant for one call, not the worker."""
    while task.cancelling():
        task.uncancel()


def let_go(task: asyncio.Task[Any]) -> None:
    """Stop asyncio from waiting for ``task``, which ignores cancellation.

    It leaves the loop's set of tasks, so neither ``asyncio.run()``/``asyncio.Runner`` at
    shutdown nor anyone gathering ``asyncio.all_tasks()`` waits for it forever; it may go on
    running on its loop until that loop is closed, and then it is dropped without the
    "Task was destroyed but it is pending" log.
    """
    with contextlib.suppress(AttributeError):
        task._log_destroy_pending = False  # type: ignore[attr-defined]
    unregister = getattr(asyncio.tasks, "_unregister_task", None)  # Python 3.11 to 3.13
    if unregister is not None:
        with contextlib.suppress(Exception):
            unregister(task)
