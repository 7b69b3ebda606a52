"""The in-process backends: ``asyncio`` (:class:`AsyncioBackend`, the default) and
``threads`` (:class:`ThreadBackend`), and the :class:`ThreadPool` behind both.

``asyncio``
    async tools run on the engine's loop (the engine awaits them itself), sync tools in the
    shared pool of threads (:func:`shared_pool`).
``threads``
    every tool in a worker thread of that pool; an async tool gets its own loop there
    (``asyncio.run``).

``worker`` is the thread's name. The pool's threads start on demand and exit after 60 s
without work. When the engine abandons a call (a task timeout, an interrupt) the thread
cannot be stopped: its call runs to the end and its outcome is dropped (the run does not
wait for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import threading
from collections.abc import Callable
from time import thread_time
from typing import Any

from oktyv_nb.execution.backends.base import Backend, Channel, Done
from oktyv_nb.execution.backends.wire import call_maybe_async

__all__ = ["AsyncioBackend", "ThreadBackend", "ThreadPool", "shared_pool"]


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

    def submit(self, channel: Channel, fn: Callable[..., Any], kwargs: dict[str, Any],
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
            with contextlib.suppress(AttributeError):  # where it runs, known before it ends
                done.worker = worker  # (the engine's Attempt: a timed-out call names it)
            cpu0 = thread_time()
            try:
                value = call_maybe_async(fn, kwargs)
            except BaseException as exc:  # recorded as the task's error
                channel.put(done, False, exc, worker, thread_time() - cpu0)
            else:
                channel.put(done, True, value, worker, thread_time() - cpu0)
            item = channel = fn = kwargs = done = value = None  # drop references now
            with self._lock:
                self._idle += 1


_shared_pool: ThreadPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> ThreadPool:
    """The thread pool of ``backend="asyncio"`` and ``backend="threads"``."""
    global _shared_pool
    with _shared_lock:
        if _shared_pool is None:
            _shared_pool = ThreadPool()
        return _shared_pool


class AsyncioBackend(Backend):
    """The default: async tools on the engine's loop, sync tools in a shared thread pool."""

    name = "asyncio"
    runs_coroutines_on_loop = True

    def __init__(self, pool: ThreadPool | None = None) -> None:
        self._pool = pool
        self._channel: Channel | None = None
        self._submit: Callable[..., None] | None = None

    @property
    def pool(self) -> ThreadPool:
        return self._pool or shared_pool()

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        self._channel = Channel(loop)
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

