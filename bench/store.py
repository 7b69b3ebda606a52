"""What journaling a run into a store costs (SPEC §17): ``python bench/store.py [--quick]``.

Prints two markdown tables:

* **No-op tasks**: ``N`` layered async no-op tasks run by ``ok.execute_request(request,
  tools, store=...)`` (validation, run, the journal committed at the end, the full result),
  without a store, with a store whose writer is a thread (the default) and with one that
  commits batches on the event loop (``writer="loop"``). The overhead is the median over
  rounds of (with - without) / N, in µs a task, of the wall time (the target: ≤ 5 µs a
  task) and of the process's CPU time (every thread's; less sensitive to other processes on
  a shared machine).
* **10 ms tasks**: ``M`` tasks sleeping 10 ms each (``maxConcurrent`` 10); the relative cost
  is the median of per-round ratios with / without - 1 (target: ≤ 1%), and the CPU time the
  store added as a share of the run's wall time.

Each figure is the median over ``--rounds`` rounds (``--quick``: 3) in which the variants run
interleaved (the first variant rotating), after one untimed warm-up run each, as in
:mod:`bench.run`. Every store is a file in a temporary directory, kept over the rounds, so
later runs insert into a store that already holds earlier ones.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python bench/store.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import oktyv_nb as ok
from bench.run import LoadMonitor
from bench.workloads import async_noop, independent, layered, request_of

NOOP_TARGET_US = 5.0
SLEEP_TARGET = 0.01


async def sleep_10ms() -> None:
    await asyncio.sleep(0.010)


def _variants(
    request: dict[str, Any], tools: dict[str, Any], stores: dict[str, ok.RunStore | None]
) -> dict[str, Callable[[], Any]]:
    return {
        name: (lambda store=store: ok.execute_request(request, tools, store=store))
        for name, store in stores.items()
    }


def interleaved(
    peers: dict[str, Callable[[], Any]], repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU seconds per run of each variant, as :func:`bench.run.interleaved` runs
    them: one warm-up each, then ``repeats`` rounds, the first variant rotating."""
    names = list(peers)
    for name in names:
        peers[name]()
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            peers[name]()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return wall, cpu


def _per_task(t: dict[str, list[float]], name: str, n: int) -> float:
    """Median over rounds of (with - without) / n, in µs."""
    return statistics.median((a - b) / n * 1e6 for a, b in zip(t[name], t["none"], strict=True))


def _check(store: ok.RunStore, n: int) -> None:
    """The last run was journaled whole: its header, its end and every record."""
    runs = store.runs(limit=1)
    row = runs.iloc[0]
    if row["status"] != "success" or int(row["succeeded"]) != n:
        raise RuntimeError(f"the store did not keep the run: {row.to_dict()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 7)")
    parser.add_argument("--noop", type=int, nargs="+", default=None,
                        help="numbers of no-op tasks (default 1000 10000)")
    parser.add_argument("--sleep-tasks", type=int, default=None,
                        help="number of 10 ms tasks (default 500)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 7)
    sizes = args.noop or ([500] if args.quick else [1000, 10_000])
    m = args.sleep_tasks or (50 if args.quick else 500)
    out: list[str] = [
        f"# Journaling cost: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"SQLite {__import__('sqlite3').sqlite_version}, {rounds} rounds"
        + (" (quick: not a measurement)" if args.quick else ""),
    ]
    with LoadMonitor() as load, tempfile.TemporaryDirectory(prefix="oktyv-bench-store-") as tmp:
        stores = {
            "none": None,
            "thread": ok.RunStore(Path(tmp) / "thread.sqlite"),
            "loop": ok.RunStore(Path(tmp) / "loop.sqlite", writer="loop"),
        }
        rows = []
        verdict = {}
        tools = {"noop": async_noop}
        for n in sizes:
            print(f"no-op N={n}", file=sys.stderr, flush=True)
            request = request_of(layered(n), "noop", 10)
            t, cpu = interleaved(_variants(request, tools, stores), rounds)
            for name in ("thread", "loop"):
                _check(stores[name], n)  # type: ignore[arg-type]
            base = statistics.median(t["none"])
            cells = [f"{n:,}", f"{base * 1e3:.1f}"]
            for name in ("thread", "loop"):
                per = _per_task(t, name, n)
                cells += [f"{statistics.median(t[name]) * 1e3:.1f}", f"{per:+.2f}",
                          f"{_per_task(cpu, name, n):+.2f}"]
                verdict[(n, name)] = per
            rows.append("| " + " | ".join(cells) + " |")
        out.append(
            "\n## No-op tasks (layered, async)\n\n"
            "| N | no store ms | thread writer ms | thread µs/task | thread CPU µs/task "
            "| loop writer ms | loop µs/task | loop CPU µs/task |\n"
            "|---:|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows)
        )
        print(f"10 ms tasks M={m}", file=sys.stderr, flush=True)
        tools = {"sleep10": sleep_10ms}
        request = request_of(independent(m), "sleep10", 10)
        t, cpu = interleaved(_variants(request, tools, stores),
                             rounds if args.quick else max(rounds, 11))
        base = statistics.median(t["none"])
        rel = {
            name: statistics.median(a / b - 1 for a, b in zip(t[name], t["none"], strict=True))
            for name in ("thread", "loop")
        }
        rel_cpu = {  # the CPU the store added, as a share of the run's wall time
            name: statistics.median(
                (a - b) / w for a, b, w in zip(cpu[name], cpu["none"], t["none"], strict=True)
            )
            for name in ("thread", "loop")
        }
        out.append(
            f"\n## {m} tasks of 10 ms (maxConcurrent 10)\n\n"
            "*cost* = median per-round wall time with / without - 1; *CPU* = the CPU time the "
            "store added / the run's wall time without it.\n\n"
            "| no store ms | thread writer ms | thread cost | thread CPU | loop writer ms "
            "| loop cost | loop CPU |\n|---:|---:|---:|---:|---:|---:|---:|\n"
            f"| {base * 1e3:.1f} | {statistics.median(t['thread']) * 1e3:.1f} | "
            f"{rel['thread']:+.2%} | {rel_cpu['thread']:+.2%} | "
            f"{statistics.median(t['loop']) * 1e3:.1f} | {rel['loop']:+.2%} | "
            f"{rel_cpu['loop']:+.2%} |"
        )
        for s in stores.values():
            if s is not None:
                s.close()
    big = max(sizes)
    noop = verdict[(big, "thread")]
    out.append(
        "\n## Targets (thread writer, the default)\n\n| figure | measured | target | |\n"
        "|---|---:|---|---|\n"
        f"| no-op tasks, N={big:,}: journaling per task | {noop:+.2f} µs | ≤ "
        f"{NOOP_TARGET_US:g} µs | {'PASS' if noop <= NOOP_TARGET_US else 'FAIL'} |\n"
        f"| {m} tasks of 10 ms: journaling cost | {rel['thread']:+.2%} | ≤ 1% | "
        f"{'PASS' if rel['thread'] <= SLEEP_TARGET else 'FAIL'} |"
    )
    cheaper = "thread" if verdict[(big, "thread")] <= verdict[(big, "loop")] else "loop"
    out.append(f"\nCheaper writer on no-op tasks (N={big:,}): **{cheaper}**.")
    busy = load.verdict()
    if busy:
        out.append("\n" + busy)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
