"""Checking the editor's draft of one task against the DAG it would join.

:class:`Draft` is what the editor holds, as typed; :func:`check_draft` turns it into the
task's :class:`~oktyv_nb.model.schema.TaskSpec`, or into a message per field. The task is
built by :meth:`DAG.task` on a scratch DAG, and the DAG as it would be with it is checked by
:meth:`DAG.validate` on a trial DAG (:meth:`DAG.replace_tasks`): the rules are the DAG's,
the messages are placed next to the field they concern. Nothing here changes the DAG.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from oktyv_nb.dag import DAG, TASK_OPTIONS
from oktyv_nb.errors import (
    CircularDependencyError,
    DuplicateTaskError,
    MissingDependencyError,
    OktyvError,
    ToolNotFoundError,
    UnknownPoolError,
)
from oktyv_nb.model.registry import resolve_tools
from oktyv_nb.model.schema import (
    TASK_ID_MAX,
    TASK_ID_PATTERN,
    RetryPolicyModel,
    RollbackSpec,
    TaskSpec,
)
from oktyv_nb.model.variables import find_references, has_references
from oktyv_nb.units import check_seconds
from oktyv_nb.widgets.fields import FieldError, ParamField

__all__ = ["Draft", "check_draft", "dag_error", "implied_deps", "ordered_with"]

_ID_RE = re.compile(TASK_ID_PATTERN)


@dataclass(slots=True)
class Draft:
    """One task as the editor holds it.

    ``editing`` is the id of the task the draft replaces (None for a new task); ``timeout``
    and ``extra`` (the other params, a JSON object) are the text typed; ``retry`` and
    ``rollback`` are a loaded task's own, kept as they are. ``map_over`` (a ``${ref}`` to a
    list or a JSON list, as typed; empty: not mapped), ``map_param`` and ``map_max`` make
    it a mapped task (SPEC §16); ``pool`` names a pool or rate of the DAG (SPEC §20).
    """

    task_id: str
    tool: str | None
    fields: Mapping[str, ParamField]
    extra: str = ""
    after: tuple[str, ...] = ()
    priority: int | None = None
    timeout: str = ""
    retries: int | None = None
    retry: RetryPolicyModel | None = None
    rollback: RollbackSpec | None = None
    vault: str | None = None
    trigger: str | None = None
    editing: str | None = None
    map_over: str = ""
    map_param: str | None = None
    map_max: int | None = None
    pool: str | None = None


def check_draft(
    dag: DAG, draft: Draft, show_required: Callable[[str], bool]
) -> tuple[TaskSpec | None, dict[str, str]]:
    """The draft's TaskSpec (None when it cannot be added) and the message for each field
    (``id``, ``tool``, ``param:<name>``, ``extra``, ``deps``, ``timeout``, ``status``).

    ``show_required(key)`` says whether a required field left empty gets its message yet;
    if not, its key maps to an empty message, which still keeps the draft out."""
    errors: dict[str, str] = {}
    ids_after = [t for t in dag.specs if t != draft.editing]
    tid = draft.task_id
    if not tid:
        errors["id"] = "required: a task id" if show_required("id") else ""
    elif len(tid) > TASK_ID_MAX:
        errors["id"] = f"at most {TASK_ID_MAX} characters"
    elif not _ID_RE.fullmatch(tid):
        errors["id"] = "use letters, digits, _ and - (not first), e.g. fetch_2"
    elif tid in ids_after:
        errors["id"] = f"Duplicate task ID: {tid} (choose another id)"
    known = {*ids_after, tid} if tid else set(ids_after)
    tool = draft.tool
    if tool is None:
        errors["tool"] = "choose a tool (register one with ok.tool or pass tools=)"
    elif tool not in resolve_tools(dag.tools):
        errors["tool"] = (f"unknown tool {tool!r}: register it with ok.tool or pass "
                          "tools={name: callable}")
    over = _map_over(draft, known, errors)
    params = _params(draft, known, errors, show_required)
    timeout: float | None = None
    if draft.timeout:
        try:
            timeout = check_seconds(float(draft.timeout), "timeout")  # the DAG's own rule
        except ValueError:  # not a number, or not one the rule takes
            errors["timeout"] = f"{draft.timeout!r} is not a number of seconds > 0"
    spec = None
    if not errors:
        try:
            spec = _make_spec(dag, draft, params, timeout, over)
        except ValueError as exc:  # pydantic's ValidationError too
            key = getattr(exc, "option", None)
            field = {"over": "map", "param": "map", "max_concurrent": "map", "map.param": "map",
                     "pool": "pool"}.get(key or "", "status")
            errors[field] = str(exc).splitlines()[0]
    if spec is not None:
        whole = _trial(dag, draft.editing, spec)
        if whole is not None:
            errors[whole[0]] = whole[1]
            spec = None
    return spec, errors


def _params(draft: Draft, known: set[str], errors: dict[str, str],
            show_required: Callable[[str], bool]) -> dict[str, Any]:
    """The tool params the draft gives; the messages of fields that cannot be read go
    into ``errors``."""
    tid = draft.task_id
    params: dict[str, Any] = {}
    for name, field in draft.fields.items():
        key = f"param:{name}"
        if draft.map_over and name == draft.map_param:
            continue  # each child gets its element here
        try:
            value = field.parse()
            _check_refs(value, tid, known)
        except FieldError as exc:
            if str(exc) != "required" or show_required(key):
                errors[key] = str(exc)
            else:
                errors[key] = ""  # blocks the submit without a message yet
            continue
        except OktyvError as exc:
            errors[key] = exc.message
            continue
        if field.include(value):
            params[name] = value
    if draft.extra:
        try:
            extra = json.loads(draft.extra)
            if not isinstance(extra, dict):
                raise FieldError("other params must be a JSON object {\"name\": value}")
            clash = sorted(set(extra) & set(draft.fields))
            if clash:
                raise FieldError(f"{', '.join(clash)} already has a field above")
            _check_refs(extra, tid, known)
            params.update(extra)
        except json.JSONDecodeError as exc:
            errors["extra"] = (f"invalid JSON: {exc.msg} (line {exc.lineno}, column "
                               f"{exc.colno})")
        except (FieldError, OktyvError) as exc:
            errors["extra"] = str(exc)
    return params


def _map_over(draft: Draft, known: set[str], errors: dict[str, str]) -> str | list[Any] | None:
    """What the draft maps over (a reference or a list), None when it is not mapped; a
    problem goes into ``errors["map"]``."""
    text = draft.map_over
    if not text:
        return None
    over: str | list[Any]
    if text.startswith("${"):
        over = text
        try:
            _check_refs(text, draft.task_id, known)
        except (FieldError, OktyvError) as exc:
            errors["map"] = str(exc)
            return None
    else:
        try:
            over = json.loads(text)
        except json.JSONDecodeError:
            over = None  # type: ignore[assignment]
        if not isinstance(over, list):
            errors["map"] = ("map over a reference like ${list.result} or a JSON list like "
                             '["a", "b"]')
            return None
    if not draft.map_param:
        errors["map"] = "choose the parameter each element goes to"
        return None
    return over


def _check_refs(value: Any, tid: str, known: set[str]) -> None:
    if not has_references(value):
        return
    for ref in find_references(value):  # VariableResolutionError for ${A}
        if tid and ref.task_id == tid:
            raise FieldError(f"${{{ref.text}}} refers to this task itself (a cycle)")
        if ref.task_id not in known:
            others = ", ".join(sorted(known - {tid})) or "none yet"
            raise FieldError(
                f"${{{ref.text}}}: there is no task {ref.task_id!r} (tasks: {others})")


def _make_spec(dag: DAG, draft: Draft, params: dict[str, Any],
               timeout: float | None, over: str | list[Any] | None = None) -> TaskSpec:
    """The draft's task, built by :meth:`DAG.task` or, mapped, :meth:`DAG.map` (on a
    scratch DAG with the same tools)."""
    scratch = DAG(tools=dag.tools)
    plain = {k: v for k, v in params.items() if k not in TASK_OPTIONS}
    options: dict[str, Any] = dict(
        after=list(draft.after) or None, priority=draft.priority, timeout=timeout,
        retries=draft.retries, retry=draft.retry, rollback=draft.rollback,
        vault=draft.vault, trigger=draft.trigger, pool=draft.pool,
    )
    named_like = {k: v for k, v in params.items() if k in TASK_OPTIONS}
    if over is None:
        scratch.task(draft.task_id, draft.tool, named_like, **options, **plain)
    else:
        scratch.map(draft.task_id, draft.tool, named_like, over=over,
                    param=draft.map_param, max_concurrent=draft.map_max, **options, **plain)
    return scratch.specs[draft.task_id]


def dag_error(dag: DAG) -> OktyvError | None:
    """The error :meth:`DAG.validate` raises for ``dag``, or None when it is valid."""
    try:
        dag.validate()
    except OktyvError as exc:
        return exc
    return None


def ordered_with(dag: DAG, editing: str | None, spec: TaskSpec) -> list[TaskSpec]:
    """The DAG's tasks with ``spec`` in the place of task ``editing`` (last when None)."""
    if editing is None:
        return [*dag.specs.values(), spec]
    return [spec if s.id == editing else s for s in dag.specs.values()]


def _trial(dag: DAG, editing: str | None, spec: TaskSpec) -> tuple[str, str] | None:
    """Validate the DAG as it would be with ``spec``; (field, message) on error."""
    try:
        DAG(tools=dag.tools, pools=dag.config.pools, rates=dag.config.rates).replace_tasks(
            ordered_with(dag, editing, spec)).validate()
    except OktyvError as exc:
        current = dag_error(dag)
        if current is not None and str(current) == str(exc):
            return None  # the DAG was already invalid; this draft neither caused it
        if isinstance(exc, DuplicateTaskError):
            return "id", exc.message
        if isinstance(exc, ToolNotFoundError) and exc.task_id == spec.id:
            return "tool", exc.message
        if isinstance(exc, UnknownPoolError):
            return "pool", exc.message
        if isinstance(exc, CircularDependencyError):
            return "deps", exc.message + " (remove one of these dependencies)"
        if isinstance(exc, MissingDependencyError) and exc.task_id != spec.id:
            return "deps", (f"{exc.message} (saving would break task {exc.task_id}; "
                            "edit it first)")
        return "deps", exc.message
    return None


def implied_deps(fields: Mapping[str, ParamField], after: tuple[str, ...]) -> list[str]:
    """The tasks the fields' ``${task...}`` references make this one depend on, beyond
    ``after``."""
    out: list[str] = []
    for field in fields.values():
        with contextlib.suppress(FieldError, OktyvError):
            value = field.parse()
            if has_references(value):
                for ref in find_references(value):
                    if ref.task_id not in out and ref.task_id not in after:
                        out.append(ref.task_id)
    return out
