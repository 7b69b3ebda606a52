"""Rollback: the compensation pass of ``failureMode: "rollback"`` (SPEC §6).

After a failure stopped the run, each task that succeeded and declares a ``rollback`` is
compensated, last finished first: its rollback params (which may reference
``${<itself>.result...}``) are resolved like any call's and the rollback tool runs once, on
the run's backend, bounded by the task's ``timeout`` (seconds) and by what is left of the
whole-run timeout. The record then says ``rolled_back`` or carries a ``rollback_error``:
``TASK_TIMEOUT`` when the task's timeout expired, ``EXECUTION_TIMEOUT`` when the run's did
(also for rollbacks the run had no time left to start).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from oktyv_nb.errors import EXECUTION_TIMEOUT, TASK_TIMEOUT
from oktyv_nb.execution.engine.calls import call_kwargs, redacted
from oktyv_nb.execution.records import ErrorInfo, error_from_exception
from oktyv_nb.model.graph import is_async

if TYPE_CHECKING:
    from oktyv_nb.execution.backends import Backend
    from oktyv_nb.execution.engine.scheduler import Engine

__all__ = ["RollbackTimeout", "call_once", "compensate"]

perf = time.perf_counter


class RollbackTimeout(Exception):
    """A rollback call ran past its timeout: ``code`` is ``TASK_TIMEOUT`` (the task's) or
    ``EXECUTION_TIMEOUT`` (the run's)."""

    def __init__(self, message: str, code: str = TASK_TIMEOUT) -> None:
        super().__init__(message)
        self.code = code


async def compensate(engine: Engine) -> None:
    """Roll back ``engine``'s succeeded tasks that declare a rollback, last finished first."""
    for rec in reversed(engine.succeeded):
        node = engine.graph.nodes[rec.task_id]
        if node.rollback is None or node.rollback_fn is None or rec.reused:
            continue
        limit, code = node.timeout, TASK_TIMEOUT
        if engine.deadline is not None:
            left = engine.deadline - perf()
            if limit is None or left < limit:
                limit, code = left, EXECUTION_TIMEOUT
        run_limit = f"the run timed out after {engine.config.timeout or 0:g} s"
        if limit is not None and limit <= 0:
            rec.rolled_back = False
            rec.rollback_error = ErrorInfo(
                EXECUTION_TIMEOUT, f"Task {rec.task_id}: {run_limit} before its rollback ran"
            )
            engine._emit("task_rolled_back", rec)
            continue
        why = (f"Task {rec.task_id}: {run_limit} during its rollback"
               if code == EXECUTION_TIMEOUT
               else f"Task {rec.task_id}: rollback timed out after {limit or 0:g} s")
        try:
            kwargs = call_kwargs(node, engine.view, engine.vault, engine.redactor,
                                 node.rollback.params)
            await call_once(
                engine.backend, node.rollback_fn, kwargs, limit, engine.on_loop,
                timeout_error=RollbackTimeout(why, code),
                abandon=lambda task, tid=rec.task_id: engine.cancelled(task, tid),
            )
        except Exception as exc:
            rec.rolled_back = False
            err = error_from_exception(exc)
            rec.rollback_error = redacted(err, engine.redactor) if engine.redactor else err
        else:
            rec.rolled_back = True
        engine._emit("task_rolled_back", rec)


async def call_once(
    backend: Backend, fn: Callable[..., Any], kwargs: dict[str, Any], timeout: float | None,
    on_loop: bool, *, timeout_error: Exception | None = None,
    abandon: Callable[[asyncio.Task[Any]], None] | None = None,
) -> Any:
    """One call outside the scheduler, on ``backend`` (async tools on the running loop, in
    a task of their own, when ``on_loop``); ``timeout`` in seconds.

    When it expires (or this coroutine is cancelled) the call is dropped: a backend call is
    abandoned, an async one is handed to ``abandon`` (which cancels it and sees that it does
    not outlive the run) or else cancelled; it is never waited for. Raises ``timeout_error``
    (default a :class:`RollbackTimeout`) on expiry.
    """
    loop = asyncio.get_running_loop()
    handle = None
    fut: asyncio.Future[Any]
    if is_async(fn) and on_loop:
        fut = loop.create_task(fn(**kwargs))
    else:
        fut = loop.create_future()

        def done(ok: bool, value: Any, worker: str | None, cpu_s: float | None = None) -> None:
            if not fut.done():
                (fut.set_result if ok else fut.set_exception)(value)

        handle = backend.submit(fn, kwargs, done)
    finished = False
    try:
        await asyncio.wait((fut,), timeout=timeout)
        finished = fut.done()
    finally:
        if not finished:
            with contextlib.suppress(Exception):  # best effort: the loop may be closing
                if isinstance(fut, asyncio.Task):
                    (abandon or asyncio.Task.cancel)(fut)
                elif handle is not None or not on_loop:
                    backend.abandon(handle)
    if not finished:
        raise timeout_error or RollbackTimeout(f"rollback timed out after {timeout:g} s")
    return fut.result()
