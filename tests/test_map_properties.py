"""Property tests of mapped tasks and pools (SPEC §16, §20): on random DAGs of maps, pooled
tasks and plain tasks, under failures, retries, timeouts, run timeouts and cancellation,
every task and every child ends with exactly one record, announced once, and no bound (the
run's, a map's, a pool's) is ever exceeded."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import threading
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import oktyv_nb as ok
from oktyv_nb.execution.records import FINAL

SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "derandomize": os.environ.get("OKTYV_HYPOTHESIS_RANDOM") is None,
}
BEHAVIOURS = ("ok", "ok", "ok", "fail", "flaky", "slow", "hang")
POOLS = {"p1": 1, "p2": 2}


@dataclasses.dataclass
class Node:
    deps: list[int]
    items: list[str] | None  # a map over these behaviours, or None for a plain task
    behaviour: str
    bound: int | None
    pool: str | None
    attempts: int
    is_async: bool
    trigger: str


@dataclasses.dataclass
class Plan:
    nodes: list[Node]
    max_concurrent: int
    failure_mode: str
    run_timeout: float | None
    cancel_after: float | None


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    n = draw(st.integers(1, 12))
    nodes = []
    for i in range(n):
        k = draw(st.integers(0, min(2, i)))
        deps = sorted(set(draw(st.lists(st.integers(0, i - 1), min_size=k, max_size=k)))) \
            if i else []
        mapped = draw(st.booleans())
        nodes.append(Node(
            deps=deps,
            items=draw(st.lists(st.sampled_from(BEHAVIOURS), max_size=8)) if mapped else None,
            behaviour=draw(st.sampled_from(BEHAVIOURS)),
            bound=draw(st.none() | st.integers(1, 3)) if mapped else None,
            pool=draw(st.sampled_from([None, None, "p1", "p2"])),
            attempts=draw(st.integers(1, 2)),
            is_async=draw(st.booleans()),
            trigger=draw(st.sampled_from(["all_success", "all_success", "all_done"])),
        ))
    disturbed = draw(st.sampled_from([None, None, "timeout", "cancel"]))
    return Plan(
        nodes=nodes,
        max_concurrent=draw(st.integers(1, 6)),
        failure_mode=draw(st.sampled_from(["continue", "stop"])),
        run_timeout=draw(st.floats(0.005, 0.06)) if disturbed == "timeout" else None,
        cancel_after=draw(st.floats(0.0, 0.04)) if disturbed == "cancel" else None,
    )


class Observer:
    """Counts, event by event, what runs at once: in all, per pool and per map."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.running: dict[str, str | None] = {}  # task id -> its pool
        self.peak = 0
        self.pool_peak: dict[str, int] = {}
        self.map_peak: dict[str, int] = {}
        self.finished: list[str] = []
        self.lock = threading.Lock()

    def pool_of(self, tid: str) -> str | None:
        return self.plan.nodes[int(tid[1:].split("[")[0])].pool

    def __call__(self, kind: str, rec: Any, t: float) -> None:
        if kind in ("run_started", "run_finished", "task_ready", "task_rolled_back"):
            return
        tid = rec.task_id
        is_map_itself = rec.children is not None or (
            self.plan.nodes[int(tid[1:].split("[")[0])].items is not None and "[" not in tid)
        if kind == "task_started" and not is_map_itself:
            self.running[tid] = self.pool_of(tid)
            self.peak = max(self.peak, len(self.running))
            for pool in POOLS:
                n = sum(1 for p in self.running.values() if p == pool)
                self.pool_peak[pool] = max(self.pool_peak.get(pool, 0), n)
            if rec.map_of is not None:
                n = sum(1 for r in self.running if r.startswith(rec.map_of + "["))
                self.map_peak[rec.map_of] = max(self.map_peak.get(rec.map_of, 0), n)
        elif kind in ("task_retrying", "task_finished"):
            self.running.pop(tid, None)
            if kind == "task_finished":
                self.finished.append(tid)


def build(plan: Plan) -> ok.DAG:
    lock = threading.Lock()
    calls: dict[str, int] = {}

    def delay(key: str, behaviour: str) -> float:
        with lock:
            calls[key] = n = calls.get(key, 0) + 1
        if behaviour == "fail" or (behaviour == "flaky" and n == 1):
            raise RuntimeError(f"{key}: {behaviour}")
        return {"slow": 0.002, "hang": 0.03}.get(behaviour, 0.0)

    def sync_tool(key: str, behaviour: str) -> str:
        time.sleep(delay(key, behaviour))
        return behaviour

    async def async_tool(key: str, behaviour: str) -> str:
        await asyncio.sleep(delay(key, behaviour))
        return behaviour

    dag = ok.DAG(max_concurrent=plan.max_concurrent, failure_mode=plan.failure_mode,
                 timeout=plan.run_timeout, pools=POOLS,
                 tools={"s": sync_tool, "a": async_tool})
    for i, nd in enumerate(plan.nodes):
        options: dict[str, Any] = {
            "after": [f"t{d}" for d in nd.deps] or None,
            "retry": ok.RetryPolicy(max_attempts=nd.attempts, initial_delay=0.0005),
            "timeout": 0.01, "trigger": nd.trigger, "pool": nd.pool,
        }
        tool = "a" if nd.is_async else "s"
        if nd.items is None:
            dag.task(f"t{i}", tool, {"key": f"t{i}", "behaviour": nd.behaviour}, **options)
        else:
            dag.map(f"t{i}", tool, {"key": f"t{i}"}, over=nd.items, param="behaviour",
                    max_concurrent=nd.bound, **options)
    return dag


def execute(plan: Plan, dag: ok.DAG, observer: Observer) -> Any:
    if plan.cancel_after is None:
        return dag.run(on_event=observer, live=False)

    async def main() -> Any:
        task = asyncio.ensure_future(dag.arun(on_event=observer, live=False))
        await asyncio.sleep(plan.cancel_after)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return dag.last_run

    return asyncio.run(main())


@settings(max_examples=60, **SETTINGS)
@given(plans())
def test_random_maps_and_pools_keep_every_guarantee(plan: Plan) -> None:
    dag = build(plan)
    observer = Observer(plan)
    run = execute(plan, dag, observer)
    recs = run.records
    ids = [f"t{i}" for i in range(len(plan.nodes))]
    assert list(recs) == ids
    expected_finished = list(ids)
    for i, tid in enumerate(ids):
        rec = recs[tid]
        assert rec.status in FINAL, (tid, rec.status)
        nd = plan.nodes[i]
        if rec.children is not None:
            assert nd.items is not None
            assert [c.task_id for c in rec.children] == [
                f"{tid}[{k}]" for k in range(len(nd.items))]
            assert all(c.status in FINAL for c in rec.children), tid
            assert (rec.status == "success") == all(
                c.status == "success" for c in rec.children)
            assert rec.attempts == sum(c.attempts for c in rec.children)
            for c in rec.children:
                assert (c.status == "skipped") == (c.attempts == 0), c.task_id
                assert c.attempts <= nd.attempts
            expected_finished += [c.task_id for c in rec.children]
        else:
            assert (rec.status == "skipped") == (rec.attempts == 0) or nd.items is not None
    assert sorted(observer.finished) == sorted(expected_finished), "one record each, once"
    assert observer.peak <= plan.max_concurrent
    for pool, cap in POOLS.items():
        assert observer.pool_peak.get(pool, 0) <= cap, pool
    for i, nd in enumerate(plan.nodes):
        if nd.bound is not None:
            assert observer.map_peak.get(f"t{i}", 0) <= nd.bound
    s = run.result.summary
    assert s.total == len(ids) == s.succeeded + s.failed + s.skipped
    assert len(run.df) == sum(len(r.children) or 1 if r.children is not None else 1
                              for r in recs.values())
    assert ok.DAG().task("next", lambda: 1).run(live=False).status == "success"
