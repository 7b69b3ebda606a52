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

``python -m bench`` runs it as its ``dask`` step (:func:`measure`); it needs ``distributed``.
Times are milliseconds (ms) in the report, seconds internally.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class DaskFigures:
    """What :func:`measure` found: wall and process-CPU seconds per round of each peer."""

    n: int
    rounds: int
    times: dict[str, list[float]]
    cpu: dict[str, list[float]]
    cluster: str  # the shared cluster's shape
    own_cluster: str  # the LocalCluster the backend would start by itself for the run

    @property
    def ratio(self) -> float:
        """ours / futures: the median of per-round wall-time ratios."""
        return ratio(self.times, "ours", "futures")

    @property
    def cpu_ratio(self) -> float:
        return med([a / b for a, b in zip(self.cpu["ours"][1:], self.cpu["futures"][1:],
                                          strict=True)])

    def table(self) -> str:
        """The per-peer table (markdown)."""
        rows = ["| peer | wall ms | µs/task | CPU ms |", "|---|---:|---:|---:|"]
        for name in ("ours", "futures"):
            wall = med(self.times[name])
            rows.append(f"| {name} | {wall * 1e3:.0f} | {wall / self.n * 1e6:.0f} | "
                        f"{med(self.cpu[name][1:]) * 1e3:.0f} |")
        return "\n".join(rows)


def measure(n: int, rounds: int) -> DaskFigures:
    """Interleaved rounds of both peers on a shared in-process cluster; raises ImportError
    without ``distributed``."""
    from distributed import Client, LocalCluster

    from oktyv_nb.execution.backends import DaskBackend

    deps = layered(n)
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
    own = DaskBackend()
    own.size_for(MAX_CONCURRENT)
    opts = own.cluster_options()
    return DaskFigures(
        n, rounds, times, cpu,
        f"LocalCluster(processes=False, 1 worker x {MAX_CONCURRENT} threads)",
        f"{opts.get('n_workers')} worker(s) x {opts.get('threads_per_worker')} threads "
        f"({'processes' if opts.get('processes', True) else 'threads'})",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dask_backend",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 5")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5; quick 3)")
    parser.add_argument("--n", type=int, default=1000, help="tasks in the layered DAG")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 5)
    load0 = os.getloadavg()[0]
    try:
        fig = measure(args.n, rounds)
    except ImportError:
        print("distributed is not installed: pip install 'oktyv_nb[dask]'", file=sys.stderr)
        return 1
    load1 = os.getloadavg()[0]
    got = fig.ratio
    verdict = "PASS" if got <= TARGET else "FAIL"
    print(f"# Dask backend: layered N={args.n:,}, maxConcurrent {MAX_CONCURRENT}, "
          f"{fig.cluster}\n")
    print(f"{rounds} rounds{' (quick)' if args.quick else ''}, {os.cpu_count()} cores, "
          f"load average {load0:.1f} -> {load1:.1f}\n")
    print(fig.table())
    print(f"\n| figure | measured | target | |\n|---|---:|---|---|\n"
          f"| Dask backend, layered N={args.n:,}: ours / client.submit futures | "
          f"{got:.2f}× (CPU {fig.cpu_ratio:.2f}×) | ≤ {TARGET}× | {verdict} |")
    print(f"\nThe cluster the backend starts by itself for maxConcurrent {MAX_CONCURRENT}: "
          f"{fig.own_cluster}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
