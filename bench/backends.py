"""Where tasks run (SPEC §9): CPU-bound speedup and per-task overhead of each backend.

``python bench/backends.py [--quick] [--rounds N]`` prints two markdown tables:

* **CPU-bound DAG**: independent tasks each running a pure-Python loop (calibrated to
  ``--cpu-s`` seconds on this machine), on ``asyncio``, ``threads``, ``processes`` and ``dask``
  (a ``LocalCluster`` of one single-threaded worker process per core, started before timing).
  ``speedup`` is asyncio's makespan over the backend's, the median of per-round ratios;
  ``cores`` is the CPU seconds the tasks spent over the makespan (how many cores they got).
* **Per-task overhead**: no-op tools, as ``N`` independent tasks (wall / N: throughput) and as
  a chain of tasks, each depending on the one before (wall / length: the round trip of one
  call to the backend and back).

Each figure is the median over ``--rounds`` rounds (``--quick``: 3) in which the backends
run interleaved, after one untimed warm-up run each, so that every backend sees the same
machine load. Times are seconds (``s``), milliseconds (``ms``) or microseconds (``µs``).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python bench/backends.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import oktyv_nb as ok

perf = time.perf_counter


# ---------------------------------------------------------------------------- tools
def spin(n: int) -> int:
    """A pure-Python loop of ``n`` steps: CPU-bound, holding the GIL."""
    total = 0
    for i in range(n):
        total += i % 7
    return total


def spin_timed(n: int) -> float:
    """:func:`spin`; returns the CPU seconds its thread spent on it."""
    cpu = time.thread_time()
    spin(n)
    return time.thread_time() - cpu


def noop() -> None:
    return None


def calibrate(seconds: float) -> int:
    """About how many :func:`spin` steps take ``seconds`` of CPU in this thread."""
    n = 100_000
    while True:
        cpu = time.thread_time()
        spin(n)
        took = time.thread_time() - cpu
        if took > 0.1:
            return int(n * seconds / took)
        n *= 4


# ---------------------------------------------------------------------------- DAGs
def cpu_dag(tool: Callable[..., Any], n: int, tasks: int) -> ok.DAG:
    dag = ok.DAG("cpu", max_concurrent=tasks)
    for i in range(tasks):
        dag.task(f"spin{i}", tool, n=n)
    return dag


def independent(tool: Callable[..., Any], count: int) -> ok.DAG:
    dag = ok.DAG("independent", max_concurrent=16)
    for i in range(count):
        dag.task(f"t{i}", tool)
    return dag


def chain(tool: Callable[..., Any], length: int) -> ok.DAG:
    dag = ok.DAG("chain", max_concurrent=1)
    for i in range(length):
        dag.task(f"t{i}", tool, after=[f"t{i - 1}"] if i else None)
    return dag


def timed(dag: ok.DAG, backend: Any) -> tuple[float, ok.Run]:
    gc.collect()
    t0 = perf()
    run = dag.run(backend=backend, live=False)
    took = perf() - t0
    bad = [tid for tid, r in run.records.items() if r.status != "success"]
    if bad:
        rec = run.records[bad[0]]
        raise RuntimeError(f"{len(bad)} tasks failed on {backend!r}: {bad[0]}: {rec.error}")
    return took, run


# ---------------------------------------------------------------------------- main
def start_dask(workers: int) -> tuple[Any, Any, float] | None:
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        return None
    t0 = perf()
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
    client = Client(cluster, set_as_default=False)
    return client, cluster, perf() - t0


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, smaller runs")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5; quick 3)")
    parser.add_argument("--cpu-s", type=float, default=0.3, help="seconds per CPU task")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 5)
    cores = os.cpu_count() or 1
    cpu_tasks = 2 * cores
    n_independent = 200 if args.quick else 1000
    n_chain = 50 if args.quick else 200

    # Imported from the module, not __main__, so that workers load the tools by reference.
    from bench.backends import noop as noop_tool
    from bench.backends import spin_timed as spin_tool

    load0 = os.getloadavg()
    dask = start_dask(cores)
    from oktyv_nb.execution.backends import DaskBackend, ProcessBackend

    backends: dict[str, Any] = {
        "asyncio": "asyncio", "threads": "threads", "processes": ProcessBackend(cores),
    }
    if dask is not None:
        backends["dask"] = DaskBackend(dask[0])
    n = calibrate(args.cpu_s)
    try:
        for backend in backends.values():  # warm-up: workers started, modules imported
            timed(cpu_dag(spin_tool, 1000, cpu_tasks), backend)
            timed(independent(noop_tool, 20), backend)
        cpu: dict[str, list[float]] = {k: [] for k in backends}
        speedup: dict[str, list[float]] = {k: [] for k in backends}
        used: dict[str, list[float]] = {k: [] for k in backends}
        indep: dict[str, list[float]] = {k: [] for k in backends}
        lat: dict[str, list[float]] = {k: [] for k in backends}
        names = list(backends)
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                took, run = timed(cpu_dag(spin_tool, n, cpu_tasks), backends[name])
                cpu[name].append(took)
                used[name].append(sum(rec.result for rec in run.records.values()) / took)
                indep[name].append(timed(independent(noop_tool, n_independent),
                                         backends[name])[0] / n_independent)
                lat[name].append(timed(chain(noop_tool, n_chain), backends[name])[0] / n_chain)
            for name in names:
                speedup[name].append(cpu["asyncio"][-1] / cpu[name][-1])
    finally:
        backends["processes"].shutdown()
        if dask is not None:
            dask[0].close()
            dask[1].close()
    med = statistics.median
    load1 = os.getloadavg()
    print(f"# Backends: {cores} cores, Python {platform.python_version()}, "
          f"{rounds} rounds{' (quick)' if args.quick else ''}, load average "
          f"{load0[0]:.1f} -> {load1[0]:.1f}")
    if dask is not None:
        print(f"\nDask LocalCluster ({cores} workers x 1 thread) started in {dask[2]:.2f} s "
              "(not in the figures).")
    print(f"\n## CPU-bound DAG: {cpu_tasks} independent tasks of {args.cpu_s:g} s of CPU each\n")
    print(table(
        ["backend", "makespan (s)", "speedup vs asyncio", "cores used"],
        [[k, f"{med(cpu[k]):.2f}", f"{med(speedup[k]):.2f}x", f"{med(used[k]):.2f}"]
         for k in names],
    ))
    print("\n## Per-task overhead (no-op tools)\n")
    print(table(
        ["backend", f"{n_independent} independent: per task (µs)",
         f"chain of {n_chain}: per task (ms)"],
        [[k, f"{med(indep[k]) * 1e6:.0f}", f"{med(lat[k]) * 1e3:.2f}"] for k in names],
    ))
    if dask is None:
        print("\n(dask: not installed, pip install 'oktyv_nb[dask]')")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
