"""Scaling figures of ``python -m bench`` (step ``scale``): the best floor, growth to large
DAGs, memory of the builder, and the graph picture.

* **best floor**: ``execute_request`` on the layered DAG of async no-op tools against
  :func:`bench.peers.best_floor_run` (long-lived worker coroutines on a ``graphlib`` ready
  queue), interleaved; the ratio is the median of per-round ratios.
* **growth**: µs per task of ``execute_request`` at the large size over µs per task at the
  small size (layered async no-op DAGs), both sizes run in each round; the median of
  per-round ratios (1.0: linear).
* **builder memory**: tracemalloc peak per task of ``DAG.task`` × N then ``dag.run()``
  (async no-op tools, 1–3 dependencies each by ``after=``), from an empty DAG to the
  finished run; the DAG and its run held at the end.
* **graph picture**: ``run.graph()`` (the ``graphviz.Digraph`` with its DOT source) of a
  finished run of the layered DAG over that ``dag.run()``'s own time, per round.

Times are seconds internally, microseconds or milliseconds in the report.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import oktyv_nb as ok
from bench.peers import make_best_floor, make_ours
from bench.workloads import Deps, async_noop, layered

__all__ = ["ScaleSizes", "best_floor", "builder_memory", "graph_picture", "growth"]


@dataclass(frozen=True)
class ScaleSizes:
    """Sizes of the scaling figures (full and quick runs differ)."""

    floor_n: int
    growth_small: int
    growth_large: int
    builder_n: int
    graph_n: int


def _timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    elapsed = time.perf_counter() - t0
    del out
    return elapsed


def best_floor(n: int, repeats: int, max_concurrent: int) -> dict[str, list[float]]:
    """Seconds per run of ``ours`` and ``best`` (the best floor), interleaved."""
    from bench.run import interleaved

    deps = layered(n)
    return interleaved({"best": make_best_floor(deps, max_concurrent),
                        "ours": make_ours(deps, "async", max_concurrent)}, repeats)


def growth(small: int, large: int, repeats: int, max_concurrent: int) -> list[float]:
    """Per round: µs/task at ``large`` over µs/task at ``small`` (one warm-up each)."""
    runs = {n: make_ours(layered(n), "async", max_concurrent) for n in (small, large)}
    for fn in runs.values():
        fn()
    out = []
    for r in range(repeats):
        order = (small, large) if r % 2 == 0 else (large, small)
        t = {n: _timed(runs[n]) / n for n in order}
        out.append(t[large] / t[small])
    return out


def _build_and_run(deps: Deps, max_concurrent: int) -> tuple[ok.DAG, ok.Run]:
    dag = ok.DAG("builder", max_concurrent=max_concurrent)
    for tid, ds in deps.items():
        dag.task(tid, async_noop, after=list(ds) if ds else None)
    return dag, dag.run(live=False)


def builder_memory(n: int, repeats: int, max_concurrent: int) -> list[float]:
    """tracemalloc peak bytes per task of building an ``n``-task DAG and running it."""
    deps = layered(n)
    _build_and_run(deps, max_concurrent)  # warm-up: imports, caches
    out = []
    for _ in range(repeats):
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        held = _build_and_run(deps, max_concurrent)
        top = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del held
        out.append((top - base) / n)
    return out


def graph_picture(n: int, repeats: int, max_concurrent: int) -> dict[str, list[float]]:
    """Seconds of ``dag.run()`` and of ``run.graph()`` on its run (with the DOT source made),
    per round, and their ratio per round (``ratio``)."""
    dag = ok.DAG("picture", max_concurrent=max_concurrent)
    for tid, ds in layered(n).items():
        dag.task(tid, async_noop, after=list(ds) if ds else None)
    run = dag.run(live=False)
    _ = run.graph().source  # warm-up
    times: dict[str, list[float]] = {"run": [], "graph": [], "ratio": []}
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        run = dag.run(live=False)
        t1 = time.perf_counter()
        gc.collect()
        t2 = time.perf_counter()
        source = run.graph().source
        t3 = time.perf_counter()
        del source
        times["run"].append(t1 - t0)
        times["graph"].append(t3 - t2)
        times["ratio"].append((t3 - t2) / (t1 - t0))
    return times
