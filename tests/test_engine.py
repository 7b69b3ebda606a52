"""SPEC §6 scheduling: concurrency, dependency-driven starts, priorities, retries, timeouts,
error records, events, and the original design's diamond on built-in tools."""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import Tracker, run, task

import oktyv_nb as ok
from oktyv_nb.execution.engine import Engine, RunConfig, RunOutcome, run_graph
from oktyv_nb.execution.events import Event, EventBus, EventKind, EventLog
from oktyv_nb.execution.records import TaskRecord, error_from_exception
from oktyv_nb.model.graph import RetryPolicy, prepare

perf = time.perf_counter


def outcome_of(tasks: list[dict[str, Any]], tools: Any, **config: Any) -> RunOutcome:
    """Run via the engine itself, to read records, spans and the event stream."""
    subscribers = config.pop("subscribers", None)
    _, graph = prepare({"tasks": tasks}, tools)
    return asyncio.run(run_graph(graph, RunConfig(**config), subscribers=subscribers))


# ------------------------------------------------------------------ concurrency


@pytest.mark.parametrize("tool", ["asleep", "tsleep"])
def test_concurrency_is_bounded(tracker: Tracker, tool: str) -> None:
    tasks = [task(f"t{i}", tool, params={"seconds": 0.04}) for i in range(12)]
    result = run(tasks, tracker.tools, maxConcurrent=3)
    assert result.summary.succeeded == 12
    assert tracker.peak == 3
    assert result.duration >= 4 * 40 * 0.9  # 12 tasks / 3 slots x 40 ms


def test_sync_tools_run_in_threads_beside_async_ones(tracker: Tracker) -> None:
    tasks = [task("s", "tsleep", params={"seconds": 0.3}),
             task("a", "asleep", params={"seconds": 0.3})]
    out = outcome_of(tasks, tracker.tools, max_concurrent=2)
    s, a = out.records["s"], out.records["a"]
    assert s.worker != "event-loop" and a.worker == "event-loop"
    assert s.start < a.end and a.start < s.end  # overlapping spans
    assert out.perf_end - out.perf_start < 0.55


def test_async_callables_of_any_shape_run_on_the_loop() -> None:
    class Caller:
        async def __call__(self, x: int) -> int:
            await asyncio.sleep(0)
            return x + 1

    async def add(x: int, y: int) -> int:
        return x + y

    tools = {"obj": Caller(), "part": functools.partial(add, y=10)}
    out = outcome_of([{"id": "o", "tool": "obj", "params": {"x": 1}},
                      {"id": "p", "tool": "part", "params": {"x": 1}}], tools)
    assert (out.records["o"].result, out.records["p"].result) == (2, 11)
    assert out.records["o"].worker == out.records["p"].worker == "event-loop"


def test_dependency_driven_start(tracker: Tracker) -> None:
    # A is slow; B -> C is an independent chain that must not wait for A.
    tasks = [task("A", params={"seconds": 0.5}), task("B", params={"seconds": 0.02}),
             task("C", dependsOn=["B"], params={"seconds": 0.02})]
    result = run(tasks, tracker.tools)
    assert result.dag.levels == [["A", "B"], ["C"]]
    assert tracker.start("C") < tracker.end("A") - 0.2
    assert tracker.start("C") - tracker.end("B") < 0.2


def test_levels_strategy_waits_for_whole_levels(tracker: Tracker) -> None:
    tasks = [task("A", params={"seconds": 0.3}), task("B", params={"seconds": 0.01}),
             task("C", dependsOn=["B"], params={"seconds": 0.01}),
             task("D", dependsOn=["C"], params={"seconds": 0.01})]
    out = outcome_of(tasks, tracker.tools, strategy="levels")
    assert all(r.status == "success" for r in out.records.values())
    assert tracker.start("C") >= tracker.end("A")
    assert tracker.start("D") >= tracker.end("C")
    # the default strategy does not wait for A
    t2 = Tracker()
    outcome_of(tasks, t2.tools)
    assert t2.start("C") < t2.end("A")


def test_levels_strategy_with_failures_still_finishes(tracker: Tracker) -> None:
    tasks = [task("A", params={"fail": True}), task("B", params={"seconds": 0.05}),
             task("C", dependsOn=["A"]), task("D", dependsOn=["B"]),
             task("E", dependsOn=["C", "D"], runIf="all_done")]
    out = outcome_of(tasks, tracker.tools, strategy="levels")
    assert {k: r.status for k, r in out.records.items()} == {
        "A": "failed", "B": "success", "C": "skipped", "D": "success", "E": "success"}


# ------------------------------------------------------------------ priorities


def test_priority_order_with_one_slot(tracker: Tracker) -> None:
    tasks = [task("p3", priority=3), task("p9", priority=9), task("unset"),
             task("p5", priority=5), task("p10", priority=10), task("p1", priority=1)]
    run(tasks, tracker.tools, maxConcurrent=1)
    assert tracker.order == ["p10", "p9", "unset", "p5", "p3", "p1"]


def test_ties_go_to_the_longest_chain_then_insertion_order(tracker: Tracker) -> None:
    tasks = [
        task("x"),                           # nothing behind it
        task("y"),                           # y -> y1 -> y2
        task("z"),                           # z -> z1
        task("w"),                           # nothing behind it
        task("y1", dependsOn=["y"], priority=1),
        task("y2", dependsOn=["y1"], priority=1),
        task("z1", dependsOn=["z"], priority=1),
    ]
    run(tasks, tracker.tools, maxConcurrent=1)
    assert tracker.order[:4] == ["y", "z", "x", "w"]
    # y1 (two tasks behind it) before z1; then y2 and z1 tie on chain: insertion order
    assert tracker.order[4:] == ["y1", "y2", "z1"]


def test_ready_task_with_higher_priority_starts_first(tracker: Tracker) -> None:
    tasks = [task("first", priority=10), task("low1", priority=2), task("low2", priority=2),
             task("urgent", dependsOn=["first"], priority=9)]
    run(tasks, tracker.tools, maxConcurrent=1)
    assert tracker.order == ["first", "urgent", "low1", "low2"]


# ------------------------------------------------------------------ retries


class Flaky:
    """Fails its first ``failures`` calls, recording every call time."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[float] = []
        self.ends: list[float] = []

    def __call__(self) -> str:
        self.calls.append(perf())
        try:
            if len(self.calls) <= self.failures:
                raise ConnectionError(f"attempt {len(self.calls)} failed")
            return "done"
        finally:
            self.ends.append(perf())


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [("exponential", [0.04, 0.08, 0.16, 0.32]), ("linear", [0.04, 0.08, 0.12, 0.16])],
)
def test_retry_backoff_gaps(backoff: str, expected: list[float]) -> None:
    flaky = Flaky(4)
    result = run([{"id": "f", "tool": "flaky", "retryPolicy": {
        "maxAttempts": 5, "backoff": backoff, "initialDelay": 40}}], {"flaky": flaky})
    f = result.tasks["f"]
    assert f.status == "success" and f.result == "done" and f.attempts == 5
    gaps = [b - a for a, b in zip(flaky.ends, flaky.calls[1:], strict=False)]
    for gap, want in zip(gaps, expected, strict=True):
        assert want - 0.005 <= gap < want + 0.15, (gaps, expected)
    assert RetryPolicy(5, backoff, 0.04).delay(3) == pytest.approx(expected[3])


def test_retries_exhausted_keep_the_last_error() -> None:
    flaky = Flaky(10)
    result = run([{"id": "f", "tool": "flaky",
                   "retryPolicy": {"maxAttempts": 3, "initialDelay": 1}}], {"flaky": flaky})
    f = result.tasks["f"]
    assert (f.status, f.attempts, len(flaky.calls)) == ("failed", 3, 3)
    assert f.error.code == "ConnectionError" and f.error.message == "attempt 3 failed"


def test_backoff_holds_no_slot(tracker: Tracker) -> None:
    flaky = Flaky(1)

    def other(name: str) -> None:
        tracker.enter(name)
        tracker.leave(name)

    tasks = [{"id": "f", "tool": "flaky", "priority": 10,
              "retryPolicy": {"maxAttempts": 2, "initialDelay": 300}},
             {"id": "o", "tool": "other", "params": {"name": "o"}}]
    out = outcome_of(tasks, {"flaky": flaky, "other": other}, max_concurrent=1)
    assert out.records["f"].attempts == 2 and out.records["f"].status == "success"
    assert flaky.ends[0] <= tracker.start("o") < flaky.calls[1]
    spans = out.records["f"].spans
    assert [s.outcome for s in spans] == ["failed", "success"]


# ------------------------------------------------------------------ timeouts


def test_async_timeout_cancels_the_coroutine() -> None:
    seen: list[str] = []

    async def hang(name: str) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append(name)
            raise

    t0 = perf()
    result = run([{"id": "h", "tool": "hang", "params": {"name": "h"}, "timeout": 100,
                   "retryPolicy": {"maxAttempts": 2, "initialDelay": 10}}], {"hang": hang})
    h = result.tasks["h"]
    assert h.status == "failed" and h.error.code == "TASK_TIMEOUT" and h.attempts == 2
    assert "h" in h.error.message and "0.1 s" in h.error.message
    assert seen == ["h", "h"]  # each attempt's coroutine saw CancelledError
    assert perf() - t0 < 2.0


def test_sync_timeout_releases_the_slot_and_drops_the_late_result(tracker: Tracker) -> None:
    release = threading.Event()
    finished = threading.Event()

    def block() -> str:
        release.wait(10)
        finished.set()
        return "late"

    tasks = [{"id": "b", "tool": "block", "timeout": 100, "priority": 10},
             task("after", "tsleep")]

    async def main() -> tuple[RunOutcome, float]:
        _, graph = prepare({"tasks": tasks}, {"block": block, **tracker.tools})
        t0 = perf()
        out = await run_graph(graph, RunConfig(max_concurrent=1))
        took = perf() - t0
        release.set()  # now the thread returns "late" while this loop still runs
        await asyncio.to_thread(finished.wait, 5)
        await asyncio.sleep(0.05)  # let the late outcome reach the loop
        return out, took

    out, took = asyncio.run(main())
    b = out.records["b"]
    assert took < 2.0  # the run did not wait for the blocked thread
    assert b.status == "failed" and b.error.code == "TASK_TIMEOUT" and b.result is None
    assert [s.outcome for s in b.spans] == ["timeout"]
    assert out.records["after"].status == "success"  # the slot was released
    assert tracker.start("after") < out.perf_end
    assert finished.is_set()


# ------------------------------------------------------------------ error records


class Coded(Exception):
    code = "MY_CODE"


class EmptyCode(Exception):
    code = ""


class IntCode(Exception):
    code = 42


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


class RaisingCode(Exception):
    @property
    def code(self) -> str:
        raise RuntimeError("no code either")


@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [
        (Coded("boom"), "MY_CODE", "boom"),
        (EmptyCode("e"), "EmptyCode", "e"),
        (IntCode("i"), "IntCode", "i"),
        (ValueError("bad value"), "ValueError", "bad value"),
        (KeyError("k"), "KeyError", "'k'"),
        (Unprintable(), "Unprintable", None),
        (RaisingCode("r"), "RaisingCode", "r"),
    ],
)
def test_error_record_codes(exc: Exception, code: str, message: str | None) -> None:
    def fails_here() -> None:
        raise exc

    result = run([{"id": "e", "tool": "boom"}], {"boom": fails_here})
    err = result.tasks["e"].error
    assert result.status == "failure"
    assert err.code == code
    if message is None:
        assert err.message == "<Unprintable: str() of the exception raised>"
    else:
        assert err.message == message
    assert "Traceback" in err.stack and "fails_here" in err.stack


def test_error_from_exception_fixed_code() -> None:
    info = error_from_exception(ValueError("x"), code="TASK_TIMEOUT")
    assert (info.code, info.message) == ("TASK_TIMEOUT", "x")
    assert info.to_dict()["code"] == "TASK_TIMEOUT"


def test_sync_tool_raising_base_exception_is_recorded() -> None:
    def leave() -> None:
        raise SystemExit(3)

    result = run([{"id": "s", "tool": "leave"}], {"leave": leave})
    assert result.tasks["s"].error.code == "SystemExit"


class BrokenBackend:
    """A backend that cannot start any call."""

    name = "broken"
    runs_coroutines_on_loop = False

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        pass

    def submit(self, fn: Any, kwargs: dict[str, Any], done: Any) -> None:
        raise RuntimeError("no workers left")

    def abandon(self, handle: Any) -> None:
        pass

    async def aclose(self) -> None:
        pass


def test_backend_that_cannot_start_a_call_fails_the_task() -> None:
    result = ok.execute_request(
        {"tasks": [{"id": "a", "tool": "sleep", "params": {"seconds": 0},
                    "retryPolicy": {"maxAttempts": 2, "initialDelay": 1}},
                   {"id": "b", "tool": "sleep", "dependsOn": ["a"], "params": {"seconds": 0}}]},
        backend=BrokenBackend(),
    )
    assert result.tasks["a"].error.code == "RuntimeError" and result.tasks["a"].attempts == 2
    assert result.tasks["b"].status == "skipped"


def test_many_tasks_failing_at_start_do_not_recurse() -> None:
    n = sys.getrecursionlimit() + 500
    result = ok.execute_request(
        {"tasks": [{"id": f"t{i}", "tool": "sleep", "vault": "absent",
                    "params": {"seconds": 0}} for i in range(n)]},
        vault={},
    )
    assert result.summary.failed == n
    assert {t.error.code for t in result.tasks.values()} == {"VAULT_NOT_FOUND"}


class EngineBug(BaseException):
    """Raised inside the engine's own bookkeeping, like a bug in the engine."""


class BuggyEngine(Engine):
    """An engine whose bookkeeping breaks right after task A succeeds."""

    def _succeed(self, rec: TaskRecord, node: Any, now: float) -> None:
        super()._succeed(rec, node, now)
        if rec.task_id == "A":
            raise EngineBug("broken bookkeeping")


@pytest.mark.parametrize("tool", ["asleep", "tsleep"])
def test_an_error_inside_the_engine_ends_the_run_instead_of_hanging(
    tracker: Tracker, tool: str
) -> None:
    tasks = [task("A", tool), task("B", tool, params={"seconds": 5}),
             task("C", tool, dependsOn=["A"])]
    _, graph = prepare({"tasks": tasks}, tracker.tools)
    engine = BuggyEngine(graph)

    async def main() -> None:
        await asyncio.wait_for(engine.run(), 5)

    t0 = perf()
    with pytest.raises(EngineBug):
        asyncio.run(main())
    assert perf() - t0 < 3.0
    recs = engine.outcome.records
    assert all(r.finished for r in recs.values()) and engine.nfinished == 3
    assert recs["A"].status == "success"
    assert recs["B"].error.code == "CANCELLED"


def test_async_tool_raising_a_base_exception_is_a_task_error() -> None:
    class Abort(BaseException):
        pass

    async def abort() -> None:
        raise Abort("stop this one")

    result = run([{"id": "a", "tool": "abort",
                   "retryPolicy": {"maxAttempts": 3, "initialDelay": 1}}], {"abort": abort})
    a = result.tasks["a"]
    assert (a.status, a.error.code, a.attempts) == ("failed", "Abort", 1)


# ------------------------------------------------------------------ events


def test_event_stream_of_a_diamond(tracker: Tracker) -> None:
    events = EventLog()
    tasks = [task("A"), task("B", dependsOn=["A"], params={"seconds": 0.02}),
             task("C", dependsOn=["A"], params={"seconds": 0.02}),
             task("D", dependsOn=["B", "C"])]
    out = outcome_of(tasks, tracker.tools, subscribers=[events])
    assert events[0].record is out and events[-1].record is out  # run events carry the run
    kinds = [(e.kind, e.task_id) for e in events]
    assert kinds[0] == ("run_started", None) and kinds[-1] == ("run_finished", None)
    for tid in "ABCD":
        mine = [k for k, t in kinds if t == tid]
        assert mine == ["task_ready", "task_started", "task_finished"], (tid, mine)
    pos = {k: i for i, k in enumerate(kinds)}
    assert pos[("task_finished", "A")] < pos[("task_ready", "B")]
    assert pos[("task_finished", "A")] < pos[("task_ready", "C")]
    assert max(pos[("task_finished", "B")], pos[("task_finished", "C")]) < pos[
        ("task_ready", "D")]
    # B and C both start before either finishes (they run side by side)
    assert max(pos[("task_started", "B")], pos[("task_started", "C")]) < min(
        pos[("task_finished", "B")], pos[("task_finished", "C")])
    times = [e.time for e in events]
    assert times == sorted(times) and times[0] >= 0


def test_retry_events(tracker: Tracker) -> None:
    events = EventLog()
    flaky = Flaky(1)
    outcome_of([{"id": "f", "tool": "flaky", "retryPolicy": {"maxAttempts": 2,
                                                             "initialDelay": 1}}],
               {"flaky": flaky}, subscribers=[events])
    kinds = events.of("f")
    # after its backoff a task is ready again (and says so) before its next attempt starts
    assert kinds == ["task_ready", "task_started", "task_retrying", "task_ready",
                     "task_started", "task_finished"]


def test_raising_subscriber_does_not_break_the_run(tracker: Tracker) -> None:
    good: list[str] = []

    def bad(kind: EventKind, rec: TaskRecord | None, t: float) -> None:
        raise RuntimeError("subscriber bug")

    tasks = [task("A"), task("B", dependsOn=["A"])]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = outcome_of(tasks, tracker.tools,
                         subscribers=[bad, lambda kind, rec, t: good.append(kind)])
    assert [r.status for r in out.records.values()] == ["success", "success"]
    assert good[0] == "run_started" and good[-1] == "run_finished" and len(good) == 8
    assert sum("subscriber bug" in str(w.message) for w in caught) == 1  # reported once


def test_event_bus_subscribe_and_unsubscribe() -> None:
    bus = EventBus()
    assert not bus
    got: list[str] = []
    remove = bus.subscribe(lambda kind, rec, t: got.append(kind))
    assert bus
    bus.emit("run_started", None, 0.0)
    remove()
    bus.emit("run_finished", None, 1.0)
    assert got == ["run_started"] and not bus


def test_event_bus_dispatch_is_the_lone_subscriber_or_a_fan_out() -> None:
    log, other = EventLog(), EventLog()
    bus = EventBus([log])
    table = bus.dispatch
    assert all(fn is log for fn in table.values())  # one subscriber: called directly
    remove = bus.subscribe(other)
    bus.emit("task_ready", TaskRecord("a", "noop", 0), 0.5)
    assert bus.dispatch["task_ready"] is not log and log == other and len(log) == 1
    remove()
    assert bus.dispatch["task_ready"] is log and bus.dispatch is table  # one dict, in place
    bus.unsubscribe(log)
    assert set(bus.dispatch.values()) == {None} and not bus
    with pytest.raises(TypeError, match="must be callable"):
        bus.subscribe("not a function")  # type: ignore[arg-type]


def test_a_subscriber_with_event_kinds_gets_only_those(tracker: Tracker) -> None:
    class Finishes(EventLog):
        event_kinds = ("task_finished", "run_finished")

    only, every = Finishes(), EventLog()
    out = outcome_of([task("A"), task("B", dependsOn=["A"])], tracker.tools,
                     subscribers=[only, every])
    assert only.kinds() == ["task_finished", "task_finished", "run_finished"]
    assert len(every) == 8 and every[-1].record is out
    bus = EventBus([only])
    assert bus.dispatch["task_ready"] is None and bus.dispatch["task_finished"] is only
    bad = EventLog()
    bad.event_kinds = ("task_done",)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"unknown event kinds \['task_done'\]"):
        bus.subscribe(bad)


@pytest.mark.parametrize("n_good", [0, 1, 2])
def test_a_raising_subscriber_is_dropped_alone_or_among_others(n_good: int) -> None:
    goods = [EventLog() for _ in range(n_good)]

    def bad(kind: EventKind, rec: TaskRecord | None, t: float) -> None:
        raise ValueError("oops")

    bus = EventBus([bad, *goods])
    with pytest.warns(RuntimeWarning, match="raised ValueError: oops; it was unsubscribed"):
        bus.emit("run_started", None, 0.0)
    bus.emit("run_finished", None, 1.0)
    assert bus.subscribers == goods
    assert all(g.kinds() == ["run_started", "run_finished"] for g in goods)


def test_event_log_keeps_events_with_names() -> None:
    log = EventLog()
    rec = TaskRecord("a", "noop", 0)
    log("run_started", None, 0.0)
    log("task_ready", rec, 0.25)
    e = log[1]
    assert isinstance(e, Event) and e == ("task_ready", rec, 0.25)
    assert (e.kind, e.record, e.time, e.task_id) == ("task_ready", rec, 0.25, "a")
    assert log[0].task_id is None
    assert repr(e) == "<Event task_ready a t=0.250000s>"
    assert log.kinds() == ["run_started", "task_ready"] and log.of("a") == ["task_ready"]


# ------------------------------------------------------------------ reuse


def test_reused_records_are_not_run_again(tracker: Tracker) -> None:
    tasks = [task("A", params={"value": 1}), task("B", dependsOn=["A"], params={"value": 2}),
             task("C", params={"value": "${B.result}", "fail": True})]
    first = outcome_of(tasks, tracker.tools)
    assert first.records["C"].status == "failed"
    tasks[2]["params"]["fail"] = False
    t2 = Tracker()
    _, graph = prepare({"tasks": tasks}, t2.tools)
    reuse = {k: r for k, r in first.records.items() if r.status == "success"}
    engine = Engine(graph, RunConfig(), reuse=reuse)
    out = asyncio.run(engine.run())
    assert t2.order == ["C"]
    assert [out.records[k].reused for k in "ABC"] == [True, True, None]
    assert [out.records[k].attempts for k in "ABC"] == [0, 0, 1]
    assert out.records["C"].result == 2
    assert engine.nfinished == 3


# ------------------------------------------------------------------ the original diamond


def test_original_diamond_on_builtin_tools(tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    request = {
        "tasks": [
            {"id": "A", "tool": "file_write",
             "params": {"path": str(data), "content": {"emails": [1, 2, 3]}}},
            {"id": "B", "tool": "sleep", "params": {"seconds": 0.2, "value": "${A.result.path}"}},
            {"id": "C", "tool": "sleep",
             "params": {"seconds": 0.2, "value": "${A.result.bytes}"}},
            {"id": "D", "tool": "file_read", "params": {"path": "${B.result}"},
             "dependsOn": ["C"]},
        ],
        "config": {"maxConcurrent": 4},
    }
    _, graph = prepare(request)
    out = asyncio.run(run_graph(graph, RunConfig(max_concurrent=4)))
    result = ok.execute_request(request)
    assert result.status == "success"
    assert result.dag.levels == [["A"], ["B", "C"], ["D"]]
    assert {(e.from_, e.to) for e in result.dag.edges} == {("A", "B"), ("A", "C"),
                                                           ("B", "D"), ("C", "D")}
    assert result.tasks["C"].result == data.stat().st_size
    import json

    assert json.loads(result.tasks["D"].result) == {"emails": [1, 2, 3]}
    b, c = out.records["B"], out.records["C"]
    assert b.start < c.end and c.start < b.end  # B and C (level 1) ran in parallel
    d = out.records["D"]
    assert d.start >= max(b.end, c.end)
    assert out.perf_end - out.perf_start < 0.2 * 2


def test_a_timed_out_sync_task_names_the_thread_it_ran_on() -> None:
    import time as _time

    import oktyv_nb as ok

    def slow() -> None:
        _time.sleep(0.5)

    run = ok.DAG().task("a", slow, timeout=0.1).task("b", lambda: 1, after="a").run(
        live=False)
    df = run.df
    assert df.loc["a", "error_code"] == "TASK_TIMEOUT"
    assert str(df.loc["a", "worker"]).startswith("oktyv-")
    assert run.attempts.worker.iloc[0] == df.loc["a", "worker"]
    # wait_s: ready to first start; NaN for a task that never started (the one rule)
    assert df.loc["a", "wait_s"] >= 0 and df["wait_s"].isna()["b"]


def test_a_finished_run_lets_go_of_its_tasks_without_the_collector() -> None:
    """SPEC §19: no asyncio task of a run outlives it. The loop workers are freed by
    reference counting when the run ends (not only by a later cyclic collection), so
    that runs in one process never pile tasks up in asyncio's set of tasks."""
    import gc
    import weakref

    seen: list[weakref.ref[asyncio.Task[Any]]] = []

    async def where() -> None:
        task = asyncio.current_task()
        assert task is not None
        seen.append(weakref.ref(task))

    dag = ok.DAG("workers", max_concurrent=4)
    for i in range(8):
        dag.task(f"t{i}", where)
    dag.run(live=False)
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        seen.clear()
        for _ in range(3):
            assert dag.run(live=False).status == "success"
        assert len(seen) == 24
        alive = [ref() for ref in seen if ref() is not None]
        assert alive == []
    finally:
        if enabled:
            gc.enable()
