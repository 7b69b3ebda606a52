"""The Dask backend against hand-written Dask: ``python -m bench.dask_backend [--quick]``.

Workload: the W1 layered DAG of no-op sync tools (1,000 tasks in 20 levels, 1–3 dependencies
each; ``--quick``: the same size, 3 rounds), ``maxConcurrent`` 10, on one
``LocalCluster(processes=False, n_workers=1, threads_per_worker=10)`` started before timing
and shared by both peers:

* *ours* = ``ok.execute_request(request_dict, tools, backend=DaskBackend(client))``:
  validation, the engine's schedule (each task sent once its dependencies have finished,
  its result fetched back) and the full result with every record;
* *futures* = the least hand-written Dask code for the same graph: one ``client.submit``
  per task in dependency order, the dependencies' futures as its arguments, then one
  ``client.gather`` of every future (the graph is on the scheduler from the start and no
  result comes back before the end).

Both peers run in this process with the cluster (its scheduler and worker threads share the
GIL with them), so the process's CPU time is reported next to the wall time. Figures are
medians over interleaved rounds after one warm-up run each (``bench.run.interleaved``);
the ratio is the median of per-round ratios. Target: ours / futures ≤ 1.5×.

It is not part of ``python -m bench`` because it needs ``distributed`` and a cluster.
Times are milliseconds (ms) in the report, seconds internally.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python bench/dask_backend.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.peers import make_dask_futures, make_ours
from bench.run import interleaved, med, ratio
from bench.workloads import layered

TARGET = 1.5
MAX_CONCURRENT = 10


def cpu_timed(peers: dict[str, Callable[[], Any]]) -> tuple[dict[str, Callable[[], Any]],
                                                          dict[str, list[float]]]:
    """``peers`` wrapped to record the process CPU seconds of each run."""
    cpu: dict[str, list[float]] = {name: [] for name in peers}

    def wrap(name: str, fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            c0 = time.process_time()
            out = fn()
            cpu[name].append(time.process_time() - c0)
            return out

        return run

    return {name: wrap(name, fn) for name, fn in peers.items()}, cpu


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dask_backend",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 5")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5; quick 3)")
    parser.add_argument("--n", type=int, default=1000, help="tasks in the layered DAG")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 5)
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        print("distributed is not installed: pip install 'oktyv_nb[dask]'", file=sys.stderr)
        return 1
    from oktyv_nb.execution.backends import DaskBackend

    deps = layered(args.n)
    load0 = os.getloadavg()[0]
    cluster = LocalCluster(processes=False, n_workers=1, threads_per_worker=MAX_CONCURRENT,
                           dashboard_address=":0")
    client = Client(cluster, set_as_default=False)
    try:
        peers, cpu = cpu_timed({
            "ours": make_ours(deps, "sync", MAX_CONCURRENT,
                              backend=lambda: DaskBackend(client)),
            "futures": make_dask_futures(deps, client),
        })
        times = interleaved(peers, rounds)
    finally:
        client.close()
        cluster.close()
    load1 = os.getloadavg()[0]
    got = ratio(times, "ours", "futures")
    cpu_ratio = med([a / b for a, b in zip(cpu["ours"][1:], cpu["futures"][1:], strict=True)])
    verdict = "PASS" if got <= TARGET else "FAIL"
    print(f"# Dask backend: layered N={args.n:,}, maxConcurrent {MAX_CONCURRENT}, "
          f"LocalCluster(processes=False, 1 worker x {MAX_CONCURRENT} threads)\n")
    print(f"{rounds} rounds{' (quick)' if args.quick else ''}, {os.cpu_count()} cores, "
          f"load average {load0:.1f} -> {load1:.1f}\n")
    print("| peer | wall ms | µs/task | CPU ms |\n|---|---:|---:|---:|")
    for name in ("ours", "futures"):
        wall = med(times[name])
        print(f"| {name} | {wall * 1e3:.0f} | {wall / args.n * 1e6:.0f} | "
              f"{med(cpu[name][1:]) * 1e3:.0f} |")
    print(f"\n| figure | measured | target | |\n|---|---:|---|---|\n"
          f"| Dask backend, layered N={args.n:,}: ours / client.submit futures | "
          f"{got:.2f}× (CPU {cpu_ratio:.2f}×) | ≤ {TARGET}× | {verdict} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
