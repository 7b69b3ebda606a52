"""Jupyter glue: run a coroutine from synchronous code whether or not a loop is running.

* No loop running in this thread (a script, or a worker thread such as a sync tool that runs
  a DAG of its own): :func:`run_sync` runs the coroutine on a fresh loop of its own
  (``asyncio.Runner``, as ``asyncio.run`` does), which it closes afterwards.
* A loop already running in this thread (Jupyter's kernel loop; an async tool or an event
  callback that calls ``dag.run()``): ``run_sync`` applies ``nest_asyncio2`` to that loop —
  lazily, only then, never at import — and runs the coroutine on it, so async tools share the
  notebook's loop and nothing deadlocks.

Interrupts (Jupyter's stop button, Ctrl-C): ``on_interrupt`` is called before the
``KeyboardInterrupt`` propagates, so the caller can record the partial run.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["in_notebook", "is_nest_patched", "run_sync"]

T = TypeVar("T")


def is_nest_patched(loop: asyncio.AbstractEventLoop) -> bool:
    """True when ``nest_asyncio2`` (or the original ``nest_asyncio``) made ``loop`` reentrant."""
    return bool(getattr(loop, "_nest_patched", False))


def _patch(loop: asyncio.AbstractEventLoop) -> None:
    if is_nest_patched(loop):
        return
    import nest_asyncio2

    try:
        # run_close_loop: from Python 3.12 on, asyncio.run() elsewhere in the process keeps
        # its own contract (a new loop, closed at the end) instead of leaving loops open,
        # nest_asyncio2's default (on 3.11 its asyncio.run reuses the thread's loop anyway)
        nest_asyncio2.apply(loop, run_close_loop=True)
    except ValueError as exc:  # not an asyncio.BaseEventLoop (uvloop, ...)
        raise RuntimeError(
            f"run() was called while a {type(loop).__name__} is running in this thread and "
            f"nest_asyncio2 cannot make that loop reentrant ({exc}); use `await dag.arun()`"
        ) from exc


def run_sync(
    coro: Coroutine[Any, Any, T], on_interrupt: Callable[[], None] | None = None
) -> T:
    """Run ``coro`` to completion from synchronous code and return its value.

    ``on_interrupt`` is called when a ``KeyboardInterrupt`` lands while the coroutine runs,
    before the interrupt propagates.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is None:
        # asyncio.Runner rather than asyncio.run: nest_asyncio2 replaces asyncio.run, and
        # whoever applied it first decides whether that version closes its loops; a worker
        # thread wants its own, closed loop.
        try:
            with asyncio.Runner() as runner:
                return runner.run(_boxed(coro)).value
        except KeyboardInterrupt:
            if on_interrupt is not None:
                on_interrupt()
            raise
    _patch(loop)
    # We are inside a callback of the running loop. If that loop's current iteration began
    # before the patch (the first run() in a cell or callback), the unpatched _run_once that
    # called us still expects its batch of ready handles, which the nested run may consume:
    # top the queue back up with no-op handles so that it never pops from an empty queue.
    ready = getattr(loop, "_ready", None)
    before = len(ready) if ready is not None else 0
    task = loop.create_task(coro)
    try:
        return loop.run_until_complete(task)
    except KeyboardInterrupt:
        if on_interrupt is not None:
            on_interrupt()
        task.cancel()  # the loop keeps running (it is the kernel's): the task unwinds there
        raise
    finally:
        if ready is not None and len(ready) < before:
            ready.extendleft(
                asyncio.Handle(_noop, (), loop) for _ in range(before - len(ready))
            )


def _noop() -> None:
    return None


class _Box:
    """Holds a result with a constant repr: on Python 3.11 ``asyncio.Runner`` formats its
    main task's repr (result included) when it restores the SIGINT handler, and the repr of
    a run with 10,000 tasks is not something to compute for nothing."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<result>"


async def _boxed(coro: Coroutine[Any, Any, T]) -> _Box:
    return _Box(await coro)


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython's ZMQ shell)."""
    ipython = sys.modules.get("IPython")  # a kernel has imported it long before us
    if ipython is None:
        return False
    ip = ipython.get_ipython()
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"
