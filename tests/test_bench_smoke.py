"""Smoke test of the benchmark suite: it runs in --quick mode and produces the table.

Speed is not asserted here (the figures live in bench/RESULTS.md); only that every workload
runs, every target gets a verdict, and the workloads have the shapes the report claims.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import interleaved, ratio  # noqa: E402
from bench.workloads import chain, independent, layered, lower_bound, sleep_dag  # noqa: E402

TARGET_ROWS = [
    "W1 async, layered N=1,000: ours / floor",
    "W1 sync, layered N=1,000: ours / run_in_executor floor",
    "W1 sync, layered N=1,000: ours / Dask threaded",
    "W2 makespan / lower bound (ours)",
    "W2 makespan ours / levels",
    "W3 peak memory per task (N=1,000)",
    "execute_request peak memory per task (N=1,000)",
    "validation of 100 tasks",
    "validation of 10,000 tasks",
    "DataFrame of 1,000 rows",
    "event stream: no-op subscriber overhead (whole run)",
    "live view overhead (whole run)",
    "async, layered N=1,000: ours / best floor",
    "growth: µs/task at 10,000 / at 1,000",
    "builder DAG.task × N then run(), N=1,000: peak per task",
    "run.graph() of a 1,000-task run / that run's time",
    "mapped task of 1,000 children / 1,000 tasks",
    "Dask backend, layered N=200: ours / client.submit futures",
]


@pytest.mark.timeout(600)
def test_quick_suite_runs_and_writes_the_table(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    assert text == proc.stdout.rstrip("\n") + "\n"
    assert "**Quick mode**" in text and "3 runs per figure" in text
    assert "## Errors" not in text
    assert "## Scale: the best floor, growth, builder memory, the graph picture" in text
    assert "## Dask backend: layered N=200" in text
    assert "The cluster the backend starts by itself for maxConcurrent 10:" in text
    for key in ("date", "CPU", "Python", "packages"):
        assert f"- {key}: " in text
    rows = {}
    for line in text.splitlines():
        m = re.fullmatch(r"\| (.+?) \| (.+?) \| (.+?) \| (PASS|FAIL|n/a) \|", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(4))
    assert list(rows) == TARGET_ROWS
    for name, (figure, verdict) in rows.items():
        assert verdict in ("PASS", "FAIL") and figure != "not measured", name
    # The W1 grid: 2 tool kinds x 3 shapes x 2 sizes, with Dask on the sync rows only.
    grid = [ln for ln in text.splitlines() if re.match(r"\| (async|sync) \| ", ln)]
    assert len(grid) == 12
    assert all(("— | —" in ln) == ln.startswith("| async") for ln in grid)


def test_script_entry_point(tmp_path: Path) -> None:
    out = tmp_path / "r.md"
    proc = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--only", "dataframe", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| DataFrame of 1,000 rows |" in out.read_text(encoding="utf-8")


def test_full_mode_refuses_fewer_than_five_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--repeats", "3", "--only", "dataframe"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0 and "at least 5" in proc.stderr


def _levels(deps: dict[str, tuple[str, ...]]) -> dict[str, int]:
    lv: dict[str, int] = {}
    for tid, ds in deps.items():
        lv[tid] = 1 + max((lv[d] for d in ds), default=-1)
    return lv


def test_shapes() -> None:
    assert independent(5) == {f"t{i}": () for i in range(5)}
    assert chain(3) == {"t0": (), "t1": ("t0",), "t2": ("t1",)}
    deps = layered(1000)
    assert deps == layered(1000)  # fixed seed
    lv = _levels(deps)
    assert max(lv.values()) == 19
    assert sorted(lv.values()).count(0) == 50
    for tid, ds in deps.items():
        if lv[tid]:
            assert 1 <= len(ds) <= 3 and len(set(ds)) == len(ds)
            assert all(lv[d] == lv[tid] - 1 for d in ds)


def test_sleep_dag_and_bound() -> None:
    dag = sleep_dag()
    assert len(dag.deps) == 50 and max(_levels(dag.deps).values()) == 5
    assert all(0.010 <= s <= 0.100 for s in dag.seconds.values())
    assert lower_bound(dag, 10) == max(dag.critical_path(), dag.work / 10)
    assert lower_bound(dag, 1) == pytest.approx(dag.work)


def test_interleaving_rotates_and_ratio_pairs_rounds() -> None:
    order: list[str] = []
    peers = {name: (lambda name=name: order.append(name)) for name in "abc"}
    times = interleaved(peers, 3)
    assert order == list("abc") + list("abc") + list("bca") + list("cab")  # warm-ups first
    assert all(len(v) == 3 for v in times.values())
    assert ratio({"x": [2.0, 4.0, 9.0], "y": [1.0, 1.0, 3.0]}, "x", "y") == 3.0


def test_store_bench_runs_and_reports_both_targets() -> None:
    proc = subprocess.run(
        [sys.executable, "bench/store.py", "--quick", "--noop", "200", "--sleep-tasks", "20"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "| no-op tasks, N=200: journaling per task |" in out
    assert "| 20 tasks of 10 ms: journaling cost |" in out
    assert "Cheaper writer on no-op tasks" in out


def test_map_expansion_bench_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.maps import main

    assert main(["--quick", "-n", "200", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\| ([\d,]+) \| [\d.]+ \| [\d.]+ \| ([\d.]+)× \| ≤ 1.5× \| (PASS|FAIL) \|$",
                      out, re.M)
    assert [r[0] for r in rows] == ["20", "200"]
    assert "Growth, µs a child" in out


def test_best_floor_runs_every_task_after_its_dependencies() -> None:
    import asyncio

    from bench.peers import best_floor_run

    deps = layered(300)
    done: list[str] = []

    async def call(tid: str) -> str:
        assert all(d in done for d in deps[tid])
        await asyncio.sleep(0)
        done.append(tid)
        return tid

    results = asyncio.run(best_floor_run(deps, call, 10))
    assert results == {tid: tid for tid in deps} and sorted(done) == sorted(deps)
    assert asyncio.run(best_floor_run({}, call, 10)) == {}
