"""What a tool takes, as JSON schema: made from its signature and type hints (SPEC §15).

:func:`describe_tool` is what the MCP server's ``describe_tools`` answers for each tool:
its name, the first line of its docstring, whether it is async, and a JSON schema of the
params a request gives it. Each parameter's schema comes from its type hint through
pydantic; a hint pydantic cannot express (``os.PathLike``) leaves out that member of a
union, or gives an unconstrained schema. ``credentials`` is not a param: the engine passes a
task's vault set under that name (SPEC §8), so it shows as ``"vault": true`` instead.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import TypeAdapter

from oktyv_nb.model.graph import is_async

__all__ = ["describe_tool", "describe_tools", "params_schema"]

_ENGINE_PARAMS = frozenset({"credentials"})


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    target = inspect.unwrap(fn)
    while hasattr(target, "func"):  # functools.partial
        target = target.func
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        target = getattr(target, "__call__", target)  # noqa: B004 - callable objects
    try:
        return typing.get_type_hints(target)
    except Exception:
        return {}


def _type_schema(annotation: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of one type hint; ``defs`` collects the ``$defs`` it needs."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return {}
    try:
        schema = TypeAdapter(annotation).json_schema()
    except Exception:
        origin = typing.get_origin(annotation)
        if origin not in (typing.Union, types.UnionType):
            return {"description": f"a {_type_text(annotation)}"}
        members = [_type_schema(a, defs) for a in typing.get_args(annotation)]
        members = [m for m in members if m and "description" not in m]
        if not members:
            return {"description": f"a {_type_text(annotation)}"}
        return members[0] if len(members) == 1 else {"anyOf": members}
    defs.update(schema.pop("$defs", {}))
    return _simplified(schema)


def _simplified(schema: dict[str, Any]) -> dict[str, Any]:
    """``str | os.PathLike`` is a string: drop a union's string members that only add a
    ``format`` when a plain string member is there."""
    members = schema.get("anyOf")
    if not members or {"type": "string"} not in members:
        return schema
    keep = [m for m in members if not (m.get("type") == "string" and set(m) == {"type", "format"})]
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**keep[0], **rest} if len(keep) == 1 else {**rest, "anyOf": keep}


def _type_text(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__qualname__
    return str(annotation).replace("typing.", "")


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def params_schema(fn: Callable[..., Any]) -> dict[str, Any]:
    """A JSON schema (``type: object``) of the keyword params ``fn`` takes.

    Required params are those without a default; ``additionalProperties`` is true when
    ``fn`` takes ``**kwargs``. Positional-only and ``*args`` parameters cannot be given by
    a request and are left out, as is ``credentials`` (see the module's docstring).
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return {"type": "object", "additionalProperties": True}
    hints = _hints(fn)
    defs: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    var_kw = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
            continue
        if p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY) or p.name in _ENGINE_PARAMS:
            continue
        schema = _type_schema(hints.get(p.name, p.annotation), defs)
        if p.default is p.empty:
            required.append(p.name)
        elif _jsonable(p.default):
            schema = {**schema, "default": p.default}
        properties[p.name] = schema
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    out["additionalProperties"] = var_kw
    if defs:
        out["$defs"] = defs
    return out


def _takes_credentials(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "credentials" in params or any(
        p.kind is p.VAR_KEYWORD for p in params.values()
    )


def describe_tool(name: str, fn: Callable[..., Any]) -> dict[str, Any]:
    """``{"name", "description", "async", "vault", "params"}`` of the tool ``fn``
    registered as ``name`` (see the module's docstring)."""
    doc = inspect.getdoc(inspect.unwrap(fn)) or ""
    return {
        "name": name,
        "description": doc.strip().splitlines()[0] if doc.strip() else "",
        "async": is_async(inspect.unwrap(fn)),
        "vault": _takes_credentials(fn),
        "params": params_schema(fn),
    }


def describe_tools(tools: Mapping[str, Callable[..., Any]]) -> list[dict[str, Any]]:
    """:func:`describe_tool` of every tool in ``tools``, sorted by name."""
    return [describe_tool(name, tools[name]) for name in sorted(tools)]
