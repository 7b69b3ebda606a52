"""Pydantic models of the JSON boundary: the request and the result (SPEC §3).

Field names are snake_case in Python and camelCase in JSON; both spellings are accepted on
input, and ``model_dump(by_alias=True, mode="json")`` gives the camelCase form. Durations and
timeouts here are **milliseconds**, as in the original Oktyv design; the Python builder and
the DataFrame use seconds.

These models are built once per run at the edges. The scheduler never touches them.
Whatever comes in (a request, a saved result) is validated; a result built from the engine's
own records, whose values already have the field types, is assembled without a second check
(:func:`trusted_task_result`, :func:`trusted_edge`, ``model_construct``).

Size: just over 500 lines: every request and result model of SPEC §3, in one place so that
the JSON format has one home.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired, Required

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
    with_config,
)
from pydantic.alias_generators import to_camel
from pydantic.dataclasses import dataclass as pydantic_dataclass
from typing_extensions import TypedDict

from oktyv_nb.errors import InvalidOptionError

__all__ = [
    "CacheSpec",
    "DagEdge",
    "DagInfo",
    "ExecutionConfig",
    "ExecutionRequest",
    "ExecutionResult",
    "MapSpec",
    "RequestLike",
    "RetryPolicyModel",
    "RollbackSpec",
    "Summary",
    "TaskError",
    "TaskResult",
    "TaskSpec",
    "error_report",
    "parse_request",
    "parse_request_data",
    "request_json_schema",
]

TASK_ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_-]*$"
TASK_ID_MAX = 128

FailureMode = Literal["continue", "stop", "rollback"]
Trigger = Literal["all_success", "all_done"]
Backoff = Literal["exponential", "linear"]
TaskStatus = Literal["success", "failed", "skipped"]
RunStatus = Literal["success", "partial", "failure"]


#: How deep :func:`jsonable` follows nested containers; deeper ones are summarised.
JSON_DEPTH = 200


def jsonable(value: Any) -> Any:
    """Return ``value`` as JSON-compatible data: objects JSON cannot hold become ``repr``,
    non-finite floats ``"nan"``/``"inf"``/``"-inf"``, sets and tuples lists.

    Total: it never raises. An object whose ``repr`` raises, a container that holds itself
    and nesting deeper than :data:`JSON_DEPTH` become short placeholder strings, so that one
    such value never costs the whole result.
    """
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError, RecursionError):
        pass
    return _jsonable(value, set(), 0)


def _jsonable(value: Any, path: set[int], depth: int) -> Any:
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # nan / inf
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        if id(value) in path:
            return "<circular reference>"
        if depth >= JSON_DEPTH:
            return f"<nested deeper than {JSON_DEPTH} levels>"
        path.add(id(value))
        try:
            if isinstance(value, dict):
                return {_key(k): _jsonable(v, path, depth + 1) for k, v in value.items()}
            return [_jsonable(v, path, depth + 1) for v in value]
        finally:
            path.discard(id(value))
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, BaseModel):
        try:
            return value.model_dump(mode="json")
        except Exception:
            return safe_repr(value)
    return safe_repr(value)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    try:
        return str(key)
    except Exception:
        return f"<unprintable {type(key).__name__} key>"


def safe_repr(value: Any) -> str:
    """``repr(value)``, or a placeholder naming its type when that raises."""
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__} object>"


AnyJson = Annotated[Any, PlainSerializer(jsonable, when_used="json")]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=False
    )


class RetryPolicyModel(_Model):
    """Retry policy; ``initial_delay`` in milliseconds."""

    max_attempts: int = Field(ge=1, description="Attempts in all, the first included.")
    backoff: Backoff = Field(
        default="exponential",
        description="Delay before retry k (0-based): initialDelay * 2**k (exponential) or "
        "initialDelay * (k + 1) (linear).",
    )
    initial_delay: float = Field(
        default=1000.0, ge=0, allow_inf_nan=False, description="Milliseconds."
    )


class RollbackSpec(_Model):
    """A compensating call run when ``failureMode`` is ``rollback``."""

    tool: str = Field(min_length=1, description="The name of the compensating tool.")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Its params; may reference the task's own result: ${<id>.result...}.",
    )


class CacheSpec(_Model):
    """The result cache of a task (SPEC §17): ``{"expire": seconds}``; ``"cache": true`` is
    the same without expiry. ``expire`` is in **seconds**, as SPEC §17 writes it."""

    expire: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class MapSpec(_Model):
    """A mapped task's fan-out (SPEC §16): one child per element of ``over``, each called
    with the element as the tool parameter ``param``."""

    over: str | list[Any] = Field(
        description="A reference to a list ('${list.result.urls}': its task becomes a "
        "dependency) or a literal list.",
    )
    param: str = Field(
        min_length=1, description="The tool parameter that receives each element."
    )
    max_concurrent: int | None = Field(
        default=None, ge=1,
        description="At most this many children running at once (within the run's "
        "maxConcurrent).",
    )

    @field_validator("over")
    @classmethod
    def _over_is_reference(cls, over: str | list[Any]) -> str | list[Any]:
        if isinstance(over, str) and not _WHOLE_REFERENCE.fullmatch(over):
            raise ValueError(
                f"map.over must be one reference like '${{list.result}}' or a list, got "
                f"{over!r}"
            )
        return over


_WHOLE_REFERENCE = re.compile(r"\$\{[^${}]+\}")


class TaskSpec(_Model):
    """One task of a request; ``timeout`` in milliseconds per attempt."""

    id: str = Field(
        min_length=1, max_length=TASK_ID_MAX, pattern=TASK_ID_PATTERN,
        description="Unique task id (letters, digits, _ and -).",
    )
    tool: str = Field(min_length=1, description="The name of the tool the task calls.")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of the tool. A string '${otherId.result.path.to.x}' "
        "is replaced by that value of another task's record (and makes it a dependency); "
        "embedded in a longer string it is formatted into it.",
    )
    depends_on: list[str] | None = Field(
        default=None, description="Ids of tasks that must succeed before this one starts."
    )
    priority: int | None = Field(
        default=None, ge=1, le=10, description="1..10, default 5; higher starts first."
    )
    timeout: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="Milliseconds per attempt."
    )
    vault: str | None = Field(
        default=None, min_length=1,
        description="A secret set passed to the tool as its credentials argument.",
    )
    retry_policy: RetryPolicyModel | None = None
    rollback: RollbackSpec | None = None
    run_if: Trigger | None = Field(
        default=None,
        description="all_success (default): run when every dependency succeeded; all_done: "
        "run once they all finished, whatever their outcome.",
    )
    cache: bool | CacheSpec | None = None
    map: MapSpec | None = Field(
        default=None,
        description="Fan out: one child task per element of a list known at run time "
        "(SPEC §16); the task's id names the children id[0], id[1], ...",
    )
    pool: str | None = Field(
        default=None, min_length=1,
        description="A pool or rate of config.pools / config.rates the task (every child of "
        "a map) takes a slot of (SPEC §20).",
    )

    @field_validator("vault")  # runs only when a vault is given, not once per task
    @classmethod
    def _credentials_param(cls, vault: str | None, info: ValidationInfo) -> str | None:
        return _no_credentials_param(vault, info)

    def model_post_init(self, context: Any, /) -> None:
        """Specs given the same fields share one set of their names (``model_fields_set``):
        a set per spec would cost about 200 B a task for as long as its DAG lives. An
        assignment copies the set first (:meth:`__setattr__`), so no spec sees another's."""
        given = self.__pydantic_fields_set__
        shared = _GIVEN_FIELDS.setdefault(frozenset(given), given)
        if shared is not given:
            object.__setattr__(self, "__pydantic_fields_set__", shared)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, "__pydantic_fields_set__", set(self.__pydantic_fields_set__))
        super().__setattr__(name, value)


# One set of given field names per combination seen (at most 2**13 of them).
_GIVEN_FIELDS: dict[frozenset[str], set[str]] = {}


def _no_credentials_param(vault: str | None, info: ValidationInfo) -> str | None:
    if vault is not None and "credentials" in info.data.get("params", ()):
        raise ValueError(
            f"Task {info.data.get('id', '?')}: params must not contain 'credentials' "
            f"when vault is set; the engine passes vault set {vault!r} as credentials=. "
            "Rename the param or drop vault"
        )
    return vault


class ExecutionConfig(_Model):
    """Run settings; ``timeout`` (whole run) in milliseconds."""

    max_concurrent: int = Field(default=10, ge=1, description="Tasks running at once.")
    failure_mode: FailureMode | None = Field(
        default=None,
        description="continue (default): independent branches go on, dependents of a "
        "failure are skipped; stop: nothing new starts after a failure; rollback: stop, then "
        "compensate succeeded tasks that declare a rollback.",
    )
    timeout: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="Milliseconds for the whole run."
    )
    enable_rollback: bool | None = Field(
        default=None, description="true selects failureMode rollback."
    )
    pools: dict[str, Annotated[int, Field(ge=1)]] | None = Field(
        default=None,
        description="Named limits shared by tasks: {'api': 3} lets at most 3 tasks of pool "
        "'api' run at once (SPEC §20).",
    )
    rates: dict[str, str] | None = Field(
        default=None,
        description="Named rate limits: {'api': '5/s'} starts at most 5 tasks of pool 'api' "
        "a second (a token bucket, burst N); 'N/s', 'N/min' or 'N/h'.",
    )

    @model_validator(mode="after")
    def _rollback_flag(self) -> ExecutionConfig:
        if self.enable_rollback:
            if self.failure_mode in ("continue", "stop"):
                raise ValueError(
                    f"enableRollback: true contradicts failureMode {self.failure_mode!r}; "
                    "set failureMode to 'rollback' or drop enableRollback"
                )
            self.failure_mode = "rollback"
        elif self.failure_mode is None:
            self.failure_mode = "continue"
        return self


class ExecutionRequest(_Model):
    """A whole request: tasks and run configuration."""

    tasks: list[TaskSpec] = Field(default_factory=list)
    config: ExecutionConfig = Field(default_factory=ExecutionConfig)


def _typed_dict_of(model: type[BaseModel], name: str, **extra: Any) -> Any:
    """A TypedDict with ``model``'s fields, constraints, aliases and config; ``extra`` maps
    a field name to more ``Annotated`` metadata (validators)."""
    fields: dict[str, Any] = {}
    for fname, info in model.model_fields.items():
        ann = Annotated[info.annotation, info, *extra.get(fname, ())]
        fields[fname] = Required[ann] if info.is_required() else NotRequired[ann]
    return with_config(model.model_config)(TypedDict(name, fields))  # type: ignore[operator]


#: A task of a request validated as a plain dict: the fields, constraints and errors of
#: :class:`TaskSpec`, every key present (defaults filled in), snake_case keys. Running a
#: request dict or JSON text validates into these: half the time of the models, and a
#: quarter of the objects for the garbage collector to walk.
TaskData = _typed_dict_of(TaskSpec, "TaskData", vault=[AfterValidator(_no_credentials_param)])


#: A request validated as a dict (see :data:`TaskData`); its errors name ExecutionRequest,
#: as the model's do.
RequestData = with_config(ConfigDict(extra="forbid"))(
    TypedDict(  # type: ignore[operator]
        "ExecutionRequest",
        {
            "tasks": NotRequired[Annotated[list[TaskData], Field(default_factory=list)]],
            "config": NotRequired[
                Annotated[ExecutionConfig, Field(default_factory=ExecutionConfig)]
            ],
        },
    )
)


def task_data(spec: TaskSpec) -> dict[str, Any]:
    """``spec``'s fields as the dict a :data:`TaskData` is (its own ``__dict__``, no copy)."""
    return spec.__dict__


# --------------------------------------------------------------------------- results


class _Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class TaskError(_Out):
    code: str
    message: str
    stack: str | None = None


_OUT_CONFIG = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class _DumpMixin:
    """``model_dump``/``model_dump_json`` for the slotted result dataclasses, like models."""

    __slots__ = ()

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        return TypeAdapter(type(self)).dump_python(self, **kwargs)

    def model_dump_json(self, **kwargs: Any) -> str:
        return TypeAdapter(type(self)).dump_json(self, **kwargs).decode()


@pydantic_dataclass(slots=True, config=_OUT_CONFIG)
class TaskResult(_DumpMixin):
    """The record of one task; ``duration`` in milliseconds.

    A slotted dataclass rather than a model: a 10,000-task result holds 10,000 of them
    (about 240 bytes each instead of 1.4 KB).
    """

    task_id: str
    status: TaskStatus
    duration: float
    start_time: datetime
    end_time: datetime
    attempts: int
    result: AnyJson = None
    error: TaskError | None = None
    rolled_back: bool | None = None
    rollback_error: TaskError | None = None
    reused: bool | None = None
    stdout: str | None = None  # what the task printed (SPEC §18), when it printed anything
    stderr: str | None = None
    cached: bool | None = None
    cache_note: str | None = None
    #: a mapped task's children (SPEC §16), records of this same format
    children: list[TaskResult] | None = None


class Summary(_Out):
    total: int
    succeeded: int
    failed: int
    skipped: int


@pydantic_dataclass(slots=True, config=_OUT_CONFIG)
class DagEdge(_DumpMixin):
    """An edge from a dependency to its dependent."""

    from_: str = Field(alias="from")
    to: str = Field()


_new = object.__new__


def trusted_task_result(
    task_id: str,
    status: TaskStatus,
    duration: float,
    start_time: datetime,
    end_time: datetime,
    attempts: int,
    result: Any = None,
    error: TaskError | None = None,
    rolled_back: bool | None = None,
    rollback_error: TaskError | None = None,
    reused: bool | None = None,
    stdout: str | None = None,
    stderr: str | None = None,
    cached: bool | None = None,
    cache_note: str | None = None,
    children: list[TaskResult] | None = None,
) -> TaskResult:
    """A :class:`TaskResult` of values that already have its field types, not validated
    again (about 0.4 µs instead of 2–4 µs; a 10,000-task result makes 10,000)."""
    r = _new(TaskResult)
    r.task_id = task_id
    r.status = status
    r.duration = duration
    r.start_time = start_time
    r.end_time = end_time
    r.attempts = attempts
    r.result = result
    r.error = error
    r.rolled_back = rolled_back
    r.rollback_error = rollback_error
    r.reused = reused
    r.stdout = stdout
    r.stderr = stderr
    r.cached = cached
    r.cache_note = cache_note
    r.children = children
    return r


def trusted_edge(dependency: str, dependent: str) -> DagEdge:
    """A :class:`DagEdge` of two task ids, not validated again."""
    e = _new(DagEdge)
    e.from_ = dependency
    e.to = dependent
    return e


class DagInfo(_Out):
    levels: list[list[str]]
    edges: list[DagEdge]


class ExecutionResult(_Out):
    """The result of a run; ``duration`` in milliseconds."""

    execution_id: str
    status: RunStatus
    start_time: datetime
    end_time: datetime
    duration: float
    tasks: dict[str, TaskResult]
    summary: Summary
    dag: DagInfo

    def __repr__(self) -> str:  # short: a 10,000-task result has a 10,000-task repr otherwise
        s = self.summary
        return (
            f"ExecutionResult(status={self.status!r}, total={s.total}, succeeded={s.succeeded}, "
            f"failed={s.failed}, skipped={s.skipped}, duration={self.duration:.1f} ms)"
        )

    def to_json(self, **kwargs: Any) -> str:
        """The camelCase JSON text, without absent optional fields."""
        return self.model_dump_json(by_alias=True, exclude_none=True, **kwargs)


# --------------------------------------------------------------------------- parsing

RequestLike = ExecutionRequest | Mapping[str, Any] | str | bytes


def _not_a_request(request: Any) -> InvalidOptionError:
    return InvalidOptionError(
        f"request must be an ExecutionRequest, a dict or JSON text, got "
        f"{type(request).__name__}; pass {{'tasks': [...], 'config': {{...}}}}",
        option="request",
    )


def parse_request(request: RequestLike) -> ExecutionRequest:
    """The request as a model: accepts the model, a dict, or JSON text (camel or snake case)."""
    if isinstance(request, ExecutionRequest):
        return request
    if isinstance(request, (str, bytes, bytearray)):
        return ExecutionRequest.model_validate_json(request)
    if isinstance(request, Mapping):
        return ExecutionRequest.model_validate(dict(request))
    raise _not_a_request(request)


def parse_request_data(request: Mapping[str, Any] | str | bytes) -> RequestData:
    """A request dict or JSON text validated as plain dicts (:data:`RequestData`)."""
    if isinstance(request, (str, bytes, bytearray)):
        return _request_data.validate_json(request)
    if isinstance(request, Mapping):
        return _request_data.validate_python(
            request if isinstance(request, dict) else dict(request)
        )
    raise _not_a_request(request)


_request_data = TypeAdapter(RequestData)


def request_json_schema() -> dict[str, Any]:
    """The request's JSON schema (camelCase field names), as the MCP server's
    ``parallel_execute`` takes it and ``oktyv-nb schema`` prints it."""
    return ExecutionRequest.model_json_schema(by_alias=True)


#: The code :func:`error_report` gives a malformed request (pydantic's ``ValidationError``
#: has none of its own) and any other ``ValueError`` without a ``code``.
INVALID_REQUEST = "INVALID_REQUEST"


def error_report(exc: BaseException) -> tuple[str, str]:
    """``(code, text)`` of a request's error for a front end (MCP answer, CLI stderr):
    the SPEC §4 code and message as ``CODE: message``; for a pydantic ``ValidationError``,
    ``INVALID_REQUEST`` and each field path (camelCase) with its problem."""
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False)
        parts = [
            f"{'.'.join(str(x) for x in e['loc']) or '(request)'}: {e['msg']}" for e in errors
        ]
        noun = "error" if len(errors) == 1 else "errors"
        return INVALID_REQUEST, (
            f"{INVALID_REQUEST}: {len(errors)} validation {noun} in the request: "
            + "; ".join(parts)
        )
    code = getattr(exc, "code", None)
    if not isinstance(code, str) or not code:
        code = INVALID_REQUEST if isinstance(exc, ValueError) else type(exc).__name__
    return code, f"{code}: {exc}"
