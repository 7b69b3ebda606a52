"""SPEC §3/§6: failure modes, triggers, whole-run timeout, cancellation — and every task
ends with exactly one record whatever happens."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import Tracker, run, task

import oktyv_nb as ok
from oktyv_nb.execution.engine import Engine, RunConfig, RunOutcome, run_graph
from oktyv_nb.execution.events import Event, EventLog
from oktyv_nb.model.graph import prepare
from oktyv_nb.model.schema import ExecutionResult

perf = time.perf_counter


def check_records(result: ExecutionResult, ids: list[str]) -> None:
    """One entry per task; summary and status per SPEC §3; skipped entries well formed."""
    assert list(result.tasks) == ids
    n = Counter(t.status for t in result.tasks.values())
    assert result.summary.model_dump() == {"total": len(ids), "succeeded": n["success"],
                                           "failed": n["failed"], "skipped": n["skipped"]}
    want = "success" if not n["failed"] else ("partial" if n["success"] else "failure")
    assert result.status == want
    for t in result.tasks.values():
        assert t.start_time <= t.end_time
        if t.status == "skipped":
            assert t.attempts == 0 and t.duration == 0 and t.start_time == t.end_time
            assert t.error is not None and t.result is None
        elif t.status == "failed":
            assert t.error is not None and t.result is None
        else:
            assert t.error is None and t.attempts >= 1


class Events(EventLog):
    """A subscriber counting ``task_finished`` per task."""

    @property
    def events(self) -> list[Event]:
        return self

    def finished(self) -> Counter[str]:
        return Counter(e.task_id for e in self if e.kind == "task_finished")


# ------------------------------------------------------------------ continue


def test_continue_skips_downstream_and_runs_independent_branches(tracker: Tracker) -> None:
    tasks = [task("A", params={"fail": True}), task("B", dependsOn=["A"]),
             task("C", dependsOn=["B"]), task("D", dependsOn=["C", "X"]),
             task("X", params={"seconds": 0.05, "value": 1}), task("Y", dependsOn=["X"])]
    events = Events()
    result = ok.execute_request({"tasks": tasks}, tracker.tools, on_event=events)
    check_records(result, ["A", "B", "C", "D", "X", "Y"])
    assert set(events.finished().values()) == {1} and len(events.finished()) == 6
    r = result.tasks
    assert r["A"].status == "failed" and r["A"].error.code == "ValueError"
    assert r["B"].error.code == "DEPENDENCY_FAILED"
    assert r["B"].error.message == "Skipped: dependency A failed"
    assert r["C"].error.message == "Skipped: dependency B was skipped because A failed"
    assert r["D"].error.message == "Skipped: dependency C was skipped because A failed"
    assert (r["X"].status, r["Y"].status) == ("success", "success")
    assert result.status == "partial"
    assert sorted(tracker.order) == ["A", "X", "Y"]


def test_all_failed_is_failure_and_all_good_is_success(tracker: Tracker) -> None:
    bad = run([task("A", params={"fail": True}), task("B", params={"fail": True}),
               task("C", dependsOn=["A"])], tracker.tools)
    check_records(bad, ["A", "B", "C"])
    assert bad.status == "failure"
    good = run([task("A"), task("B", dependsOn=["A"])], tracker.tools)
    assert good.status == "success" and good.summary.succeeded == 2


# ------------------------------------------------------------------ stop


def test_stop_mode(tracker: Tracker) -> None:
    tasks = [task("F", params={"seconds": 0.02, "fail": True}, priority=9),
             task("R", params={"seconds": 0.3, "value": "r"}, priority=8),
             task("P1", params={"value": 1}), task("P2", params={"value": 2}),
             task("child", dependsOn=["F"]), task("after_r", dependsOn=["R"])]
    result = run(tasks, tracker.tools, maxConcurrent=2, failureMode="stop")
    check_records(result, [t["id"] for t in tasks])
    r = result.tasks
    assert r["F"].status == "failed"
    assert r["R"].status == "success" and r["R"].result == "r"  # running ones finish
    assert r["child"].error.code == "DEPENDENCY_FAILED"
    for tid in ("P1", "P2", "after_r"):
        assert r[tid].status == "skipped" and r[tid].error.code == "RUN_STOPPED", tid
    assert sorted(tracker.order) == ["F", "R"]  # nothing new started
    assert result.status == "partial"


def test_stop_mode_fails_tasks_waiting_to_retry(tracker: Tracker) -> None:
    calls: list[float] = []

    def flaky() -> None:
        calls.append(perf())
        raise ConnectionError("try later")

    tasks = [{"id": "W", "tool": "flaky", "priority": 10,
              "retryPolicy": {"maxAttempts": 3, "initialDelay": 5000}},
             task("F", params={"seconds": 0.1, "fail": True})]
    t0 = perf()
    result = run(tasks, {**tracker.tools, "flaky": flaky}, failureMode="stop")
    assert perf() - t0 < 2.0  # the 5 s backoff was not waited out
    w = result.tasks["W"]
    assert (w.status, w.attempts, w.error.code) == ("failed", 1, "ConnectionError")
    assert len(calls) == 1
    check_records(result, ["W", "F"])


def test_stop_with_many_tasks_waiting_to_retry(tracker: Tracker) -> None:
    async def flaky() -> None:
        raise ConnectionError("try later")

    n = 1500  # more than the recursion limit allows frames for, if dropped recursively
    tasks = [{"id": f"r{i}", "tool": "flaky", "priority": 10,
              "retryPolicy": {"maxAttempts": 2, "initialDelay": 5000}} for i in range(n)]
    tasks.append(task("F", params={"seconds": 0.2, "fail": True}))
    result = run(tasks, {**tracker.tools, "flaky": flaky}, maxConcurrent=n + 1,
                 failureMode="stop")
    assert result.summary.failed == n + 1
    assert {t.attempts for t in result.tasks.values()} == {1}


# ------------------------------------------------------------------ rollback


class Undo:
    """A real compensating action: deletes the file a task wrote, recording the order."""

    def __init__(self) -> None:
        self.order: list[str] = []

    def __call__(self, path: str, task: str) -> None:
        self.order.append(task)
        Path(path).unlink()


def test_rollback_in_reverse_completion_order(tmp_path: Path) -> None:
    undo = Undo()

    def broken_undo(path: str) -> None:
        raise OSError(f"cannot undo {Path(path).name}")

    def fail(**_: Any) -> None:
        raise RuntimeError("step 3 broke")

    def wrote(n: int) -> dict[str, Any]:
        return {"path": str(tmp_path / f"f{n}.txt")}

    tasks = [
        # slow, so it completes after w2 although it was inserted first
        {"id": "w1", "tool": "sleep", "params": {"seconds": 0.2, "value": "x"}},
        {"id": "w1f", "tool": "file_write", "dependsOn": ["w1"],
         "params": {"path": str(tmp_path / "f1.txt"), "content": "one"},
         "rollback": {"tool": "undo", "params": {"path": "${w1f.result.path}", "task": "w1f"}}},
        {"id": "w2f", "tool": "file_write",
         "params": {"path": str(tmp_path / "f2.txt"), "content": "two"},
         "rollback": {"tool": "undo", "params": {"path": "${w2f.result.path}", "task": "w2f"}}},
        {"id": "w3f", "tool": "file_write", "dependsOn": ["w2f"],
         "params": {"path": str(tmp_path / "f3.txt"), "content": "three"},
         "rollback": {"tool": "broken_undo", "params": {"path": "${w3f.result.path}"}}},
        {"id": "bad", "tool": "fail", "dependsOn": ["w1f", "w3f"]},
        {"id": "never", "tool": "sleep", "dependsOn": ["bad"], "params": {"seconds": 0}},
    ]
    tools = {"undo": undo, "broken_undo": broken_undo, "fail": fail, "wrote": wrote}
    result = ok.execute_request({"tasks": tasks, "config": {"enableRollback": True}}, tools)
    check_records(result, [t["id"] for t in tasks])
    r = result.tasks
    assert r["bad"].status == "failed" and r["never"].status == "skipped"
    # completion order was w2f, w3f, w1, w1f: compensation runs w1f, then w3f, then w2f
    assert undo.order == ["w1f", "w2f"]
    assert r["w1f"].rolled_back is True and r["w2f"].rolled_back is True
    assert r["w3f"].rolled_back is False
    assert r["w3f"].rollback_error.code == "OSError"
    assert r["w3f"].rollback_error.message == "cannot undo f3.txt"
    assert r["w1"].rolled_back is None  # no rollback declared
    assert not (tmp_path / "f1.txt").exists() and not (tmp_path / "f2.txt").exists()
    assert (tmp_path / "f3.txt").read_text() == "three"
    assert result.tasks["w1f"].status == "success"  # compensated, still a success
    out = result.model_dump(by_alias=True, mode="json", exclude_none=True)["tasks"]
    assert out["w1f"]["rolledBack"] is True and "rollbackError" in out["w3f"]


def test_rollback_order_follows_completion_not_insertion(tracker: Tracker) -> None:
    order: list[str] = []

    async def compensate(name: str) -> None:
        order.append(name)

    tasks = [
        task("slow", params={"seconds": 0.25},
             rollback={"tool": "compensate", "params": {"name": "slow"}}),
        task("mid", params={"seconds": 0.12},
             rollback={"tool": "compensate", "params": {"name": "mid"}}),
        task("fast", params={"seconds": 0.01},
             rollback={"tool": "compensate", "params": {"name": "fast"}}),
        task("bad", dependsOn=["slow", "mid", "fast"], params={"fail": True}),
    ]
    result = run(tasks, {**tracker.tools, "compensate": compensate}, failureMode="rollback")
    assert order == ["slow", "mid", "fast"]
    assert all(result.tasks[t].rolled_back for t in ("slow", "mid", "fast"))


def test_rollback_only_after_a_failure(tracker: Tracker) -> None:
    order: list[str] = []
    tasks = [task("A", rollback={"tool": "comp", "params": {}})]
    result = run(tasks, {**tracker.tools, "comp": lambda: order.append("A")},
                 failureMode="rollback")
    assert result.status == "success" and order == [] and result.tasks["A"].rolled_back is None


def test_rollback_mode_stops_like_stop(tracker: Tracker) -> None:
    tasks = [task("F", params={"fail": True}, priority=10), task("later", priority=1)]
    result = run(tasks, tracker.tools, maxConcurrent=1, failureMode="rollback")
    assert result.tasks["later"].error.code == "RUN_STOPPED"


# ------------------------------------------------------------------ triggers


def test_all_done_trigger(tracker: Tracker) -> None:
    seen: dict[str, Any] = {}

    def report(**kwargs: Any) -> str:
        seen.update(kwargs)
        return "reported"

    tasks = [
        task("A", params={"fail": True}),
        task("B", dependsOn=["A"]),
        task("ok", params={"value": 5}),
        {"id": "cleanup", "tool": "report", "runIf": "all_done", "dependsOn": ["ok"],
         "params": {"status": "${A.status}", "message": "${A.error.message}",
                    "code": "${A.error.code}", "b": "${B.status}", "b_code": "${B.error.code}",
                    "ok": "${ok.result}", "line": "A was ${A.status}: ${A.error.message}"}},
        {"id": "peek", "tool": "report", "runIf": "all_done", "params": {"r": "${A.result}"}},
        {"id": "after_cleanup", "tool": "report", "dependsOn": ["cleanup"]},
    ]
    result = run(tasks, {**tracker.tools, "report": report})
    check_records(result, [t["id"] for t in tasks])
    r = result.tasks
    assert r["cleanup"].status == "success" and r["after_cleanup"].status == "success"
    assert seen["status"] == "failed" and seen["message"] == "A failed on purpose"
    assert seen["code"] == "ValueError" and seen["ok"] == 5
    assert seen["b"] == "skipped" and seen["b_code"] == "DEPENDENCY_FAILED"
    assert seen["line"] == "A was failed: A failed on purpose"
    assert r["cleanup"].start_time >= r["B"].end_time
    peek = r["peek"]
    assert peek.status == "failed" and peek.error.code == "VARIABLE_RESOLUTION_ERROR"
    assert "A" in peek.error.message and "status" in peek.error.message
    assert peek.attempts == 1


# ------------------------------------------------------------------ whole-run timeout


def test_whole_run_timeout(tracker: Tracker) -> None:
    cancelled: list[str] = []
    release = threading.Event()

    async def hang() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append("hang")
            raise

    def block() -> None:
        release.wait(10)

    def flaky() -> None:
        raise ConnectionError("later")

    tasks = [
        {"id": "hang", "tool": "hang", "priority": 10},
        {"id": "block", "tool": "block", "priority": 10},
        {"id": "retry", "tool": "flaky", "priority": 10,
         "retryPolicy": {"maxAttempts": 3, "initialDelay": 10_000}},
        {"id": "hang2", "tool": "hang", "priority": 9},  # takes the slot retry gave up
        task("pending", priority=1),
        task("child", dependsOn=["hang"]),
    ]
    events = Events()
    t0 = perf()
    try:
        result = ok.execute_request(
            {"tasks": tasks, "config": {"timeout": 300, "maxConcurrent": 3}},
            {**tracker.tools, "hang": hang, "block": block, "flaky": flaky}, on_event=events,
        )
    finally:
        release.set()
    took = perf() - t0
    assert 0.28 <= took < 2.0
    check_records(result, [t["id"] for t in tasks])
    assert len(events.finished()) == 6 and set(events.finished().values()) == {1}
    r = result.tasks
    for tid in ("hang", "hang2", "block", "retry"):
        assert r[tid].status == "failed" and r[tid].error.code == "EXECUTION_TIMEOUT", tid
    assert r["retry"].attempts == 1
    for tid in ("pending", "child"):
        assert r[tid].status == "skipped" and r[tid].error.code == "EXECUTION_TIMEOUT", tid
    assert sorted(cancelled) == ["hang", "hang"]
    assert tracker.order == []
    assert result.status == "failure"


# ------------------------------------------------------------------ cancellation


def _cancel_tasks(tracker: Tracker, cancelled: list[str]) -> tuple[list[dict[str, Any]], Any]:
    async def hang(name: str) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    def flaky() -> None:
        raise ConnectionError("later")

    tasks = [
        task("done", params={"value": 1}, priority=10),
        {"id": "h1", "tool": "hang", "params": {"name": "h1"}, "dependsOn": ["done"]},
        {"id": "h2", "tool": "hang", "params": {"name": "h2"}},
        {"id": "retry", "tool": "flaky", "retryPolicy": {"maxAttempts": 2,
                                                        "initialDelay": 10_000}},
        {"id": "h3", "tool": "hang", "params": {"name": "h3"}},  # takes retry's slot
        task("queued", priority=1),
        task("child", dependsOn=["h1"]),
    ]
    return tasks, {**tracker.tools, "hang": hang, "flaky": flaky}


def test_cancelling_engine_run(tracker: Tracker) -> None:
    cancelled: list[str] = []
    tasks, tools = _cancel_tasks(tracker, cancelled)
    _, graph = prepare({"tasks": tasks}, tools)
    engine = Engine(graph, RunConfig(max_concurrent=3))

    async def main() -> None:
        job = asyncio.create_task(engine.run())
        await asyncio.sleep(0.2)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job

    asyncio.run(main())
    out = engine.outcome
    assert out is not None and out.interrupted and out.perf_end is not None
    recs = out.records
    assert recs["done"].status == "success" and recs["done"].result == 1
    for tid in ("h1", "h2", "h3"):
        assert recs[tid].status == "failed" and recs[tid].error.code == "CANCELLED", tid
        assert recs[tid].spans[-1].outcome == "cancelled"
    assert recs["retry"].status == "failed" and recs["retry"].error.code == "CANCELLED"
    for tid in ("queued", "child"):
        assert recs[tid].status == "skipped" and recs[tid].error.code == "CANCELLED", tid
        assert recs[tid].attempts == 0 and recs[tid].start == recs[tid].end
    assert sorted(cancelled) == ["h1", "h2", "h3"]
    assert engine.nfinished == len(tasks)


def test_cancelling_aexecute_request(tracker: Tracker) -> None:
    cancelled: list[str] = []
    tasks, tools = _cancel_tasks(tracker, cancelled)
    events = Events()

    async def main() -> None:
        job = asyncio.create_task(ok.aexecute_request(
            {"tasks": tasks, "config": {"maxConcurrent": 3}}, tools, on_event=events))
        await asyncio.sleep(0.2)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job

    asyncio.run(main())
    finished = events.finished()
    assert sorted(finished) == sorted(t["id"] for t in tasks)
    assert set(finished.values()) == {1}
    records = {e.task_id: e.record for e in events.events if e.kind == "task_finished"}
    assert records["h1"].error.code == "CANCELLED" and records["queued"].status == "skipped"
    assert events.events[-1].kind == "run_finished"
    assert sorted(cancelled) == ["h1", "h2", "h3"]


def test_interrupt_is_idempotent_and_noop_after_the_run(tracker: Tracker) -> None:
    _, graph = prepare({"tasks": [task("A")]}, tracker.tools)
    engine = Engine(graph)
    out: RunOutcome = asyncio.run(engine.run())
    engine.interrupt()
    assert out.records["A"].status == "success" and not out.interrupted
    with pytest.raises(RuntimeError, match="once"):
        asyncio.run(engine.run())


def test_interrupt_before_anything_finishes(tracker: Tracker) -> None:
    tasks = [task("A", params={"seconds": 5}), task("B", dependsOn=["A"])]
    _, graph = prepare({"tasks": tasks}, tracker.tools)
    holder: list[Engine] = []

    async def main() -> RunOutcome:
        job = asyncio.create_task(
            run_graph(graph, RunConfig(), started=holder.append))
        await asyncio.sleep(0.05)
        holder[0].interrupt()  # e.g. from a stop button: no cancellation of the caller
        return await job

    t0 = perf()
    out = asyncio.run(main())
    assert perf() - t0 < 2.0
    assert out.records["A"].error.code == "CANCELLED" and out.records["A"].status == "failed"
    assert out.records["B"].error.code == "CANCELLED" and out.records["B"].status == "skipped"
    assert out.interrupted


def test_keyboard_interrupt_in_a_tool(tracker: Tracker) -> None:
    async def stop_button() -> None:
        await asyncio.sleep(0.05)
        raise KeyboardInterrupt

    tasks = [{"id": "k", "tool": "stop"}, task("long", params={"seconds": 5}),
             task("child", dependsOn=["long"])]
    _, graph = prepare({"tasks": tasks}, {**tracker.tools, "stop": stop_button})
    engine = Engine(graph)
    t0 = perf()
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(engine.run())
    assert perf() - t0 < 2.0
    out = engine.outcome
    assert out is not None and out.interrupted
    recs = out.records
    assert [recs[t].status for t in ("k", "long", "child")] == ["failed", "failed", "skipped"]
    assert {r.error.code for r in recs.values()} == {"CANCELLED"}
    assert engine.nfinished == 3
