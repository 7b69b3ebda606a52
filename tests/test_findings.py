"""Regression tests of broken promises found by hostile testing (SPEC §4, §5, §6, §8, §19).

One test per finding, ``test_fNN_...``. Reproductions that could hang a process run in a
child interpreter with a hard time limit, so a regression fails the test instead of wedging
the suite.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import oktyv_nb as ok
from oktyv_nb.model.graph import RetryPolicy

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s3cretTOKEN42"


def run_child(code: str, timeout: float = 30.0) -> str:
    """Run ``code`` in a fresh interpreter importing this checkout; its stdout. Fails the
    test when the child hangs past ``timeout`` seconds or exits with an error."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
            timeout=timeout, env=env, cwd=ROOT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the child process hung for more than {timeout} s: {exc.stdout!r}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


# ---------------------------------------------------------------- F1 references walk data


def list_rows() -> Any:
    return (row for row in [{"id": 1}])


def raise_and_return_tb() -> Any:
    try:
        raise RuntimeError("x")
    except RuntimeError as exc:
        return exc.__traceback__


def return_module() -> Any:
    return os


class Holder:
    """A plain object holding a module: not a data object."""

    def __init__(self) -> None:
        self.mod = os


@pytest.mark.parametrize(
    ("tool", "path"),
    [
        (list_rows, "gi_frame.f_globals.os.environ.OKTYV_F1_TOKEN"),
        (list_rows, "gi_frame.f_builtins"),
        (list_rows, "gi_code"),
        (raise_and_return_tb, "tb_frame.f_globals"),
        (return_module, "environ.OKTYV_F1_TOKEN"),
        (Holder, "mod.environ"),
    ],
)
def test_f01_references_never_walk_into_interpreter_internals(
    tool: Any, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OKTYV_F1_TOKEN", "env-secret-123")
    result = ok.execute_request(
        {"tasks": [{"id": "rows", "tool": "src"},
                   {"id": "leak", "tool": "sleep",
                    "params": {"seconds": 0, "value": "${rows.result." + path + "}"}}]},
        tools={"src": tool},
    )
    leak = result.tasks["leak"]
    assert leak.status == "failed"
    assert leak.error.code == "VARIABLE_RESOLUTION_ERROR"
    assert "env-secret-123" not in result.to_json()


# ---------------------------------------------------------------- F2 redirects


class _Capture(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]]
    location = ""

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        if self.path.startswith("/start"):
            self.send_response(302)
            self.send_header("Location", self.location)
            self.end_headers()
            return
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def two_servers() -> Iterator[tuple[Any, Any]]:
    servers = []
    for _ in range(2):
        handler = type("H", (_Capture,), {"seen": []})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    yield servers[0], servers[1]
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("same_origin", [False, True])
def test_f02_http_request_keeps_the_vault_token_on_its_origin(
    two_servers: tuple[Any, Any], same_origin: bool
) -> None:
    first, other = two_servers
    p1, p2 = first.server_address[1], other.server_address[1]
    target = f"http://127.0.0.1:{p1}/final" if same_origin else f"http://localhost:{p2}/steal"
    first.RequestHandlerClass.location = target
    result = ok.execute_request(
        {"tasks": [{"id": "get", "tool": "http_request", "vault": "api",
                    "params": {"url": f"http://127.0.0.1:{p1}/start"}}]},
        vault={"api": {"token": SECRET}},
    )
    assert result.tasks["get"].status == "success", result.tasks["get"].error
    assert first.RequestHandlerClass.seen[0] == ("/start", f"Bearer {SECRET}")
    if same_origin:  # a redirect on the same origin keeps the credentials
        assert first.RequestHandlerClass.seen[1] == ("/final", f"Bearer {SECRET}")
    else:
        assert other.RequestHandlerClass.seen == [("/steal", None)]


# ---------------------------------------------------------------- F3 reused secrets


def test_f03_reused_results_stay_redacted() -> None:
    calls = {"b": 0}

    def leak(credentials: dict[str, str]) -> dict[str, str]:
        return {"tok": credentials["token"]}

    def flaky() -> int:
        calls["b"] += 1
        if calls["b"] == 1:
            raise RuntimeError("first time fails")
        return 2

    dag = ok.DAG().task("a", leak, vault="api").task("b", flaky)
    run1 = dag.run(vault={"api": {"token": SECRET}}, live=False)
    assert SECRET not in run1.df.to_string() and SECRET not in run1.result.to_json()
    run2 = run1.rerun_failed()
    assert run2.reused == ["a"] and run2.records["b"].status == "success"
    assert SECRET not in run2.df.to_string()
    assert SECRET not in run2.result.to_json()
    run3 = dag.run(resume=run1, vault={"api": {"token": "other-token"}}, live=False)
    assert SECRET not in run3.result.to_json()


# ---------------------------------------------------------------- F4 tools ignoring cancel


@pytest.mark.parametrize("where", ["task timeout", "run timeout", "arun"])
def test_f04_an_async_tool_ignoring_cancellation_is_abandoned(where: str) -> None:
    out = run_child(f"""
        import asyncio, json, time, warnings
        import oktyv_nb as ok

        async def ignore_cancel():
            while True:
                try:
                    await asyncio.sleep(100)
                except asyncio.CancelledError:
                    pass

        where = {where!r}
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if where == "task timeout":
                run = ok.DAG().task("a", ignore_cancel, timeout=0.2).task(
                    "b", lambda: 1).run(live=False)
            elif where == "run timeout":
                run = ok.DAG(timeout=0.2).task("a", ignore_cancel).run(live=False)
            else:
                async def main():
                    run = await ok.DAG().task("a", ignore_cancel, timeout=0.2).arun(live=False)
                    left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                    return run, len(left)
                run, left = asyncio.run(main())
                assert left == 0, left
        took = time.perf_counter() - t0
        rec = run.records["a"]
        assert ok.DAG().task("x", lambda: 1).run(live=False).status == "success"  # next run
        print(json.dumps({{"status": rec.status, "code": rec.error.code, "took": took,
                           "abandoned": run.outcome.abandoned,
                           "warned": [str(w.message) for w in caught]}}))
    """)
    got = json.loads(out.strip().splitlines()[-1])
    assert got["status"] == "failed"
    assert got["code"] == ("EXECUTION_TIMEOUT" if where == "run timeout" else "TASK_TIMEOUT")
    assert got["took"] < 5.0
    assert got["abandoned"] == ["a"]
    assert any("ignored cancellation" in w for w in got["warned"]), got["warned"]


# ---------------------------------------------------------------- F5 interrupts in subscribers


@pytest.mark.parametrize("exc", ["KeyboardInterrupt", "SystemExit"])
@pytest.mark.parametrize("api", ["run", "arun"])
def test_f05_an_interrupt_raised_by_a_subscriber_at_run_finished_ends_the_run(
    exc: str, api: str
) -> None:
    out = run_child(f"""
        import asyncio, json
        import oktyv_nb as ok

        def cb(kind, rec, t):
            if kind == "run_finished":
                raise {exc}

        dag = ok.DAG().task("a", lambda: 1).task("c", ok.tools.sleep, seconds=0.01, after=["a"])
        left = None
        try:
            if {api!r} == "run":
                dag.run(on_event=cb, live=False)
            else:
                async def main():
                    global left
                    try:
                        await dag.arun(on_event=cb, live=False)
                    finally:
                        me = asyncio.current_task()
                        left = len([t for t in asyncio.all_tasks() if t is not me])
                asyncio.run(main())
        except {exc}:
            raised = True
        else:
            raised = False
        recs = dag.last_run.records
        print(json.dumps({{"raised": raised, "left": left,
                           "status": {{k: r.status for k, r in recs.items()}}}}))
    """, timeout=20)
    got = json.loads(out.strip().splitlines()[-1])
    assert got["raised"] is True
    assert got["status"] == {"a": "success", "c": "success"}
    assert got["left"] in (None, 0)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize(
    "kind", ["run_started", "task_ready", "task_started", "task_finished", "task_retrying",
             "task_rolled_back"],
)
def test_f05_an_interrupt_from_a_subscriber_at_any_event_ends_the_run_recorded(
    exc: type[BaseException], kind: str
) -> None:
    def cb(k: str, rec: Any, t: float) -> None:
        if k == kind:
            raise exc()

    def fails() -> None:
        raise RuntimeError("fails")

    dag = (ok.DAG(failure_mode="rollback")
           .task("a", lambda: 1, rollback=ok.Rollback(lambda: None))
           .task("b", ok.tools.sleep, seconds=0.01, after=["a"])
           .task("f", fails, after=["b"], retry=RetryPolicy(max_attempts=2, initial_delay=0.01))
           .task("c", ok.tools.sleep, seconds=0.01, after=["a"]))
    with pytest.raises(exc):
        dag.run(on_event=cb, live=False)
    recs = dag.last_run.records
    assert all(r.finished for r in recs.values())
    assert all((r.status == "skipped") == (r.attempts == 0) for r in recs.values())
    assert ok.DAG().task("x", lambda: 1).run(live=False).status == "success"


# ---------------------------------------------------------------- F6 other BaseExceptions


@pytest.mark.parametrize("exc", [asyncio.CancelledError, GeneratorExit])
@pytest.mark.parametrize("kind", ["task_ready", "task_started", "task_finished", "run_finished"])
def test_f06_a_subscriber_raising_a_base_exception_is_dropped(
    exc: type[BaseException], kind: str
) -> None:
    seen: list[str] = []

    def cb(k: str, rec: Any, t: float) -> None:
        seen.append(k)
        if k == kind:
            raise exc()

    dag = ok.DAG().task("a", lambda: 1).task("b", lambda: 2, after=["a"]).task(
        "c", lambda: 3, after=["b"])
    with pytest.warns(RuntimeWarning, match="unsubscribed"):
        run = dag.run(on_event=cb, live=False)
    assert {t: r.status for t, r in run.records.items()} == dict.fromkeys("abc", "success")
    assert run.result.summary.failed == 0 and run.result.summary.succeeded == 3
    assert seen.count(kind) == 1  # dropped after it raised


# ---------------------------------------------------------------- F7 unprintable subscribers


class _BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str boom")


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr boom")

    def __call__(self, kind: str, rec: Any, t: float) -> None:
        raise ValueError("subscriber failed")


def _raises_bad_str(kind: str, rec: Any, t: float) -> None:
    raise _BadStr()


@pytest.mark.parametrize("subscriber", [_raises_bad_str, _BadRepr()])
def test_f07_a_subscriber_that_cannot_be_printed_is_still_dropped(subscriber: Any) -> None:
    dag = ok.DAG().task("a", lambda: 1).task("b", lambda: 2, after=["a"])
    with pytest.warns(RuntimeWarning, match="unsubscribed"):
        run = dag.run(on_event=subscriber, live=False)
    assert run.status == "success"
    # and with a second subscriber (the fan-out path)
    with pytest.warns(RuntimeWarning, match="unsubscribed"):
        run = dag.run(on_event=[subscriber, ok.EventLog()], live=False)
    assert run.status == "success"


# ---------------------------------------------------------------- F8 ready after a backoff


def test_f08_a_task_waiting_for_a_slot_after_a_backoff_fails_with_its_error() -> None:
    def fail_fast() -> None:
        raise RuntimeError("a's real error")

    def fail_slow() -> None:
        time.sleep(0.05)
        raise RuntimeError("b failed")

    run = (ok.DAG(max_concurrent=1, failure_mode="stop")
           .task("a", fail_fast, priority=10, retry=RetryPolicy(max_attempts=3, initial_delay=0))
           .task("b", fail_slow, priority=1)).run(live=False)
    a = run.records["a"]
    assert a.status == "failed"
    assert a.attempts == 1
    assert a.error.message == "a's real error"
    assert run.records["b"].status == "failed"
    for rec in run.records.values():
        assert rec.status != "skipped" or rec.attempts == 0


def test_f08_the_same_on_a_run_timeout() -> None:
    def fail_fast() -> None:
        raise RuntimeError("a's real error")

    def slow() -> None:
        time.sleep(0.3)

    run = (ok.DAG(max_concurrent=1, timeout=0.15)
           .task("a", fail_fast, priority=10, retry=RetryPolicy(max_attempts=3, initial_delay=0))
           .task("b", slow, priority=1)).run(live=False)
    a = run.records["a"]
    assert (a.status, a.attempts, a.error.code) == ("failed", 1, "EXECUTION_TIMEOUT")


# ---------------------------------------------------------------- F9 rollback and run timeout


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_f09_the_run_timeout_bounds_the_rollback_phase(kind: str) -> None:
    out = run_child(f"""
        import asyncio, json, time
        import oktyv_nb as ok

        def undo_sync(): time.sleep(30)
        async def undo_async(): await asyncio.sleep(30)
        def boom():
            time.sleep(0.05)
            raise RuntimeError("boom")

        undo = undo_sync if {kind!r} == "sync" else undo_async
        dag = (ok.DAG(timeout=1.0, failure_mode="rollback")
               .task("a", lambda: 1, rollback=ok.Rollback(undo))
               .task("x", boom, after=["a"]))
        t0 = time.perf_counter()
        run = dag.run(live=False)
        took = time.perf_counter() - t0
        a = run.records["a"]
        print(json.dumps({{"took": took, "rolled_back": a.rolled_back,
                           "code": a.rollback_error.code if a.rollback_error else None}}))
        import os; os._exit(0)  # the abandoned 30 s sleep need not be waited for here
    """, timeout=25)
    got = json.loads(out.strip().splitlines()[-1])
    assert got["took"] < 3.0
    assert got["rolled_back"] is False
    assert got["code"] == "EXECUTION_TIMEOUT"


# ---------------------------------------------------------------- F10 unprintable results


class _Unrepresentable:
    def __repr__(self) -> str:
        raise RuntimeError("repr boom")


def _self_list() -> list[Any]:
    x: list[Any] = [1]
    x.append(x)
    return x


def _self_dict() -> dict[str, Any]:
    d: dict[str, Any] = {"a": 1}
    d["me"] = d
    return d


@pytest.mark.parametrize("make", [_Unrepresentable, _self_list, _self_dict,
                                  lambda: [_Unrepresentable()]])
@pytest.mark.parametrize("with_vault", [False, True])
def test_f10_one_unprintable_result_does_not_cost_the_whole_result(
    make: Any, with_vault: bool
) -> None:
    tasks = [{"id": "bad", "tool": "make"}, {"id": "good", "tool": "sleep",
                                             "params": {"seconds": 0, "value": 7}}]
    if with_vault:
        tasks.append({"id": "v", "tool": "uses", "vault": "api"})
    result = ok.execute_request(
        {"tasks": tasks}, tools={"make": make, "uses": lambda credentials: 1},
        vault={"api": {"token": SECRET}},
    )
    text = result.to_json()
    data = json.loads(text)
    assert data["tasks"]["good"]["result"] == 7
    assert data["tasks"]["bad"]["status"] == "success"
    dag = ok.DAG().task("bad", make)
    if with_vault:
        dag.task("v", lambda credentials: 1, vault="api")
    run = dag.run(vault={"api": {"token": SECRET}}, live=False)
    json.loads(run.result.to_json())
    assert len(run.df) == len(dag)  # the frame holds the results themselves
    repr(run)
    run._repr_html_()


# ---------------------------------------------------------------- F11 secrets in .code


def test_f11_a_secret_in_an_exception_code_is_redacted() -> None:
    class Coded(Exception):
        pass

    def custom(credentials: dict[str, str]) -> None:
        exc = Coded("failed")
        exc.code = credentials["token"]
        raise exc

    def exits(credentials: dict[str, str]) -> None:
        raise SystemExit(credentials["token"])

    dag = ok.DAG().task("a", custom, vault="api").task("b", exits, vault="api")
    run = dag.run(vault={"api": {"token": SECRET}}, live=False)
    assert run.records["a"].status == "failed" and run.records["b"].status == "failed"
    assert SECRET not in run.df.to_string()
    assert SECRET not in run.graph().source
    assert SECRET not in run._repr_html_()
    assert SECRET not in run.result.to_json()
    for rec in run.records.values():
        assert SECRET not in rec.error.code


# ---------------------------------------------------------------- F12 many attempts


def test_f12_many_attempts_with_no_delay_do_not_overflow() -> None:
    assert RetryPolicy(max_attempts=5000, initial_delay=0).delay(4000) == 0.0
    assert RetryPolicy(max_attempts=5000, initial_delay=1.0).delay(4000) == math.inf
    calls = {"n": 0}

    def fails() -> None:
        calls["n"] += 1
        raise RuntimeError("again")

    result = ok.execute_request(
        {"tasks": [{"id": "a", "tool": "fails",
                    "retryPolicy": {"maxAttempts": 1100, "initialDelay": 0}}]},
        tools={"fails": fails},
    )
    a = result.tasks["a"]
    assert (a.status, a.attempts, a.error.code) == ("failed", 1100, "RuntimeError")
    assert calls["n"] == 1100


# ---------------------------------------------------------------- F13 deep params


def _nested(depth: int, leaf: Any = "${a.result}") -> dict[str, Any]:
    value: Any = leaf
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize("depth", [1000, 5000])
def test_f13_deeply_nested_params_give_a_value_error(depth: int) -> None:
    request = {"tasks": [{"id": "a", "tool": "sleep"},
                         {"id": "b", "tool": "sleep", "params": {"value": _nested(depth)}}]}
    with pytest.raises(ValueError) as info:
        ok.execute_request(request)
    assert not isinstance(info.value, RecursionError)
    assert "nested" in str(info.value)
    with pytest.raises(ValueError):
        ok.DAG().task("a", ok.tools.sleep).task("b", ok.tools.sleep, value=_nested(depth))
    deep_list: Any = "${a.result}"
    for _ in range(depth):
        deep_list = [deep_list]
    with pytest.raises(ValueError):
        ok.execute_request({"tasks": [{"id": "a", "tool": "sleep"},
                                      {"id": "b", "tool": "sleep",
                                       "params": {"value": deep_list}}]})


def test_f13_moderately_nested_params_still_work() -> None:
    result = ok.execute_request(
        {"tasks": [{"id": "a", "tool": "sleep", "params": {"seconds": 0, "value": 5}},
                   {"id": "b", "tool": "echo", "params": {"v": _nested(50)}}]},
        tools={"echo": lambda v: v},
    )
    got = result.tasks["b"].result
    for _ in range(50):
        got = got["k"]
    assert got == 5


# ---------------------------------------------------------------- F14 bad input types


@pytest.mark.parametrize("request_", [None, [1], 5, 1.5, True, object(), {1, 2}, b"\xff"])
def test_f14_any_request_gives_a_result_or_a_value_error(request_: Any) -> None:
    with pytest.raises(ValueError):
        ok.execute_request(request_)
    with pytest.raises(ValueError):
        ok.DAG.from_request(request_)


@pytest.mark.parametrize(
    "misuse",
    [
        lambda: ok.DAG().task(5, lambda: 1),
        lambda: ok.DAG().task("a", 5),
        lambda: ok.DAG(max_concurrent=None),
        lambda: ok.DAG().task("a", lambda: 1, after=5),
        lambda: ok.DAG().task("a", lambda: 1, rollback=5),
        lambda: ok.DAG().task("a", lambda: 1, retry=RetryPolicy(max_attempts="3")),
        lambda: ok.DAG().task("a", lambda: 1, retry=RetryPolicy(initial_delay="1")),
        lambda: RetryPolicy(backoff=["x"]),
        lambda: ok.DAG(name=5),
        lambda: ok.DAG(tools=5),
        lambda: ok.DAG(failure_mode=["x"]),
        lambda: ok.DAG().task("a", lambda: 1, trigger=["x"]),
        lambda: ok.DAG().task("a", lambda: 1, timeout="1"),
        lambda: ok.DAG().task("a", lambda: 1).run(on_event=5, live=False),
        lambda: ok.DAG().task("a", lambda: 1).run(max_concurrent="2", live=False),
        lambda: ok.DAG().task("a", lambda: 1).run(backend=5, live=False),
        lambda: ok.DAG().task("a", lambda: 1).run(vault=5, live=False),
    ],
)
def test_f14_builder_misuse_gives_a_value_error(misuse: Any) -> None:
    with pytest.raises(ValueError):
        misuse()


# ---------------------------------------------------------------- F15 secrets in warnings


def test_f15_a_dropped_subscriber_warning_carries_no_secret() -> None:
    def cb(kind: str, rec: Any, t: float) -> None:
        if kind == "task_finished" and rec.task_id == "a":
            raise RuntimeError(f"saw {rec.result}")

    dag = ok.DAG().task("a", lambda credentials: credentials["token"], vault="api")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = dag.run(on_event=cb, vault={"api": {"token": SECRET}}, live=False)
    assert run.status == "success"
    texts = [str(w.message) for w in caught]
    assert any("unsubscribed" in t for t in texts), texts
    assert not any(SECRET in t for t in texts), texts


# ---------------------------------------------------------------- F16 infinite timeouts


def test_f16_infinite_timeouts_are_refused_everywhere() -> None:
    inf = float("inf")
    for text in ('{"tasks": [{"id": "a", "tool": "sleep", "timeout": Infinity}]}',
                 '{"tasks": [], "config": {"timeout": Infinity}}',
                 '{"tasks": [{"id": "a", "tool": "sleep", "retryPolicy": '
                 '{"maxAttempts": 2, "initialDelay": Infinity}}]}'):
        with pytest.raises(ValueError):
            ok.execute_request(text)
        with pytest.raises(ValueError):
            ok.DAG.from_request(text)
    for bad in (inf, -inf, math.nan):
        with pytest.raises(ValueError):
            ok.DAG(timeout=bad)
        with pytest.raises(ValueError):
            ok.DAG().task("a", ok.tools.sleep, timeout=bad)
        with pytest.raises(ValueError):
            ok.DAG().task("a", lambda: 1).run(timeout=bad, live=False)
        with pytest.raises(ValueError):
            RetryPolicy(max_attempts=2, initial_delay=bad)
    d = ok.DAG(timeout=2.5).task("a", ok.tools.sleep, seconds=0, timeout=1.5)
    assert ok.DAG.from_request(d.to_json()) == d
