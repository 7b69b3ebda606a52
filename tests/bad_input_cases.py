"""The rows of docs/bad-input.md: how one call's error reads (shared by the doc's test)."""

from __future__ import annotations

from typing import Any

import oktyv_nb as ok


def noop(**kwargs: Any) -> None:
    """A tool that takes any params."""


def work(name: str, n: int = 1) -> str:
    """A tool with one required and one optional param."""
    return name * n


def env() -> dict[str, Any]:
    """The names a row's call may use."""
    return {"ok": ok, "noop": noop, "work": work}


def describe(call: str) -> tuple[str, str, str]:
    """``(exception, code, message)`` of what evaluating ``call`` raises; a pydantic
    ValidationError's message is its first error's field path and text."""
    try:
        eval(call, env())  # the doc's own rows
    except Exception as exc:
        errors = getattr(exc, "errors", None)
        if type(exc).__name__ == "ValidationError" and callable(errors):
            first = errors()[0]
            loc = ".".join(str(p) for p in first["loc"]) or "(the request)"
            message = f"at {loc}: {first['msg']}"
        else:
            message = str(exc).splitlines()[0]
        code = getattr(exc, "code", None)
        return type(exc).__name__, code if isinstance(code, str) else "", message
    raise AssertionError(f"{call} raised nothing")
