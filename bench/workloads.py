"""The benchmark workloads: DAG shapes, no-op tools and the sleep DAG of W2.

A workload is a plain dependency map ``{task_id: (dependency ids...)}`` in insertion order
(dependencies always come first), so every peer runs exactly the same graph: our engine gets
it as a JSON request dict, the hand-written floor as a ``graphlib`` graph, Dask as a raw task
graph. Shapes are generated from a fixed seed, so a run is repeatable.

Times are seconds, except in request dicts (milliseconds, as in the JSON format).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SEED",
    "SHAPES",
    "Deps",
    "SleepDag",
    "async_noop",
    "chain",
    "independent",
    "layered",
    "lower_bound",
    "make_shape",
    "request_of",
    "sleep_dag",
    "sync_noop",
]

SEED = 20240611
SHAPES = ("independent", "chain", "layered")
LAYERED_LEVELS = 20

Deps = dict[str, tuple[str, ...]]


async def async_noop() -> None:
    """An async tool that does nothing (it still runs as a coroutine on the loop)."""
    return None


def sync_noop() -> None:
    """A sync tool that does nothing (it still runs in a worker thread)."""
    return None


def _ids(n: int) -> list[str]:
    return [f"t{i}" for i in range(n)]


def independent(n: int) -> Deps:
    """``n`` tasks without dependencies."""
    return dict.fromkeys(_ids(n), ())


def chain(n: int) -> Deps:
    """``n`` tasks, each depending on the one before."""
    ids = _ids(n)
    return {tid: ((ids[i - 1],) if i else ()) for i, tid in enumerate(ids)}


def layered(n: int, levels: int = LAYERED_LEVELS, seed: int = SEED) -> Deps:
    """``n`` tasks in ``levels`` levels of (nearly) equal width; each task after the first
    level depends on 1–3 random tasks of the previous level (fixed ``seed``)."""
    rng = random.Random(seed)
    ids = _ids(n)
    levels = max(1, min(levels, n))
    width, extra = divmod(n, levels)
    deps: Deps = {}
    prev: list[str] = []
    pos = 0
    for lv in range(levels):
        size = width + (1 if lv < extra else 0)
        level = ids[pos:pos + size]
        pos += size
        for tid in level:
            deps[tid] = tuple(rng.sample(prev, min(len(prev), rng.randint(1, 3)))) if prev else ()
        prev = level
    return deps


def make_shape(shape: str, n: int) -> Deps:
    """The dependency map of a named shape (one of :data:`SHAPES`)."""
    if shape == "independent":
        return independent(n)
    if shape == "chain":
        return chain(n)
    if shape == "layered":
        return layered(n)
    raise ValueError(f"unknown shape {shape!r}; use one of {', '.join(SHAPES)}")


def request_of(
    deps: Mapping[str, tuple[str, ...]],
    tool: str = "noop",
    max_concurrent: int = 10,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The JSON request (camelCase dict) running ``tool`` once per task of ``deps``."""
    tasks = []
    for tid, ds in deps.items():
        task: dict[str, Any] = {
            "id": tid, "tool": tool, "params": dict(params[tid]) if params else {}
        }
        if ds:
            task["dependsOn"] = list(ds)
        tasks.append(task)
    return {"tasks": tasks, "config": {"maxConcurrent": max_concurrent}}


@dataclass(frozen=True)
class SleepDag:
    """W2's DAG: ``deps`` and each task's sleep in seconds."""

    deps: Deps
    seconds: dict[str, float]

    @property
    def work(self) -> float:
        return sum(self.seconds.values())

    def critical_path(self) -> float:
        """The longest chain of sleeps (seconds)."""
        best: dict[str, float] = {}
        for tid, ds in self.deps.items():  # dependencies come first
            best[tid] = self.seconds[tid] + max((best[d] for d in ds), default=0.0)
        return max(best.values(), default=0.0)


def sleep_dag(
    n: int = 50, levels: int = 6, low: float = 0.010, high: float = 0.100, seed: int = SEED
) -> SleepDag:
    """``n`` tasks in ``levels`` levels (1–3 random dependencies on the previous level), each
    sleeping a random ``low``–``high`` seconds (fixed ``seed``, millisecond steps)."""
    deps = layered(n, levels, seed)
    rng = random.Random(seed + 1)
    lo, hi = round(low * 1000), round(high * 1000)
    seconds = {tid: rng.randint(lo, hi) / 1000.0 for tid in deps}
    return SleepDag(deps, seconds)


def lower_bound(dag: SleepDag, max_concurrent: int) -> float:
    """``max(critical path, work / max_concurrent)``: no schedule can beat it (seconds)."""
    return max(dag.critical_path(), dag.work / max_concurrent)


async def sleep_tool(seconds: float) -> float:
    """W2's tool: sleep ``seconds`` on the loop, return them."""
    await asyncio.sleep(seconds)
    return seconds
