"""The MCP server (SPEC §15) driven by the SDK's own stdio client: the server runs as a real
subprocess (``python -m oktyv_nb.mcp``) and is talked to over its stdin and stdout."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp", reason="the MCP SDK (extra oktyv_nb[mcp]) is not installed")

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from oktyv_nb.demo import demo_api

PROJECT = Path(__file__).resolve().parents[1]
ENV = {"PYTHONPATH": str(PROJECT)}


@asynccontextmanager
async def connect(root: Path, *args: str, cwd: Path | None = None,
                  log: Path | None = None) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "oktyv_nb.mcp", "--root", str(root), *args],
        env=ENV,
        cwd=str(cwd or root),
    )
    with open(log or root.parent / "server.log", "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            yield session


def run(session_fn: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        with anyio.fail_after(60):
            await session_fn()

    asyncio.run(main())


def _text(result: Any) -> str:
    return "".join(c.text for c in result.content if c.type == "text")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


def test_lists_tools_and_runs_the_diamond_with_progress(root: Path) -> None:
    async def scenario() -> None:
        with demo_api() as api:
            request = {
                "tasks": [
                    {"id": "find", "tool": "http_request",
                     "params": {"url": f"{api}/users?delay=0.05"}},
                    {"id": "orders", "tool": "http_request",
                     "params": {"url": f"{api}/orders?user=${{find.result.json.0.id}}&delay=0.1"}},
                    {"id": "neighbours", "tool": "http_request",
                     "params": {"url": f"{api}/users?city=${{find.result.json.0.city}}"
                                       "&delay=0.1"}},
                    {"id": "report", "tool": "file_write",
                     "params": {"path": "reports/customer.json",
                                "content": {"orders": "${orders.result.json}",
                                            "same_city": "${neighbours.result.json}"}}},
                ],
                "config": {"maxConcurrent": 4},
            }
            async with connect(root) as session:
                listed = await session.list_tools()
                tools = {t.name: t for t in listed.tools}
                assert set(tools) == {"parallel_execute", "validate_request", "describe_tools"}
                schema = tools["parallel_execute"].input_schema
                assert schema["type"] == "object"
                assert set(schema["properties"]) == {"tasks", "config"}
                task = schema["$defs"]["TaskSpec"]["properties"]
                for field in ("id", "tool", "params", "dependsOn", "retryPolicy", "runIf"):
                    assert field in task
                assert "maxConcurrent" in schema["$defs"]["ExecutionConfig"]["properties"]
                assert tools["parallel_execute"].output_schema is not None

                progress: list[tuple[float, float | None, str | None]] = []

                async def on_progress(done: float, total: float | None, msg: str | None) -> None:
                    progress.append((done, total, msg))

                result = await session.call_tool("parallel_execute", request,
                                                 progress_callback=on_progress)
        assert not result.is_error, _text(result)
        data = result.structured_content
        assert json.loads(_text(result)) == data  # the same result as JSON text
        assert data["status"] == "success"
        assert data["summary"] == {"total": 4, "succeeded": 4, "failed": 0, "skipped": 0}
        assert data["dag"]["levels"] == [["find"], ["orders", "neighbours"], ["report"]]
        assert {(e["from"], e["to"]) for e in data["dag"]["edges"]} == {
            ("find", "orders"), ("find", "neighbours"), ("orders", "report"),
            ("neighbours", "report"),
        }
        assert data["tasks"]["report"]["result"] == {
            "path": "reports/customer.json", "bytes": data["tasks"]["report"]["result"]["bytes"]
        }
        written = json.loads((root / "reports" / "customer.json").read_text())
        assert written["orders"][0]["id"] == 10
        # progress: one notification per finished task here (they finish apart), all of
        # them before the answer, counts rising to the total
        assert progress, "no progress notifications"
        counts = [p[0] for p in progress]
        assert counts == sorted(counts) and len(set(counts)) == len(counts)
        assert progress[-1][:2] == (4, 4)
        assert all(total == 4 for _, total, _ in progress)
        assert progress[0][2] == "find success"

    run(scenario)


def test_invalid_requests_are_tool_errors_with_their_code(root: Path) -> None:
    async def scenario() -> None:
        async with connect(root) as session:
            cyclic = {"tasks": [
                {"id": "a", "tool": "sleep", "params": {"seconds": 0}, "dependsOn": ["c"]},
                {"id": "b", "tool": "sleep", "params": {"seconds": 0}, "dependsOn": ["a"]},
                {"id": "c", "tool": "sleep", "params": {"seconds": 0}, "dependsOn": ["b"]},
            ]}
            for tool in ("parallel_execute", "validate_request"):
                result = await session.call_tool(tool, cyclic)
                assert result.is_error
                assert _text(result).startswith("CIRCULAR_DEPENDENCY: ")
                assert "a → b → c → a" in _text(result)

            bad = await session.call_tool("parallel_execute", {
                "tasks": [{"id": "x y", "tool": "sleep"}], "config": {"maxConcurrent": 0}})
            assert bad.is_error
            assert _text(bad).startswith("INVALID_REQUEST: 2 validation errors")
            assert "tasks.0.id" in _text(bad) and "config.maxConcurrent" in _text(bad)

            unknown = await session.call_tool("validate_request", {
                "tasks": [{"id": "x", "tool": "sleeep"}]})
            assert unknown.is_error and _text(unknown).startswith("TOOL_NOT_FOUND: ")
            assert "'sleep'" in _text(unknown)  # the close match

            missing = await session.call_tool("validate_request", {
                "tasks": [{"id": "x", "tool": "sleep", "dependsOn": ["nope"]}]})
            assert _text(missing) == (
                "MISSING_DEPENDENCY: Task x depends on non-existent task nope"
            )

            valid = await session.call_tool("validate_request", {"tasks": [
                {"id": "a", "tool": "sleep", "params": {"seconds": 0}},
                {"id": "b", "tool": "sleep", "params": {"seconds": 0, "value": "${a.result}"}},
            ]})
            assert not valid.is_error
            assert valid.structured_content == {
                "valid": True, "levels": [["a"], ["b"]], "edges": [{"from": "a", "to": "b"}]
            }
            # the server lives on after errors; an empty request is a success
            empty = await session.call_tool("parallel_execute", {"tasks": []})
            assert not empty.is_error
            assert empty.structured_content["status"] == "success"

    run(scenario)


def test_files_stay_in_the_root_and_shell_is_refused(root: Path) -> None:
    outside = root.parent / "outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)

    async def scenario() -> None:
        async with connect(root) as session:
            result = await session.call_tool("parallel_execute", {"tasks": [
                {"id": "inside", "tool": "file_write",
                 "params": {"path": "notes/a.txt", "content": "kept"}},
                {"id": "dotdot", "tool": "file_write",
                 "params": {"path": "../outside/b.txt", "content": "no"}},
                {"id": "absolute", "tool": "file_write",
                 "params": {"path": str(outside / "c.txt"), "content": "no"}},
                {"id": "symlink", "tool": "file_write",
                 "params": {"path": "escape/d.txt", "content": "no"}},
                {"id": "db", "tool": "sqlite",
                 "params": {"database": "../outside/e.db", "sql": "SELECT 1"}},
            ]})
            assert not result.is_error
            tasks = result.structured_content["tasks"]
            assert result.structured_content["status"] == "partial"
            assert tasks["inside"]["status"] == "success"
            assert tasks["inside"]["result"] == {"path": "notes/a.txt", "bytes": 4}
            for tid in ("dotdot", "absolute", "symlink", "db"):
                assert tasks[tid]["status"] == "failed"
                assert tasks[tid]["error"]["code"] == "PATH_OUTSIDE_ROOT", tid

            shell = await session.call_tool("parallel_execute", {"tasks": [
                {"id": "sh", "tool": "shell", "params": {"argv": ["touch", "pwned"]}}]})
            assert shell.is_error
            assert _text(shell).startswith("TOOL_NOT_ALLOWED: Task sh uses tool 'shell'")

            described = await session.call_tool("describe_tools", {})
            names = [t["name"] for t in described.structured_content["tools"]]
            assert "shell" not in names and "file_write" in names
            assert described.structured_content["sandbox"] == {
                "root": os.path.realpath(root), "allowShell": False
            }

    run(scenario)
    assert (root / "notes" / "a.txt").read_text() == "kept"
    assert list(outside.iterdir()) == []
    assert not (root / "pwned").exists()


def test_allow_shell_and_tools_modules(tmp_path: Path, root: Path) -> None:
    (tmp_path / "my_agent_tools.py").write_text(textwrap.dedent('''
        import os

        import oktyv_nb as ok

        @ok.tool
        def word_count(text: str, min_length: int = 1) -> dict:
            """Count the words of a text."""
            return {"words": len([w for w in text.split() if len(w) >= min_length])}

        def shout(text: str) -> str:
            """Upper-case a text."""
            print("stray output that must not reach the protocol stream")
            os.write(1, b"and more, straight to fd 1\\n")
            return text.upper()

        TOOLS = {"shout": shout}
    '''))

    async def scenario() -> None:
        async with connect(root, "--allow-shell", "--tools", "my_agent_tools",
                           cwd=tmp_path) as session:
            described = await session.call_tool("describe_tools", {})
            tools = {t["name"]: t for t in described.structured_content["tools"]}
            assert {"shell", "word_count", "shout", "sleep"} <= set(tools)
            assert tools["word_count"]["description"] == "Count the words of a text."
            assert tools["word_count"]["params"] == {
                "type": "object",
                "properties": {"text": {"type": "string"},
                               "min_length": {"type": "integer", "default": 1}},
                "required": ["text"],
                "additionalProperties": False,
            }
            assert tools["sleep"]["async"] is True
            assert tools["http_request"]["vault"] is True
            assert "credentials" not in tools["http_request"]["params"]["properties"]

            result = await session.call_tool("parallel_execute", {"tasks": [
                {"id": "pwd", "tool": "shell",
                 "params": {"argv": [sys.executable, "-c", "import os; print(os.getcwd())"]}},
                {"id": "loud", "tool": "shout", "params": {"text": "hello world"}},
                {"id": "count", "tool": "word_count", "params": {"text": "${loud.result}"}},
            ]})
            assert not result.is_error, _text(result)
            tasks = result.structured_content["tasks"]
            assert tasks["pwd"]["result"]["stdout"].strip() == os.path.realpath(root)
            assert tasks["count"]["result"] == {"words": 2}
            assert tasks["loud"]["result"] == "HELLO WORLD"
            # what the tool printed is captured into its own entry (SPEC §18)
            assert tasks["loud"]["stdout"] == (
                "stray output that must not reach the protocol stream\n")
            again = await session.call_tool("validate_request", {"tasks": []})
            assert not again.is_error  # the stream is still in step

    run(scenario)
    log = (root.parent / "server.log").read_text()
    assert "straight to fd 1" in log  # below sys.stdout: the server sends it to stderr
    assert "stray output" not in log


def test_bad_options_exit_2_without_a_traceback(tmp_path: Path) -> None:
    for args, needle in (
        (["--root", str(tmp_path / "missing")], "INVALID_OPTION: root"),
        (["--root", str(tmp_path), "--tools", "no_such_tools_module"],
         "INVALID_OPTION: cannot import tools module 'no_such_tools_module'"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "oktyv_nb.mcp", *args], capture_output=True, text=True,
            env={**os.environ, **ENV}, stdin=subprocess.DEVNULL, timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        assert needle in proc.stderr
        assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------- in-process


def test_param_schemas_from_signatures() -> None:
    from oktyv_nb.model.signatures import describe_tool, params_schema

    def tool(a: int, b: str | os.PathLike[str], *args: Any, c: list[str] | None = None,
             credentials: dict | None = None, **more: Any) -> None:
        """First line.

        More text."""

    schema = params_schema(tool)
    assert schema == {
        "type": "object",
        "properties": {
            "a": {"type": "integer"},
            "b": {"type": "string"},
            "c": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}],
                  "default": None},
        },
        "required": ["a", "b"],
        "additionalProperties": True,
    }
    described = describe_tool("t", tool)
    assert described["description"] == "First line."
    assert described["vault"] is True and described["async"] is False

    class Weird:
        pass

    def odd(x: Weird, y=3) -> None:  # type: ignore[no-untyped-def]
        pass

    assert params_schema(odd)["properties"] == {
        "x": {"description": "a Weird"}, "y": {"default": 3}
    }


def test_readme_agent_samples(tmp_path: Path) -> None:
    """The README's MCP config, sample call and sample answer agree with the server."""
    import re

    import oktyv_nb as ok

    text = (PROJECT / "README.md").read_text(encoding="utf-8")
    section = text.split("## For agents: the MCP server", 1)[1].split("\n## ", 1)[0]
    config, call, answer = (
        json.loads(b) for b in re.findall(r"^```jsonc\n(.*?)^```", section, flags=re.S | re.M)
    )
    server = config["mcpServers"]["oktyv-nb"]
    assert server["command"] == "oktyv-nb-mcp" and "--root" in server["args"]
    result = ok.execute_request(call, root=tmp_path)
    data = result.model_dump(by_alias=True, mode="json", exclude_none=True)
    assert data["status"] == answer["status"] == "success"
    assert data["dag"] == answer["dag"]
    for tid, task in answer["tasks"].items():
        assert set(data["tasks"][tid]) == set(task)
        assert data["tasks"][tid]["result"] == task["result"]
    assert set(data) == set(answer)


def test_the_root_leaves_sys_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module a request writes into the root is never found by a later import."""
    from oktyv_nb.mcp.__main__ import _drop_writable_paths

    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["", str(tmp_path), str(tmp_path / "sub"), *sys.path])
    _drop_writable_paths(Path(os.path.realpath(tmp_path)))
    assert "" not in sys.path and str(tmp_path) not in sys.path
    assert str(tmp_path / "sub") in sys.path  # below the root: the operator's choice


def test_an_agent_maps_over_files_through_a_pool(root: Path) -> None:
    for name in ("a", "b", "c"):
        (root / f"{name}.txt").write_text(name * 3)

    async def scenario() -> None:
        async with connect(root) as session:
            result = await session.call_tool("parallel_execute", {
                "tasks": [
                    {"id": "read", "tool": "file_read",
                     "map": {"over": ["a.txt", "b.txt", "c.txt"], "param": "path",
                             "maxConcurrent": 2}, "pool": "disk"},
                    {"id": "second", "tool": "file_read",
                     "params": {"path": "${read.result.1}"}, "runIf": "all_done"},
                ],
                "config": {"pools": {"disk": 1}, "rates": {"disk": "100/s"}},
            })
            assert not result.is_error, _text(result)
            tasks = result.structured_content["tasks"]
            read = tasks["read"]
            assert read["status"] == "success"
            assert [c["taskId"] for c in read["children"]] == ["read[0]", "read[1]", "read[2]"]
            assert read["result"] == ["aaa", "bbb", "ccc"]
            assert tasks["second"]["status"] == "failed"  # "bbb" is no file in the root
            bad = await session.call_tool("parallel_execute", {"tasks": [
                {"id": "t", "tool": "file_read", "params": {"path": "a.txt"}, "pool": "nope"}]})
            assert bad.is_error and _text(bad).startswith("UNKNOWN_POOL: Task t: pool 'nope'")

    run(scenario)
