"""The ``processes`` backend: :class:`ProcessBackend` and the :class:`ProcessPool` of worker
processes behind it.

Every tool runs in a worker process of a :class:`ProcessPool` (default: one shared pool of
``os.cpu_count()`` processes, :func:`shared_process_pool`, started on demand, each process
exiting after ``idle_timeout`` seconds without work). Async tools run there with
``asyncio.run``. ``worker`` is ``pid:<n>``. Processes start with ``forkserver`` where the
platform has it (``spawn`` elsewhere; ``mp_context=`` chooses), so, as with any
``multiprocessing`` code, a script that runs a DAG on processes needs the
``if __name__ == "__main__":`` guard. Calls and outcomes cross as described in
:mod:`~oktyv_nb.execution.backends.wire`.

Each worker process is driven by its own thread of this process over a private pipe, and
runs one call at a time, so at most ``max_workers`` calls run at once; with
``max_concurrent`` above that, the extra calls wait in the pool's queue and that wait counts
in the task's duration and towards its timeout.

When the engine abandons a call (a task timeout, an interrupt)
    a call not started yet is cancelled; a running call's worker process is **killed**
    (SIGKILL) and replaced by a fresh process on the next call. The call stops at once,
    without running its ``finally`` blocks or cleanup: the same as a crash of that process,
    which is private to the call, so no other call is affected. This frees the CPU a runaway
    call would otherwise hold for ever.

Crashes (code ``WORKER_CRASHED``)
    when a worker process dies (``os._exit``, a segfault, the OOM killer) the pipe reports
    end-of-file to its driver thread only: the call it was running fails with
    ``WORKER_CRASHED`` (the message gives the pid and the exit code or signal), the dead
    process is reaped and the next call gets a new one. Calls on the other processes, and
    calls still queued, never see the crash; there is no shared executor to break, so
    nothing needs resubmitting. A process found dead while idle is replaced before it is
    given a call, and a call whose send fails on a dead pipe is resent to a new process.

Size: a little over 500 lines; :class:`ProcessPool`'s driver threads, kill-on-abandon and
crash handling share one lock, and stay in one place.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import multiprocessing
import multiprocessing.util
import os
import queue
import signal
import threading
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from oktyv_nb.execution.backends.base import Backend, Channel, Done
from oktyv_nb.execution.backends.wire import (
    _ABANDONED,
    _CANCELLED,
    _FINISHED,
    _QUEUED,
    _RUNNING,
    UnpicklableError,
    WorkerCrashedError,
    _decode,
    _dumps_call,
    _run_payload,
    _tool_name,
    _why,
)

__all__ = ["ProcessBackend", "ProcessPool", "shared_process_pool"]


def _process_worker(conn: Connection) -> None:
    """A worker process: run pickled calls from ``conn`` one at a time until told to stop."""
    # Ctrl-C in a terminal reaches the whole process group: the parent decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):  # the parent is gone
            return
        if not data:  # b"": shut down
            return
        reply = _run_payload(data)
        data = b""
        try:
            conn.send_bytes(reply)
        except OSError:
            return


def _exit_status(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "signal"
        return f"killed by signal {name} ({-code})"
    return f"exit code {code}"


class _Worker:
    """One worker process and the parent's end of its pipe."""

    __slots__ = ("conn", "pid", "proc")

    def __init__(self, ctx: Any, name: str) -> None:
        parent, child = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_process_worker, args=(child,), name=name, daemon=False)
        try:
            proc.start()
        finally:
            child.close()  # else the parent would never see end-of-file when it dies
        self.conn: Connection = parent
        self.proc = proc
        self.pid: int = proc.pid

    def alive(self) -> bool:
        return self.proc.is_alive()

    def reap(self) -> int | None:
        """Wait for the dead process; its exit code (negative: the signal)."""
        self.proc.join(2.0)
        code = self.proc.exitcode
        if code is None:  # end-of-file but still running: make sure it is gone
            self.proc.kill()
            self.proc.join(2.0)
        self.conn.close()
        return code

    def stop(self, timeout: float = 1.0) -> None:
        """Ask the process to exit; kill it when it does not within ``timeout`` seconds."""
        with contextlib.suppress(OSError):
            self.conn.send_bytes(b"")
        self.proc.join(timeout)
        if self.proc.exitcode is None:
            self.proc.kill()
            self.proc.join(timeout)
        self.conn.close()


class _Job:
    __slots__ = ("channel", "done", "fn", "kwargs", "slot", "state")

    def __init__(self, channel: Channel, fn: Callable[..., Any], kwargs: dict[str, Any],
                 done: Done) -> None:
        self.channel = channel
        self.fn: Callable[..., Any] | None = fn
        self.kwargs: dict[str, Any] | None = kwargs
        self.done = done
        self.state = _QUEUED
        self.slot: _Slot | None = None


class _Slot:
    """One driver thread's state: its worker process and the job it is running."""

    __slots__ = ("job", "kill", "worker")

    def __init__(self) -> None:
        self.job: _Job | None = None
        self.kill = False  # the running job was abandoned and its process killed
        self.worker: _Worker | None = None


_pools: weakref.WeakSet[ProcessPool] = weakref.WeakSet()


def _shutdown_pools() -> None:
    for pool in list(_pools):
        pool.terminate()


# Registered after multiprocessing's own exit handler, so it runs first (atexit is LIFO) and
# the workers are gone before multiprocessing joins its child processes.
atexit.register(_shutdown_pools)


def _default_start_method() -> str:
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


class ProcessPool:
    """Up to ``max_workers`` worker processes (default ``os.cpu_count()``), each driven by a
    thread of this process over a private pipe, started on demand.

    A worker runs one call at a time. A worker that dies fails only the call it was running
    (:class:`WorkerCrashedError`) and is replaced; :meth:`abandon` cancels a queued call or
    kills the process running it. Workers exit after ``idle_timeout`` seconds without work.
    ``mp_context`` is a ``multiprocessing`` start method (default ``forkserver`` where
    available, else ``spawn``) or context.
    """

    _ids = itertools.count(1)

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        mp_context: str | Any = None,
        idle_timeout: float = 60.0,
    ) -> None:
        if max_workers is None:
            max_workers = os.cpu_count() or 1
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers must be an int >= 1, got {max_workers!r}")
        if not idle_timeout > 0:
            raise ValueError(f"idle_timeout must be > 0 seconds, got {idle_timeout!r}")
        self.max_workers = max_workers
        self.idle_timeout = float(idle_timeout)
        if mp_context is None or isinstance(mp_context, str):
            method = mp_context or _default_start_method()
            self._ctx = multiprocessing.get_context(method)
            if method == "forkserver":
                # Each forked worker then starts with oktyv_nb imported (and, as by default,
                # the main module); it has no effect when a fork server already runs.
                self._ctx.set_forkserver_preload(["__main__", __name__])
        else:
            self._ctx = mp_context
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._slots: set[_Slot] = set()
        self._exiting: set[_Worker] = set()  # workers of driver threads on their way out
        self._waiting = 0  # driver threads blocked on the queue
        self._queued = 0  # jobs put or about to be put on the queue, not taken yet
        self._closed = False
        _pools.add(self)

    # ------------------------------------------------------------------ public
    @property
    def start_method(self) -> str:
        return str(self._ctx.get_start_method())

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        with self._lock:
            workers = [s.worker for s in self._slots if s.worker is not None]
            workers += self._exiting
        return [w.pid for w in workers if w.alive()]

    def submit(self, channel: Channel, fn: Callable[..., Any], kwargs: dict[str, Any],
               done: Done) -> _Job:
        """Queue ``fn(**kwargs)``; ``done`` gets its outcome through ``channel``."""
        job = _Job(channel, fn, kwargs, done)
        with self._lock:
            if self._closed:
                raise RuntimeError("this process pool is shut down; create a new one")
            self._queued += 1
            slot = None
            if self._queued > self._waiting and len(self._slots) < self.max_workers:
                slot = _Slot()
                self._slots.add(slot)
        self._queue.put(job)
        if slot is not None:
            threading.Thread(
                target=self._serve, args=(slot,), daemon=True,
                name=f"oktyv-process-driver-{next(self._ids)}",
            ).start()
        return job

    def abandon(self, job: _Job) -> None:
        """Cancel ``job`` when it has not started; kill its worker process when it runs."""
        with self._lock:
            if job.state == _QUEUED:
                job.state = _CANCELLED
                job.fn = job.kwargs = None
            elif job.state == _RUNNING:
                job.state = _ABANDONED
                slot = job.slot
                if slot is not None and slot.job is job and slot.worker is not None:
                    slot.kill = True
                    # Under the lock: the driver cannot move on to another job meanwhile.
                    with contextlib.suppress(OSError):
                        slot.worker.proc.kill()

    def shutdown(self, wait: bool = True) -> None:
        """Stop the workers after their current calls; queued calls are not run."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            slots = list(self._slots)
        for _ in slots:
            self._queue.put(None)
        if wait:
            for slot in slots:
                worker = slot.worker
                if worker is not None:
                    worker.proc.join(5.0)

    def terminate(self) -> None:
        """Kill every worker process now, running calls included (used at exit)."""
        with self._lock:
            self._closed = True
            workers = [s.worker for s in self._slots if s.worker is not None]
            for slot in self._slots:
                slot.kill = True
        for worker in workers:
            with contextlib.suppress(OSError, ValueError):
                worker.proc.kill()
                worker.proc.join(1.0)

    # ------------------------------------------------------------------ driver threads
    def _serve(self, slot: _Slot) -> None:
        try:
            while True:
                job = self._next(slot)
                if job is None:
                    return
                try:
                    self._run(slot, job)
                except Exception as exc:  # a bug here must fail the task, not hang the run
                    self._settle(slot, job)
                    job.channel.put(job.done, False, exc, None)
                    worker, slot.worker = slot.worker, None
                    if worker is not None:
                        worker.stop()
        finally:
            with self._lock:
                self._retire(slot)
                worker, slot.worker = slot.worker, None
            if worker is not None:
                worker.stop()
                with self._lock:
                    self._exiting.discard(worker)

    def _next(self, slot: _Slot) -> _Job | None:
        """The next job for ``slot``, or None when it should exit (idle or shut down)."""
        get = self._queue.get
        while True:
            with self._lock:
                self._waiting += 1
            try:
                job = get(timeout=self.idle_timeout)
            except queue.Empty:
                with self._lock:
                    self._waiting -= 1
                    if self._queued > 0 and not self._closed:
                        continue  # a job is on its way, counting on this thread
                    self._retire(slot)
                    return None
            with self._lock:
                self._waiting -= 1
                if job is None:
                    self._retire(slot)
                    return None
                self._queued -= 1
                if job.state != _QUEUED:  # cancelled while queued
                    continue
                if self._closed:
                    job.state = _CANCELLED
                    job.channel.put(job.done, False, RuntimeError(
                        "the process pool was shut down before this call started"), None)
                    continue
                job.state = _RUNNING
                job.slot = slot
                slot.job = job
                slot.kill = False
                return job

    def _retire(self, slot: _Slot) -> None:
        """Under the lock: ``slot``'s thread exits; its process (if any) is stopping."""
        self._slots.discard(slot)
        if slot.worker is not None:
            self._exiting.add(slot.worker)

    def _settle(self, slot: _Slot, job: _Job) -> bool:
        """``job`` is over on ``slot``; true when it was abandoned and its process killed."""
        with self._lock:
            slot.job = None
            job.slot = None
            if job.state == _RUNNING:
                job.state = _FINISHED
            killed, slot.kill = slot.kill, False
            return killed

    def _worker(self, slot: _Slot) -> _Worker:
        worker = slot.worker
        if worker is not None and not worker.alive():  # died while idle: not this job's fault
            worker.reap()
            worker = slot.worker = None
        if worker is None:
            worker = slot.worker = _Worker(self._ctx, f"oktyv-worker-{next(self._ids)}")
        return worker

    def _run(self, slot: _Slot, job: _Job) -> None:
        fn, kwargs, channel, done = job.fn, job.kwargs, job.channel, job.done
        job.fn = job.kwargs = None
        assert fn is not None and kwargs is not None
        tool = _tool_name(fn)
        try:
            payload = _dumps_call(fn, kwargs)
        except UnpicklableError as exc:
            self._settle(slot, job)
            channel.put(done, False, exc, None)
            return
        del fn, kwargs
        worker: _Worker | None = None
        try:
            for _ in range(3):  # a process that died idle is replaced and the call resent
                worker = self._worker(slot)
                with self._lock:  # from here on, abandon() kills this process
                    abandoned = job.state == _ABANDONED
                if abandoned:
                    self._settle(slot, job)
                    return
                try:
                    worker.conn.send_bytes(payload)
                    break
                except OSError:
                    worker.reap()
                    slot.worker = worker = None
                    if job.state == _ABANDONED:  # killed on purpose while it was sent
                        self._settle(slot, job)
                        return
            if worker is None:
                raise RuntimeError("three new worker processes died before taking a call")
        except Exception as exc:
            self._settle(slot, job)
            channel.put(done, False, RuntimeError(
                f"could not start a worker process for tool {tool}: {_why(exc)}"), None)
            return
        del payload
        label = f"pid:{worker.pid}"
        try:
            reply = worker.conn.recv_bytes()
        except (EOFError, OSError):
            code = worker.reap()
            slot.worker = None
            if self._settle(slot, job):
                return  # killed on purpose: the engine gave up on this call
            channel.put(done, False, WorkerCrashedError(
                f"worker process {label} died while running tool {tool} "
                f"({_exit_status(code)}); a new process takes the next call", code,
            ), label)
            return
        if self._settle(slot, job):  # it replied just as it was killed
            worker.reap()
            slot.worker = None
        ok, value, cpu = _decode(reply, tool, label)
        channel.put(done, ok, value, label, cpu)


_shared_process_pool: ProcessPool | None = None
_shared_lock = threading.Lock()


def shared_process_pool() -> ProcessPool:
    """The process pool of ``backend="processes"``: ``os.cpu_count()`` workers."""
    global _shared_process_pool
    with _shared_lock:
        if _shared_process_pool is None or _shared_process_pool._closed:
            _shared_process_pool = ProcessPool()
        return _shared_process_pool


class ProcessBackend(Backend):
    """Every tool in a worker process (see the module docstring for crashes and timeouts).

    ``ProcessBackend()`` uses the shared pool of ``os.cpu_count()`` processes; give
    ``max_workers``, ``mp_context`` or ``idle_timeout`` for a pool of its own (kept warm
    between runs; :meth:`shutdown` stops it), or a :class:`ProcessPool` as ``pool``.
    """

    name = "processes"
    runs_coroutines_on_loop = False

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        mp_context: str | Any = None,
        idle_timeout: float | None = None,
        pool: ProcessPool | None = None,
    ) -> None:
        own = max_workers is not None or mp_context is not None or idle_timeout is not None
        if pool is not None and own:
            raise TypeError("give a ProcessPool or pool settings (max_workers, ...), not both")
        if own:
            pool = ProcessPool(max_workers, mp_context=mp_context,
                               idle_timeout=60.0 if idle_timeout is None else idle_timeout)
        self._pool = pool
        self._channel: Channel | None = None

    @property
    def pool(self) -> ProcessPool:
        return self._pool or shared_process_pool()

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        self._channel = Channel(loop)

    def submit(self, fn: Callable[..., Any], kwargs: dict[str, Any], done: Done) -> _Job:
        assert self._channel is not None, "backend used before open()"
        return self.pool.submit(self._channel, fn, kwargs, done)

    def abandon(self, handle: Any) -> None:
        if isinstance(handle, _Job):
            self.pool.abandon(handle)

    async def aclose(self) -> None:
        self._channel = None

    def shutdown(self) -> None:
        """Stop this backend's own pool (the shared pool stops at interpreter exit)."""
        if self._pool is not None:
            self._pool.shutdown()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_workers={self.pool.max_workers})"

