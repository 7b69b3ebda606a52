"""Backends: where a resolved call runs (SPEC §9).

The scheduler, variables, retries, timeouts and records belong to the engine; a backend only
runs ``fn(**kwargs)`` and reports the outcome. The seam is :class:`Backend`:

* ``open(loop)`` before a run, ``aclose()`` after it;
* ``submit(fn, kwargs, done)`` starts a call and returns a handle; ``done(ok, value, worker)``
  is later called **on the loop's thread**, with ``ok=False`` and the exception as ``value``
  on failure, and ``worker`` saying where the call ran (the DataFrame's ``worker`` column);
* ``abandon(handle)`` is a best-effort cancel when the engine gives up on a call (timeout,
  interrupt); its late outcome is ignored by the engine;
* ``runs_coroutines_on_loop``: when true, async tools are not submitted but run by the
  engine as tasks on its own loop;
* optionally ``aopen(loop)``, a coroutine doing what ``open`` does without blocking the loop
  (:class:`DaskBackend` starts its ``LocalCluster`` in a thread with it).

A backend object serves one run at a time; names give each run a fresh object (the process
pool behind ``processes`` is shared and stays warm between runs).

The four backends (names for ``backend=``; objects may be passed too):

``asyncio`` (:class:`AsyncioBackend`, the default)
    async tools on the engine's loop, sync tools in a shared pool of threads.
``threads`` (:class:`ThreadBackend`)
    every tool in a worker thread; an async tool gets its own loop there. ``worker`` is the
    thread's name.
``processes`` (:class:`ProcessBackend`)
    every tool in a worker process of a :class:`ProcessPool` (default: one shared pool of
    ``os.cpu_count()`` processes, started on demand, each process exiting after
    ``idle_timeout`` seconds without work). Async tools run there with ``asyncio.run``.
    ``worker`` is ``pid:<n>``. Processes start with ``forkserver`` where the platform has it
    (``spawn`` elsewhere; ``mp_context=`` chooses), so, as with any ``multiprocessing`` code,
    a script that runs a DAG on processes needs the ``if __name__ == "__main__":`` guard.
``dask`` (:class:`DaskBackend`)
    every tool as a task of a ``distributed.Client``: the one given, or a ``LocalCluster``
    started when the run opens the backend and closed when it ends. ``worker`` is the Dask
    worker's address. Needs ``pip install 'oktyv_nb[dask]'``; the workers must be able to
    import ``oktyv_nb`` and the tools' modules.

Sending calls to processes and Dask workers
    A call and its outcome are pickled (with ``cloudpickle`` when it is installed, so tools
    defined in a notebook or as lambdas work; else with ``pickle``, which needs tools at
    module level in an importable module). A tool, param or result that cannot be pickled
    fails its task with code ``UNPICKLABLE`` naming the tool and the param. An exception
    raised by a tool comes back with its own class (so the record's ``code`` is the same as
    on the other backends) and the worker's traceback; one that cannot be pickled comes back
    as a :class:`RemoteError` with the same code and message.

When the engine abandons a call (a task timeout, an interrupt)
    * threads: a thread cannot be stopped; its call runs to the end and its outcome is
      dropped (the run does not wait for it).
    * processes: a call not started yet is cancelled; a running call's worker process is
      **killed** (SIGKILL) and replaced by a fresh process on the next call. The call stops at
      once, without running its ``finally`` blocks or cleanup: the same as a crash of that
      process, which is private to the call, so no other call is affected. This frees the
      CPU a runaway call would otherwise hold for ever.
    * dask: the future is cancelled; a call not started yet never runs, while a running call
      cannot be interrupted by Dask: its worker thread runs it to the end and the result is
      dropped.

Crashes (code ``WORKER_CRASHED``)
    * processes: each worker process is driven by its own thread over a private pipe, and
      runs one call at a time. When the process dies (``os._exit``, a segfault, the OOM
      killer) the pipe reports end-of-file to that thread only: the call it was running fails
      with ``WORKER_CRASHED`` (the message gives the pid and the exit code or signal), the
      dead process is reaped and the next call gets a new one. Calls on the other processes,
      and calls still queued, never see the crash; there is no shared executor to break, so
      nothing needs resubmitting. A process found dead while idle is replaced before it is
      given a call, and a call whose send fails on a dead pipe is resent to a new process.
    * dask: a worker that dies makes the scheduler give up on the tasks it was processing
      (after ``distributed.scheduler.allowed-failures`` deaths, set to 0 for the clusters this
      backend starts) and raise ``KilledWorker``, mapped to ``WORKER_CRASHED``. Because the
      scheduler blames *every* task that was processing on the dead worker, the backend never
      sends more calls than the cluster has worker threads (re-reading the thread count after
      a crash, and every 0.5 s while calls wait), so a call is not queued on a worker behind
      another one, and a neighbour's crash does not fail it. The nanny restarts the worker.

Queueing: processes and Dask run at most as many calls as they have workers (threads); with
``max_concurrent`` above that, the extra calls wait in the backend and that wait counts in
the task's duration and towards its timeout.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import inspect
import itertools
import multiprocessing
import multiprocessing.util
import os
import pickle
import queue
import signal
import threading
import traceback
import uuid
import weakref
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Protocol

from oktyv_nb.errors import UNPICKLABLE, WORKER_CRASHED, InvalidOptionError

__all__ = [
    "UNPICKLABLE",
    "AsyncioBackend",
    "Backend",
    "DaskBackend",
    "Done",
    "ProcessBackend",
    "ProcessPool",
    "RemoteError",
    "ThreadBackend",
    "UnpicklableError",
    "WorkerCrashedError",
    "get_backend",
    "register_backend",
]

Done = Callable[[bool, Any, "str | None"], None]



class Backend(Protocol):
    name: str
    runs_coroutines_on_loop: bool

    def open(self, loop: asyncio.AbstractEventLoop) -> None: ...
    def submit(self, fn: Callable[..., Any], kwargs: dict[str, Any], done: Done) -> Any: ...
    def abandon(self, handle: Any) -> None: ...
    async def aclose(self) -> None: ...


# ---------------------------------------------------------------------------- errors
class WorkerCrashedError(RuntimeError):
    """The process running a call died; ``exitcode`` is its exit code (negative: the
    signal that killed it) when known."""

    code = WORKER_CRASHED

    def __init__(self, message: str, exitcode: int | None = None) -> None:
        super().__init__(message)
        self.exitcode = exitcode

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.exitcode))


class UnpicklableError(TypeError):
    """A tool, a param or a result could not be pickled to cross to or from a worker."""

    code = UNPICKLABLE


class RemoteError(Exception):
    """Stands for an exception raised in a worker that could not be pickled back.

    ``code`` is the original's record code (its ``code`` attribute, else its class name),
    ``exc_type`` its dotted class name; the message is the original's, plus why it could
    not be sent back.
    """

    def __init__(self, code: str, message: str, exc_type: str) -> None:
        super().__init__(message)
        self.code = code
        self.exc_type = exc_type

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, str(self), self.exc_type))


class _RemoteTraceback(Exception):
    """Carries a worker's formatted traceback as the ``__cause__`` of the exception."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


# ---------------------------------------------------------------------------- calls
def call_maybe_async(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Call ``fn``; when it gives a coroutine, run it to completion on a fresh loop."""
    value = fn(**kwargs)
    if inspect.isawaitable(value):
        return asyncio.run(_await(value))
    return value


async def _await(aw: Any) -> Any:
    return await aw


def _tool_name(fn: Any) -> str:
    """A readable name of a tool for messages: ``module.qualname`` or the type's name."""
    target = fn.func if isinstance(fn, functools.partial) else fn
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    if not isinstance(name, str):
        return f"a {type(fn).__name__} object"
    module = getattr(target, "__module__", None)
    return f"{module}.{name}" if isinstance(module, str) and module != "builtins" else name


try:  # functions defined in a notebook, lambdas and closures travel by value with it
    import cloudpickle as _pickler
except ImportError:  # pragma: no cover - cloudpickle comes with dask
    _pickler = pickle  # type: ignore[assignment]


def _dumps(obj: Any) -> bytes:
    return _pickler.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _why(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _dumps_call(fn: Callable[..., Any], kwargs: dict[str, Any]) -> bytes:
    """The pickled call; raises :class:`UnpicklableError` naming the tool or param at fault."""
    try:
        return _dumps((fn, kwargs))
    except Exception as exc:
        raise _unpicklable(fn, kwargs, exc) from None


def _unpicklable(fn: Callable[..., Any], kwargs: dict[str, Any],
                 exc: BaseException) -> UnpicklableError:
    tool = _tool_name(fn)
    try:
        _dumps(fn)
    except Exception as why:
        return UnpicklableError(
            f"tool {tool} cannot be pickled to send it to a worker ({_why(why)}); define it "
            "as a function at module level in an importable module (no closure over locks, "
            "open files, sockets or clients), or run this DAG on backend='threads'"
        )
    for key, value in kwargs.items():
        try:
            _dumps(value)
        except Exception as why:
            return UnpicklableError(
                f"param {key!r} of tool {tool} ({type(value).__name__}) cannot be pickled "
                f"to send it to a worker ({_why(why)}); pass plain data (numbers, strings, "
                "lists, dicts, paths) and open resources inside the tool, or run this DAG "
                "on backend='threads'"
            )
    return UnpicklableError(f"the call of tool {tool} cannot be pickled ({_why(exc)})")


def _run_payload(data: bytes) -> bytes:
    """In a worker: run a pickled call; the pickled ``(ok, value, traceback)`` outcome."""
    try:
        fn, kwargs = pickle.loads(data)
    except BaseException as exc:
        return _error_reply(
            UnpicklableError(
                f"the worker could not load the call ({_why(exc)}); the tool and its params "
                "must be importable there: define the tool at module level in a module the "
                "worker can import (installing cloudpickle lets notebook functions travel)"
            ),
            None,
        )
    data = b""
    tool = _tool_name(fn)
    try:
        value = call_maybe_async(fn, kwargs)
    except BaseException as exc:  # the task's error, KeyboardInterrupt and SystemExit included
        return _error_reply(exc, _format_tb(exc))
    try:
        return _dumps((True, value, None))
    except Exception as exc:
        return _error_reply(
            UnpicklableError(
                f"the result of tool {tool} ({type(value).__name__}) cannot be pickled to "
                f"send it back from the worker ({_why(exc)}); return plain data (numbers, "
                "strings, lists, dicts) or write it to a file and return the path"
            ),
            None,
        )


def _format_tb(exc: BaseException) -> str:
    """``exc`` formatted with its traceback, from the tool's frame on."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code in _OWN_FRAMES:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _error_reply(exc: BaseException, tb: str | None) -> bytes:
    try:
        blob = _dumps((False, exc, tb))
        pickle.loads(blob)  # the parent must be able to rebuild it, not only this side
        return blob
    except Exception as why:
        code = getattr(exc, "code", None)
        if not (isinstance(code, str) and code):
            code = type(exc).__name__
        try:
            message = str(exc)
        except Exception:
            message = f"<{type(exc).__name__}: str() of the exception raised>"
        cls = f"{type(exc).__module__}.{type(exc).__qualname__}"
        sub = RemoteError(
            code,
            f"{message} [raised in the worker as {cls}, which could not be pickled back: "
            f"{_why(why)}]",
            cls,
        )
        return _dumps((False, sub, tb))


def _decode(reply: bytes, tool: str, worker: str) -> tuple[bool, Any]:
    """In the parent: ``(ok, value)`` from a worker's reply."""
    try:
        ok, value, tb = pickle.loads(reply)
    except Exception as exc:
        return False, UnpicklableError(
            f"the outcome of tool {tool} sent back by worker {worker} could not be unpickled "
            f"({_why(exc)})"
        )
    if not ok and tb and isinstance(value, BaseException):
        # The worker's traceback as text (a traceback pickled along, e.g. by tblib, would
        # show the worker's frames twice).
        value.__traceback__ = None
        value.__cause__ = _RemoteTraceback(f'\n"""\n{tb}"""')
    return ok, value


_OWN_FRAMES = frozenset((_run_payload.__code__, call_maybe_async.__code__))


# ---------------------------------------------------------------------------- threads
class _Channel:
    """Outcomes from worker threads, handed back to one loop in batches.

    A worker appends under the lock and wakes the loop only when no wake-up is pending, so a
    burst of quick tasks costs one ``call_soon_threadsafe`` instead of one per task.
    """

    __slots__ = ("lock", "loop", "out", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lock = threading.Lock()
        self.out: list[tuple[Done, bool, Any, str | None]] = []
        self.scheduled = False

    def put(self, done: Done, ok: bool, value: Any, worker: str | None) -> None:
        with self.lock:
            self.out.append((done, ok, value, worker))
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
        for done, ok, value, worker in items:
            done(ok, value, worker)


class ThreadPool:
    """A persistent pool of daemon threads fed by one queue.

    Threads start on demand (one per call when none is idle) and exit after
    ``idle_timeout`` seconds without work. A call the engine abandoned (timeout) keeps its
    thread until it returns: Python cannot kill a thread.
    """

    _ids = itertools.count(1)

    def __init__(self, idle_timeout: float = 60.0, name: str = "oktyv") -> None:
        self.idle_timeout = idle_timeout
        self.name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self.threads = 0

    def submit(self, channel: _Channel, fn: Callable[..., Any], kwargs: dict[str, Any],
               done: Done) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
                spawn = False
            else:
                self.threads += 1
                spawn = True
        self._queue.put((channel, fn, kwargs, done))
        if spawn:
            t = threading.Thread(
                target=self._work, name=f"{self.name}-{next(self._ids)}", daemon=True
            )
            t.start()

    def _work(self) -> None:
        get = self._queue.get
        worker = threading.current_thread().name
        while True:
            try:
                item = get(timeout=self.idle_timeout)
            except queue.Empty:
                with self._lock:
                    if self._idle:
                        self._idle -= 1
                        self.threads -= 1
                        return
                continue
            channel, fn, kwargs, done = item
            try:
                value = call_maybe_async(fn, kwargs)
            except BaseException as exc:  # recorded as the task's error
                channel.put(done, False, exc, worker)
            else:
                channel.put(done, True, value, worker)
            item = channel = fn = kwargs = done = value = None  # drop references now
            with self._lock:
                self._idle += 1


_shared_pool: ThreadPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> ThreadPool:
    global _shared_pool
    with _shared_lock:
        if _shared_pool is None:
            _shared_pool = ThreadPool()
        return _shared_pool


class AsyncioBackend:
    """The default: async tools on the engine's loop, sync tools in a shared thread pool."""

    name = "asyncio"
    runs_coroutines_on_loop = True

    def __init__(self, pool: ThreadPool | None = None) -> None:
        self._pool = pool
        self._channel: _Channel | None = None
        self._submit: Callable[..., None] | None = None

    @property
    def pool(self) -> ThreadPool:
        return self._pool or shared_pool()

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        self._channel = _Channel(loop)
        self._submit = self.pool.submit  # looked up once per run, not once per call

    def submit(self, fn: Callable[..., Any], kwargs: dict[str, Any], done: Done) -> None:
        assert self._submit is not None, "backend used before open()"
        self._submit(self._channel, fn, kwargs, done)

    def abandon(self, handle: Any) -> None:
        """A thread cannot be stopped: its call finishes and its outcome is dropped."""

    async def aclose(self) -> None:
        self._channel = None
        self._submit = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ThreadBackend(AsyncioBackend):
    """Every tool in a worker thread; async tools get their own loop in that thread."""

    name = "threads"
    runs_coroutines_on_loop = False


# ---------------------------------------------------------------------------- processes
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


_QUEUED, _RUNNING, _FINISHED, _CANCELLED, _ABANDONED = range(5)


class _Job:
    __slots__ = ("channel", "done", "fn", "kwargs", "slot", "state")

    def __init__(self, channel: _Channel, fn: Callable[..., Any], kwargs: dict[str, Any],
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

    def submit(self, channel: _Channel, fn: Callable[..., Any], kwargs: dict[str, Any],
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
        ok, value = _decode(reply, tool, label)
        channel.put(done, ok, value, label)


_shared_process_pool: ProcessPool | None = None


def shared_process_pool() -> ProcessPool:
    """The process pool of ``backend="processes"``: ``os.cpu_count()`` workers."""
    global _shared_process_pool
    with _shared_lock:
        if _shared_process_pool is None or _shared_process_pool._closed:
            _shared_process_pool = ProcessPool()
        return _shared_process_pool


class ProcessBackend:
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
        self._channel: _Channel | None = None

    @property
    def pool(self) -> ProcessPool:
        return self._pool or shared_process_pool()

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        self._channel = _Channel(loop)

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


# ---------------------------------------------------------------------------- dask
def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            "backend='dask' needs Dask's distributed scheduler, which is not installed: "
            "pip install 'oktyv_nb[dask]'"
        ) from exc
    return distributed


def _dask_call(payload: bytes) -> tuple[str, bytes]:
    """On a Dask worker: run a pickled call; ``(worker address, pickled outcome)``."""
    from distributed import get_worker

    try:
        address = get_worker().address
    except ValueError:  # not on a worker (a local scheduler)
        address = "dask"
    return address, _run_payload(payload)


class _DaskJob:
    __slots__ = ("channel", "done", "future", "payload", "state", "tool")

    def __init__(self, channel: _Channel, done: Done, tool: str, payload: bytes) -> None:
        self.channel = channel
        self.done = done
        self.tool = tool
        self.payload: bytes | None = payload
        self.future: Any = None
        self.state = _QUEUED


class DaskBackend:
    """Every tool as a task of a Dask ``distributed`` cluster.

    ``DaskBackend(client)`` uses a ``distributed.Client`` (any address; a synchronous client);
    ``DaskBackend(**local_cluster_kwargs)`` starts a ``LocalCluster`` when a run opens the
    backend and closes it when the run ends (defaults: ``processes=True``,
    ``threads_per_worker=1``, the dashboard on a free port; the scheduler's
    ``allowed-failures`` is 0, so a task whose worker dies fails at once with
    ``WORKER_CRASHED``). See the module docstring.
    """

    name = "dask"
    runs_coroutines_on_loop = False
    POLL_S = 0.5  # how often the cluster's thread count is re-read while calls wait

    def __init__(self, client: Any = None, **local_cluster_kwargs: Any) -> None:
        _import_distributed()
        if client is not None and local_cluster_kwargs:
            raise TypeError(
                "give a distributed.Client or LocalCluster options "
                f"({', '.join(sorted(local_cluster_kwargs))}), not both"
            )
        self.client = client
        self.cluster: Any = None
        self.owns_cluster = client is None
        self.cluster_kwargs: dict[str, Any] = {
            "processes": True, "threads_per_worker": 1, "dashboard_address": ":0",
            **local_cluster_kwargs,
        }
        self._channel: _Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: deque[_DaskJob] = deque()
        self._inflight: dict[_DaskJob, None] = {}
        self._capacity = 1
        self._poll: asyncio.TimerHandle | None = None
        self._polling = False

    # ------------------------------------------------------------------ lifecycle
    def _start_cluster(self) -> None:
        import dask
        from distributed import Client, LocalCluster

        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            cluster = LocalCluster(**self.cluster_kwargs)
        try:
            client = Client(cluster, set_as_default=False)
        except BaseException:
            cluster.close()
            raise
        self.cluster, self.client = cluster, client

    async def aopen(self, loop: asyncio.AbstractEventLoop) -> None:
        """As :meth:`open`, starting the local cluster in a thread (the loop keeps running)."""
        if self.client is None:
            starting = loop.run_in_executor(None, self._start_cluster)
            try:
                await asyncio.shield(starting)
            except BaseException:  # interrupted: close the cluster once it has started
                starting.add_done_callback(lambda _: threading.Thread(
                    target=_close_cluster, args=(self.client, self.cluster), daemon=True,
                ).start())
                raise
        self.open(loop)

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the local cluster (when no client was given; blocks for its start-up)."""
        if self.client is None:
            self._start_cluster()
        if getattr(self.client, "asynchronous", False):
            raise TypeError("DaskBackend needs a synchronous distributed.Client "
                            "(created without asynchronous=True)")
        self._loop = loop
        self._channel = _Channel(loop)
        self._capacity = self._threads()

    async def aclose(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        self._waiting.clear()
        futures = [job.future for job in self._inflight if job.future is not None]
        self._inflight.clear()
        self._channel = None
        if self.owns_cluster and self.client is not None:
            client, cluster = self.client, self.cluster
            self.client = self.cluster = None
            await asyncio.to_thread(_close_cluster, client, cluster)
        elif futures and self.client is not None:  # abandoned calls of this run
            await asyncio.to_thread(_cancel, self.client, futures)

    def _threads(self) -> int:
        """Worker threads of the cluster now (at least 1)."""
        try:
            return max(1, sum(self.client.nthreads().values()))
        except Exception:
            return max(1, self._capacity)

    # ------------------------------------------------------------------ calls
    def submit(self, fn: Callable[..., Any], kwargs: dict[str, Any], done: Done) -> _DaskJob:
        channel = self._channel
        assert channel is not None, "backend used before open()"
        tool = _tool_name(fn)
        try:
            payload = _dumps_call(fn, kwargs)
        except UnpicklableError as exc:
            job = _DaskJob(channel, done, tool, b"")
            job.state = _FINISHED
            channel.put(done, False, exc, None)
            return job
        job = _DaskJob(channel, done, tool, payload)
        self._waiting.append(job)
        self._pump()
        return job

    def abandon(self, handle: Any) -> None:
        if not isinstance(handle, _DaskJob):
            return
        if handle.state == _QUEUED:
            handle.state = _CANCELLED
            handle.payload = None
            with contextlib.suppress(ValueError):
                self._waiting.remove(handle)
        elif handle.state == _RUNNING:
            handle.state = _ABANDONED
            if handle.future is not None and self.client is not None:
                # Future.cancel waits for the scheduler: not on the engine's loop.
                threading.Thread(target=_cancel, args=(self.client, [handle.future]),
                                 daemon=True, name="oktyv-dask-cancel").start()

    def _pump(self) -> None:
        """Send waiting calls while the cluster has a worker thread free for each."""
        while self._waiting and len(self._inflight) < self._capacity:
            job = self._waiting.popleft()
            if job.state != _QUEUED:
                continue
            self._send(job)
        if self._waiting and self._poll is None and not self._polling and self._loop:
            self._poll = self._loop.call_later(self.POLL_S, self._refresh)

    def _send(self, job: _DaskJob) -> None:
        payload, job.payload = job.payload, None
        safe = "".join(c if c.isalnum() or c in "._" else "_" for c in job.tool)
        try:
            fut = self.client.submit(
                _dask_call, payload, key=f"{safe}-{uuid.uuid4().hex}", pure=False
            )
        except Exception as exc:
            job.state = _FINISHED
            job.channel.put(job.done, False, RuntimeError(
                f"Dask did not accept the call of tool {job.tool}: {_why(exc)}"), None)
            return
        job.state = _RUNNING
        job.future = fut
        self._inflight[job] = None
        fut.add_done_callback(functools.partial(self._completed, job))

    def _completed(self, job: _DaskJob, fut: Any) -> None:
        """In Dask's callback thread: fetch the outcome, hand it to the loop."""
        from distributed import KilledWorker
        from distributed.client import FutureCancelledError

        worker: str | None = None
        threads: int | None = None
        try:
            worker, reply = fut.result()
        except KilledWorker as exc:
            last = getattr(exc, "last_worker", None)
            worker = getattr(last, "address", None) or None
            ok, value = False, WorkerCrashedError(
                f"the Dask worker {worker or ''} died while running tool {job.tool} "
                f"(KilledWorker: the worker process exited or was killed; see its nanny's "
                f"log for the exit code); the cluster restarts it"
            )
            threads = self._threads()  # the dead worker is gone from the scheduler now
        except FutureCancelledError as exc:
            ok, value = False, WorkerCrashedError(
                f"the Dask cluster dropped the call of tool {job.tool} ({_why(exc)})"
            )
        except BaseException as exc:  # an error Dask raised itself (e.g. loading the call)
            ok, value = False, exc
        else:
            ok, value = _decode(reply, job.tool, worker)
        job.channel.put(functools.partial(self._finished, job, threads), ok, value, worker)

    def _finished(self, job: _DaskJob, threads: int | None, ok: bool, value: Any,
                  worker: str | None) -> None:
        """On the loop: free the call's slot, send waiting calls, report the outcome."""
        self._inflight.pop(job, None)
        job.future = None
        if threads is not None:
            self._capacity = threads
        abandoned = job.state == _ABANDONED
        job.state = _FINISHED
        if self._channel is not None:
            self._pump()
        if not abandoned:
            job.done(ok, value, worker)

    def _refresh(self) -> None:
        """While calls wait: re-read the cluster's thread count (in a thread)."""
        self._poll = None
        if self._loop is None or self._channel is None or not self._waiting:
            return
        self._polling = True
        fut = self._loop.run_in_executor(None, self._threads)
        fut.add_done_callback(self._refreshed)

    def _refreshed(self, fut: asyncio.Future[int]) -> None:
        self._polling = False
        if fut.cancelled() or fut.exception() is not None or self._channel is None:
            return
        self._capacity = fut.result()
        self._pump()

    def __repr__(self) -> str:
        where = "LocalCluster on demand" if self.owns_cluster else repr(self.client)
        return f"{type(self).__name__}({where})"


def _cancel(client: Any, futures: list[Any]) -> None:
    with contextlib.suppress(Exception):
        client.cancel(futures)


def _close_cluster(client: Any, cluster: Any) -> None:
    with contextlib.suppress(Exception):
        client.close()
    if cluster is not None:
        with contextlib.suppress(Exception):
            cluster.close()


# ---------------------------------------------------------------------------- names
def get_backend(backend: str | Backend | None) -> Backend:
    """A backend object from a name (``asyncio``, ``threads``, ``processes``, ``dask``) or
    the object itself."""
    if backend is None or backend == "asyncio":
        return AsyncioBackend()
    if backend == "threads":
        return ThreadBackend()
    if isinstance(backend, str):
        factory = _NAMED.get(backend)
        if factory is None:
            names = sorted(["asyncio", "threads", *_NAMED])
            raise InvalidOptionError(
                f"unknown backend {backend!r}; use one of {names} or a backend object",
                option="backend",
            )
        return factory()
    for attr in ("submit", "open", "aclose"):
        if not callable(getattr(backend, attr, None)):
            raise InvalidOptionError(
                f"backend {backend!r} has no {attr}() method; see oktyv_nb.execution.backends",
                option="backend",
            )
    return backend


_NAMED: dict[str, Callable[[], Backend]] = {}


def register_backend(name: str, factory: Callable[[], Backend]) -> None:
    """Make ``backend=name`` build a backend with ``factory()`` for each run."""
    _NAMED[name] = factory


register_backend("processes", ProcessBackend)
register_backend("dask", DaskBackend)
