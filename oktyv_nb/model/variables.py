"""Variables: ``${taskId.path}`` references in params (SPEC §5).

A string that is exactly one reference resolves to the referenced **value**, of any type. A
reference inside a longer string is formatted into it: ``str()`` for scalars, JSON for dicts
and lists. The path is walked from the referenced task's record in its JSON form, so the
first field is one of :data:`RECORD_FIELDS`; later segments walk data only: mapping keys,
list and tuple indices, and the public, non-callable fields of dataclasses, pydantic models
and named tuples. Never modules, frames, code, generators, tracebacks, classes, functions or
properties. Nothing is ever evaluated.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pydantic import BaseModel

from oktyv_nb.errors import InvalidOptionError, VariableResolutionError
from oktyv_nb.units import plural

__all__ = ["PARAMS_DEPTH", "REFERENCE", "Reference", "find_references", "has_references", "resolve"]

REFERENCE = re.compile(r"\$\{([^{}]*)\}")

# Fields of a task record's JSON form (SPEC §3) that a path may start with.
RECORD_FIELDS = (
    "taskId", "status", "duration", "result", "error", "startTime", "endTime", "attempts",
    "rolledBack", "rollbackError", "reused",
)


class Reference:
    """A parsed reference: ``task_id`` and the path segments after it."""

    __slots__ = ("path", "task_id", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        parts = text.strip().split(".")
        if len(parts) < 2 or not all(parts):
            raise VariableResolutionError(
                f"Reference ${{{text}}} needs a task id and a field, like "
                f"${{{parts[0] or 'task'}.result}}"
            )
        if parts[1] not in RECORD_FIELDS:
            raise VariableResolutionError(
                f"Reference ${{{text}}}: a task record has no field {parts[1]!r}; a path "
                f"starts with one of {', '.join(RECORD_FIELDS)}, like ${{{parts[0]}.result}}"
            )
        self.task_id = parts[0]
        self.path = tuple(parts[1:])


#: How deeply params may nest dicts, lists and tuples: as deep as a JSON request's params
#: can be (its parser stops at about 200 levels), never near the interpreter's recursion
#: limit. Deeper params, or params that contain themselves, are refused when validated.
PARAMS_DEPTH = 200


def _too_deep() -> InvalidOptionError:
    return InvalidOptionError(
        f"params are nested deeper than {PARAMS_DEPTH} levels of dicts and lists (or hold "
        "themselves); flatten them, or pass the data as one value from a task's result",
        option="params",
    )


def _strings(value: Any, depth: int = 0) -> Iterator[str]:
    if isinstance(value, str):
        yield value
        return
    if isinstance(value, dict):
        values: Any = value.values()
    elif isinstance(value, (list, tuple)):
        values = value
    else:
        return
    if depth >= PARAMS_DEPTH:
        raise _too_deep()
    for v in values:
        yield from _strings(v, depth + 1)


def has_references(params: Any, _depth: int = 0) -> bool:
    """True when any string inside ``params`` contains ``${``. Raises InvalidOptionError
    for params nested deeper than :data:`PARAMS_DEPTH`."""
    if isinstance(params, str):
        return "${" in params
    if isinstance(params, dict):
        values: Any = params.values()
    elif isinstance(params, (list, tuple)):
        values = params
    else:
        return False
    if _depth >= PARAMS_DEPTH:
        raise _too_deep()
    for v in values:
        if isinstance(v, str):
            if "${" in v:
                return True
        elif isinstance(v, (dict, list, tuple)) and has_references(v, _depth + 1):
            return True
    return False


def find_references(params: Any) -> list[Reference]:
    """Every reference in the strings of ``params`` (nested dicts, lists, tuples). Raises
    InvalidOptionError for params nested deeper than :data:`PARAMS_DEPTH`."""
    return [Reference(m) for s in _strings(params) if "${" in s for m in REFERENCE.findall(s)]


def _walk(ref: Reference, view: Callable[[str], Any]) -> Any:
    field = ref.path[0]  # one of RECORD_FIELDS: Reference checked it
    value = view(field)
    walked = [ref.task_id, field]
    for seg in ref.path[1:]:
        value = _step(value, seg, ref, walked)
        walked.append(seg)
    return value


def _fields(value: Any) -> tuple[str, ...] | None:
    """The field names of a plain data object (a dataclass or pydantic model instance, a
    named tuple); None for anything else, which a path may not walk into."""
    if isinstance(value, type):  # a class is never data, even a dataclass
        return None
    if isinstance(value, tuple):
        names = getattr(type(value), "_fields", None)  # a named tuple
        return tuple(names) if isinstance(names, tuple) else None
    if dataclasses.is_dataclass(value):
        return tuple(f.name for f in dataclasses.fields(value))
    if isinstance(value, BaseModel):
        return tuple(type(value).model_fields)
    return None


def _step(value: Any, seg: str, ref: Reference, walked: list[str]) -> Any:
    """One segment of a path: a mapping key, a sequence index or a data object's field.

    Nothing else is walked (SPEC §5): no modules, frames, code, generators, tracebacks,
    classes or functions, no properties (which would run code) and no names starting
    with ``_``.
    """
    if isinstance(value, Mapping):
        if seg in value:
            return value[seg]
        if seg.lstrip("-").isdigit() and int(seg) in value:
            return value[int(seg)]
        keys = ", ".join(repr(k) for k in list(value)[:10])
        raise VariableResolutionError(
            f"${{{ref.text}}}: {'.'.join(walked)} has no key {seg!r} (keys: {keys})"
        )
    names = _fields(value)
    if isinstance(value, (list, tuple)) and (names is None or seg.lstrip("-").isdigit()):
        if seg.lstrip("-").isdigit():
            i = int(seg)
            if -len(value) <= i < len(value):
                return value[i]
        raise VariableResolutionError(
            f"${{{ref.text}}}: {'.'.join(walked)} is a list of {plural(len(value), 'item')}; "
            f"{seg!r} is not a valid index"
        )
    if names is not None and seg in names and not seg.startswith("_"):
        try:
            got = getattr(value, seg)
        except Exception as exc:  # a field that cannot be read (a slot left unset)
            raise VariableResolutionError(
                f"${{{ref.text}}}: reading {seg!r} of {'.'.join(walked)} "
                f"({type(value).__name__}) raised {type(exc).__name__}: {exc}"
            ) from None
        if not callable(got):
            return got
    what = "has no field" if names is not None else "is not data a path can walk into; no field"
    raise VariableResolutionError(
        f"${{{ref.text}}}: {'.'.join(walked)} ({type(value).__name__}) {what} {seg!r} "
        "(paths walk mapping keys, list indices and fields of dataclasses, pydantic models "
        "and named tuples)"
    )


def _format(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    return str(value)


def resolve(params: Any, lookup: Callable[[str], Callable[[str], Any]]) -> Any:
    """``params`` with every reference replaced.

    ``lookup(task_id)`` returns a function that gives a field of that task's record in JSON
    form (``view("result")``); it raises VariableResolutionError when the field may not be
    read (a failed dependency's result).
    """
    if isinstance(params, str):
        if "${" not in params:
            return params
        m = REFERENCE.fullmatch(params)
        if m:
            ref = Reference(m.group(1))
            return _walk(ref, lookup(ref.task_id))

        def sub(m: re.Match[str]) -> str:
            ref = Reference(m.group(1))
            return _format(_walk(ref, lookup(ref.task_id)))

        return REFERENCE.sub(sub, params)
    if isinstance(params, dict):
        return {k: resolve(v, lookup) for k, v in params.items()}
    if isinstance(params, list):
        return [resolve(v, lookup) for v in params]
    if isinstance(params, tuple):
        return tuple(resolve(v, lookup) for v in params)
    return params
