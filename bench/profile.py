"""Where ``execute_request`` spends its time:
``python -m bench.profile [async|sync] [N] [--shape layered|chain|independent]``.

Prints (1) the median time of each phase of one ``execute_request`` on a layered DAG of
no-op tools: parsing the request model, building the graph, the engine's run, building the
result model; each with the garbage collector on and off, so its share shows; (2) a cProfile
of whole calls, sorted by own time. Default: layered N=10,000. Times in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import oktyv_nb as ok
from bench.workloads import SHAPES, async_noop, make_shape, request_of, sync_noop
from oktyv_nb.execution.engine import RunConfig, run_graph
from oktyv_nb.model.graph import build_graph
from oktyv_nb.model.registry import resolve_tools
from oktyv_nb.model.schema import parse_request_data
from oktyv_nb.results.result import to_result

PHASES = ("parse request", "build graph", "engine run", "result model")


def phases(request: dict[str, Any], tools: dict[str, Callable[..., Any]]) -> list[float]:
    """Seconds of each of :data:`PHASES` in one call, on one loop like ``execute_request``."""

    async def go() -> list[float]:
        perf = time.perf_counter
        t0 = perf()
        data = parse_request_data(request)
        t1 = perf()
        graph = build_graph(data["tasks"], resolve_tools(tools), keep_specs=False)
        t2 = perf()
        outcome = await run_graph(graph, RunConfig.from_request(data["config"]))
        t3 = perf()
        result = to_result(outcome)
        t4 = perf()
        del result
        return [t1 - t0, t2 - t1, t3 - t2, t4 - t3]

    return asyncio.run(go())


def breakdown(request: dict[str, Any], tools: dict[str, Callable[..., Any]],
              repeats: int) -> str:
    phases(request, tools)
    on: list[list[float]] = []
    off: list[list[float]] = []
    for _ in range(repeats):
        gc.collect()
        on.append(phases(request, tools))
        gc.collect()
        gc.disable()
        try:
            off.append(phases(request, tools))
        finally:
            gc.enable()
    lines = ["| phase | ms, gc on | ms, gc off |", "|---|---:|---:|"]
    for i, name in enumerate(PHASES):
        a = statistics.median(r[i] for r in on) * 1e3
        b = statistics.median(r[i] for r in off) * 1e3
        lines.append(f"| {name} | {a:.1f} | {b:.1f} |")
    a = statistics.median(sum(r) for r in on) * 1e3
    b = statistics.median(sum(r) for r in off) * 1e3
    lines.append(f"| total | {a:.1f} | {b:.1f} |")
    return "\n".join(lines)


def profile(request: dict[str, Any], tools: dict[str, Callable[..., Any]], top: int) -> str:
    ok.execute_request(request, tools)
    gc.collect()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(3):
        ok.execute_request(request, tools)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument("kind", nargs="?", default="async", choices=["async", "sync"])
    p.add_argument("n", nargs="?", type=int, default=10_000)
    p.add_argument("--shape", default="layered", choices=SHAPES)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args(argv)
    request = request_of(make_shape(args.shape, args.n))
    tools = {"noop": async_noop if args.kind == "async" else sync_noop}
    print(f"## execute_request, {args.kind} no-op tools, {args.shape} N={args.n:,}\n")
    print(breakdown(request, tools, args.repeats))
    print("\n## cProfile of 3 calls (own time)\n")
    print(profile(request, tools, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
