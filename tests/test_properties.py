"""Property tests (hypothesis): the engine's guarantees over random DAGs (SPEC §6, §19), and
fuzzing of the request parser, the builder and the reference resolver (SPEC §4, §5).

Random DAGs of up to 200 tasks mix sync and async tools that succeed, fail, fail a few
times then succeed, take a little time, or outlast their timeout; every failure mode, random
``max_concurrent``, random whole-run timeouts and random cancellation. Each run is checked
for: one final record per task; a task starts only once its dependencies have ended as its
trigger needs; never more attempts running than ``max_concurrent``; skips are exactly the
tasks downstream of a failure (in ``continue`` mode, the outcome of every task is predicted);
a skipped task never ran; the summary adds up; no asyncio task or thread of the run
outlives it; the next run works.

Example counts are bounded so that the whole module runs in about a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
import types
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import oktyv_nb as ok
from oktyv_nb.execution.records import FINAL
from oktyv_nb.model.graph import RetryPolicy, prepare
from oktyv_nb.model.tools import BUILTIN_TOOLS
from oktyv_nb.model.variables import find_references, has_references, resolve

SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "derandomize": os.environ.get("OKTYV_HYPOTHESIS_RANDOM") is None,
}

BEHAVIOURS = ("ok", "ok", "ok", "fail", "flaky", "slow", "hang")


@dataclasses.dataclass
class Spec:
    """One random task: its dependencies (indices of earlier tasks) and how it behaves."""

    deps: list[int]
    is_async: bool
    behaviour: str  # ok | fail | flaky (fails `flaky` times) | slow | hang (outlasts timeout)
    flaky: int
    attempts: int  # max_attempts
    trigger: str
    rollback: bool
    priority: int


@dataclasses.dataclass
class Plan:
    specs: list[Spec]
    failure_mode: str
    max_concurrent: int
    run_timeout: float | None
    cancel_after: float | None
    use_arun: bool


@st.composite
def plans(draw: st.DrawFn, max_tasks: int = 200, disturbed: bool | None = None) -> Plan:
    """A random plan; ``disturbed`` True gives it a whole-run timeout or a cancellation,
    False neither, None either."""
    n = draw(st.integers(1, max_tasks))
    specs = []
    for i in range(n):
        ndeps = draw(st.integers(0, min(3, i)))
        deps = sorted(set(draw(st.lists(st.integers(0, i - 1), min_size=ndeps,
                                        max_size=ndeps)))) if i else []
        behaviour = draw(st.sampled_from(BEHAVIOURS))
        specs.append(Spec(
            deps=deps,
            is_async=draw(st.booleans()),
            behaviour=behaviour,
            flaky=draw(st.integers(1, 2)),
            attempts=draw(st.integers(1, 3)),
            trigger=draw(st.sampled_from(["all_success", "all_success", "all_done"])),
            rollback=draw(st.booleans()),
            priority=draw(st.integers(1, 10)),
        ))
    if disturbed is None:
        disturbed = draw(st.booleans())
    timed = disturbed and draw(st.booleans())
    return Plan(
        specs=specs,
        failure_mode=draw(st.sampled_from(["continue", "stop", "rollback"])),
        max_concurrent=draw(st.integers(1, 12)),
        run_timeout=draw(st.floats(0.002, 0.08)) if timed else None,
        cancel_after=draw(st.floats(0.0, 0.05)) if disturbed and not timed else None,
        use_arun=draw(st.booleans()),
    )


HANG_S = 0.03  # a hanging attempt's length; its timeout is TIMEOUT_S
TIMEOUT_S = 0.004
SLOW_S = 0.002


def build(plan: Plan) -> tuple[ok.DAG, dict[str, int]]:
    """The plan as a DAG; the returned dict counts each task's calls (and rollbacks)."""
    calls: dict[str, int] = {}
    lock = threading.Lock()

    def count(name: str) -> int:
        with lock:
            calls[name] = calls.get(name, 0) + 1
            return calls[name]

    def outcome(name: str, behaviour: str, flaky: int, n: int) -> float:
        if behaviour == "fail":
            raise RuntimeError(f"{name} fails")
        if behaviour == "flaky" and n <= flaky:
            raise RuntimeError(f"{name} fails attempt {n}")
        return {"slow": SLOW_S, "hang": HANG_S}.get(behaviour, 0.0)

    def sync_tool(name: str, behaviour: str, flaky: int) -> str:
        time.sleep(outcome(name, behaviour, flaky, count(name)))
        return name

    async def async_tool(name: str, behaviour: str, flaky: int) -> str:
        await asyncio.sleep(outcome(name, behaviour, flaky, count(name)))
        return name

    def undo(name: str) -> None:
        count(f"undo:{name}")

    dag = ok.DAG(max_concurrent=plan.max_concurrent, failure_mode=plan.failure_mode,
                 timeout=plan.run_timeout,
                 tools={"s": sync_tool, "a": async_tool, "undo": undo})
    for i, sp in enumerate(plan.specs):
        dag.task(
            f"t{i}", "a" if sp.is_async else "s",
            {"name": f"t{i}", "behaviour": sp.behaviour, "flaky": sp.flaky},
            after=[f"t{d}" for d in sp.deps] or None,
            retry=RetryPolicy(max_attempts=sp.attempts, initial_delay=0.0005),
            timeout=TIMEOUT_S if sp.behaviour == "hang" else None,
            trigger=sp.trigger,
            priority=sp.priority,
            rollback=ok.Rollback("undo", name=f"t{i}") if sp.rollback else None,
        )
    return dag, calls


class Observer:
    """A subscriber checking, event by event, the slot limit and the start conditions."""

    def __init__(self, dag: ok.DAG, max_concurrent: int) -> None:
        self.limit = max_concurrent
        self.deps = {tid: (spec.depends_on or []) for tid, spec in dag.specs.items()}
        self.trigger = {tid: spec.run_if or "all_success" for tid, spec in dag.specs.items()}
        self.running: set[str] = set()
        self.peak = 0
        self.records: dict[str, Any] = {}
        self.finished: list[str] = []
        self.problems: list[str] = []

    def __call__(self, kind: str, rec: Any, t: float) -> None:
        if kind == "run_started":
            self.records = rec.records
            return
        if kind in ("run_finished", "task_ready", "task_rolled_back"):
            return
        tid = rec.task_id
        if kind == "task_started":
            self.running.add(tid)
            self.peak = max(self.peak, len(self.running))
            if len(self.running) > self.limit:
                self.problems.append(f"{len(self.running)} running > {self.limit}")
            if rec.attempts == 1:
                for d in self.deps[tid]:
                    st_ = self.records[d].status
                    if st_ not in FINAL:
                        self.problems.append(f"{tid} started before {d} ended ({st_})")
                    elif self.trigger[tid] == "all_success" and st_ != "success":
                        self.problems.append(f"{tid} started although {d} is {st_}")
        elif kind in ("task_retrying", "task_finished"):
            self.running.discard(tid)
            if kind == "task_finished":
                self.finished.append(tid)


def _foreign_threads(before: set[int]) -> list[str]:
    """Threads started since ``before`` that are not the engine's persistent pool's."""
    return [t.name for t in threading.enumerate()
            if t.ident not in before and not t.name.startswith("oktyv-")]


def execute(plan: Plan, dag: ok.DAG, observer: Observer) -> Any:
    """Run the plan's DAG (``dag.run()``, or ``arun()`` under ``asyncio.run``, cancelled after
    ``cancel_after`` seconds when set); returns the run."""
    if not plan.use_arun and plan.cancel_after is None:
        return dag.run(on_event=observer, live=False)

    async def main() -> Any:
        task = asyncio.ensure_future(dag.arun(on_event=observer, live=False))
        if plan.cancel_after is not None:
            await asyncio.sleep(plan.cancel_after)
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        me = asyncio.current_task()
        left = [t for t in asyncio.all_tasks() if t is not me]
        assert not left, f"asyncio tasks outlived the run: {left}"
        return dag.last_run

    return asyncio.run(main())


def predicted(plan: Plan) -> list[str]:
    """Each task's status in ``continue`` mode without a run timeout or cancellation."""
    out: list[str] = []
    for sp in plan.specs:
        dep_ok = all(out[d] == "success" for d in sp.deps)
        if sp.trigger == "all_success" and not dep_ok:
            out.append("skipped")
        elif sp.behaviour in ("fail", "hang") or (
            sp.behaviour == "flaky" and sp.flaky >= sp.attempts
        ):
            out.append("failed")
        else:
            out.append("success")
    return out


def check_run(plan: Plan, run: Any, observer: Observer, calls: dict[str, int]) -> None:
    recs = run.records
    n = len(plan.specs)
    ids = [f"t{i}" for i in range(n)]
    # one final record per task, announced once
    assert list(recs) == ids
    assert all(r.status in FINAL for r in recs.values())
    assert sorted(observer.finished) == sorted(ids), "each task finishes exactly once"
    assert not observer.problems, observer.problems[:5]
    assert observer.peak <= plan.max_concurrent
    # a skipped task never ran; a task that ran has its attempts recorded
    for i, tid in enumerate(ids):
        r = recs[tid]
        assert (r.status == "skipped") == (r.attempts == 0), (tid, r.status, r.attempts)
        assert r.attempts <= plan.specs[i].attempts
        assert calls.get(tid, 0) <= r.attempts
        if r.status != "success":
            assert r.error is not None, tid
        if r.status == "skipped" and r.error.code == "DEPENDENCY_FAILED":
            assert recs[r.error.cause].status != "success"
            assert r.error.cause in {f"t{d}" for d in plan.specs[i].deps}
    # the summary adds up
    s = run.result.summary
    assert s.total == n == s.succeeded + s.failed + s.skipped
    assert s.succeeded == sum(r.status == "success" for r in recs.values())
    assert s.failed == sum(r.status == "failed" for r in recs.values())
    assert run.status == ("success" if not s.failed else "partial" if s.succeeded else "failure")
    json.loads(run.result.to_json())
    expect = predicted(plan)
    undisturbed = plan.run_timeout is None and plan.cancel_after is None
    for tid, want in zip(ids, expect, strict=True):
        got = recs[tid].status
        if undisturbed and plan.failure_mode == "continue":
            assert got == want, (tid, got, want)  # skips are exactly the failures' closure
        elif got == "success":
            assert want == "success", (tid, got, want)
    failed = any(r.status == "failed" for r in recs.values())
    for i, tid in enumerate(ids):
        r = recs[tid]
        declares = plan.specs[i].rollback and r.status == "success"
        if plan.failure_mode != "rollback" or not failed or not declares:
            assert r.rolled_back is None and calls.get(f"undo:{tid}", 0) == 0
        elif undisturbed:
            assert r.rolled_back is True and calls[f"undo:{tid}"] == 1


def _run_and_check(plan: Plan) -> None:
    before = {t.ident for t in threading.enumerate()}
    dag, calls = build(plan)
    observer = Observer(dag, plan.max_concurrent)
    run = execute(plan, dag, observer)
    check_run(plan, run, observer, calls)
    if plan.cancel_after is not None and run.interrupted:
        for r in run.records.values():
            if r.status == "skipped":
                assert r.error.code in ("CANCELLED", "DEPENDENCY_FAILED", "RUN_STOPPED")
    assert not _foreign_threads(before), "a thread of the run outlived it"
    assert ok.DAG().task("next", lambda: 1).run(live=False).status == "success"


@settings(max_examples=60, **SETTINGS)
@given(plans(disturbed=False))
def test_random_dags_keep_every_guarantee(plan: Plan) -> None:
    _run_and_check(plan)


@settings(max_examples=60, **SETTINGS)
@given(plans(disturbed=True))
def test_random_dags_under_run_timeouts_and_cancellation(plan: Plan) -> None:
    _run_and_check(plan)


@pytest.mark.skipif(
    signal.getsignal(signal.SIGINT) is not signal.default_int_handler,
    reason="needs Python's default SIGINT handler",
)
@settings(max_examples=60, **SETTINGS)
@given(plans(max_tasks=60, disturbed=False), st.integers(1, 200))
def test_random_dags_under_a_real_sigint(plan: Plan, at_event: int) -> None:
    """A real SIGINT delivered to this process at the ``at_event``-th event of the run (after
    the end, when the run has fewer): every task still ends with one record, the interrupt
    propagates, the partial run is ``dag.last_run``, nothing outlives it."""
    before = {t.ident for t in threading.enumerate()}
    dag, calls = build(plan)
    observer = Observer(dag, plan.max_concurrent)
    seen = [0]

    def ctrl_c(kind: str, rec: Any, t: float) -> None:
        seen[0] += 1
        if seen[0] == at_event:
            signal.raise_signal(signal.SIGINT)

    interrupted = False
    try:
        run = dag.run(on_event=[observer, ctrl_c], live=False)
    except KeyboardInterrupt:
        interrupted = True
        run = dag.last_run
    assert interrupted == (at_event <= seen[0])
    assert run is not None
    check_run(dataclasses.replace(plan, cancel_after=0.0 if interrupted else None), run,
              observer, calls)
    assert not _foreign_threads(before), "a thread of the run outlived it"
    assert ok.DAG().task("next", lambda: 1).run(live=False).status == "success"


@settings(max_examples=150, **SETTINGS)
@given(plans(max_tasks=10))
def test_small_random_dags_keep_every_guarantee(plan: Plan) -> None:
    """Small DAGs: many more failure/timeout/cancel interleavings per second."""
    _run_and_check(plan)


# ------------------------------------------------------------------ request parser fuzzing

json_scalars = (st.none() | st.booleans() | st.integers(-10**6, 10**12)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)

TASK_KEYS = ["id", "tool", "params", "dependsOn", "depends_on", "priority", "timeout", "vault",
             "retryPolicy", "rollback", "runIf", "extra"]
TOOL_NAMES = ["noop", "echo", "missing", *BUILTIN_TOOLS]


def task_dicts(ids: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    field_values = {
        "id": st.sampled_from(ids) | json_scalars,
        "tool": st.sampled_from(TOOL_NAMES) | json_scalars,
        "params": st.dictionaries(
            st.sampled_from(["x", "y", "credentials"]),
            st.sampled_from([f"${{{i}.result}}" for i in ids] + ["${a}", "${zz.result}",
                                                                 "${a.nofield}", "${"])
            | json_values, max_size=3) | json_values,
        "dependsOn": st.lists(st.sampled_from(ids) | json_scalars, max_size=3) | json_scalars,
        "depends_on": st.lists(st.sampled_from(ids), max_size=2),
        "priority": st.integers(-2, 12) | json_scalars,
        "timeout": st.floats(-1, 10**4) | json_scalars,
        "vault": st.sampled_from(["api", ""]) | json_scalars,
        "retryPolicy": st.fixed_dictionaries(
            {}, optional={"maxAttempts": st.integers(-1, 4) | json_scalars,
                          "backoff": st.sampled_from(["linear", "exponential", "x"]),
                          "initialDelay": st.floats(-1, 5) | json_scalars}) | json_values,
        "rollback": st.fixed_dictionaries(
            {"tool": st.sampled_from(TOOL_NAMES) | json_scalars},
            optional={"params": json_values}) | json_values,
        "runIf": st.sampled_from(["all_success", "all_done", "x"]) | json_scalars,
        "extra": json_values,
    }
    return st.fixed_dictionaries({}, optional={k: field_values[k] for k in TASK_KEYS})


@st.composite
def requests(draw: st.DrawFn) -> Any:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(json_values)
    if kind == 1:
        return draw(st.sampled_from([None, 5, [1], (1,), {1, 2}, object(), b"\xff", "{",
                                     "[1]", "null", b"{}", bytearray(b"{}"), types]))
    ids = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=4,
                        unique=True))
    config = draw(st.fixed_dictionaries({}, optional={
        "maxConcurrent": st.integers(-1, 5) | json_scalars,
        "failureMode": st.sampled_from(["continue", "stop", "rollback", "x"]) | json_scalars,
        "timeout": st.floats(-1, 10**4) | json_scalars,
        "enableRollback": st.booleans() | json_scalars,
    }))
    request: dict[str, Any] = {"tasks": draw(st.lists(task_dicts(ids), max_size=5))}
    if draw(st.booleans()):
        request["config"] = config
    if kind == 2:
        return json.dumps(request)  # JSON text (Infinity/NaN spelled as such)
    return request


def noop(**kwargs: Any) -> dict[str, Any]:
    return kwargs


# Every tool name the fuzzer can produce is a harmless no-op here: the run's own tools come
# before the built-ins, so no random request writes a file, runs a program or sleeps long.
SAFE_TOOLS = {name: noop for name in TOOL_NAMES}


@settings(max_examples=500, **SETTINGS)
@given(requests())
def test_any_request_gives_a_result_or_a_value_error(request: Any) -> None:
    try:
        result = ok.execute_request(request, tools=SAFE_TOOLS, vault={"api": {"k": "v"}})
    except ValueError:
        pass
    else:
        json.loads(result.to_json())
        assert result.summary.total == len(result.tasks)
    with contextlib.suppress(ValueError):
        prepare(request, SAFE_TOOLS)
    try:
        dag = ok.DAG.from_request(request, tools=SAFE_TOOLS)
    except ValueError:
        pass
    else:
        with contextlib.suppress(ValueError):
            dag.validate()
        assert ok.DAG.from_request(dag.to_json(), tools=SAFE_TOOLS) == dag


# ------------------------------------------------------------------ builder fuzzing

odd_values = (json_values | st.sampled_from([None, object(), noop, len, types, 1.5, -1, 0,
                                             float("inf"), float("nan"), True, (), ("a",)]))


@settings(max_examples=300, **SETTINGS)
@given(
    task_id=st.sampled_from(["a", "b", "x-1"]) | odd_values,
    tool=st.sampled_from([noop, "noop", "sleep", "missing", ""]) | odd_values,
    options=st.fixed_dictionaries({}, optional={
        "after": st.sampled_from(["a", ["a"], ["b", "a"]]) | odd_values,
        "priority": st.integers(-1, 11) | odd_values,
        "timeout": st.floats(-1, 100) | odd_values,
        "retries": st.integers(-1, 4) | odd_values,
        "retry": st.builds(RetryPolicy, st.integers(1, 3)) | odd_values,
        "rollback": st.sampled_from([("noop", {}), {"tool": "noop"}, ok.Rollback("noop")])
        | odd_values,
        "vault": st.sampled_from(["api", ""]) | odd_values,
        "trigger": st.sampled_from(["all_success", "all_done"]) | odd_values,
    }),
    dag_options=st.fixed_dictionaries({}, optional={
        "max_concurrent": st.integers(0, 4) | odd_values,
        "failure_mode": st.sampled_from(["continue", "stop", "rollback"]) | odd_values,
        "timeout": st.floats(-1, 100) | odd_values,
        "strategy": st.sampled_from(["dependencies", "levels"]) | odd_values,
        "name": st.text(max_size=4) | odd_values,
        "vault": st.just({"api": {"k": "v"}}) | odd_values,
        "tools": st.just({"noop": noop}) | odd_values,
    }),
    params=st.dictionaries(st.sampled_from(["x", "y", "credentials"]), odd_values, max_size=2),
)
def test_builder_misuse_gives_a_value_error(
    task_id: Any, tool: Any, options: dict[str, Any], dag_options: dict[str, Any],
    params: dict[str, Any],
) -> None:
    try:
        dag = ok.DAG(**dag_options)
    except ValueError:
        dag = ok.DAG(tools={"noop": noop})
    dag.tools["noop"] = noop
    with contextlib.suppress(ValueError):
        dag.task("a", noop)
    try:
        dag.task(task_id, tool, params, **options)
    except ValueError:
        return
    with contextlib.suppress(ValueError):
        dag.validate()
        ok.DAG.from_request(dag.to_json(), tools=dag.tools)


# ------------------------------------------------------------------ reference resolver fuzzing


@dataclasses.dataclass
class Box:
    inner: Any
    label: str = "box"
    _hidden: str = "hidden"

    @property
    def computed(self) -> str:
        raise AssertionError("a property was run")


class Pair(NamedTuple):
    left: Any
    right: Any


class Model(BaseModel):
    size: int = 1
    data: Any = None


def _gen() -> Any:
    yield 1


class Plain:
    def __init__(self) -> None:
        self.mod = os
        self.env = os.environ


# Objects a path must never walk into (os.environ only inside Plain, so that a failure's
# report never prints the environment).
FORBIDDEN = [os, _gen(), _gen, Plain(), Plain, len, json.dumps, types.SimpleNamespace(x=1)]

data_values = st.recursive(
    json_scalars | st.sampled_from(FORBIDDEN),
    lambda inner: (st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["a", "b", "0", "1", "env", "mod", "inner"]), inner, max_size=3)
        | st.builds(Box, inner) | st.builds(Pair, inner, inner)
        | st.builds(lambda d: Model(data=d), inner) | st.tuples(inner, inner)),
    max_leaves=10,
)
SEGMENTS = ["a", "b", "0", "1", "-1", "inner", "label", "_hidden", "computed", "left", "right",
            "size", "data", "env", "mod", "environ", "gi_frame", "f_globals", "__class__",
            "__dict__", "items", "keys", "tb_frame", "count", "model_fields", "x", "99"]


def reachable(value: Any, seen: set[int] | None = None) -> set[int]:
    """Ids of every object a path may reach from ``value``, walking data only."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return seen
    seen.add(id(value))
    children: list[Any] = []
    if isinstance(value, dict):
        children = list(value.values())
    elif isinstance(value, (list, tuple)):
        children = list(value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        children = [getattr(value, f.name) for f in dataclasses.fields(value)]
    elif isinstance(value, BaseModel):
        children = [getattr(value, f) for f in type(value).model_fields]
    for child in children:
        reachable(child, seen)
    return seen


@settings(max_examples=400, **SETTINGS)
@given(
    result=data_values,
    paths=st.lists(st.lists(st.sampled_from(SEGMENTS), max_size=4), min_size=1, max_size=4),
    embed=st.booleans(),
)
def test_references_resolve_to_data_or_fail_cleanly(
    result: Any, paths: list[list[str]], embed: bool
) -> None:
    texts = ["${A." + ".".join(["result", *p]) + "}" for p in paths]
    params = {f"p{i}": (f"x {t} y" if embed else t) for i, t in enumerate(texts)}
    assert has_references(params)
    assert [r.task_id for r in find_references(params)] == ["A"] * len(texts)

    def lookup(task_id: str) -> Callable[[str], Any]:
        assert task_id == "A"
        return lambda field: result

    allowed = reachable(result)
    try:
        got = resolve(params, lookup)
    except ok.VariableResolutionError:
        return
    for value in got.values():
        if embed:
            assert isinstance(value, str)
        else:
            # the result itself may hold a module; a path never gets *into* one
            assert id(value) in allowed, f"a path reached {type(value).__name__}"


@pytest.mark.parametrize("depth", [199, 200, 201, 3000])
def test_reference_scan_depth_is_bounded(depth: int) -> None:
    value: Any = "${A.result}"
    for _ in range(depth):
        value = [value]
    try:
        found = has_references({"v": value})
    except ok.InvalidOptionError:
        assert depth >= 200
    else:
        assert found and depth < 200
