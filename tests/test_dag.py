"""The fluent builder (SPEC §2): arguments, tools, conversions, running, resume, interrupts."""

from __future__ import annotations

import asyncio
import inspect
import json
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import oktyv_nb as ok
from oktyv_nb.dag import seconds_to_ms
from oktyv_nb.execution.events import EventKind
from oktyv_nb.execution.records import TaskRecord

perf = time.perf_counter


async def asleep(seconds: float = 0.0, value: Any = None) -> Any:
    await asyncio.sleep(seconds)
    return value


def tsleep(seconds: float = 0.0, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def echo(**kwargs: Any) -> dict[str, Any]:
    return kwargs


@pytest.fixture
def clean_registry() -> Iterator[None]:
    before = set(ok.default_registry)
    yield
    for name in set(ok.default_registry) - before:
        del ok.default_registry[name]


# ---------------------------------------------------------------------- the builder API
def test_task_signature_is_the_specs() -> None:
    sig = inspect.signature(ok.DAG.task)
    params = list(sig.parameters.values())
    assert [p.name for p in params[:3]] == ["self", "id", "tool"]
    keyword_only = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert keyword_only == [
        "after", "priority", "timeout", "retries", "retry", "rollback", "vault", "trigger",
        "cache", "pool", "replace",
    ]
    assert all(sig.parameters[n].default is None for n in keyword_only[:-1])
    assert sig.parameters["replace"].default is False
    assert params[-1].kind is inspect.Parameter.VAR_KEYWORD
    # .map takes the same options, after its own three (SPEC §16)
    mapped = [p.name for p in inspect.signature(ok.DAG.map).parameters.values()
              if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert mapped == ["over", "param", "max_concurrent", *keyword_only]


def test_every_builder_method_returns_the_dag() -> None:
    dag = ok.DAG("d")
    assert dag.task("a", echo) is dag
    assert dag.task("b", echo, after="a").remove("b") is dag
    assert dag.task_ids == ["a"]


def test_spec_example_builds_and_runs(tmp_path: Any) -> None:
    def fetch_emails(folder: str, limit: int) -> dict[str, Any]:
        return {"emails": [f"{folder}-{i}" for i in range(min(limit, 3))]}

    def parse(raw: list[str]) -> list[str]:
        return [r.upper() for r in raw]

    notified: list[str] = []

    async def notify() -> str:
        notified.append("sent")
        return "sent"

    out = tmp_path / "out.json"
    dag = (
        ok.DAG("inbox", max_concurrent=4)
        .task("fetch", fetch_emails, folder="INBOX", limit=100)
        .task("parse", parse, raw="${fetch.result.emails}")
        .task("save", ok.tools.file_write, path=str(out), content="${parse.result}",
              retries=3, timeout=5.0)
        .task("notify", notify, after=["save"], priority=8)
    )
    assert dag.levels == [["fetch"], ["parse"], ["save"], ["notify"]]
    run = dag.run(live=False)
    assert run.status == "success", run.df[["status", "error_message"]]
    assert json.loads(out.read_text()) == ["INBOX-0", "INBOX-1", "INBOX-2"]
    assert notified == ["sent"]
    spec = dag.to_request().model_dump(by_alias=True, exclude_none=True)["tasks"][2]
    assert spec["tool"] == "file_write"
    assert spec["timeout"] == 5000.0
    assert spec["retryPolicy"] == {
        "maxAttempts": 4, "backoff": "exponential", "initialDelay": 1000.0,
    }


# ---------------------------------------------------------------------- tools
def test_callable_tools_get_names_once() -> None:
    class Client:
        def get(self, x: int) -> int:
            return x

    c = Client()
    dag = (
        ok.DAG()
        .task("a", echo, x=1)
        .task("b", echo, x=2)  # same callable: same name
        .task("c", c.get, x=3)
        .task("d", c.get, x=4)  # a new bound-method object each access: still one name
        .task("e", lambda: 5)
    )
    names = {tid: s.tool for tid, s in dag.specs.items()}
    assert names == {"a": "echo", "b": "echo", "c": "get", "d": "get", "e": "e_tool"}
    assert set(dag.tools) == {"echo", "get", "e_tool"}
    run = dag.run(live=False)
    assert run.df["result"].to_dict() == {"a": {"x": 1}, "b": {"x": 2}, "c": 3, "d": 4, "e": 5}


def test_registered_tools_by_callable_and_by_name(clean_registry: None) -> None:
    @ok.tool(name="double_it")
    def double(x: int) -> int:
        return 2 * x

    reg = ok.ToolRegistry()

    @reg.register
    async def triple(x: int) -> int:
        return 3 * x

    dag = (
        ok.DAG(tools=reg)
        .task("a", double, x=1)  # the callable: its registered name
        .task("b", "double_it", x=2)  # the name
        .task("c", triple, x=3)
        .task("d", "triple", x=4)
        .task("e", ok.tools.sleep, seconds=0, value=7)  # a built-in, by callable
        .task("f", "sleep", seconds=0, value=8)  # and by name
    )
    assert [s.tool for s in dag.specs.values()] == [
        "double_it", "double_it", "triple", "triple", "sleep", "sleep",
    ]
    assert "double_it" not in dag.tools  # found in the default registry, not copied
    run = dag.run(live=False)
    assert run.df["result"].tolist() == [2, 4, 9, 12, 7, 8]


def test_a_callable_never_takes_a_name_that_finds_another_tool(clean_registry: None) -> None:
    def sleep(seconds: float) -> str:  # same name as the built-in
        return f"mine {seconds}"

    @ok.tool(name="sleep")  # shadows the built-in in the default registry
    def other_sleep(seconds: float) -> str:
        return "other"

    dag = ok.DAG().task("a", sleep, seconds=1).task("b", ok.tools.sleep, seconds=0, value=2)
    assert dag.specs["a"].tool != "sleep"
    assert dag.specs["b"].tool != "sleep"  # "sleep" now finds other_sleep
    run = dag.run(live=False)
    assert run.df["result"].to_dict() == {"a": "mine 1", "b": 2}


def test_unknown_tool_name_fails_at_run_time_with_close_matches() -> None:
    dag = ok.DAG().task("a", "file_wrte", path="x", content="y")  # accepted while building
    with pytest.raises(ok.ToolNotFoundError) as exc:
        dag.run(live=False)
    assert exc.value.code == "TOOL_NOT_FOUND"
    assert "file_wrte" in str(exc.value) and "file_write" in str(exc.value)
    assert dag.last_run is None


# ---------------------------------------------------------------------- errors at .task() time
def test_duplicate_id_raises_at_task_time() -> None:
    dag = ok.DAG().task("a", echo)
    with pytest.raises(ok.DuplicateTaskError) as exc:
        dag.task("a", echo)
    assert str(exc.value).startswith("Duplicate task ID: a; ") and "replace=True" in str(exc.value)
    assert exc.value.code == "DUPLICATE_TASK"
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "exc_type", "words"),
    [
        ({"priority": 0}, ValueError, ["priority", "1 to 10"]),
        ({"priority": 11}, ValueError, ["priority"]),
        ({"priority": True}, ValueError, ["priority"]),
        ({"priority": "5"}, ValueError, ["priority"]),
        ({"timeout": 0}, ValueError, ["timeout", "seconds"]),
        ({"timeout": -1.0}, ValueError, ["timeout"]),
        ({"timeout": "5"}, ValueError, ["timeout"]),
        ({"timeout": float("nan")}, ValueError, ["timeout"]),
        ({"retries": -1}, ValueError, ["retries", ">= 0"]),
        ({"retries": 1.5}, ValueError, ["retries"]),
        ({"retries": 2, "retry": ok.RetryPolicy(3)}, ValueError, ["not both"]),
        ({"retry": 3}, TypeError, ["RetryPolicy"]),
        ({"trigger": "sometimes"}, ValueError, ["trigger", "all_done"]),
        ({"vault": ""}, ValueError, ["vault"]),
        ({"vault": "api", "credentials": "x"}, ValueError, ["credentials"]),
        ({"after": 3}, TypeError, ["after"]),
        ({"after": ["a", 3]}, TypeError, ["after"]),
        ({"rollback": 3}, TypeError, ["rollback"]),
    ],
)
def test_bad_arguments_raise_at_task_time_naming_task_and_field(
    kwargs: dict[str, Any], exc_type: type[Exception], words: list[str]
) -> None:
    dag = ok.DAG().task("a", echo)
    with pytest.raises(exc_type) as exc:
        dag.task("t1", echo, **kwargs)
    msg = str(exc.value)
    assert "t1" in msg, msg
    for w in words:
        assert w in msg, msg
    assert "t1" not in dag  # nothing half-added


@pytest.mark.parametrize("bad", ["", "a b", "-x", "x.y", "${a}", "é", "x" * 129])
def test_malformed_ids_raise(bad: str) -> None:
    with pytest.raises(ValueError, match="not valid"):
        ok.DAG().task(bad, echo)


def test_non_string_id_and_tool_raise() -> None:
    with pytest.raises(TypeError, match="task id"):
        ok.DAG().task(3, echo)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Task a: tool must be a callable"):
        ok.DAG().task("a", 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Task a: the tool name must not be empty"):
        ok.DAG().task("a", "")


def test_self_dependency_and_self_reference_are_cycles_at_once() -> None:
    with pytest.raises(ok.CircularDependencyError) as exc:
        ok.DAG().task("a", echo, after="a")
    assert exc.value.cycle == ["a", "a"]
    with pytest.raises(ok.CircularDependencyError):
        ok.DAG().task("a", echo, x="${a.result}")
    # a rollback may reference its own task's result
    ok.DAG().task("a", echo, rollback=ok.Rollback(echo, undo="${a.result}"))


def test_malformed_reference_raises_at_task_time() -> None:
    with pytest.raises(ok.VariableResolutionError) as exc:
        ok.DAG().task("b", echo, x="${a}")
    assert exc.value.code == "VARIABLE_RESOLUTION_ERROR"
    assert "Task b" in str(exc.value) and "field" in str(exc.value)


# ---------------------------------------------------------------------- errors at run time
def test_missing_dependency_and_reference_raise_before_anything_runs() -> None:
    ran: list[str] = []

    def mark() -> None:
        ran.append("x")

    dag = ok.DAG().task("a", mark).task("b", mark, after=["zz"])
    with pytest.raises(ok.MissingDependencyError) as exc:
        dag.run(live=False)
    assert str(exc.value) == "Task b depends on non-existent task zz"
    dag.remove("b").task("b", echo, x="${yy.result}")
    with pytest.raises(ok.MissingDependencyError, match="yy"):
        dag.run(live=False)
    assert ran == []


def test_cycle_raises_at_run_time() -> None:
    dag = (
        ok.DAG()
        .task("a", echo, x="${c.result}")
        .task("b", echo, after="a")
        .task("c", echo, after="b")
    )
    with pytest.raises(ok.CircularDependencyError) as exc:
        dag.run(live=False)
    assert exc.value.cycle == ["a", "b", "c", "a"]
    assert exc.value.code == "CIRCULAR_DEPENDENCY"


def test_run_settings_are_checked() -> None:
    dag = ok.DAG().task("a", echo)
    with pytest.raises(ValueError, match="max_concurrent"):
        dag.run(live=False, max_concurrent=0)
    with pytest.raises(TypeError, match="max_concurrent"):
        dag.run(live=False, max_concurrent=2.5)
    with pytest.raises(ValueError, match="failure_mode"):
        dag.run(live=False, failure_mode="explode")
    with pytest.raises(ValueError, match="timeout"):
        dag.run(live=False, timeout=-1)
    with pytest.raises(ValueError, match="strategy"):
        ok.DAG(strategy="random")
    with pytest.raises(TypeError, match="max_concurrent"):
        ok.DAG(max_concurrent="4")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- conversions
FULL_REQUEST: dict[str, Any] = {
    "tasks": [
        {"id": "fetch", "tool": "fetch", "params": {"url": "http://x/y", "n": [1, 2]},
         "priority": 9, "timeout": 1100.0, "vault": "api",
         "retryPolicy": {"maxAttempts": 3, "backoff": "linear", "initialDelay": 250.0}},
        {"id": "store", "tool": "store", "params": {"rows": "${fetch.result.rows}"},
         "dependsOn": ["fetch"], "timeout": 0.5,
         "retryPolicy": {"maxAttempts": 2, "backoff": "exponential", "initialDelay": 1000.0},
         "rollback": {"tool": "unstore", "params": {"key": "${store.result.key}"}}},
        {"id": "cleanup", "tool": "cleanup", "params": {}, "dependsOn": ["store", "fetch"],
         "runIf": "all_done", "priority": 1},
    ],
    "config": {"maxConcurrent": 3, "failureMode": "rollback", "timeout": 1234.5678,
               "enableRollback": True},
}


def _tools() -> dict[str, Any]:
    return {"fetch": echo, "store": echo, "unstore": echo, "cleanup": echo}


def test_from_request_to_request_is_lossless() -> None:
    for form in (FULL_REQUEST, json.dumps(FULL_REQUEST), ok.ExecutionRequest.model_validate(
            FULL_REQUEST)):
        dag = ok.DAG.from_request(form, tools=_tools())
        out = dag.to_request().model_dump(by_alias=True, mode="json", exclude_none=True)
        assert out == FULL_REQUEST
    dag = ok.DAG.from_request(FULL_REQUEST, tools=_tools())
    assert dag.config.timeout == pytest.approx(1.2345678)  # seconds in Python
    graph = dag.validate()
    assert graph.nodes["fetch"].timeout == pytest.approx(1.1)
    assert graph.nodes["fetch"].retry == ok.RetryPolicy(3, "linear", 0.25)
    assert graph.nodes["cleanup"].trigger == "all_done"


def test_snake_case_requests_are_accepted() -> None:
    snake = {
        "tasks": [{"id": "a", "tool": "fetch", "params": {}, "depends_on": None,
                   "retry_policy": {"max_attempts": 2, "initial_delay": 10}, "run_if": "all_done"}],
        "config": {"max_concurrent": 2, "failure_mode": "stop"},
    }
    dag = ok.DAG.from_request(snake, tools=_tools())
    out = dag.to_request().model_dump(by_alias=True, exclude_none=True)
    assert out["tasks"][0]["retryPolicy"] == {
        "maxAttempts": 2, "backoff": "exponential", "initialDelay": 10.0,
    }
    assert out["tasks"][0]["runIf"] == "all_done"
    assert out["config"] == {"maxConcurrent": 2, "failureMode": "stop"}


def test_builder_to_request_uses_milliseconds_and_round_trips() -> None:
    dag = (
        ok.DAG("b", max_concurrent=2, failure_mode="rollback", timeout=2.5)
        .task("fetch", echo, url="u", priority=7, timeout=1.1, vault="api",
              retry=ok.RetryPolicy(max_attempts=4, backoff="linear", initial_delay=0.3))
        .task("store", echo, rows="${fetch.result}", retries=2,
              rollback=ok.Rollback(echo, key="${store.result.key}"))
        .task("note", echo, after=["store"], trigger="all_done", timeout=0.001)
    )
    req = dag.to_request().model_dump(by_alias=True, mode="json", exclude_none=True)
    assert req == {
        "tasks": [
            {"id": "fetch", "tool": "echo", "params": {"url": "u"}, "priority": 7,
             "timeout": 1100.0, "vault": "api",
             "retryPolicy": {"maxAttempts": 4, "backoff": "linear", "initialDelay": 300.0}},
            {"id": "store", "tool": "echo", "params": {"rows": "${fetch.result}"},
             "retryPolicy": {"maxAttempts": 3, "backoff": "exponential", "initialDelay": 1000.0},
             "rollback": {"tool": "echo", "params": {"key": "${store.result.key}"}}},
            {"id": "note", "tool": "echo", "params": {}, "dependsOn": ["store"],
             "timeout": 1.0, "runIf": "all_done"},
        ],
        "config": {"maxConcurrent": 2, "failureMode": "rollback", "timeout": 2500.0},
    }
    back = ok.DAG.from_request(json.dumps(req), tools=dag.tools, name="b")
    assert back == dag
    assert back.to_request() == dag.to_request()
    assert back.to_json() == dag.to_json()
    graph = back.validate()
    assert graph.nodes["fetch"].timeout == 1.1  # exactly: ms chosen to convert back
    assert graph.nodes["fetch"].retry.initial_delay == 0.3
    assert graph.nodes["note"].timeout == 0.001


def test_seconds_to_ms_gives_short_exact_values() -> None:
    assert seconds_to_ms(1.1) == 1100.0
    assert seconds_to_ms(0.3) == 300.0
    assert seconds_to_ms(0.0001234567) / 1000.0 == 0.0001234567
    assert seconds_to_ms(0) == 0.0


def test_to_request_never_holds_secrets() -> None:
    dag = ok.DAG(vault={"api": {"token": "s3cret-token"}}).task("a", echo, vault="api", x=1)
    assert "s3cret-token" not in dag.to_json()
    assert "s3cret-token" not in repr(dag) and "s3cret-token" not in str(dag)
    run = dag.run(live=False)
    assert run.records["a"].result == {"x": 1, "credentials": {"token": "s3cret-token"}}
    assert "s3cret-token" not in run.df.to_string()


def test_copy_is_independent_and_equal() -> None:
    dag = ok.DAG("x", max_concurrent=3, strategy="levels").task("a", echo, v=[1])
    twin = dag.copy()
    assert twin == dag and twin is not dag
    twin.task("b", echo)
    twin.specs["a"].params["v"].append(2)
    assert "b" not in dag and dag.specs["a"].params["v"] == [1]
    assert twin.config.strategy == "levels"


def test_from_request_rejects_duplicates_and_keeps_extra_settings() -> None:
    req = {"tasks": [{"id": "a", "tool": "x"}, {"id": "a", "tool": "x"}]}
    with pytest.raises(ok.DuplicateTaskError):
        ok.DAG.from_request(req)
    dag = ok.DAG.from_request({"tasks": []}, strategy="levels", name="n")
    assert dag.config.strategy == "levels" and dag.name == "n"
    assert dag.run(live=False).status == "success"  # an empty DAG is valid


# ---------------------------------------------------------------------- running
def test_run_in_a_script_sync_in_threads_async_on_the_loop() -> None:
    seen: dict[str, Any] = {}

    async def on_loop() -> None:
        seen["loop"] = asyncio.get_running_loop()
        seen["loop_thread"] = threading.current_thread()

    def in_thread() -> None:
        seen["thread"] = threading.current_thread()

    run = ok.DAG().task("a", on_loop).task("b", in_thread).run(live=False)
    assert run.status == "success"
    assert seen["loop_thread"] is threading.main_thread()
    assert seen["thread"] is not threading.main_thread()
    assert seen["loop"].is_closed()  # run() gave the script a loop of its own and closed it
    assert run.df.loc["a", "worker"] == "event-loop"
    assert run.df.loc["b", "worker"] == seen["thread"].name


def test_arun_runs_async_tools_on_the_callers_loop() -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    async def where() -> None:
        loops.append(asyncio.get_running_loop())

    dag = ok.DAG().task("a", where).task("b", where, after="a")

    async def main() -> tuple[ok.Run, asyncio.AbstractEventLoop]:
        return await dag.arun(live=False), asyncio.get_running_loop()

    run, loop = asyncio.run(main())
    assert run.status == "success"
    assert loops == [loop, loop]
    assert dag.last_run is run


def test_sync_tool_running_a_dag_does_not_deadlock() -> None:
    inner = ok.DAG("inner").task("x", asleep, seconds=0.05, value=1).task(
        "y", tsleep, value="${x.result}")

    def runs_inner() -> Any:
        return inner.run(live=False).df["result"].to_dict()

    outer = ok.DAG("outer", max_concurrent=4)
    for i in range(4):  # several at once: they must not starve each other of threads
        outer.task(f"t{i}", runs_inner)
    t0 = perf()
    run = outer.run(live=False, timeout=20)
    assert perf() - t0 < 10
    assert run.status == "success", run.df["error_message"]
    assert run.df["result"].tolist() == [{"x": 1, "y": 1}] * 4


def test_async_tool_awaiting_a_dag_does_not_deadlock() -> None:
    loops: list[int] = []

    async def x() -> int:
        loops.append(id(asyncio.get_running_loop()))
        await asyncio.sleep(0.02)
        return 2

    inner = ok.DAG("inner").task("x", x).task("y", tsleep, value="${x.result}")

    async def awaits_inner() -> Any:
        loops.append(id(asyncio.get_running_loop()))
        run = await inner.arun(live=False)
        return run.df["result"].to_dict()

    run = ok.DAG("outer").task("a", awaits_inner).task("b", awaits_inner).run(
        live=False, timeout=20)
    assert run.status == "success", run.df["error_message"]
    assert run.df["result"].tolist() == [{"x": 2, "y": 2}] * 2
    assert len(set(loops)) == 1  # the inner runs shared the outer run's loop


NESTED_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, time
    import oktyv_nb as ok

    async def x():
        await asyncio.sleep(0.02)
        return 1

    inner = ok.DAG("inner").task("x", x).task("y", lambda v: v + 1, v="${x.result}")
    from_callback = []

    async def calls_run():  # a *sync* run() from inside a running task
        return inner.run(live=False).df["result"].to_dict()

    def on_event(kind, rec, t):  # and from inside a callback on the loop
        if kind == "task_finished" and rec.task_id == "a" and not from_callback:
            from_callback.append(inner.run(live=False).status)

    async def other():
        await asyncio.sleep(0.1)
        return "other"

    before = hasattr(asyncio, "_nest_patched")
    dag = (  # a, a2, a3 and b start in one batch of the loop: the nested runs must not eat it
        ok.DAG("outer").task("a", calls_run).task("a2", calls_run).task("a3", calls_run)
        .task("b", other).task("c", calls_run, after="a")
    )
    t0 = time.perf_counter()
    run = dag.run(live=False, on_event=on_event, timeout=20)
    out = {
        "before": before, "after": hasattr(asyncio, "_nest_patched"),
        "status": run.status, "results": run.df["result"].to_dict(),
        "callback": from_callback, "seconds": time.perf_counter() - t0,
        "again": ok.DAG().task("z", x).run(live=False).status,
    }

    async def current():
        return asyncio.get_running_loop()

    out["asyncio_run_closes"] = asyncio.run(current()).is_closed()  # as unpatched
    print(json.dumps(out))
    """
)


def test_sync_run_from_a_running_task_or_callback_nests_without_deadlock() -> None:
    # In its own process: nest_asyncio2 patches asyncio for good once applied.
    proc = subprocess.run(
        [sys.executable, "-c", NESTED_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["before"] is False  # not applied at import
    assert out["after"] is True  # applied lazily, when run() found the loop running
    assert out["status"] == "success"
    nested = {"x": 1, "y": 2}
    assert out["results"] == {"a": nested, "a2": nested, "a3": nested, "b": "other", "c": nested}
    assert out["callback"] == ["success"]
    assert out["seconds"] < 10
    assert out["again"] == "success"
    # nest_asyncio2 is applied with run_close_loop: from Python 3.12 on, a plain
    # asyncio.run() elsewhere in the process still closes its loop (on 3.11 nest_asyncio2's
    # asyncio.run reuses the thread's loop whatever the setting)
    assert out["asyncio_run_closes"] is (sys.version_info >= (3, 12))


def test_run_settings_override_the_dags() -> None:
    dag = ok.DAG(max_concurrent=1, vault={"s": {"k": "vvv"}})
    for i in range(4):
        dag.task(f"t{i}", asleep, seconds=0.1)
    t0 = perf()
    run = dag.run(live=False, max_concurrent=4)
    assert perf() - t0 < 0.35  # 4 at once, not 1
    assert run.outcome.config.max_concurrent == 4
    assert dag.config.max_concurrent == 1  # the DAG is unchanged
    dag2 = ok.DAG(vault={"s": {"k": "vvv"}}).task("a", echo, vault="s")
    run2 = dag2.run(live=False, vault={})  # an empty vault given for this run is honoured
    assert run2.df.loc["a", "error_code"] == "VAULT_NOT_FOUND"


# ---------------------------------------------------------------------- interrupts
def _interrupt_dag() -> ok.DAG:
    return (
        ok.DAG("slow", max_concurrent=2)
        .task("a", asleep, seconds=0.02, value="A")
        .task("b", asleep, seconds=5.0, after="a")
        .task("c", tsleep, seconds=0.3)
        .task("d", asleep, seconds=0.01, after="b")
        .task("e", asleep, seconds=0.01, after="c")
    )


def _check_partial(dag: ok.DAG, elapsed: float) -> None:
    run = dag.last_run
    assert run is not None
    assert run.interrupted
    df = run.df
    assert list(df.index) == ["a", "b", "c", "d", "e"]  # every task has its record
    assert set(df["status"]) <= {"success", "failed", "skipped"}
    assert df.loc["a", "status"] == "success" and df.loc["a", "result"] == "A"
    assert df.loc["b", "status"] == "failed" and df.loc["b", "error_code"] == "CANCELLED"
    assert df.loc["d", "status"] == "skipped"
    assert elapsed < 3.0  # b's 5 s sleep was cancelled, not awaited
    assert run.result.summary.total == 5


def test_cancelling_arun_keeps_the_partial_run() -> None:
    dag = _interrupt_dag()

    async def main() -> float:
        t0 = perf()
        task = asyncio.create_task(dag.arun(live=False))
        await asyncio.sleep(0.15)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return perf() - t0

    elapsed = asyncio.run(main())
    _check_partial(dag, elapsed)


def test_keyboard_interrupt_from_a_subscriber_keeps_the_partial_run() -> None:
    dag = _interrupt_dag()

    def stop_button(kind: EventKind, rec: TaskRecord | None, t: float) -> None:
        if kind == "task_started" and rec.task_id == "b":
            raise KeyboardInterrupt

    t0 = perf()
    with pytest.raises(KeyboardInterrupt):
        dag.run(live=False, on_event=stop_button)
    _check_partial(dag, perf() - t0)


@pytest.mark.skipif(
    signal.getsignal(signal.SIGINT) is not signal.default_int_handler,
    reason="needs Python's default SIGINT handler",
)
def test_real_sigint_keeps_the_partial_run() -> None:
    dag = _interrupt_dag()

    def ctrl_c(kind: EventKind, rec: TaskRecord | None, t: float) -> None:
        if kind == "task_started" and rec.task_id == "b":
            signal.raise_signal(signal.SIGINT)

    t0 = perf()
    with pytest.raises(KeyboardInterrupt):
        dag.run(live=False, on_event=ctrl_c)
    _check_partial(dag, perf() - t0)
    assert dag.run(live=False, max_concurrent=5, timeout=0.5).interrupted is False


def test_an_interrupted_run_says_in_one_line_where_the_partial_run_is(tmp_path: Any) -> None:
    script = tmp_path / "interrupted.py"
    script.write_text(textwrap.dedent("""
        import time
        import oktyv_nb as ok

        def slow():
            time.sleep(5)

        dag = ok.DAG().task("a", slow).task("b", "sleep", seconds=0.0).task("c", slow, after="a")
        print("started", flush=True)
        dag.run(live=False)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "started\n"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    last = err.strip().splitlines()[-1]
    assert last.startswith("oktyv_nb.errors.RunInterrupted: run interrupted after ")
    assert last.endswith(": 1 succeeded, 1 cancelled while running, 1 skipped of 3 tasks; "
                         "the partial run is dag.last_run")
    # the user's line and the raise: no frames of the event loop, nest_asyncio or selectors
    assert err.count('File "') == 2, err
    assert "asyncio" not in err and "selectors" not in err


def test_a_cancelled_arun_says_where_the_partial_run_is() -> None:
    dag = _interrupt_dag()

    async def main() -> BaseException:
        task = asyncio.create_task(dag.arun(live=False))
        await asyncio.sleep(0.3)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError as exc:
            return exc
        raise AssertionError("not cancelled")

    exc = asyncio.run(main())
    assert "the partial run is dag.last_run" in str(exc)
    assert dag.last_run is not None and dag.last_run.interrupted


def test_last_run_is_the_latest() -> None:
    dag = ok.DAG().task("a", echo)
    r1 = dag.run(live=False)
    assert dag.last_run is r1
    r2 = dag.run(live=False)
    assert dag.last_run is r2 and r2 is not r1


# ---------------------------------------------------------------------- resume
def test_rerun_failed_reruns_failed_skipped_and_their_dependents() -> None:
    calls: dict[str, int] = {}

    def counted(name: str, fail_first: bool = False, value: Any = None) -> Any:
        calls[name] = calls.get(name, 0) + 1
        if fail_first and calls[name] == 1:
            raise ConnectionError(f"{name}: first call fails")
        return value if value is not None else name

    dag = (
        ok.DAG("resume")
        .task("a", counted, name="a")
        .task("b", counted, name="b", fail_first=True, value="${a.result}")
        .task("c", counted, name="c", value="${b.result}")  # skipped on the first run
        .task("d", counted, name="d")  # independent
        .task("e", counted, name="e", after="b", trigger="all_done")  # ran after b failed
    )
    run1 = dag.run(live=False)
    assert run1.df["status"].tolist() == ["success", "failed", "skipped", "success", "success"]
    assert run1.failed == ["b"] and run1.skipped == ["c"]
    run2 = run1.rerun_failed()
    assert run2.status == "success"
    assert run2.reused == ["a", "d"]
    assert calls == {"a": 1, "b": 2, "c": 1, "d": 1, "e": 2}
    df = run2.df
    assert df["reused"].tolist() == [True, False, False, True, False]
    assert df.loc["a", "result"] == "a" and df.loc["c", "result"] == "a"
    assert df.loc["a", "attempts"] == 0 and df.loc["b", "attempts"] == 1
    assert run2.result.tasks["a"].reused is True
    assert run2.result.tasks["b"].reused is None
    assert dag.last_run is run2
    run3 = dag.run(resume=run2, live=False)  # nothing left to do: everything reused
    assert run3.reused == ["a", "b", "c", "d", "e"]
    assert calls == {"a": 1, "b": 2, "c": 1, "d": 1, "e": 2}


def test_rerun_failed_keeps_the_runs_settings_and_reruns_changed_tasks() -> None:
    state = {"n": 0}

    def needs_key(credentials: dict[str, str]) -> str:
        state["n"] += 1
        if state["n"] == 1:
            raise RuntimeError("flaky")
        return credentials["key"][:1]

    dag = ok.DAG().task("k", needs_key, vault="api").task("v", echo, x=1)
    run1 = dag.run(live=False, vault={"api": {"key": "zzz"}}, max_concurrent=1)
    assert run1.df.loc["k", "status"] == "failed"
    dag.remove("v").task("v", echo, x=2)  # changed since: must run again
    run2 = run1.rerun_failed()
    assert run2.outcome.config.max_concurrent == 1
    assert run2.df.loc["k", "result"] == "z"  # the vault of the first run
    assert run2.reused == []
    assert run2.df.loc["v", "result"] == {"x": 2}


def test_arerun_failed() -> None:
    state = {"n": 0}

    async def flaky() -> int:
        state["n"] += 1
        if state["n"] == 1:
            raise ValueError("once")
        return state["n"]

    dag = ok.DAG().task("ok", echo).task("f", flaky)

    async def main() -> ok.Run:
        run = await dag.arun(live=False)
        return await run.arerun_failed(live=False)

    run = asyncio.run(main())
    assert run.status == "success" and run.reused == ["ok"]


# ---------------------------------------------------------------------- sweep
def test_sweep_gives_makespan_and_speedup_per_setting() -> None:
    dag = ok.DAG("fan")
    for i in range(8):
        dag.task(f"t{i}", asleep, seconds=0.1)
    df = dag.sweep(max_concurrent=[1, 2, 4, 8])
    assert df["max_concurrent"].tolist() == [1, 2, 4, 8]
    for col in ("makespan_s", "speedup", "relative_speedup", "efficiency", "lower_bound_s"):
        assert df[col].dtype == float
    ms = dict(zip(df["max_concurrent"], df["makespan_s"], strict=True))
    assert ms[1] >= 0.8 and ms[8] < 0.45
    assert ms[1] > ms[2] > ms[8]
    rel = dict(zip(df["max_concurrent"], df["relative_speedup"], strict=True))
    assert rel[1] == 1.0 and rel[8] > 2.5
    assert (df["status"] == "success").all()
    df2 = asyncio.run(dag.asweep([1, 8], repeat=2))
    assert df2[["max_concurrent", "repeat"]].values.tolist() == [[1, 0], [1, 1], [8, 0], [8, 1]]
    with pytest.raises(ValueError, match="at least one"):
        dag.sweep([])


# ---------------------------------------------------------------------- display
def test_text_reprs_are_readable() -> None:
    dag = ok.DAG("shop", max_concurrent=2).task("a", echo).task("b", echo, after="a")
    assert repr(dag) == "<DAG 'shop': 2 tasks, 2 levels, max_concurrent=2>"
    assert str(dag).splitlines() == [
        "<DAG 'shop': 2 tasks, 2 levels, max_concurrent=2>",
        "  level 0:", "    a (echo)", "  level 1:", "    b (echo) <- a",
    ]
    broken = ok.DAG().task("a", echo, after="nope")
    assert "invalid: MissingDependencyError" in repr(broken)
    assert "non-existent task nope" in str(broken)
    one = ok.DAG("one").task("a", echo)
    assert repr(one) == "<DAG 'one': 1 task, 1 level, max_concurrent=10>"
    assert repr(ok.DAG("none")) == "<DAG 'none': 0 tasks, 0 levels, max_concurrent=10>"


def test_dag_mimebundle_renders_the_graph_or_the_error() -> None:
    dag = ok.DAG("shop").task("a", echo).task("b", echo, after="a")
    bundle = dag._repr_mimebundle_()
    assert bundle["text/plain"].startswith("<DAG 'shop'")
    if shutil.which("dot"):  # the SVG inline, scaled to the cell's width
        assert "image/svg+xml" not in bundle
        svg = bundle["text/html"]
        assert "max-width:100%" in svg[svg.index("<svg"):svg.index(">", svg.index("<svg"))]
    else:
        assert "text/html" in bundle
    broken = ok.DAG().task("a", echo, after="nope")._repr_mimebundle_()
    assert "non-existent task nope" in broken["text/html"]


def test_run_reprs() -> None:
    dag = ok.DAG("shop").task("a", echo).task("b", tsleep, seconds="not a number")
    run = dag.run(live=False)
    assert repr(run).startswith("<Run 'shop' partial: 1 succeeded, 1 failed, 0 skipped of 2 in ")
    html = run._repr_html_()
    assert "<table" in html and "TypeError" in html
    pretty: list[str] = []

    class P:
        def text(self, s: str) -> None:
            pretty.append(s)

    run._repr_pretty_(P(), False)
    assert "TypeError" in pretty[0] and "duration_s" in pretty[0]


IN_LOOP_TRACEBACKS = textwrap.dedent(
    """
    import asyncio, json, traceback
    import oktyv_nb as ok

    def echo(**kwargs):
        return kwargs

    dag = ok.DAG("typo").task("a", echo).task("b", echo, x="${aa.result}")
    seen = []

    def frames(exc):
        return [[f.filename, f.name] for f in traceback.extract_tb(exc.__traceback__)]

    async def in_a_running_loop():
        ok.DAG("fine").task("a", echo).run(live=False)  # the loop is made reentrant
        try:
            dag.run(live=False)
        except ok.OktyvError as exc:
            seen.append(frames(exc))
        try:
            await dag.arun(live=False)
        except ok.OktyvError as exc:
            seen.append(frames(exc))

    asyncio.run(in_a_running_loop())
    print(json.dumps({"file": __file__, "seen": seen}))
    """
)


def test_an_early_validation_error_has_a_short_traceback(tmp_path: Any) -> None:
    """A DAG referring to a task that does not exist fails before any event loop is
    involved: its traceback holds the caller's frame and the library's checks, nothing of
    asyncio or nest_asyncio2, also when run() is called while a loop runs (Jupyter; in a
    process of its own, since nest_asyncio2 patches asyncio for good once applied)."""
    import traceback

    def check(tb: list[tuple[str, str]], caller: str, entry: str) -> None:
        shown = [f"{file} {name}" for file, name in tb]
        assert not [f for f in shown if "asyncio" in f or "nest_asyncio" in f], shown
        assert tb[0][0] == caller, shown  # the caller's own lines come first
        ours = [(file, name) for file, name in tb if file != caller]
        assert ours[0][1] == entry and ours[0][0].endswith("oktyv_nb/dag.py"), shown
        assert all("/oktyv_nb/" in file for file, _ in ours), shown
        assert len(ours) <= 6, shown  # run/arun, the plan, the graph's checks

    dag = ok.DAG("typo").task("a", echo).task("b", echo, x="${aa.result}")
    with pytest.raises(ok.OktyvError, match="no task aa") as info:
        dag.run(live=False)
    check([(f.filename, f.name) for f in traceback.extract_tb(info.value.__traceback__)],
          __file__, "run")

    script = tmp_path / "in_loop.py"
    script.write_text(IN_LOOP_TRACEBACKS, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(out["seen"]) == 2
    check([tuple(f) for f in out["seen"][0]], out["file"], "run")
    check([tuple(f) for f in out["seen"][1]], out["file"], "arun")


def test_large_dag_display_skips_drawing() -> None:
    dag = ok.DAG("big")
    for i in range(400):
        dag.task(f"t{i}", echo)
    bundle = dag._repr_mimebundle_()
    assert "image/svg+xml" not in bundle
    assert "400 tasks" in bundle["text/plain"] and "dag.graph()" in bundle["text/plain"]
    assert "... 350 more" in str(dag)


def test_validate_sees_specs_replaced_directly() -> None:
    dag = ok.DAG().task("a", echo).task("b", echo)
    assert dag.levels == [["a", "b"]]
    dag.specs["b"] = dag.specs["b"].model_copy(update={"depends_on": ["a"]})
    assert dag.levels == [["a"], ["b"]]


def test_tool_params_named_like_task_options_go_in_the_params_dict(tmp_path: Any) -> None:
    dag = ok.DAG().task(
        "s", ok.tools.shell, {"timeout": 5.0}, argv=["echo", "hi"], timeout=2.0, retries=1
    )
    spec = dag.specs["s"]
    assert spec.params == {"timeout": 5.0, "argv": ["echo", "hi"]}
    assert spec.timeout == 2000.0 and spec.retry_policy.max_attempts == 2
    run = dag.run(live=False)
    assert run.result.tasks["s"].result["stdout"] == "hi\n"
    # id and tool are positional-only, so tools may take params of those names too
    ident = ok.DAG().task("t", lambda id, tool: f"{id}/{tool}", id=1, tool="x")
    assert ident.run(live=False).result.tasks["t"].result == "1/x"
    with pytest.raises(ValueError, match="given both"):
        ok.DAG().task("s", ok.tools.shell, {"argv": ["a"]}, argv=["b"])
    with pytest.raises(TypeError, match="dict of tool params"):
        ok.DAG().task("s", ok.tools.shell, ["echo"])


# ---------------------------------------------------------------------- editing in place
def test_add_spec_adds_a_request_task_as_task_would() -> None:
    model = ok.ExecutionRequest.model_validate(FULL_REQUEST)
    dag = ok.DAG(tools=_tools())
    for spec in model.tasks:
        assert dag.add_spec(spec) is dag
    assert dag.task_ids == ["fetch", "store", "cleanup"]
    assert dag.to_request().tasks == model.tasks
    assert dag.levels == [["fetch"], ["store"], ["cleanup"]]
    # the DAG keeps a copy
    model.tasks[0].params["n"].append(3)
    model.tasks[1].rollback.params["key"] = "changed"
    assert dag.specs["fetch"].params["n"] == [1, 2]
    assert dag.specs["store"].rollback.params["key"] == "${store.result.key}"
    # a spec built from task() arguments goes back in unchanged
    built = ok.DAG().task("s", ok.tools.shell, {"timeout": 5.0}, argv=["x"], timeout=0.1,
                          retries=2, trigger="all_done")
    again = ok.DAG().add_spec(built.specs["s"])
    assert again.specs["s"] == built.specs["s"] and again == built


_SPEC = ok.ExecutionRequest.model_validate({"tasks": [{"id": "t1", "tool": "echo"}]}).tasks[0]


@pytest.mark.parametrize(
    ("update", "exc_type", "words"),
    [
        ({"id": "a"}, ok.DuplicateTaskError, ["Duplicate task ID: a"]),
        ({"id": "a b"}, ok.InvalidOptionError, ["'a b'", "not valid"]),
        ({"depends_on": ["t1"]}, ok.CircularDependencyError, ["t1 → t1"]),
        ({"params": {"x": "${t1.result}"}}, ok.CircularDependencyError, ["t1"]),
        ({"params": {"x": "${a}"}}, ok.VariableResolutionError, ["Task t1", "field"]),
        ({"priority": 0}, ok.InvalidOptionError, ["Task t1", "priority", "1 to 10"]),
        ({"timeout": -5.0}, ok.InvalidOptionError, ["Task t1", "timeout", "seconds"]),
        ({"run_if": "sometimes"}, ok.InvalidOptionError, ["Task t1", "trigger"]),
        ({"vault": "api", "params": {"credentials": "x"}}, ok.InvalidOptionError,
         ["Task t1", "credentials"]),
        ({"tool": ""}, ok.InvalidOptionError, ["Task t1", "tool name"]),
        ({"depends_on": [""]}, ok.InvalidOptionError, ["Task t1", "after"]),
    ],
)
def test_add_spec_checks_the_spec_as_task_checks_its_arguments(
    update: dict[str, Any], exc_type: type[Exception], words: list[str]
) -> None:
    dag = ok.DAG().task("a", echo)
    bad = _SPEC.model_copy(update=update)  # model_copy(update=) skips pydantic's checks
    with pytest.raises(exc_type) as exc:
        dag.add_spec(bad)
    for w in words:
        assert w in str(exc.value), str(exc.value)
    assert dag.task_ids == ["a"]  # nothing half-added
    with pytest.raises(TypeError, match="TaskSpec"):
        dag.add_spec({"id": "t2", "tool": "echo"})  # type: ignore[arg-type]


def test_replace_tasks_replaces_every_task_in_order() -> None:
    dag = ok.DAG().task("a", echo).task("b", echo)
    assert dag.levels == [["a", "b"]]
    a, b = dag.specs["a"], dag.specs["b"]
    c = b.model_copy(update={"id": "c", "depends_on": ["a"]})
    assert dag.replace_tasks([c, a]) is dag
    assert dag.task_ids == ["c", "a"]
    assert dag.specs["c"] is c and dag.specs["a"] is a  # the objects themselves
    assert dag.levels == [["a"], ["c"]]
    # the cached graph goes even when the very same spec objects come back
    c.depends_on = None
    dag.replace_tasks(dag.specs.values())
    assert dag.levels == [["c", "a"]]
    assert dag.replace_tasks(iter([])).task_ids == []


def test_replace_tasks_refuses_duplicates_and_non_specs_and_changes_nothing() -> None:
    dag = ok.DAG().task("a", echo).task("b", echo, after="a")
    a, b = dag.specs["a"], dag.specs["b"]
    with pytest.raises(ok.DuplicateTaskError, match="Duplicate task ID: a"):
        dag.replace_tasks([a, b, a])
    with pytest.raises(TypeError, match="TaskSpec"):
        dag.replace_tasks([a, {"id": "x", "tool": "echo"}])  # type: ignore[list-item]
    assert dag.task_ids == ["a", "b"] and dag.levels == [["a"], ["b"]]
    # the whole-DAG checks stay with validate() and run(), as for from_request()
    dag.replace_tasks([b])
    with pytest.raises(ok.MissingDependencyError, match="non-existent task a"):
        dag.validate()


def test_configure_changes_the_settings_given_and_keeps_the_rest() -> None:
    dag = ok.DAG("d", max_concurrent=2, failure_mode="stop", timeout=5.0, backend="threads")
    assert dag.configure(max_concurrent=3) is dag
    assert (dag.name, dag.config.max_concurrent, dag.config.failure_mode,
            dag.config.timeout, dag.config.strategy, dag.backend) == (
        "d", 3, "stop", 5.0, "dependencies", "threads")
    dag.configure(name="renamed", failure_mode="rollback", timeout=2.5, strategy="levels")
    assert dag.name == "renamed" and dag.backend == "threads"
    assert dag.config == ok.DAG(max_concurrent=3, failure_mode="rollback", timeout=2.5,
                                strategy="levels").config
    assert dag.to_request().config.timeout == 2500.0
    dag.configure(timeout=None, name=None)  # None is a value: no run timeout, no name
    assert dag.config.timeout is None and dag.name is None
    dag.task("a", echo)
    run = dag.configure(max_concurrent=1, strategy="dependencies").run(live=False)
    assert run.outcome.config.max_concurrent == 1 and run.status == "success"


@pytest.mark.parametrize(
    ("settings", "exc_type", "option"),
    [
        ({"max_concurrent": 0}, ValueError, "max_concurrent"),
        ({"max_concurrent": 2.5}, TypeError, "max_concurrent"),
        ({"failure_mode": "explode"}, ValueError, "failure_mode"),
        ({"timeout": -1}, ValueError, "timeout"),
        ({"timeout": float("inf")}, ValueError, "timeout"),
        ({"timeout": "5"}, TypeError, "timeout"),
        ({"strategy": "random"}, ValueError, "strategy"),
        ({"name": 3}, TypeError, "name"),
    ],
)
def test_configure_checks_as_the_constructor_and_run_do(
    settings: dict[str, Any], exc_type: type[Exception], option: str
) -> None:
    dag = ok.DAG("d", max_concurrent=2, timeout=5.0)
    before = (dag.name, dag.config)
    with pytest.raises(exc_type) as exc:
        dag.configure(**{"name": "other", "max_concurrent": 4, **settings})
    assert isinstance(exc.value, ok.InvalidOptionError) and exc.value.option == option
    assert option in str(exc.value)
    assert (dag.name, dag.config) == before  # all or nothing
    with pytest.raises(exc_type):  # the same rule as a run's own settings
        if option == "name":
            ok.DAG(3)  # type: ignore[arg-type]
        else:
            dag.task("a", echo).run(live=False, **settings)


def test_to_code_rebuilds_an_equal_dag_without_loading_widgets() -> None:
    def double(x: int) -> int:
        return 2 * x

    dag = (
        ok.DAG("code", max_concurrent=2, timeout=1.5)
        .task("a", double, x=2, timeout=0.25, retries=1)
        .task("b", ok.tools.sleep, seconds=0, value="${a.result}", trigger="all_done")
    )
    code = dag.to_code()
    assert code.startswith("import oktyv_nb as ok\n\ndag = (\n")
    assert '.task("a", double, x=2, timeout=0.25, retries=1)' in code
    namespace: dict[str, Any] = {"double": double}
    exec(compile(code, "<dag.to_code()>", "exec"), namespace)
    assert namespace["dag"] == dag
    script = textwrap.dedent("""
        import sys
        import oktyv_nb as ok
        ok.DAG("x").task("a", "sleep", seconds=0).to_code()
        print([m for m in ("ipywidgets", "pandas", "matplotlib") if m in sys.modules])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_a_cell_run_again_says_how_to_replace_and_replace_keeps_the_place() -> None:
    dag = ok.DAG().task("a", echo, value=1).task("b", echo, value="${a.result}")
    with pytest.raises(ok.DuplicateTaskError, match=r"pass replace=True .* dag.remove\('a'\)"):
        dag.task("a", echo, value=2)
    dag.task("a", echo, value=3, replace=True)
    assert dag.task_ids == ["a", "b"] and dag.specs["a"].params == {"value": 3}
    assert dag.run(live=False).result.tasks["b"].result == {"value": {"value": 3}}
    dag.map("b", echo, over=[1, 2], param="value", replace=True)
    assert dag.specs["b"].map is not None and dag.task_ids == ["a", "b"]
    with pytest.raises(ok.InvalidOptionError, match="replace must be True or False"):
        dag.task("c", echo, replace="yes")  # type: ignore[arg-type]
