"""The MCP server: ``parallel_execute``, ``validate_request`` and ``describe_tools`` (SPEC §15).

Built on the official ``mcp`` SDK's low-level :class:`mcp.server.Server` (2.x), so that the
input schema is the request's own (generated from the pydantic models) and a validation
error answers as a tool error (``is_error``) whose text starts with the SPEC §4 code.

What a request may run is fixed when the server starts: the built-in tools and the tools
of the ``--tools`` modules, under a :class:`~oktyv_nb.model.sandbox.Sandbox` (file tools
confined to the root, ``shell`` refused unless allowed). Runs happen on the server's own
event loop; sync tools run in the engine's worker threads, so the server keeps answering.

Progress: when a ``tools/call`` of ``parallel_execute`` carries a progress token, a
subscriber of the engine's event stream counts finished tasks and a pump sends
``notifications/progress`` (``progress`` = finished tasks, ``total`` = all tasks, the
latest count when several finish at once). Every notification is sent before the
result, the last with ``progress == total``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError

from oktyv_nb import __version__
from oktyv_nb.api import aexecute_request
from oktyv_nb.errors import ToolNotAllowedError
from oktyv_nb.model.graph import paused_gc, prepare
from oktyv_nb.model.registry import ToolTable
from oktyv_nb.model.sandbox import Sandbox
from oktyv_nb.model.schema import ExecutionResult, error_report, request_json_schema
from oktyv_nb.model.signatures import describe_tool
from oktyv_nb.model.tools import BUILTIN_TOOLS

__all__ = ["OktyvMCPServer"]

logger = logging.getLogger("oktyv_nb.mcp")


_PARALLEL_EXECUTE = """\
Run a DAG of tool calls concurrently and return every task's record.

Each task calls one tool (see describe_tools) with params; a task starts as soon as the \
tasks it depends on (dependsOn, and any '${otherId.result...}' reference in its params) \
have succeeded, up to config.maxConcurrent at once. Times are milliseconds. The answer \
has the run's status (success | partial | failure), and for every task its status \
(success | failed | skipped), result or error {code, message}, attempts and duration, \
plus the DAG's levels and edges. A request that is not valid (a cycle, an unknown id or \
tool, a malformed field) runs nothing and answers an error whose text starts with its \
code, e.g. CIRCULAR_DEPENDENCY. Send a progress token to get a notification as tasks \
finish."""

_VALIDATE = """\
Check a parallel_execute request without running it: answers {valid, levels, edges} \
(levels: task ids by depth of dependencies) or an error whose text starts with its code."""

_DESCRIBE = """\
List the tools a request may call here, each with the JSON schema of its params, its \
description, and the sandbox: file paths are relative to (and confined to) the root; \
shell is listed only when it is allowed."""

_INSTRUCTIONS = """\
oktyv-nb runs DAGs of tool calls concurrently. Call describe_tools to see the tools and \
their params, validate_request to check a DAG, parallel_execute to run it. File paths are \
relative to the server's root directory and cannot leave it."""


def _result_schema() -> dict[str, Any]:
    return ExecutionResult.model_json_schema(by_alias=True, mode="serialization")


_EDGE = {
    "type": "object",
    "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
    "required": ["from", "to"],
}
_VALID_SCHEMA = {
    "type": "object",
    "properties": {
        "valid": {"type": "boolean"},
        "levels": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
        "edges": {"type": "array", "items": _EDGE},
    },
    "required": ["valid", "levels", "edges"],
}
_DESCRIBE_SCHEMA = {
    "type": "object",
    "properties": {
        "tools": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "description": {"type": "string"},
                    "async": {"type": "boolean"},
                    "vault": {"type": "boolean"},
                    "params": {"type": "object"},
                },
                "required": ["name", "description", "params"],
            },
        },
        "sandbox": {
            "type": "object",
            "properties": {
                "root": {"type": ["string", "null"]},
                "allowShell": {"type": "boolean"},
            },
        },
    },
    "required": ["tools", "sandbox"],
}


def _error_result(exc: BaseException) -> types.CallToolResult:
    _, text = error_report(exc)
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)


def _json_result(data: dict[str, Any]) -> types.CallToolResult:
    text = json.dumps(data, ensure_ascii=False)
    return types.CallToolResult(content=[types.TextContent(text=text)], structured_content=data)


class _Progress:
    """An event subscriber counting finished tasks into a stream of ``(progress, total,
    message)`` items; see the module's docstring."""

    event_kinds = ("run_started", "task_finished", "run_finished")

    def __init__(self, send: Callable[[tuple[float, float, str]], None]) -> None:
        self.send = send
        self.records: Mapping[str, Any] = {}
        self.done: set[str] = set()

    def __call__(self, kind: str, subject: Any, time: float) -> None:
        if kind == "run_started":
            self.records = subject.records
        elif kind == "task_finished":
            tid = subject.task_id
            if tid in self.records and tid not in self.done:
                self.done.add(tid)
                self.send((len(self.done), len(self.records), f"{tid} {subject.status}"))
        elif len(self.done) < len(self.records):  # run_finished; every task has finished
            self.send((len(self.records), len(self.records), "run finished"))


class OktyvMCPServer:
    """The oktyv-nb MCP server: ``tools`` (name -> callable) and the built-ins, under a
    sandbox of ``root`` (default: the working directory) and ``allow_shell``; ``root`` may
    be a :class:`~oktyv_nb.model.sandbox.Sandbox` (then ``allow_shell`` is its own).

    :attr:`server` is the SDK's low-level server; :meth:`run_stdio` serves it on stdin and
    stdout.
    """

    def __init__(
        self,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        *,
        root: str | os.PathLike[str] | Sandbox | None = None,
        allow_shell: bool = False,
    ) -> None:
        self.sandbox = (
            root if isinstance(root, Sandbox)
            else Sandbox(os.getcwd() if root is None else root, allow_shell=allow_shell)
        )
        self.table = ToolTable(dict(tools or {}), BUILTIN_TOOLS)
        schema = request_json_schema()
        self.tools = [
            types.Tool(
                name="parallel_execute",
                title="Run a DAG of tool calls",
                description=_PARALLEL_EXECUTE,
                input_schema=schema,
                output_schema=_result_schema(),
                annotations=types.ToolAnnotations(
                    read_only_hint=False, destructive_hint=True, open_world_hint=True
                ),
            ),
            types.Tool(
                name="validate_request",
                title="Check a DAG without running it",
                description=_VALIDATE,
                input_schema=schema,
                output_schema=_VALID_SCHEMA,
                annotations=types.ToolAnnotations(read_only_hint=True),
            ),
            types.Tool(
                name="describe_tools",
                title="The tools a DAG may call",
                description=_DESCRIBE,
                input_schema={"type": "object", "properties": {}},
                output_schema=_DESCRIBE_SCHEMA,
                annotations=types.ToolAnnotations(read_only_hint=True),
            ),
        ]
        self._handlers = {
            "parallel_execute": self.parallel_execute,
            "validate_request": self.validate_request,
            "describe_tools": self.describe_tools,
        }
        self.server: Server[Any] = Server(
            "oktyv-nb",
            version=__version__,
            title="oktyv-nb: concurrent DAGs of tool calls",
            instructions=_INSTRUCTIONS,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
        )

    # ------------------------------------------------------------------ MCP handlers
    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=self.tools)

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        handler = self._handlers.get(params.name)
        if handler is None:
            raise MCPError(
                code=types.INVALID_PARAMS,
                message=f"Unknown tool {params.name!r}; this server has "
                + ", ".join(self._handlers),
            )
        try:
            return await handler(params.arguments or {}, ctx)
        except Exception as exc:  # a bug of ours: an error answer, never a dead server
            logger.exception("tool %s failed", params.name)
            text = f"INTERNAL_ERROR: {type(exc).__name__}: {exc}"
            return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)

    # ------------------------------------------------------------------ the tools
    async def parallel_execute(
        self, arguments: dict[str, Any], ctx: ServerRequestContext[Any] | None = None
    ) -> types.CallToolResult:
        """Validate and run the request ``arguments``; the SPEC §3 result, or the error."""
        meta = ctx.meta if ctx is not None else None
        wants_progress = bool(meta) and meta.get("progress_token") is not None
        send, receive = anyio.create_memory_object_stream[tuple[float, float, str]](math.inf)
        result: ExecutionResult | None = None
        error: ValueError | None = None

        async def pump() -> None:
            sending = True
            async with receive:
                async for item in receive:
                    while True:  # several finished meanwhile: send the latest count
                        try:
                            item = receive.receive_nowait()
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    if not sending:
                        continue
                    try:
                        await ctx.session.report_progress(*item)  # type: ignore[union-attr]
                    except Exception as exc:  # the client went away: the run goes on
                        logger.warning("progress notifications stopped: %s", exc)
                        sending = False

        async with anyio.create_task_group() as tg:
            if wants_progress:
                tg.start_soon(pump)
            try:
                result = await aexecute_request(
                    arguments, self.table, root=self.sandbox,
                    on_event=_Progress(send.send_nowait) if wants_progress else None,
                )
            except ValueError as exc:  # invalid: OktyvError or pydantic's ValidationError
                error = exc
            finally:
                send.close()
        if error is not None:
            return _error_result(error)
        assert result is not None
        with paused_gc():
            data = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        return _json_result(data)

    async def validate_request(
        self, arguments: dict[str, Any], ctx: ServerRequestContext[Any] | None = None
    ) -> types.CallToolResult:
        """``{valid, levels, edges}`` of the request ``arguments``, or the error."""
        try:
            _, graph = prepare(arguments, self.table, keep_specs=False, sandbox=self.sandbox)
        except ValueError as exc:
            return _error_result(exc)
        return _json_result({
            "valid": True,
            "levels": graph.levels,
            "edges": [{"from": a, "to": b} for a, b in graph.edges()],
        })

    def available_tools(self) -> dict[str, Callable[..., Any]]:
        """Every tool a request may call here, as it runs (confined where it applies)."""
        out: dict[str, Callable[..., Any]] = {}
        for name in self.table:
            try:
                out[name] = self.sandbox.admit(self.table[name], name)
            except ToolNotAllowedError:
                continue
        return out

    async def describe_tools(
        self, arguments: dict[str, Any], ctx: ServerRequestContext[Any] | None = None
    ) -> types.CallToolResult:
        """The tools a request may call, with their param schemas, and the sandbox."""
        tools = self.available_tools()
        root = self.sandbox.root
        return _json_result({
            "tools": [describe_tool(name, tools[name]) for name in sorted(tools)],
            "sandbox": {
                "root": str(root) if root is not None else None,
                "allowShell": self.sandbox.allow_shell,
            },
        })

    # ------------------------------------------------------------------ serving
    async def run_stdio(self) -> None:
        """Serve MCP on stdin/stdout until the client closes stdin.

        While it serves, what tools print goes to stderr, never into the protocol stream:
        the SDK points file descriptor 1 at stderr, and ``sys.stdout`` is ``sys.stderr``
        (so nothing a tool left in stdout's buffer reaches the client when the server exits).
        """
        async with stdio_server() as (read_stream, write_stream):
            stdout = sys.stdout
            sys.stdout = sys.stderr
            try:
                await self.server.run(
                    read_stream, write_stream, self.server.create_initialization_options()
                )
            finally:
                sys.stdout = stdout
                with contextlib.suppress(Exception):
                    stdout.flush()  # still on stderr here: fd 1 is restored after this block
