"""Backends: where a resolved call runs (SPEC §9).

The scheduler, variables, retries and records belong to the engine; a backend only runs
``fn(**kwargs)`` and reports the outcome. The seam is :class:`Backend`:

* ``open(loop)`` before a run, ``aclose()`` after it;
* ``submit(fn, kwargs, done)`` starts a call and returns a handle; ``done(ok, value, worker)``
  is later called **on the loop's thread**, with ``ok=False`` and the exception as ``value``
  on failure;
* ``abandon(handle)`` is a best-effort cancel when the engine gives up on a call (timeout,
  interrupt); its late outcome is ignored by the engine;
* ``runs_coroutines_on_loop``: when true, async tools are not submitted but run by the
  engine as tasks on its own loop.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

__all__ = [
    "AsyncioBackend",
    "Backend",
    "Done",
    "ThreadBackend",
    "get_backend",
]

Done = Callable[[bool, Any, "str | None"], None]


class Backend(Protocol):
    name: str
    runs_coroutines_on_loop: bool

    def open(self, loop: asyncio.AbstractEventLoop) -> None: ...
    def submit(self, fn: Callable[..., Any], kwargs: dict[str, Any], done: Done) -> Any: ...
    def abandon(self, handle: Any) -> None: ...
    async def aclose(self) -> None: ...


def call_maybe_async(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Call ``fn``; when it gives a coroutine, run it to completion on a fresh loop."""
    value = fn(**kwargs)
    if inspect.isawaitable(value):
        return asyncio.run(_await(value))
    return value


async def _await(aw: Any) -> Any:
    return await aw


class _Channel:
    """Outcomes from worker threads, handed back to one loop in batches.

    A worker appends under the lock and wakes the loop only when no wake-up is pending, so a
    burst of quick tasks costs one ``call_soon_threadsafe`` instead of one per task.
    """

    __slots__ = ("lock", "loop", "out", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lock = threading.Lock()
        self.out: list[tuple[Done, bool, Any, str]] = []
        self.scheduled = False

    def put(self, done: Done, ok: bool, value: Any, worker: str) -> None:
        with self.lock:
            self.out.append((done, ok, value, worker))
            if self.scheduled:
                return
            self.scheduled = True
        try:
            self.loop.call_soon_threadsafe(self.drain)
        except RuntimeError:  # the loop is closed: a call the engine already abandoned
            pass

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

    @property
    def pool(self) -> ThreadPool:
        return self._pool or shared_pool()

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        self._channel = _Channel(loop)

    def submit(self, fn: Callable[..., Any], kwargs: dict[str, Any], done: Done) -> None:
        assert self._channel is not None, "backend used before open()"
        self.pool.submit(self._channel, fn, kwargs, done)

    def abandon(self, handle: Any) -> None:
        """A thread cannot be stopped: its call finishes and its outcome is dropped."""

    async def aclose(self) -> None:
        self._channel = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ThreadBackend(AsyncioBackend):
    """Every tool in a worker thread; async tools get their own loop in that thread."""

    name = "threads"
    runs_coroutines_on_loop = False


def get_backend(backend: str | Backend | None) -> Backend:
    """A backend object from a name (``asyncio``, ``threads``, ...) or the object itself."""
    if backend is None or backend == "asyncio":
        return AsyncioBackend()
    if backend == "threads":
        return ThreadBackend()
    if isinstance(backend, str):
        factory = _NAMED.get(backend)
        if factory is None:
            raise ValueError(
                f"unknown backend {backend!r}; use one of {sorted(['asyncio', 'threads', *_NAMED])} "
                "or a backend object"
            )
        return factory()
    for attr in ("submit", "open", "aclose"):
        if not callable(getattr(backend, attr, None)):
            raise TypeError(f"backend {backend!r} has no {attr}() method; see oktyv_nb.backends")
    return backend


# Further named backends register here (processes, dask).
_NAMED: dict[str, Callable[[], Backend]] = {}


def register_backend(name: str, factory: Callable[[], Backend]) -> None:
    _NAMED[name] = factory


