"""The peers: what our engine is measured against, side by side in one process.

Every ``make_*`` function does its set-up (building the request dict, the Dask graph, the
thread pool) outside the timed region and returns a zero-argument callable that performs one
complete run from synchronous code and returns what the run produced (kept alive until the
timer stops, so every peer pays for building its results and none for freeing them).

* **best floor** (:func:`best_floor_run`): ``max_concurrent`` long-lived worker coroutines on
  a ``graphlib`` ready queue, the fastest hand-written async scheduler we know.
* **floor**: the least a careful hand-written scheduler does: ``graphlib.TopologicalSorter``,
  one asyncio task per ready node and an ``asyncio.Semaphore(max_concurrent)``; sync tools go
  through ``loop.run_in_executor`` on a persistent 10-thread ``ThreadPoolExecutor``.
* **dask**: ``dask.threaded.get`` on a raw task graph with ``num_workers`` threads (sync only).
* **dask futures** (:mod:`bench.dask_backend`): ``client.submit`` per task on a
  ``distributed`` cluster, the dependencies' futures as arguments.
* **ours**: ``oktyv_nb.execute_request(request_dict, tools)``: validation, scheduling and the
  full SPEC §3 result with one record per task.
* **levels**: the same with ``strategy="levels"`` (the original design's level-by-level
  schedule): ``prepare`` + ``run_graph`` + ``to_result``.
"""

from __future__ import annotations

import asyncio
import graphlib
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import oktyv_nb as ok
from oktyv_nb.execution.engine import RunConfig, RunOutcome, run_graph
from oktyv_nb.model.graph import prepare
from oktyv_nb.results.result import to_result
from oktyv_nb.results.stats import run_stats

from .workloads import Deps, SleepDag, async_noop, request_of, sleep_tool, sync_noop

__all__ = [
    "FLOOR_THREADS",
    "best_floor_run",
    "floor_pool",
    "floor_run",
    "make_best_floor",
    "make_dask",
    "make_dask_futures",
    "make_floor",
    "make_levels",
    "make_ours",
    "makespan_floor",
    "makespan_ours",
]

FLOOR_THREADS = 10
_pool: ThreadPoolExecutor | None = None


def floor_pool() -> ThreadPoolExecutor:
    """The floor's persistent executor (like our engine's shared pool, it outlives a run)."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(FLOOR_THREADS, thread_name_prefix="floor")
    return _pool


async def floor_run(
    deps: Mapping[str, tuple[str, ...]],
    call: Callable[[str], Any],
    max_concurrent: int,
    spans: dict[str, tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """Run ``call(task_id)`` (an awaitable) per node, each once its dependencies are done.

    Returns ``{task_id: value}``; with ``spans`` given, also records perf-counter
    ``(start, end)`` seconds per task.
    """
    ts: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter(deps)
    ts.prepare()
    sem = asyncio.Semaphore(max_concurrent)
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    results: dict[str, Any] = {}
    running: set[asyncio.Task[None]] = set()
    perf = time.perf_counter

    async def node(tid: str) -> None:
        async with sem:
            if spans is not None:
                t0 = perf()
                results[tid] = await call(tid)
                spans[tid] = (t0, perf())
            else:
                results[tid] = await call(tid)
        ts.done(tid)
        spawn()

    def spawn() -> None:
        for tid in ts.get_ready():
            task = loop.create_task(node(tid))
            running.add(task)
            task.add_done_callback(running.discard)
        if not ts.is_active() and not finished.done():
            finished.set_result(None)

    spawn()
    await finished
    return results


def make_floor(deps: Deps, kind: str, max_concurrent: int = 10) -> Callable[[], Any]:
    """The hand-written floor on no-op tools (``kind``: ``async`` or ``sync``)."""
    if kind == "async":

        def call(tid: str) -> Any:
            return async_noop()

    elif kind == "sync":
        pool = floor_pool()

        def call(tid: str) -> Any:
            return asyncio.get_running_loop().run_in_executor(pool, sync_noop)

    else:
        raise ValueError(f"kind must be 'async' or 'sync', got {kind!r}")
    return lambda: asyncio.run(floor_run(deps, call, max_concurrent))


def _dask_noop(*deps: Any) -> None:
    return None


def make_dask(deps: Deps, num_workers: int = 10) -> Callable[[], Any]:
    """Dask's threaded scheduler on a raw task graph of no-op sync calls."""
    import dask.threaded

    dsk = {tid: (_dask_noop, *ds) for tid, ds in deps.items()}
    keys = list(deps)
    return lambda: dask.threaded.get(dsk, keys, num_workers=num_workers)


def make_dask_futures(deps: Deps, client: Any) -> Callable[[], Any]:
    """Hand-written Dask futures on a ``distributed.Client``: one ``client.submit`` per task
    with its dependencies' futures as arguments, then one ``client.gather`` of them all."""

    def run() -> Any:
        futures: dict[str, Any] = {}
        for tid, ds in deps.items():
            futures[tid] = client.submit(_dask_noop, *(futures[d] for d in ds), pure=False)
        return client.gather(list(futures.values()))

    return run


def _tools(kind: str) -> dict[str, Callable[..., Any]]:
    if kind == "async":
        return {"noop": async_noop}
    if kind == "sync":
        return {"noop": sync_noop}
    raise ValueError(f"kind must be 'async' or 'sync', got {kind!r}")


def make_ours(
    deps: Deps, kind: str, max_concurrent: int = 10,
    backend: Callable[[], Any] | None = None,
) -> Callable[[], Any]:
    """``ok.execute_request`` on the request dict: validation, run and full result (on
    ``backend()``, a fresh backend object per run, when given)."""
    request = request_of(deps, "noop", max_concurrent)
    tools = _tools(kind)
    if backend is None:
        return lambda: ok.execute_request(request, tools)
    return lambda: ok.execute_request(request, tools, backend=backend())


def make_levels(deps: Deps, kind: str, max_concurrent: int = 10) -> Callable[[], Any]:
    """Our engine with ``strategy="levels"``, doing the same work as ``execute_request``."""
    request = request_of(deps, "noop", max_concurrent)
    tools = _tools(kind)

    async def run() -> Any:
        request_config, graph = prepare(request, tools)
        cfg = RunConfig.from_request(request_config, strategy="levels")
        return to_result(await run_graph(graph, cfg))

    return lambda: asyncio.run(run())


# --------------------------------------------------------------------------- W2 makespan


def makespan_floor(dag: SleepDag, max_concurrent: int = 10) -> float:
    """The floor's makespan (first start to last end, seconds) on the sleep DAG."""
    spans: dict[str, tuple[float, float]] = {}
    seconds = dag.seconds
    asyncio.run(floor_run(dag.deps, lambda tid: sleep_tool(seconds[tid]), max_concurrent, spans))
    return max(e for _, e in spans.values()) - min(s for s, _ in spans.values())


def makespan_ours(dag: SleepDag, strategy: str, max_concurrent: int = 10) -> float:
    """Our engine's makespan (first start to last end, seconds) on the sleep DAG."""
    params = {tid: {"seconds": s} for tid, s in dag.seconds.items()}
    request = request_of(dag.deps, "sleep_tool", max_concurrent, params)
    _, graph = prepare(request, {"sleep_tool": sleep_tool})
    cfg = RunConfig(max_concurrent=max_concurrent, strategy=strategy)  # type: ignore[arg-type]
    outcome: RunOutcome = asyncio.run(run_graph(graph, cfg))
    bad = [r.task_id for r in outcome.records.values() if r.status != "success"]
    if bad:
        raise RuntimeError(f"W2 run with strategy={strategy!r}: tasks did not succeed: {bad[:5]}")
    return run_stats(outcome).makespan_s


# --------------------------------------------------------------------------- the best floor


async def best_floor_run(
    deps: Mapping[str, tuple[str, ...]], call: Callable[[str], Any], max_concurrent: int
) -> dict[str, Any]:
    """The best hand-written floor: ``max_concurrent`` long-lived worker coroutines taking
    task ids from one ``asyncio.Queue`` fed by a ``graphlib.TopologicalSorter``; no task per
    node, no semaphore. Returns ``{task_id: value}``."""
    ts: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter(deps)
    ts.prepare()
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    for tid in ts.get_ready():
        queue.put_nowait(tid)
    results: dict[str, Any] = {}
    if not ts.is_active():
        return results

    async def worker() -> None:
        while True:
            tid = await queue.get()
            if tid is None:
                return
            results[tid] = await call(tid)
            ts.done(tid)
            for ready in ts.get_ready():
                queue.put_nowait(ready)
            if not ts.is_active():
                for _ in range(max_concurrent):
                    queue.put_nowait(None)

    await asyncio.gather(*(worker() for _ in range(max_concurrent)))
    return results


def make_best_floor(deps: Deps, max_concurrent: int = 10) -> Callable[[], Any]:
    """:func:`best_floor_run` on async no-op tools, from synchronous code."""
    return lambda: asyncio.run(best_floor_run(deps, lambda tid: async_noop(), max_concurrent))
