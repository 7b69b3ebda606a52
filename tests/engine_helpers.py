"""Test helpers: real tools that measure themselves, and a one-line request runner."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import oktyv_nb as ok
from oktyv_nb.model.schema import ExecutionResult

perf = time.perf_counter


class Tracker:
    """Tools that record when they ran and how many of them ran at once.

    ``starts``/``ends`` map a task's ``name`` param to perf-counter seconds (a list per
    name: one entry per attempt); ``peak`` is the largest number running at the same time.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.starts: dict[str, list[float]] = {}
        self.ends: dict[str, list[float]] = {}
        self.order: list[str] = []

    def enter(self, name: str) -> None:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.starts.setdefault(name, []).append(perf())
            self.order.append(name)

    def leave(self, name: str) -> None:
        with self.lock:
            self.running -= 1
            self.ends.setdefault(name, []).append(perf())

    def start(self, name: str) -> float:
        return self.starts[name][0]

    def end(self, name: str) -> float:
        return self.ends[name][-1]

    @property
    def tools(self) -> dict[str, Callable[..., Any]]:
        """``asleep`` (async) and ``tsleep`` (sync, in a thread): ``(name, seconds=0,
        value=None, fail=False)``; they return ``value`` or raise ValueError."""

        async def asleep(name: str, seconds: float = 0.0, value: Any = None,
                         fail: bool = False) -> Any:
            self.enter(name)
            try:
                await asyncio.sleep(seconds)
                if fail:
                    raise ValueError(f"{name} failed on purpose")
                return value
            finally:
                self.leave(name)

        def tsleep(name: str, seconds: float = 0.0, value: Any = None, fail: bool = False) -> Any:
            self.enter(name)
            try:
                time.sleep(seconds)
                if fail:
                    raise ValueError(f"{name} failed on purpose")
                return value
            finally:
                self.leave(name)

        return {"asleep": asleep, "tsleep": tsleep}


def task(id: str, tool: str = "asleep", **fields: Any) -> dict[str, Any]:
    """A request task; ``params`` default to ``{"name": id}``."""
    params = fields.pop("params", {})
    return {"id": id, "tool": tool, "params": {"name": id, **params}, **fields}


def run(
    tasks: list[dict[str, Any]],
    tools: Mapping[str, Callable[..., Any]] | None = None,
    vault: Any = None,
    **config: Any,
) -> ExecutionResult:
    """Run a request of ``tasks`` with ``config`` (camelCase keys) and return the result."""
    return ok.execute_request({"tasks": tasks, "config": config}, tools=tools, vault=vault)


def cancel_arun_after(dag: ok.DAG, seconds: float, **options: Any) -> ok.Run:
    """Start ``dag.arun(live=False, **options)``, cancel it ``seconds`` in (as Jupyter's stop
    button would) and return the partial run it kept as ``dag.last_run``."""

    async def main() -> None:
        task = asyncio.ensure_future(dag.arun(live=False, **options))
        await asyncio.sleep(seconds)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return
        raise AssertionError("the run ended before it was cancelled")

    asyncio.run(main())
    run = dag.last_run
    assert run is not None and run.outcome.interrupted
    return run
