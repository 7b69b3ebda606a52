"""Runs inside a real Jupyter kernel (ipykernel, started by nbclient / jupyter_client).

The kernel must run this environment's Python; with a virtualenv, register it once with
``.venv/bin/python -m ipykernel install --sys-prefix --name python3``.
"""

from __future__ import annotations

import json
import queue
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
jupyter_client = pytest.importorskip("jupyter_client")

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[1]
INSTALL_HINT = (
    f"the python3 kernel is not this environment's Python ({sys.prefix}); run "
    f"`{sys.executable} -m ipykernel install --sys-prefix --name python3`"
)

SETUP = textwrap.dedent(
    """
    import asyncio, json, sys, threading, time
    import oktyv_nb as ok

    kernel_loop = asyncio.get_running_loop()
    info = {
        "prefix": sys.prefix,
        "in_notebook": ok.jupyter.in_notebook(),
        "loop_patched_at_import": bool(getattr(kernel_loop, "_nest_patched", False)),
        "asyncio_patched_at_import": hasattr(asyncio, "_nest_patched"),
    }
    seen = []

    async def on_loop(tag):
        seen.append([tag, id(asyncio.get_running_loop()), threading.current_thread().name])
        await asyncio.sleep(0.05)
        return tag

    def in_thread(tag):
        seen.append([tag, None, threading.current_thread().name])
        return tag

    dag = (
        ok.DAG("kernel", max_concurrent=4)
        .task("a", on_loop, tag="a")
        .task("b", in_thread, tag="b", after="a")
        .task("c", on_loop, tag="${b.result}")
    )
    """
)

AWAIT_CELL = textwrap.dedent(
    """
    run = await dag.arun(live=False)
    info["arun_status"] = run.status
    info["loop_patched_after_arun"] = bool(getattr(kernel_loop, "_nest_patched", False))
    info["arun_seen"] = list(seen); seen.clear()
    """
)

RUN_CELL = textwrap.dedent(
    """
    run = dag.run(live=False)
    info["run_status"] = run.status
    info["run_df_status"] = run.df["status"].astype(str).tolist()
    info["loop_patched_after_run"] = bool(getattr(kernel_loop, "_nest_patched", False))
    info["run_seen"] = list(seen); seen.clear()
    """
)

NESTED_CELL = textwrap.dedent(
    """
    inner = ok.DAG("inner").task("x", on_loop, tag="x").task("y", in_thread, tag="${x.result}")

    def sync_runs_inner():          # in a worker thread
        return inner.run(live=False).df["result"].to_dict()

    async def async_runs_inner():   # a sync run() from a task on the kernel's loop
        return inner.run(live=False).df["result"].to_dict()

    async def async_awaits_inner():
        return (await inner.arun(live=False)).df["result"].to_dict()

    outer = (
        ok.DAG("outer")
        .task("s", sync_runs_inner).task("r", async_runs_inner).task("w", async_awaits_inner)
    )
    t0 = time.perf_counter()
    nested = outer.run(live=False, timeout=30)
    info["nested_seconds"] = time.perf_counter() - t0
    info["nested_status"] = nested.status
    info["nested_results"] = nested.df["result"].to_dict()
    info["nested_errors"] = nested.df["error_message"].dropna().to_dict()
    seen.clear()
    """
)

REPORT_CELL = """info["kernel_loop"] = id(kernel_loop)\nprint(json.dumps(info))"""

# Rich display: the last expression of each cell is shown by the notebook.
DISPLAY_CELLS = {
    "default_run": "shown = dag.run()  # live view on by default in a notebook\nshown.status",
    "timeline": "shown.timeline()",
    "stats": "shown.stats",
    "run": "shown",
    "dag": "dag",
}
CELLS = [SETUP, AWAIT_CELL, RUN_CELL, NESTED_CELL, REPORT_CELL, *DISPLAY_CELLS.values()]


@pytest.fixture(scope="module")
def notebook() -> Any:
    # Order matters: the await cell runs before any run(), so the patch can be seen to come
    # only with the first run().
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in CELLS]
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", allow_errors=True,
        resources={"metadata": {"path": str(REPO)}},
    )
    client.execute()
    return nb


def _errors(cell: Any) -> list[str]:
    return [f"{o['ename']}: {o['evalue']}" for o in cell.outputs if o["output_type"] == "error"]


@pytest.fixture(scope="module")
def report(notebook: Any) -> dict[str, Any]:
    for cell in notebook.cells[: CELLS.index(REPORT_CELL) + 1]:
        assert not _errors(cell), (cell.source, _errors(cell))
    out = notebook.cells[CELLS.index(REPORT_CELL)].outputs
    text = "".join(o.get("text", "") for o in out if o.get("output_type") == "stream")
    return json.loads(text.strip().splitlines()[-1])


def _shown(notebook: Any, name: str) -> dict[str, Any]:
    """The display data of cell ``name`` of DISPLAY_CELLS (mime type -> content)."""
    cell = notebook.cells[len(CELLS) - len(DISPLAY_CELLS) + list(DISPLAY_CELLS).index(name)]
    assert not _errors(cell), _errors(cell)
    data: dict[str, Any] = {}
    for o in cell.outputs:
        if o["output_type"] == "execute_result":
            data.update(o["data"])
    return data


def test_rich_display_in_the_notebook(notebook: Any) -> None:
    assert _shown(notebook, "default_run")["text/plain"] == "'success'"
    assert "image/png" in _shown(notebook, "timeline")
    stats = _shown(notebook, "stats")
    assert "oktyv-stats" in stats["text/html"] and "critical_path" in stats["text/plain"]
    run = _shown(notebook, "run")
    assert "<table" in run["text/html"] and run["text/plain"].startswith("<Run 'kernel'")
    dag = _shown(notebook, "dag")
    assert dag["text/plain"].startswith("<DAG 'kernel'")
    assert "image/svg+xml" in dag or "text/html" in dag


def test_kernel_runs_this_environment(report: dict[str, Any]) -> None:
    assert report["prefix"] == sys.prefix, INSTALL_HINT
    assert report["in_notebook"] is True


def test_nest_asyncio2_is_not_applied_at_import_or_by_await(report: dict[str, Any]) -> None:
    assert report["loop_patched_at_import"] is False
    assert report["asyncio_patched_at_import"] is False
    assert report["loop_patched_after_arun"] is False  # await needs no patch
    assert report["loop_patched_after_run"] is True  # the first run() applied it


def test_await_arun_runs_async_tools_on_the_kernels_loop(report: dict[str, Any]) -> None:
    assert report["arun_status"] == "success"
    _check_where(report["arun_seen"], report["kernel_loop"])


def test_run_in_a_cell_works_while_the_kernels_loop_runs(report: dict[str, Any]) -> None:
    assert report["run_status"] == "success"
    assert report["run_df_status"] == ["success", "success", "success"]
    _check_where(report["run_seen"], report["kernel_loop"])


def _check_where(seen: list[list[Any]], kernel_loop: int) -> None:
    by_tag = {tag: (loop, thread) for tag, loop, thread in seen}
    assert set(by_tag) == {"a", "b"}  # c ran on_loop with tag "b" (from b's result)
    assert [s[0] for s in seen] == ["a", "b", "b"]
    loops = [s[1] for s in seen if s[1] is not None]
    assert loops == [kernel_loop, kernel_loop]  # async tools: on the kernel's own loop
    assert all(s[2] == "MainThread" for s in seen if s[1] is not None)
    sync_thread = next(s[2] for s in seen if s[1] is None)
    assert sync_thread != "MainThread"  # sync tools: in a worker thread


def test_nested_runs_inside_the_kernel_do_not_deadlock(report: dict[str, Any]) -> None:
    assert report["nested_status"] == "success", report["nested_errors"]
    expected = {"x": "x", "y": "x"}
    assert report["nested_results"] == {"s": expected, "r": expected, "w": expected}
    assert report["nested_seconds"] < 20


# ---------------------------------------------------------------------- the stop button
INTERRUPT_SETUP = textwrap.dedent(
    """
    import asyncio, json, time
    import oktyv_nb as ok

    async def nap(seconds, value=None):
        await asyncio.sleep(seconds)
        return value

    def say_started(kind, rec, t):
        if kind == "task_started" and rec.task_id == "long":
            print("LONG-STARTED", flush=True)

    dag = (
        ok.DAG("stoppable", max_concurrent=2)
        .task("quick", nap, seconds=0.05, value="Q")
        .task("long", nap, seconds=30, after="quick")
        .task("side", nap, seconds=30)
        .task("after_long", nap, seconds=0.01, after="long")
    )
    """
)

INTERRUPT_CHECK = textwrap.dedent(
    """
    last = dag.last_run
    again = ok.DAG().task("z", nap, seconds=0.01, value=1).run(live=False)
    print(json.dumps({
        "has_last": last is not None,
        "interrupted": last.interrupted,
        "status": last.df["status"].astype(str).to_dict(),
        "codes": last.df["error_code"].astype(object).where(last.df["error_code"].notna(),
                                                               None).to_dict(),
        "again": again.status,
        "total": last.result.summary.total,
    }))
    """
)


def _execute(kc: Any, code: str, timeout: float = 60) -> tuple[dict[str, Any], str]:
    """Run ``code``; returns the execute reply's content and the stdout text."""
    chunks: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            chunks.append(msg["content"]["text"])

    reply = kc.execute_interactive(code, timeout=timeout, output_hook=hook)
    return reply["content"], "".join(chunks)


def test_stop_button_keeps_the_partial_run_and_the_kernel_usable() -> None:
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", cwd=str(REPO))
    try:
        content, _ = _execute(kc, INTERRUPT_SETUP)
        assert content["status"] == "ok", content
        # stop_on_error=False: the kernel must not abort the next request after this error
        msg_id = kc.execute("run = dag.run(live=False, on_event=say_started)",
                            stop_on_error=False)
        deadline = time.monotonic() + 60
        started = False
        while not started and time.monotonic() < deadline:
            try:
                msg = kc.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream" and "LONG-STARTED" in msg["content"]["text"]:
                started = True
            if msg["msg_type"] == "error":
                pytest.fail(f"the run failed before the interrupt: {msg['content']}")
        assert started, "the long task never started"
        t0 = time.monotonic()
        km.interrupt_kernel()  # what Jupyter's stop button does
        reply = None
        while time.monotonic() < deadline:
            msg = kc.get_shell_msg(timeout=30)
            if msg["parent_header"].get("msg_id") == msg_id:
                reply = msg["content"]
                break
        assert reply is not None
        assert reply["status"] == "error" and reply["ename"] == "RunInterrupted", reply
        assert reply["evalue"].endswith("the partial run is dag.last_run")
        shown = "\n".join(reply["traceback"])
        for internal in ("nest_asyncio", "selectors", "jupyter.py", "base_events"):
            assert internal not in shown, shown
        assert time.monotonic() - t0 < 10  # did not wait for the 30 s tasks
        content, text = _execute(kc, INTERRUPT_CHECK)
        assert content["status"] == "ok", content
        out = json.loads(text.strip().splitlines()[-1])
        assert out["has_last"] and out["interrupted"]
        assert out["total"] == 4
        assert out["status"] == {
            "quick": "success", "long": "failed", "side": "failed", "after_long": "skipped",
        }
        assert out["codes"] == {
            "quick": None, "long": "CANCELLED", "side": "CANCELLED", "after_long": "CANCELLED",
        }
        assert out["again"] == "success"  # the kernel's loop still runs DAGs
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
