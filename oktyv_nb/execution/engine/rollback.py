"""Rollback: the compensation pass of ``failureMode: "rollback"`` (SPEC §6).

After a failure stopped the run, each task that succeeded and declares a ``rollback`` is
compensated, last finished first: its rollback params (which may reference
``${<itself>.result...}``) are resolved like any call's and the rollback tool runs once, on
the run's backend, bounded by the task's ``timeout`` (seconds). The record then says
``rolled_back`` or carries a ``rollback_error``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from oktyv_nb.errors import TASK_TIMEOUT
from oktyv_nb.execution.engine.calls import call_kwargs, redacted
from oktyv_nb.execution.records import error_from_exception
from oktyv_nb.model.graph import is_async

if TYPE_CHECKING:
    from oktyv_nb.execution.backends import Backend
    from oktyv_nb.execution.engine.scheduler import Engine

__all__ = ["call_once", "compensate"]


class RollbackTimeout(Exception):
    """A rollback call ran past its timeout."""

    code = TASK_TIMEOUT


async def compensate(engine: Engine) -> None:
    """Roll back ``engine``'s succeeded tasks that declare a rollback, last finished first."""
    for rec in reversed(engine.succeeded):
        node = engine.graph.nodes[rec.task_id]
        if node.rollback is None or node.rollback_fn is None or rec.reused:
            continue
        try:
            kwargs = call_kwargs(node, engine.view, engine.vault, engine.redactor,
                                 node.rollback.params)
            await call_once(engine.backend, node.rollback_fn, kwargs, node.timeout,
                            engine.on_loop)
        except Exception as exc:
            rec.rolled_back = False
            err = error_from_exception(exc)
            rec.rollback_error = redacted(err, engine.redactor) if engine.redactor else err
        else:
            rec.rolled_back = True
        engine._emit("task_rolled_back", rec)


async def call_once(
    backend: Backend, fn: Callable[..., Any], kwargs: dict[str, Any], timeout: float | None,
    on_loop: bool,
) -> Any:
    """One call outside the scheduler, on ``backend`` (async tools on the running loop when
    ``on_loop``); ``timeout`` in seconds."""
    loop = asyncio.get_running_loop()
    handle = None
    if is_async(fn) and on_loop:
        aw = fn(**kwargs)
    else:
        fut: asyncio.Future[Any] = loop.create_future()

        def done(ok: bool, value: Any, worker: str | None, cpu_s: float | None = None) -> None:
            if not fut.done():
                (fut.set_result if ok else fut.set_exception)(value)

        handle = backend.submit(fn, kwargs, done)
        aw = fut
    try:
        return await asyncio.wait_for(aw, timeout)
    except TimeoutError:
        if handle is not None:
            backend.abandon(handle)
        raise RollbackTimeout(f"rollback timed out after {timeout:g} s") from None
