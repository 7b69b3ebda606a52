"""What a mapped task's expansion costs (SPEC §16): ``python -m bench.maps [--quick]``.

Two ways of running ``N`` no-op async tool calls, both through ``ok.execute_request`` (the
request validated, run, its result built) with ``maxConcurrent`` 10:

* **tasks**: ``N`` ordinary independent tasks in the request;
* **map**: one task listing ``N`` elements and one mapped task over them, which expands at
  run time into ``N`` children ``fetch[0]`` ... ``fetch[N-1]``.

The figure is the median over rounds of the per-task time of the map divided by the per-task
time of the tasks (the target: ≤ 1.5×; the map does less validation and more at run time).
Rounds run the two interleaved (the first rotating), after one untimed warm-up each, as in
:mod:`bench.run`; the machine's load is reported with the figures. A growth check runs the
map at N/10 and N: expansion is O(children) when µs a child stays flat.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python bench/maps.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import oktyv_nb as ok
from bench.run import LoadMonitor, interleaved, ratio
from bench.workloads import async_noop, independent, request_of

TARGET = 1.5


async def noop_item(x: int) -> None:
    return None


def listing(n: int) -> list[int]:
    return list(range(n))


def map_request(n: int) -> dict[str, Any]:
    return {
        "tasks": [
            {"id": "list", "tool": "listing", "params": {"n": n}},
            {"id": "fetch", "tool": "noop_item",
             "map": {"over": "${list.result}", "param": "x"}},
        ],
        "config": {"maxConcurrent": 10},
    }


TOOLS = {"noop": async_noop, "noop_item": noop_item, "listing": listing}


def variants(n: int) -> dict[str, Callable[[], Any]]:
    tasks = request_of(independent(n), "noop", 10)
    mapped = map_request(n)

    def run_tasks() -> Any:
        result = ok.execute_request(tasks, TOOLS)
        assert result.summary.succeeded == n
        return result

    def run_map() -> Any:
        result = ok.execute_request(mapped, TOOLS)
        assert len(result.tasks["fetch"].children) == n
        assert result.tasks["fetch"].status == "success"
        return result

    return {"tasks": run_tasks, "map": run_map}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 7)")
    parser.add_argument("-n", type=int, default=None, help="children (default 10000)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 7)
    n = args.n or (500 if args.quick else 10_000)
    lines = [
        f"# Mapped-task expansion: {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {rounds} rounds"
        + (" (quick: not a measurement)" if args.quick else ""),
        "",
        "| N | tasks µs/task | map µs/child | map / tasks | target | verdict |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    with LoadMonitor() as load:
        per_child = {}
        for size in (n // 10, n):
            t = interleaved(variants(size), rounds)
            r = ratio(t, "map", "tasks")
            us_tasks = statistics.median(t["tasks"]) / size * 1e6
            us_map = statistics.median(t["map"]) / size * 1e6
            per_child[size] = us_map
            verdict = "PASS" if r <= TARGET else "FAIL"
            lines.append(f"| {size:,} | {us_tasks:.1f} | {us_map:.1f} | {r:.2f}× | "
                         f"≤ {TARGET}× | {verdict} |")
    growth = per_child[n] / per_child[n // 10]
    lines += [
        "",
        f"Growth, µs a child at N={n:,} / at N={n // 10:,}: {growth:.2f} "
        "(1.0: expansion linear in the children).",
        f"Machine load: peak 1-minute load average {load.peak:.1f} on {os.cpu_count()} cores. "
        + load.verdict(),
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
