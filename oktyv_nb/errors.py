"""Every exception oktyv_nb raises, and the fixed error codes of task records.

One tree, one root; every class carries a machine-readable ``code`` (the record's
``error.code`` when it fails a task) and, where known, the ``task_id`` it concerns::

    OktyvException                        the root (.code, .task_id, .message)
    ├── OktyvError(ValueError)            bad input, raised before anything runs (SPEC §4)
    │   ├── InvalidOptionError(TypeError)   a builder, run or request setting: priority,
    │   │                                   timeout, retries, trigger, vault, max_concurrent,
    │   │                                   the request's own type ...
    │   ├── DuplicateTaskError              two tasks with one id
    │   ├── MissingDependencyError          a dependency or ${ref} to an unknown id
    │   ├── CircularDependencyError         a cycle (.cycle, first == last)
    │   ├── ToolNotFoundError               an unknown tool name (.suggestions)
    │   ├── InvalidParamsError              params the tool's signature cannot take
    │   ├── VariableResolutionError         a malformed ${ref}, or (in a record) a path
    │   │                                   that does not exist
    │   ├── VaultNotFoundError              (in a record) a secret set the vault lacks
    │   ├── ToolNotAllowedError             a tool the sandbox refuses (``shell`` unless
    │   │                                   allowed; SPEC §15)
    │   └── PathOutsideRootError            (in a record) a file tool's path, or sqlite's
    │                                       database, that resolves outside the root
    ├── RenderError(RuntimeError)         a picture cannot be made
    │   └── GraphvizNotFound                the ``dot`` program is missing
    └── StoreError(RuntimeError)          a run store cannot be opened or read (SPEC §17)
        ├── NotAStoreError                  the file is not an oktyv_nb run store
        ├── StoreVersionError               a store of another schema version
        └── RunNotFoundError(LookupError)   no stored run has that execution id

    RunInterrupted(KeyboardInterrupt)     Ctrl-C / Jupyter's stop button during ``dag.run()``:
                                          one line naming ``dag.last_run``; outside the tree
                                          so that ``except Exception`` never swallows it

A pydantic ``ValidationError`` (a ``ValueError`` too) reports a malformed request's field
paths. Errors *inside* a run never escape it: they become the ``error`` of the task's record
(see :mod:`oktyv_nb.execution.records`), with the exception's ``code`` when it has one; the
built-in tools' own errors (:mod:`oktyv_nb.model.tools`) and the backends' (worker crashes,
unpicklable calls, :mod:`oktyv_nb.execution.backends`) carry theirs.

Messages about a task start with ``Task <id>``: :meth:`OktyvException.in_task` is the one
place that adds that prefix.
"""

from __future__ import annotations

import sys
from typing import Self

__all__ = [
    "CANCELLED",
    "DEPENDENCY_FAILED",
    "EXECUTION_TIMEOUT",
    "MAP_CHILD_FAILED",
    "MAP_LIMIT",
    "MAP_NOT_A_LIST",
    "MAP_TOO_LARGE",
    "PATH_OUTSIDE_ROOT",
    "RUN_ABORTED",
    "RUN_STOPPED",
    "TASK_TIMEOUT",
    "TOOL_NOT_ALLOWED",
    "UNPICKLABLE",
    "VARIABLE_RESOLUTION_ERROR",
    "VAULT_NOT_FOUND",
    "WORKER_CRASHED",
    "CircularDependencyError",
    "DuplicateTaskError",
    "GraphvizNotFound",
    "InvalidOptionError",
    "InvalidParamsError",
    "InvalidRateError",
    "MissingDependencyError",
    "NotAStoreError",
    "OktyvError",
    "OktyvException",
    "PathOutsideRootError",
    "RenderError",
    "RunInterrupted",
    "RunNotFoundError",
    "StoreError",
    "StoreVersionError",
    "ToolNotAllowedError",
    "ToolNotFoundError",
    "UnknownPoolError",
    "VariableResolutionError",
    "VaultNotFoundError",
]

# Codes the engine writes into task records (SPEC §3, §6).
TASK_TIMEOUT = "TASK_TIMEOUT"
VARIABLE_RESOLUTION_ERROR = "VARIABLE_RESOLUTION_ERROR"
VAULT_NOT_FOUND = "VAULT_NOT_FOUND"
CANCELLED = "CANCELLED"
EXECUTION_TIMEOUT = "EXECUTION_TIMEOUT"
WORKER_CRASHED = "WORKER_CRASHED"
DEPENDENCY_FAILED = "DEPENDENCY_FAILED"
RUN_STOPPED = "RUN_STOPPED"
UNPICKLABLE = "UNPICKLABLE"
# Codes of the sandbox for requests from outside (SPEC §15).
PATH_OUTSIDE_ROOT = "PATH_OUTSIDE_ROOT"
TOOL_NOT_ALLOWED = "TOOL_NOT_ALLOWED"
#: A stored task that had no final record when its run's process died (SPEC §17).
RUN_ABORTED = "RUN_ABORTED"
# Codes of mapped tasks (SPEC §16): ``over`` is not a list, has more than MAP_LIMIT elements,
# or a child did not succeed.
MAP_NOT_A_LIST = "MAP_NOT_A_LIST"
MAP_TOO_LARGE = "MAP_TOO_LARGE"
MAP_CHILD_FAILED = "MAP_CHILD_FAILED"
#: The most children one mapped task may expand into.
MAP_LIMIT = 10_000


class OktyvException(Exception):
    """The root of every exception oktyv_nb defines; ``code`` names the case."""

    code: str = "OKTYV_ERROR"

    def __init__(self, message: str, *, task_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.task_id = task_id

    def in_task(self, task_id: str, where: str | None = None) -> Self:
        """This error, its message prefixed ``Task <task_id>[, <where>]: `` (once)."""
        self.task_id = task_id
        if not self.message.startswith(f"Task {task_id}"):
            head = f"Task {task_id}, {where}" if where else f"Task {task_id}"
            self.message = f"{head}: {self.message}"
            self.args = (self.message,)
        return self


class OktyvError(OktyvException, ValueError):
    """Bad input, found before anything runs (a ``ValueError``)."""


class InvalidOptionError(OktyvError, TypeError):
    """A setting of a task, a DAG, a run or a request is malformed; ``option`` names it.

    A ``ValueError`` like every :class:`OktyvError`, and a ``TypeError`` too, since a value
    of the wrong type is the commonest case.
    """

    code = "INVALID_OPTION"

    def __init__(
        self, message: str, *, option: str | None = None, task_id: str | None = None
    ) -> None:
        super().__init__(message, task_id=task_id)
        self.option = option


class UnknownPoolError(OktyvError):
    """A task joins a pool the run does not define (SPEC §20)."""

    code = "UNKNOWN_POOL"

    def __init__(self, task_id: str, pool: str, known: list[str]) -> None:
        have = ", ".join(repr(k) for k in known) if known else "none"
        super().__init__(
            f"Task {task_id}: pool {pool!r} is not defined (defined: {have}); add it to the "
            f"DAG's pools={{{pool!r}: N}} or rates={{{pool!r}: 'N/s'}} (JSON config.pools / "
            "config.rates), or fix the task's pool",
            task_id=task_id,
        )
        self.pool = pool


class InvalidRateError(OktyvError):
    """A rate limit is not ``N/s``, ``N/min`` or ``N/h`` with N > 0 (SPEC §20)."""

    code = "INVALID_RATE"

    def __init__(self, name: str, rate: object) -> None:
        super().__init__(
            f"rate {name!r}: {rate!r} is not a rate; write 'N/s', 'N/min' or 'N/h' with a "
            "number N > 0, e.g. '5/s'"
        )
        self.pool = name


class MissingDependencyError(OktyvError):
    """A task depends on, or references, a task id that does not exist."""

    code = "MISSING_DEPENDENCY"

    def __init__(self, message: str, *, task_id: str, missing: str) -> None:
        super().__init__(message, task_id=task_id)
        self.missing = missing


class DuplicateTaskError(OktyvError):
    """Two tasks share one id."""

    code = "DUPLICATE_TASK"

    def __init__(self, task_id: str, hint: str = "") -> None:
        super().__init__(f"Duplicate task ID: {task_id}{hint}", task_id=task_id)


class CircularDependencyError(OktyvError):
    """The dependencies form a cycle; ``cycle`` lists it with first == last."""

    code = "CIRCULAR_DEPENDENCY"

    def __init__(self, cycle: list[str]) -> None:
        super().__init__(
            "Circular dependency detected: " + " → ".join(cycle), task_id=cycle[0]
        )
        self.cycle = cycle


class ToolNotFoundError(OktyvError):
    """A task (or its rollback) names a tool that is not registered."""

    code = "TOOL_NOT_FOUND"

    def __init__(
        self,
        tool: str,
        *,
        task_id: str | None = None,
        suggestions: list[str] | None = None,
        rollback: bool = False,
    ) -> None:
        role = "rollback uses unknown tool" if rollback else "uses unknown tool"
        where = f"Task {task_id} {role} {tool!r}" if task_id else f"Unknown tool {tool!r}"
        hint = (
            f"; did you mean {', '.join(repr(s) for s in suggestions)}?"
            if suggestions
            else "; register it with ok.tool or pass tools={name: callable}"
        )
        super().__init__(where + hint, task_id=task_id)
        self.tool = tool
        self.suggestions = suggestions or []
        self.rollback = rollback


class InvalidParamsError(OktyvError):
    """A task's params do not fit its tool's signature: a name it has no parameter for
    (``.unknown``, with ``.suggestions``) or a required parameter not given (``.missing``)."""

    code = "INVALID_PARAMS"

    def __init__(
        self,
        tool: str,
        *,
        task_id: str | None = None,
        unknown: list[str] | None = None,
        missing: list[str] | None = None,
        suggestions: dict[str, list[str]] | None = None,
        accepted: list[str] | None = None,
    ) -> None:
        self.tool = tool
        self.unknown = unknown or []
        self.missing = missing or []
        self.suggestions = suggestions or {}
        parts: list[str] = []
        for name in self.unknown:
            close = self.suggestions.get(name)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            parts.append(f"tool {tool!r} has no parameter {name!r}{hint}")
        if self.missing:
            names = ", ".join(map(repr, self.missing))
            parts.append(f"tool {tool!r} needs {names}, not given")
        text = "; ".join(parts)
        if self.unknown and accepted is not None:
            text += f"; it takes {', '.join(accepted) if accepted else 'no parameters'}"
        super().__init__(text)
        if task_id:
            self.in_task(task_id)


class VariableResolutionError(OktyvError):
    """A ``${task.path}`` reference is malformed, or its path does not exist."""

    code = VARIABLE_RESOLUTION_ERROR


class VaultNotFoundError(OktyvError):
    """A task names a secret set the run's vault does not have."""

    code = VAULT_NOT_FOUND


class ToolNotAllowedError(OktyvError):
    """A task (or its rollback) names a tool the sandbox refuses (``shell`` unless allowed)."""

    code = TOOL_NOT_ALLOWED

    def __init__(self, message: str, *, task_id: str | None = None, tool: str | None = None):
        super().__init__(message, task_id=task_id)
        self.tool = tool


class PathOutsideRootError(OktyvError):
    """A file tool's path (or ``sqlite``'s database) resolves outside the sandbox's root.

    Raised by the confined built-in tools when they are called, so it fails that task (its
    record's ``error.code`` is ``PATH_OUTSIDE_ROOT``); nothing outside the root is touched.
    """

    code = PATH_OUTSIDE_ROOT


class RenderError(OktyvException, RuntimeError):
    """A picture of a DAG or a run cannot be made."""

    code = "RENDER_ERROR"


def _install_hint() -> str:
    if sys.platform == "darwin":
        return "brew install graphviz"
    if sys.platform.startswith("win"):
        return "winget install graphviz (or choco install graphviz), then add it to PATH"
    return "sudo apt-get install graphviz (Debian/Ubuntu) or sudo dnf install graphviz (Fedora)"


class GraphvizNotFound(RenderError):
    """The Graphviz ``dot`` program is missing, so a graph cannot be rendered."""

    code = "GRAPHVIZ_NOT_FOUND"

    def __init__(self, message: str | None = None) -> None:
        self.install_command = _install_hint()
        super().__init__(
            message
            or "Graphviz's `dot` program was not found on PATH, so the graph cannot be "
            f"rendered (its DOT source is still available as .source). Install it: "
            f"{self.install_command}"
        )


class RunInterrupted(KeyboardInterrupt):
    """An interrupt that stopped ``dag.run()``; the message says what the partial run holds
    and where it is kept. A ``KeyboardInterrupt``, so it propagates as the kernel expects."""

    code = "RUN_INTERRUPTED"


class StoreError(OktyvException, RuntimeError):
    """A run store (:class:`oktyv_nb.RunStore`) cannot be opened, read or written."""

    code = "STORE_ERROR"

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class NotAStoreError(StoreError):
    """The file exists but is not an oktyv_nb run store (not SQLite, or another database)."""

    code = "NOT_A_STORE"


class StoreVersionError(StoreError):
    """The store was written with another schema version than this oktyv_nb reads."""

    code = "STORE_VERSION"

    def __init__(self, message: str, *, path: str | None = None, found: int, expected: int):
        super().__init__(message, path=path)
        self.found = found
        self.expected = expected


class RunNotFoundError(StoreError, LookupError):
    """No run with that execution id is in the store."""

    code = "RUN_NOT_FOUND"
