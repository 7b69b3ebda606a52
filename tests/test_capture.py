"""What each task printed (SPEC §18): captured per task and per attempt, on every backend."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

import oktyv_nb as ok
from oktyv_nb.execution.capture import LIMIT


def talk(word: str, times: int = 3, pause: float = 0.01) -> str:
    for i in range(times):
        print(f"{word}-{i}")
        time.sleep(pause)
    return word


async def atalk(word: str, times: int = 3) -> str:
    for i in range(times):
        print(f"{word}-{i}", end="")
        await asyncio.sleep(0.005)
        print()
    return word


def warn_and_fail(message: str) -> None:
    print("about to fail", file=sys.stderr)
    logging.getLogger("oktyv.test").warning("careful: %s", message)
    raise RuntimeError(message)


@pytest.mark.parametrize("backend", ["asyncio", "threads", "processes"])
def test_concurrent_tasks_output_never_mixes(backend: str, capsys: Any) -> None:
    dag = ok.DAG(max_concurrent=4)
    for w in ("a", "b"):
        dag.task(w, talk, word=w)
    for w in ("x", "y"):
        dag.task(w, atalk, word=w)
    dag.task("f", warn_and_fail, message="boom")
    run = dag.run(live=False, backend=backend)
    for w in ("a", "b", "x", "y"):
        assert run.records[w].stdout == "".join(f"{w}-{i}\n" for i in range(3)), backend
    f = run.records["f"]
    assert f.stdout == "" and f.stderr == "about to fail\nWARNING:oktyv.test:careful: boom\n"
    assert run.df.loc["a", "stdout"] == "a-0\na-1\na-2\n" and run.df.loc["a", "stderr"] == ""
    task = json.loads(run.result.to_json())["tasks"]
    assert task["a"]["stdout"] == "a-0\na-1\na-2\n" and "stderr" not in task["a"]
    assert "careful: boom" in task["f"]["stderr"]
    # none of it reached the real streams
    out, err = capsys.readouterr()
    assert "a-0" not in out and "about to fail" not in err


def test_every_attempt_keeps_its_own_output() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        print(f"attempt {len(calls)}")
        if len(calls) < 2:
            raise ConnectionError("first fails")
        return "ok"

    run = ok.DAG().task("f", flaky, retry=ok.RetryPolicy(2, "linear", 0.01)).run(live=False)
    assert run.records["f"].stdout == "attempt 1\nattempt 2\n"
    assert run.attempts["stdout"].tolist() == ["attempt 1\n", "attempt 2\n"]
    logs = run.logs()
    assert str(logs) == "== f (stdout) ==\nattempt 1\nattempt 2\n"
    assert "<pre" in logs._repr_html_()
    assert run.logs("f") == logs
    with pytest.raises(KeyError, match="no task 'zz'"):
        run.logs("zz")


def test_secrets_are_redacted_from_output() -> None:
    def leak(credentials: dict[str, str]) -> None:
        print("token is", credentials["token"])

    run = ok.DAG().task("l", leak, vault="api").run(live=False, vault={"api": {"token": "s3cr3t"}})
    assert "s3cr3t" not in run.records["l"].stdout and "token is" in run.records["l"].stdout
    assert "s3cr3t" not in run.result.to_json()


def test_each_stream_keeps_its_last_megabyte() -> None:
    def flood() -> None:
        chunk = "x" * 9999 + "\n"
        for _ in range(250):  # 2.5 MB
            sys.stdout.write(chunk)
        print("the end")

    out = ok.DAG().task("f", flood).run(live=False).records["f"].stdout
    assert out.endswith("the end\n")
    head, _, kept = out.partition("\n")
    assert head.startswith("[... ") and "characters cut" in head
    assert len(kept) == LIMIT


def test_capture_off_lets_output_through(capsys: Any) -> None:
    run = ok.DAG(capture=False).task("a", talk, word="free", times=1).run(live=False)
    assert run.records["a"].stdout == "" and run.df.loc["a", "stdout"] == ""
    assert "free-0" in capsys.readouterr().out
    with pytest.raises(ok.InvalidOptionError, match="capture must be True or False"):
        ok.DAG(capture="no")  # type: ignore[arg-type]


def test_a_timed_out_tools_late_print_reaches_no_one(tmp_path: Any) -> None:
    # In a real process: the abandoned thread prints after the run ended; its output stays
    # in its own capture instead of landing in whatever runs next.
    script = tmp_path / "late.py"
    script.write_text(textwrap.dedent("""
        import time
        import oktyv_nb as ok

        def slow():
            time.sleep(0.5)
            print("LATE LINE")

        run = ok.DAG().task("s", slow, timeout=0.1).run(live=False)
        print("status", run.records["s"].error.code)
        time.sleep(1.0)  # the abandoned call prints meanwhile
        print("next cell")
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "status TASK_TIMEOUT\nnext cell\n"


def test_subscribers_output_is_not_taken_for_a_tasks(capsys: Any) -> None:
    async def quick(i: int) -> int:
        return i

    def say(kind: str, rec: Any, t: float) -> None:
        if kind == "task_started":
            print(f"STARTED {rec.task_id}")

    dag = ok.DAG(max_concurrent=1)
    for i in range(5):
        dag.task(f"q{i}", quick, i=i)
    run = dag.run(live=False, on_event=say)
    assert all(rec.stdout == "" for rec in run.records.values())
    out = capsys.readouterr().out
    assert all(f"STARTED q{i}" in out for i in range(5))
