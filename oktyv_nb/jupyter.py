"""Jupyter glue: run a coroutine from synchronous code whether or not a loop is running.

In a script there is no running loop: :func:`run_sync` uses ``asyncio.run``. Inside
Jupyter the kernel's loop is already running in this thread, so ``run_sync`` applies
``nest_asyncio2`` to that loop (lazily, only then, never at import) and runs the coroutine
on it, so async tools share the notebook's loop. In a worker thread with no loop (a tool that
runs a DAG), ``asyncio.run`` gives that thread its own loop: nothing deadlocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["in_notebook", "run_sync"]

T = TypeVar("T")
_patched: set[int] = set()


def _patch(loop: asyncio.AbstractEventLoop) -> None:
    if id(loop) in _patched and getattr(loop, "_nest_patched", False):
        return
    import nest_asyncio2

    nest_asyncio2.apply(loop)
    _patched.add(id(loop))


def run_sync(
    coro: Coroutine[Any, Any, T], on_interrupt: Callable[[], None] | None = None
) -> T:
    """Run ``coro`` to completion from synchronous code.

    ``on_interrupt`` is called when a KeyboardInterrupt (Jupyter's stop button) lands while
    the loop is busy, before the interrupt propagates.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is None:
        try:
            return asyncio.run(coro)
        except KeyboardInterrupt:
            if on_interrupt is not None:
                on_interrupt()
            raise
    _patch(loop)
    task = loop.create_task(coro)
    try:
        return loop.run_until_complete(task)
    except KeyboardInterrupt:
        if on_interrupt is not None:
            on_interrupt()
        task.cancel()
        raise


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython's ZMQ shell)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"
