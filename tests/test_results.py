"""The DataFrame (SPEC §7), run statistics against hand-computed values, and compare()."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest
from engine_helpers import cancel_arun_after

import oktyv_nb as ok
from oktyv_nb.execution.records import STATUSES
from oktyv_nb.results.frame import to_dataframe
from oktyv_nb.results.stats import run_stats

perf = time.perf_counter
SLACK = 0.2  # seconds a sleeping task may overrun on a busy 2-core machine


async def asleep(seconds: float = 0.0, value: Any = None, fail: bool = False) -> Any:
    await asyncio.sleep(seconds)
    if fail:
        raise ValueError(f"failed after {seconds} s")
    return value


def tsleep(seconds: float = 0.0, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


class Boom(Exception):
    code = "BOOM_CODE"


def boom() -> None:
    raise Boom("it broke")


COLUMNS = [
    "tool", "level", "status", "attempts", "start", "end", "duration_s", "wait_s",
    "depends_on", "result", "error_code", "error_message", "worker",
]


@pytest.fixture(scope="module")
def mixed_run() -> ok.Run:
    dag = (
        ok.DAG("mixed", max_concurrent=4)
        .task("a", asleep, seconds=0.05, value={"rows": [1, 2]})
        .task("b", tsleep, seconds=0.05, value="${a.result.rows}")
        .task("c", boom, after="a")
        .task("d", asleep, value=1, after=["c", "b"])
        .task("e", asleep, seconds=0.01, value="E", after="c", trigger="all_done")
    )
    return dag.run(live=False)


def test_dataframe_columns_and_dtypes(mixed_run: ok.Run) -> None:
    df = mixed_run.df
    assert df.index.name == "task_id"
    assert list(df.index) == ["a", "b", "c", "d", "e"]
    assert list(df.columns[: len(COLUMNS)]) == COLUMNS
    assert isinstance(df["status"].dtype, pd.CategoricalDtype)
    assert list(df["status"].cat.categories) == list(STATUSES)
    for col in ("start", "end"):
        assert isinstance(df[col].dtype, pd.DatetimeTZDtype)
        assert str(df[col].dt.tz) == "UTC"
    assert df["duration_s"].dtype == np.float64
    assert df["wait_s"].dtype == np.float64
    assert df["attempts"].dtype == np.int64
    assert df["level"].tolist() == [0, 1, 1, 2, 2]


def test_dataframe_values(mixed_run: ok.Run) -> None:
    df = mixed_run.df
    assert df["status"].tolist() == ["success", "success", "failed", "skipped", "success"]
    assert df.loc["a", "result"] == {"rows": [1, 2]}
    assert df.loc["b", "result"] == [1, 2]
    assert df.loc["c", "result"] is None
    assert df.loc["c", "error_code"] == "BOOM_CODE"
    assert df.loc["c", "error_message"] == "it broke"
    assert df.loc["d", "error_code"] == "DEPENDENCY_FAILED"
    assert "c" in df.loc["d", "error_message"]
    assert pd.isna(df.loc["a", "error_code"])
    assert df["depends_on"].tolist() == [[], ["a"], ["a"], ["c", "b"], ["c"]]
    assert df.loc["a", "worker"] == "event-loop"
    assert df.loc["b", "worker"].startswith("oktyv") and df.loc["b", "worker"] != "event-loop"
    assert pd.isna(df.loc["d", "worker"])
    # durations: the sleeps, from first start to end
    assert 0.05 <= df.loc["a", "duration_s"] < 0.05 + SLACK
    assert 0.05 <= df.loc["b", "duration_s"] < 0.05 + SLACK
    # skipped: no attempt, no duration, start == end, no wait
    assert df.loc["d", "attempts"] == 0 and df.loc["d", "duration_s"] == 0.0
    assert df.loc["d", "start"] == df.loc["d", "end"]
    assert np.isnan(df.loc["d", "wait_s"])
    assert (df.loc[["a", "b", "c", "e"], "wait_s"] >= 0).all()
    assert (df.loc[["a", "b", "c", "e"], "wait_s"] < SLACK).all()
    # b starts when a ends (dependency-driven), as the timestamps say
    gap = (df.loc["b", "start"] - df.loc["a", "end"]).total_seconds()
    assert 0 <= gap < SLACK


def test_dataframe_agrees_with_the_json_result(mixed_run: ok.Run) -> None:
    df = mixed_run.df
    result = mixed_run.result
    for tid, t in result.tasks.items():
        assert abs((df.loc[tid, "start"] - pd.Timestamp(t.start_time)).total_seconds()) < 1e-5
        assert abs((df.loc[tid, "end"] - pd.Timestamp(t.end_time)).total_seconds()) < 1e-5
        assert df.loc[tid, "duration_s"] == pytest.approx(t.duration / 1000.0, abs=1e-9)
        assert df.loc[tid, "attempts"] == t.attempts
        assert df.loc[tid, "status"] == t.status
    now = pd.Timestamp.now(tz="UTC")
    assert (now - df["end"].max()).total_seconds() < 60  # real wall-clock times


def test_to_dataframe_is_a_copy(mixed_run: ok.Run) -> None:
    copy = mixed_run.to_dataframe()
    copy.loc["a", "attempts"] = 99
    assert mixed_run.df.loc["a", "attempts"] == 1


def test_retries_and_reuse_columns() -> None:
    state = {"n": 0}

    def flaky() -> str:
        state["n"] += 1
        if state["n"] < 3:
            raise ConnectionError("again")
        return "ok"

    dag = ok.DAG().task("f", flaky, retry=ok.RetryPolicy(3, "linear", 0.05)).task("g", tsleep)
    df = dag.run(live=False).df
    assert df.loc["f", "attempts"] == 3 and df.loc["f", "status"] == "success"
    assert df.loc["f", "duration_s"] >= 0.05 + 0.10  # two backoff waits inside the duration
    assert df["reused"].tolist() == [False, False]


def test_secrets_never_appear_in_the_dataframe() -> None:
    secret = "tok-9f8e7d6c"

    def leaky(credentials: dict[str, str]) -> dict[str, str]:
        return {"echo": f"key={credentials['token']}"}

    def leaks_in_error(credentials: dict[str, str]) -> None:
        raise RuntimeError(f"auth failed for {credentials['token']}")

    dag = (
        ok.DAG(vault={"api": {"token": secret}})
        .task("ok", leaky, vault="api")
        .task("bad", leaks_in_error, vault="api")
    )
    df = dag.run(live=False).df
    assert df.loc["ok", "result"] == {"echo": "key=***"}
    assert df.loc["bad", "error_message"] == "auth failed for ***"
    assert secret not in df.to_string()
    assert secret not in df.to_json(default_handler=str, date_format="iso")


def test_dataframe_of_10000_tasks_builds_well_under_a_second() -> None:
    async def noop(i: int) -> int:
        return i

    dag = ok.DAG("big", max_concurrent=64)
    for i in range(10_000):
        dag.task(f"t{i}", noop, i=i, after=f"t{i - 1 - i % 7}" if i > 7 else None)
    run = dag.run(live=False)
    assert run.status == "success"
    best = float("inf")
    for _ in range(3):
        t0 = perf()
        df = to_dataframe(run.outcome)
        best = min(best, perf() - t0)
    assert len(df) == 10_000 and df["result"].iloc[-1] == 9_999
    assert best < 1.0, f"{best:.3f} s"


# ---------------------------------------------------------------------- stats
# a(0.4) ─┐
#         ├─> c(0.3) ─┐
# b(0.2) ─┤           ├─> e(0.1)
#         └─> d(0.2) ─┘
# critical path a → c → e = 0.8 s; work = 1.2 s.
DURATIONS = {"a": 0.4, "b": 0.2, "c": 0.3, "d": 0.2, "e": 0.1}


def _diamond(max_concurrent: int) -> ok.DAG:
    return (
        ok.DAG("diamond", max_concurrent=max_concurrent)
        .task("a", "sleep", seconds=DURATIONS["a"])
        .task("b", "sleep", seconds=DURATIONS["b"])
        .task("c", "sleep", seconds=DURATIONS["c"], after=["a", "b"])
        .task("d", "sleep", seconds=DURATIONS["d"], after="b")
        .task("e", "sleep", seconds=DURATIONS["e"], after=["c", "d"])
    )


def test_stats_match_the_hand_computed_values() -> None:
    run = _diamond(4).run(live=False)
    st = run.stats
    work = sum(DURATIONS.values())  # 1.2
    assert st.critical_path == ["a", "c", "e"]
    assert 0.8 <= st.critical_path_s < 0.8 + SLACK
    assert work <= st.work_s < work + 2 * SLACK
    assert 0.8 <= st.makespan_s < 0.8 + SLACK
    assert st.lower_bound_s == pytest.approx(max(st.critical_path_s, st.work_s / 4))
    assert st.lower_bound_s == st.critical_path_s  # the path, not work / 4, bounds it
    assert 1.0 <= st.bound_ratio < 1.0 + SLACK
    assert st.speedup == pytest.approx(st.work_s / st.makespan_s)
    assert 1.5 * 0.8 < st.speedup <= 1.5 * 1.05  # ≈ 1.2 / 0.8
    assert st.efficiency == pytest.approx(st.speedup / 4)
    assert 1.2 < st.avg_parallelism <= 1.55
    assert (st.tasks, st.succeeded, st.failed, st.skipped) == (5, 5, 0, 0)
    # the same numbers from the DataFrame
    df = run.df
    assert st.work_s == pytest.approx(df["duration_s"].sum())
    assert st.critical_path_s == pytest.approx(df.loc[["a", "c", "e"], "duration_s"].sum())
    spans = [s for r in run.records.values() for s in r.spans]
    assert st.makespan_s == pytest.approx(
        max(s.end for s in spans) - min(s.start for s in spans))


def test_stats_with_one_slot_are_bounded_by_work() -> None:
    st = _diamond(1).run(live=False).stats
    assert 1.2 <= st.makespan_s < 1.2 + SLACK
    assert st.lower_bound_s == pytest.approx(st.work_s)  # work / 1 > critical path
    assert 0.85 < st.speedup <= 1.0 + 1e-9
    assert st.efficiency == pytest.approx(st.speedup)
    assert st.bound_ratio == pytest.approx(st.makespan_s / st.work_s)


def test_a_retry_backoff_is_not_work() -> None:
    # One slot: a task fails, waits 0.4 s of backoff holding no slot, then succeeds; another
    # task runs meanwhile. Counting the backoff as work reported a speedup above 1 and a
    # makespan below its own "lower bound".
    calls = []

    def flaky() -> str:
        calls.append(1)
        time.sleep(0.05)
        if len(calls) == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    dag = (ok.DAG(max_concurrent=1)
           .task("f", flaky, retry=ok.RetryPolicy(2, "linear", 0.4))
           .task("g", "sleep", seconds=0.2))
    run = dag.run(live=False)
    st = run.stats
    busy = sum(s.end - s.start for r in run.records.values() for s in r.spans)
    assert st.work_s == pytest.approx(busy)
    assert st.work_s < 0.2 + 2 * 0.05 + SLACK  # the 0.4 s backoff is not in it
    assert st.speedup <= 1.0 + 1e-9, st
    assert st.bound_ratio >= 1.0 - 1e-9, st


def test_stats_object() -> None:
    st = _diamond(4).run(live=False).stats
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.makespan_s = 0  # type: ignore[misc]
    d = st.to_dict()
    for key in ("makespan_s", "work_s", "speedup", "efficiency", "critical_path",
                "critical_path_s", "lower_bound_s", "bound_ratio", "avg_parallelism"):
        assert key in d
    assert d["critical_path"] == ["a", "c", "e"]
    html = st._repr_html_()
    assert "<table" in html and "a → c → e" in html and "makespan_s" in html
    text = str(st)
    assert "critical_path: a → c → e" in text and " s" in text
    assert repr(st).startswith("RunStats(makespan_s=")


def test_stats_of_an_empty_run() -> None:
    st = ok.DAG().run(live=False).stats
    assert st.makespan_s == 0.0 and st.work_s == 0.0 and st.critical_path == []
    assert np.isnan(st.speedup)


def test_compare_runs() -> None:
    # b -> c is slow behind a fast b: level-by-level waits for a, dependency-driven does not
    dag = (
        ok.DAG("teach", max_concurrent=4)
        .task("a", "sleep", seconds=0.6)
        .task("b", "sleep", seconds=0.05)
        .task("c", "sleep", seconds=0.4, after="b")
    )
    deps = dag.run(live=False)
    levels = dag.run(live=False, strategy="levels")
    df = ok.compare({"dependencies": deps, "levels": levels})
    assert list(df.index) == ["dependencies", "levels"]
    assert df.index.name == "run"
    assert df.loc["levels", "strategy"] == "levels"
    assert df.loc["dependencies", "backend"] == "asyncio"
    assert df.loc["dependencies", "critical_path"] == "a"  # 0.6 s > 0.05 + 0.4 s
    assert df.loc["levels", "makespan_s"] > df.loc["dependencies", "makespan_s"] + 0.25
    assert df.loc["levels", "bound_ratio"] > 1.4
    df2 = ok.compare([deps, levels], labels=["x", "y"])
    assert list(df2.index) == ["x", "y"]
    assert list(ok.compare([deps]).index) == ["run 0"]
    with pytest.raises(ValueError):
        ok.compare([])


def test_run_stats_reads_only_records() -> None:
    run = _diamond(8).run(live=False)
    again = run_stats(run.outcome)
    assert again == run.stats


def test_interrupted_run_has_a_dataframe_with_every_task() -> None:
    dag = ok.DAG().task("a", asleep, seconds=5).task("b", asleep, after="a")

    async def main() -> None:
        task = asyncio.create_task(dag.arun(live=False))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    df = dag.last_run.df  # type: ignore[union-attr]
    assert df["status"].tolist() == ["failed", "skipped"]
    assert df["error_code"].tolist() == ["CANCELLED", "CANCELLED"]
    assert 0.05 < df.loc["a", "duration_s"] < 1.0


def test_rolled_back_column() -> None:
    undone: list[Any] = []

    def undo(key: str) -> None:
        undone.append(key)

    dag = (
        ok.DAG(failure_mode="rollback", max_concurrent=1)
        .task("write", asleep, value={"key": "k1"},
              rollback=ok.Rollback(undo, key="${write.result.key}"))
        .task("plain", asleep, value=2, after="write")
        .task("fail", asleep, fail=True, after="plain")
    )
    df = dag.run(live=False).df
    assert undone == ["k1"]
    assert str(df["rolled_back"].dtype) == "boolean"
    assert df.loc["write", "rolled_back"] == True  # noqa: E712 - a pandas nullable boolean
    assert pd.isna(df.loc["plain", "rolled_back"]) and pd.isna(df.loc["fail", "rolled_back"])


def test_results_keep_the_types_the_tools_returned() -> None:
    def twelve() -> int:
        return 12

    def fails() -> int:
        raise RuntimeError("no")

    def pair() -> list[int]:
        return [1, 2]

    col = ok.DAG().task("a", twelve).task("b", fails).run(live=False).df["result"]
    assert col.dtype == object
    assert type(col["a"]) is int and col["a"] == 12 and col["b"] is None
    col = ok.DAG().task("c", pair).task("d", pair).run(live=False).df["result"]
    assert col.dtype == object and col["c"] == [1, 2]


def burn(n: int) -> int:
    """Pure-Python work: holds the GIL for its whole call."""
    total = 0
    for i in range(n):
        total += i
    return total


def _burn_n() -> int:
    """Loop iterations that take about 0.15 s of CPU here."""
    t0 = time.thread_time()
    burn(200_000)
    per = max(time.thread_time() - t0, 1e-4) / 200_000
    return int(0.15 / per)


def test_cpu_time_is_recorded_and_the_gil_is_named() -> None:
    n = _burn_n()
    dag = ok.DAG(max_concurrent=4)
    for i in range(4):
        dag.task(f"b{i}", burn, n=n)
    dag.task("nap", "sleep", seconds=0.05)
    dag.task("anap", asleep, seconds=0.05)
    run = dag.run(live=False, backend="threads")
    df = run.df
    assert (df.loc[[f"b{i}" for i in range(4)], "cpu_s"] > 0.05).all()
    assert df.loc["nap", "cpu_s"] < 0.02  # sleeping costs no CPU
    st = run.stats
    assert st.cpu_s == pytest.approx(df["cpu_s"].sum())
    # four GIL-bound threads overlap in time, but one core does the work
    assert st.speedup >= 1.5 and st.cpu_parallelism <= 1.2, st
    assert st.cpu_serialised and 'backend="processes"' in str(st)
    # an async tool on the engine's loop (asyncio backend) has no CPU figure of its own
    on_loop = ok.DAG().task("anap", asleep, seconds=0.01).run(live=False)
    assert np.isnan(on_loop.df.loc["anap", "cpu_s"]) and on_loop.stats.cpu_s is None
    assert not on_loop.stats.cpu_serialised and on_loop.stats.note is None


def test_cpu_time_comes_back_from_worker_processes() -> None:
    run = ok.DAG().task("b", burn, n=_burn_n()).run(live=False, backend="processes")
    assert run.df.loc["b", "cpu_s"] > 0.05
    assert run.records["b"].spans[0].cpu_s == run.records["b"].cpu_s


def test_run_attempts_has_one_row_per_attempt_with_its_own_error() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError(f"attempt {len(calls)} fails")
        return "ok"

    run = (ok.DAG()
           .task("f", flaky, retry=ok.RetryPolicy(3, "linear", 0.1))
           .task("g", "sleep", seconds=0.01)
           .task("h", boom, after="g")
           .task("s", "sleep", seconds=0.0, after="h")).run(live=False)
    at = run.attempts
    assert at["task_id"].tolist() == ["f", "f", "f", "g", "h"]  # s was skipped: no attempt
    f = at[at["task_id"] == "f"]
    assert f["attempt"].tolist() == [1, 2, 3]
    assert f["outcome"].tolist() == ["error", "error", "success"]
    assert f["error_message"].tolist()[:2] == ["attempt 1 fails", "attempt 2 fails"]
    assert pd.isna(f["error_code"].iloc[2]) and f["error_code"].iloc[0] == "ConnectionError"
    assert np.isnan(f["backoff_s"].iloc[0])
    # linear backoff from 0.1 s: 0.1 s, then 0.2 s, each at least that long
    assert 0.1 <= f["backoff_s"].iloc[1] < 0.1 + SLACK
    assert 0.2 <= f["backoff_s"].iloc[2] < 0.2 + SLACK
    assert (at["start_s"] >= 0).all() and (at["end_s"] >= at["start_s"]).all()
    assert at.loc[at["task_id"] == "h", "error_code"].tolist() == ["BOOM_CODE"]


def test_start_s_and_end_s_are_seconds_since_the_run_started(mixed_run: ok.Run) -> None:
    df = mixed_run.df
    t0 = mixed_run.outcome.perf_start
    recs = mixed_run.outcome.records
    for tid in df.index:
        rec = recs[tid]
        assert df.start_s[tid] == pytest.approx(rec.start - t0)
        assert df.end_s[tid] == pytest.approx(rec.end - t0)
    assert (df.end_s - df.start_s).to_numpy() == pytest.approx(df.duration_s.to_numpy())
    # the same clock as the timestamps and the attempts table
    elapsed = (df.start - df.start.min()).dt.total_seconds()
    assert elapsed.to_numpy() == pytest.approx((df.start_s - df.start_s.min()).to_numpy(),
                                               abs=1e-5)
    first = mixed_run.attempts.groupby("task_id").start_s.min()
    assert first["b"] == pytest.approx(df.start_s["b"])


def test_the_one_core_note_names_the_cause_for_the_backend() -> None:
    from oktyv_nb.results.stats import RunStats

    def stats(backend: str) -> RunStats:  # four tasks overlapped, one core's worth of CPU
        return RunStats(makespan_s=0.5, work_s=1.9, speedup=3.8, efficiency=0.95,
                        critical_path=["a"], critical_path_s=0.5, lower_bound_s=0.5,
                        bound_ratio=1.0, avg_parallelism=3.8, max_concurrent=4, tasks=4,
                        succeeded=4, failed=0, skipped=0, cpu_s=0.5, cpu_parallelism=1.0,
                        backend=backend)

    for name in ("threads", "asyncio"):
        assert stats(name).note is not None and "GIL" in stats(name).note
        assert 'backend="processes"' in stats(name).note
    for name in ("processes", "dask"):
        note = stats(name).note
        assert note is not None and "GIL" not in note and "did not get a core each" in note
    run = ok.DAG().task("a", asleep, seconds=0.01).run(live=False, backend="threads")
    assert run.stats.backend == "threads"


def test_a_result_made_while_releasing_the_graph_is_the_same_result() -> None:
    from oktyv_nb.execution.engine import RunConfig, run_graph
    from oktyv_nb.model.graph import prepare
    from oktyv_nb.results.result import to_result

    def boom() -> None:
        raise ValueError("no")

    request = {"tasks": [
        {"id": "a", "tool": "ok"}, {"id": "b", "tool": "boom", "dependsOn": ["a"]},
        {"id": "c", "tool": "ok", "dependsOn": ["a", "b"]}, {"id": "d", "tool": "ok"},
    ]}
    cfg, graph = prepare(request, {"ok": lambda: 1, "boom": boom}, keep_specs=False)
    outcome = asyncio.run(run_graph(graph, RunConfig.from_request(cfg)))
    kept = to_result(outcome).to_json()
    released = to_result(outcome, release_graph=True)
    assert released.to_json() == kept and not outcome.graph.nodes
    assert [(e.from_, e.to) for e in released.dag.edges] == [("a", "b"), ("a", "c"), ("b", "c")]
    # execute_request lets the graph go only when no subscriber could still read it
    seen: list[Any] = []
    ok.execute_request(request, {"ok": lambda: 1, "boom": boom},
                       on_event=lambda kind, rec, t: seen.append(rec))
    assert seen[-1].graph.nodes  # run_finished's outcome keeps its graph


def _interrupted_run() -> Any:
    """A run of three tasks cancelled 0.2 s in: one succeeded, two cut short."""

    async def slow() -> None:
        await asyncio.sleep(10)

    dag = ok.DAG("cut").task("a", lambda: 1).task("b", slow).task("c", slow, after="a")
    return cancel_arun_after(dag, 0.2)


def test_an_interrupted_runs_figures_say_they_are_partial() -> None:
    run = _interrupted_run()
    stats = run.stats
    assert stats.interrupted and stats.to_dict()["interrupted"] is True
    assert "interrupted" in (stats.note or "") and "only what ran" in str(stats)
    assert "(interrupted: what ran until then)" in run.graph().summary
    done = ok.DAG().task("a", lambda: 1).run(live=False).stats
    assert not done.interrupted and "interrupted" not in done.to_dict() and done.note is None


def test_an_interrupted_run_reports_no_speedup_as_if_complete() -> None:
    run = _interrupted_run()
    head = run._repr_html_().split("</p>")[0]
    assert "×" not in head and "only what ran" in head  # no speedup figure
    stats = run.stats
    page = stats._repr_html_()
    assert page.index("Note:") < page.index("<table")  # said before any figure
    assert re.search(r"<th[^>]*>speedup</th><td[^>]*>[^<]*× \(of what ran\)</td>", page)
    assert "makespan_s</th><td style='text-align:left'>" in page
    assert "(of what ran)" not in page.split("makespan_s</th>")[1].split("</tr>")[0]
    text = str(stats).splitlines()
    assert text[0].strip().startswith("note: the run was interrupted")
    assert any(line.strip().startswith("speedup:") and line.endswith("(of what ran)")
               for line in text)
    done = ok.DAG("whole").task("a", lambda: 1).run(live=False)
    assert re.search(r"speedup \d+\.\d\d×", done._repr_html_().split("</p>")[0])
    assert "(of what ran)" not in done.stats._repr_html_() + str(done.stats)
