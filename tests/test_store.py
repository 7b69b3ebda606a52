"""The run store (SPEC §17): runs journaled into SQLite, read back in any process, resumed
after a crash.

Where the promise is about processes, real ones are used: a child killed with SIGKILL in the
middle of a run, two children writing one store at once, a fresh interpreter that loads a
run without its tools.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import store_tools
from store_tools import CALLS, Point, crash_dag, double

import oktyv_nb as ok
from oktyv_nb.execution.records import NotStored

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
SECRET = "s3cr3t-TOKEN-4f9a1c"
CHILD = [sys.executable, "-c", "import sys, store_tools; store_tools.main(sys.argv[1:])"]
posix_only = pytest.mark.skipif(os.name != "posix", reason="SIGKILL and /proc are POSIX")


def child_env(*paths: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in paths)
    return env


@pytest.fixture
def store(tmp_path: Path) -> ok.RunStore:
    s = ok.RunStore(tmp_path / "runs.sqlite")
    yield s
    s.close()


def small_dag(name: str = "small") -> ok.DAG:
    return (
        ok.DAG(name, max_concurrent=2)
        .task("a", double, x=1)
        .task("b", double, x="${a.result}")
        .task("c", store_tools.make_set, n=3)
        .task("p", store_tools.make_point, x=1, y=2, priority=7, timeout=5.0)
    )


# ---------------------------------------------------------------------- round trip
def test_a_run_reads_back_as_it_was(store: ok.RunStore) -> None:
    run = small_dag().run(store=store, live=False)
    loaded = store.load(run.execution_id)
    assert isinstance(loaded, ok.Run) and loaded.complete and loaded.name == "small"
    assert loaded.status == run.status == "success"
    live = json.loads(run.result.to_json())
    back = json.loads(loaded.result.to_json())
    for tid, task in live["tasks"].items():
        assert back["tasks"][tid]["result"] == task["result"]
        assert back["tasks"][tid]["duration"] == pytest.approx(task["duration"], abs=1e-3)
        assert back["tasks"][tid]["startTime"][:19] == task["startTime"][:19]
    assert back["dag"] == live["dag"] and back["summary"] == live["summary"]
    # the values come back as they were: JSON as JSON, the rest unpickled
    assert loaded.records["c"].result == {0, 1, 2}
    assert loaded.records["p"].result == Point(1, 2)
    cols = ["tool", "level", "status", "attempts", "depends_on", "priority", "cached"]
    assert loaded.df[cols].equals(run.df[cols])
    assert loaded.stats.critical_path == run.stats.critical_path
    assert loaded.stats.tasks == 4 and loaded.stats.max_concurrent == 2
    assert "small" in loaded.graph().source
    assert loaded.timeline().axes
    assert store.request(run.execution_id) == json.loads(
        small_dag().to_request().model_dump_json(by_alias=True, exclude_none=True)
    )
    assert store.load(run.execution_id[:8]).execution_id == run.execution_id


def test_failures_retries_and_skips_survive_the_round_trip(store: ok.RunStore) -> None:
    tries: list[int] = []

    def flaky() -> str:
        tries.append(1)
        if len(tries) < 2:
            raise ValueError("first attempt fails")
        return "ok"

    def broken() -> None:
        raise KeyError("nope")

    dag = (
        ok.DAG("faults")
        .task("flaky", flaky, retry=ok.RetryPolicy(2, "linear", 0.01))
        .task("broken", broken)
        .task("downstream", double, x=1, after=["broken"])
    )
    run = dag.run(store=store, live=False)
    loaded = store.load(run.execution_id)
    assert loaded.status == "partial"
    f = loaded.records["flaky"]
    assert f.status == "success" and f.attempts == 2 and len(f.spans) == 2
    assert [s.outcome for s in f.spans] == ["failed", "success"]
    b = loaded.records["broken"]
    assert (b.status, b.error.code) == ("failed", "KeyError") and "nope" in b.error.message
    assert "Traceback" in b.error.stack
    d = loaded.records["downstream"]
    assert (d.status, d.error.code, d.error.cause) == ("skipped", "DEPENDENCY_FAILED", "broken")
    assert loaded.df.loc["downstream", "error_code"] == "DEPENDENCY_FAILED"
    assert loaded.stats.failed == 1 and loaded.stats.skipped == 1


def test_history(store: ok.RunStore) -> None:
    first = small_dag("one").run(store=store, live=False)
    second = small_dag("two").run(store=store, live=False)
    ok.execute_request({"tasks": [{"id": "x", "tool": "sleep", "params": {"seconds": 0}}]},
                       store=store)
    runs = store.runs()
    assert list(runs.columns) == [
        "dag", "status", "start", "end", "makespan_s", "tasks", "succeeded", "failed",
        "skipped", "backend", "max_concurrent",
    ]
    assert runs.index.name == "execution_id" and len(runs) == 3
    assert list(runs.index[1:]) == [second.execution_id, first.execution_id]  # newest first
    assert str(runs["start"].dtype) == "datetime64[us, UTC]" or "UTC" in str(runs["start"].dtype)
    row = runs.loc[first.execution_id]
    assert (row["dag"], row["status"], row["tasks"], row["succeeded"]) == ("one", "success", 4, 4)
    assert row["max_concurrent"] == 2 and row["backend"] == "asyncio" and row["makespan_s"] > 0
    assert list(store.runs(dag="two").index) == [second.execution_id]
    assert len(store.runs(limit=2)) == 2
    assert store.latest("one").execution_id == first.execution_id
    assert store.latest(small_dag("two")).execution_id == second.execution_id
    assert store.latest("nobody") is None
    with pytest.raises(ok.RunNotFoundError) as info:
        store.load("no-such-run")
    assert info.value.code == "RUN_NOT_FOUND" and isinstance(info.value, LookupError)
    store.delete(first.execution_id)
    assert first.execution_id not in store.runs().index


def test_store_on_the_dag_and_by_path(tmp_path: Path) -> None:
    path = tmp_path / "dag.sqlite"
    dag = small_dag().copy("by-path")
    dag.store = None
    run = ok.DAG("d", store=str(path)).task("a", double, x=3).run(live=False)
    again = ok.RunStore(path)
    assert again.load(run.execution_id).records["a"].result == 6
    with pytest.raises(ok.InvalidOptionError):
        ok.DAG("bad", store=42)
    with pytest.raises(TypeError):
        ok.RunStore(42)  # type: ignore[arg-type]
    with pytest.raises(ok.InvalidOptionError):
        ok.execute_request({"tasks": []}, store="not a store object")  # type: ignore[arg-type]


def test_memory_store() -> None:
    store = ok.RunStore(":memory:")
    run = small_dag().run(store=store, live=False)
    assert store.load(run.execution_id).status == "success"
    assert len(store.runs()) == 1


def test_starts_and_records_are_committed_within_half_a_second(tmp_path: Path) -> None:
    path = tmp_path / "live.sqlite"
    store = ok.RunStore(path)
    seen: dict[str, Any] = {}

    async def probe() -> str:
        await asyncio.sleep(0.6)  # "a" finished, "probe" started: both committed by now
        reader = ok.RunStore(path)  # another connection, as another process would have
        loaded = reader.latest("probe")
        seen["status"] = {t: r.status for t, r in loaded.records.items()}
        seen["runs"] = reader.runs()["status"].tolist()
        reader.close()
        return "done"

    dag = ok.DAG("probe").task("a", double, x=1).task("probe", probe)
    run = asyncio.run(dag.arun(store=store, live=False))
    assert run.status == "success"
    assert seen["status"] == {"a": "success", "probe": "running"}
    assert seen["runs"] == ["running"]  # its writer (this process) is alive


# ---------------------------------------------------------------------- the file
def test_schema_version_and_foreign_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database at all\n" * 10)
    with pytest.raises(ok.NotAStoreError) as info:
        ok.RunStore(junk)
    assert info.value.code == "NOT_A_STORE" and "not an oktyv_nb run store" in str(info.value)

    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE users (id INTEGER)")
    with pytest.raises(ok.NotAStoreError, match="SQLite database but not"):
        ok.RunStore(other)
    with sqlite3.connect(other) as c:  # and it was left alone
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "delete"

    old = tmp_path / "old.sqlite"
    ok.RunStore(old).close()
    with sqlite3.connect(old) as c:
        c.execute("PRAGMA user_version = 99")
    with pytest.raises(ok.StoreVersionError) as info:
        ok.RunStore(old)
    assert info.value.code == "STORE_VERSION" and (info.value.found, info.value.expected) == (99, 1)
    assert "schema version 99" in str(info.value)
    assert isinstance(info.value, ok.StoreError) and isinstance(info.value, ok.OktyvException)

    with pytest.raises(ok.NotAStoreError):
        ok.RunStore(tmp_path)  # a directory
    with pytest.raises(ok.StoreError, match="does not exist"):
        ok.RunStore(tmp_path / "missing" / "runs.sqlite")
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    ok.RunStore(empty).close()  # an empty file becomes a store
    with sqlite3.connect(empty) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_secrets_never_reach_the_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.sqlite"
    store = ok.RunStore(path)

    class Holder:  # holds the secret, shows nothing of it
        def __init__(self, token: str) -> None:
            self.token = token

        def __repr__(self) -> str:
            return "Holder(...)"

    def echo(credentials: dict[str, str]) -> dict[str, Any]:
        return {"token": credentials["token"], "n": 1}

    def hold(credentials: dict[str, str]) -> Holder:
        return Holder(credentials["token"])

    def fail(credentials: dict[str, str]) -> None:
        raise ValueError(f"the server refused {credentials['token']}")

    def show(text: str, credentials: dict[str, str]) -> str:
        return text

    dag = (
        ok.DAG("secrets", vault={"api": {"token": SECRET}})
        .task("echo", echo, vault="api", cache=True)
        .task("hold", hold, vault="api")
        .task("fail", fail, vault="api")
        .task("use", double, x="${echo.result.n}")
        .task("literal", show, text=f"Bearer {SECRET}", vault="api")
    )
    run = dag.run(store=store, live=False)
    assert run.records["fail"].status == "failed"
    again = dag.run(store=store, live=False)
    assert again.records["echo"].cached
    loaded = store.load(run.execution_id)
    assert loaded.records["echo"].result == {"token": "***", "n": 1}
    held = loaded.records["hold"].result
    assert isinstance(held, NotStored) and "secret" in held.reason
    assert "***" in loaded.records["fail"].error.message
    assert SECRET not in json.dumps(store.request(run.execution_id), default=repr)
    store.close()
    for f in tmp_path.iterdir():  # the database, its WAL and shared-memory files
        assert SECRET.encode() not in f.read_bytes(), f.name


def test_pickle_false_keeps_only_reprs_and_reruns_those_tasks(tmp_path: Path) -> None:
    store = ok.RunStore(tmp_path / "nopickle.sqlite", pickle=False)
    assert repr(store).endswith("pickle=False)")
    first = small_dag().run(store=store, live=False)
    loaded = store.load(first.execution_id)
    c, p = loaded.records["c"].result, loaded.records["p"].result
    assert isinstance(c, NotStored) and c.reason == "pickle=False" and c.text == "{0, 1, 2}"
    assert isinstance(p, NotStored) and "Point(1, 2)" in repr(p)
    assert loaded.df.loc["a", "result"] == 2  # JSON values are kept
    CALLS.clear()
    rerun = small_dag().run(resume=loaded, live=False)
    assert sorted(rerun.reused) == ["a", "b"] and CALLS == []
    assert rerun.records["c"].result == {0, 1, 2} and rerun.records["p"].result == Point(1, 2)


def test_params_that_are_not_json_values(store: ok.RunStore) -> None:
    def tupled(pair: tuple[int, int]) -> int:
        return sum(pair)

    lock = threading.Lock()

    def locked(guard: Any) -> str:
        return "locked"

    dag = ok.DAG("odd").task("t", tupled, pair=(1, 2)).task("l", locked, guard=lock)
    run = dag.run(store=store, live=False)
    loaded = store.load(run.execution_id)
    assert loaded.outcome.graph.nodes["t"].params == {"pair": (1, 2)}  # pickled
    assert isinstance(loaded.outcome.graph.nodes["l"].params["params"], NotStored)
    rerun = dag.run(resume=loaded, live=False)
    assert rerun.reused == ["t"]  # a task whose params were not stored runs again


# ---------------------------------------------------------------------- processes
def _wait_for_line(proc: subprocess.Popen[str], word: str, timeout: float) -> None:
    found = threading.Event()

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.strip() == word:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(timeout):
        proc.kill()
        raise AssertionError(f"the child never printed {word}: {proc.stderr.read()}")  # type: ignore[union-attr]


@posix_only
def test_a_killed_process_leaves_an_aborted_run_that_resumes(tmp_path: Path) -> None:
    path = tmp_path / "crash.sqlite"
    proc = subprocess.Popen(
        [*CHILD, "crash", str(path)],
        env=child_env(ROOT, TESTS), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for_line(proc, "READY", 60)
        time.sleep(0.7)  # > 0.5 s: everything up to "signal" is committed by now
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL

    store = ok.RunStore(path)
    runs = store.runs()
    assert runs["status"].tolist() == ["aborted"]
    row = runs.iloc[0]
    assert (row["succeeded"], row["failed"], row["skipped"]) == (5, 1, 1)
    assert str(row["end"]) == "NaT"
    crashed = store.latest("crash")
    assert crashed.outcome.aborted and not crashed.complete and crashed.status == "partial"
    status = {t: (r.status, r.error.code if r.error else None)
              for t, r in crashed.records.items()}
    assert status == {
        "a": ("success", None), "b": ("success", None), "c": ("success", None),
        "p": ("success", None), "signal": ("success", None),
        "slow": ("failed", "RUN_ABORTED"), "after_slow": ("skipped", "RUN_ABORTED"),
    }
    assert "was running" in crashed.records["slow"].error.message
    assert crashed.records["b"].result == 4 and crashed.records["c"].result == {0, 1, 2}
    assert crashed.df.loc["slow", "error_code"] == "RUN_ABORTED"
    assert crashed.stats.failed == 1 and "(aborted)" in repr(crashed)
    assert crashed.timeline().axes and "slow" in crashed.graph().source

    CALLS.clear()
    resumed = crash_dag(slow=0.01).run(resume=crashed, store=store, live=False)
    assert resumed.status == "success" and resumed.complete
    assert sorted(resumed.reused) == ["a", "b", "c", "p", "signal"]
    assert CALLS == [2]  # only after_slow called double again
    assert resumed.records["c"].result == {0, 1, 2}
    assert resumed.records["p"].result == Point(1, 2)
    assert store.runs()["status"].tolist() == ["success", "aborted"]
    again = store.load(resumed.execution_id)
    assert sorted(again.reused) == ["a", "b", "c", "p", "signal"]


def test_two_processes_write_one_store_at_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    ok.RunStore(path).close()
    n = 120
    procs = [
        subprocess.Popen(
            [*CHILD, "many", str(path), me, other, str(n)],
            env=child_env(ROOT, TESTS), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        for me, other in (("w1", "w2"), ("w2", "w1"))
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert out.split()[1] == "success"
    store = ok.RunStore(path)
    runs = store.runs()
    assert sorted(runs["dag"]) == ["many-w1", "many-w2"]
    assert runs["status"].tolist() == ["success", "success"]
    assert runs["succeeded"].tolist() == [n, n]
    for eid in runs.index:
        run = store.load(eid)
        assert len(run.records) == n and all(r.status == "success" for r in run.records.values())
    first, second = (store.load(eid) for eid in runs.index)
    a = (first.df["start"].min(), first.df["end"].max())
    b = (second.df["start"].min(), second.df["end"].max())
    assert a[0] < b[1] and b[0] < a[1], "the two runs did not overlap"


def test_loading_in_a_fresh_interpreter_without_the_tools(store: ok.RunStore) -> None:
    run = small_dag("fresh").run(store=store, live=False)
    store.flush()
    code = f"""
import json, sys
import oktyv_nb as ok
assert "store_tools" not in sys.modules
run = ok.RunStore({store.path!r}).load({run.execution_id!r})
df = run.df
print(json.dumps({{
    "status": run.status, "complete": run.complete,
    "results": {{t: repr(r) for t, r in df["result"].items()}},
    "path": run.stats.critical_path, "tasks": run.stats.tasks,
    "graph": "fresh" in run.graph().source, "axes": len(run.timeline().axes),
}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(ROOT), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"] == "success" and out["complete"] and out["tasks"] == 4
    assert out["results"]["a"] == "2" and out["results"]["c"] == "{0, 1, 2}"
    # Point's module is not importable there: its result says so instead of failing the load
    assert out["results"]["p"].startswith("<not stored (it could not be unpickled here")
    assert out["path"] == run.stats.critical_path and out["graph"] and out["axes"] >= 1


def test_resume_from_a_stored_run_in_the_same_process(store: ok.RunStore) -> None:
    run = small_dag().run(store=store, live=False)
    stored = store.load(run.execution_id)
    changed = small_dag()
    changed.remove("b").task("b", double, x="${a.result}", priority=9)  # spec changed
    CALLS.clear()
    rerun = changed.run(resume=stored, live=False)
    assert sorted(rerun.reused) == ["a", "c", "p"] and CALLS == [2]
    with pytest.raises(RuntimeError, match="no DAG"):
        stored.rerun_failed()


def test_rollback_and_reuse_flags_are_kept(store: ok.RunStore) -> None:
    undone: list[str] = []

    def undo(what: str) -> None:
        undone.append(what)

    def boom() -> None:
        raise RuntimeError("boom")

    dag = (
        ok.DAG("rb", failure_mode="rollback", max_concurrent=1)
        .task("made", double, x=5, rollback=ok.Rollback(undo, what="${made.result}"))
        .task("boom", boom, after=["made"])
    )
    run = dag.run(store=store, live=False)
    assert undone == [10]
    loaded = store.load(run.execution_id)
    assert loaded.records["made"].rolled_back is True
    assert loaded.df.loc["made", "rolled_back"]
    ok_dag = ok.DAG("re").task("a", double, x=1).task("b", double, x=2)
    first = ok_dag.run(store=store, live=False)
    second = ok_dag.run(resume=first, store=store, live=False)
    assert store.load(second.execution_id).reused == ["a", "b"]
