"""Exceptions raised by oktyv_nb, and the fixed error codes of task records.

Every validation error subclasses :class:`OktyvError`, itself a :class:`ValueError`, and
carries a machine-readable ``code``. Errors that happen while a task runs never escape the
run: they become the ``error`` of that task's record (see :mod:`oktyv_nb.execution.engine`).
"""

from __future__ import annotations

import sys

__all__ = [
    "CANCELLED",
    "DEPENDENCY_FAILED",
    "EXECUTION_TIMEOUT",
    "RUN_STOPPED",
    "TASK_TIMEOUT",
    "UNPICKLABLE",
    "VARIABLE_RESOLUTION_ERROR",
    "VAULT_NOT_FOUND",
    "WORKER_CRASHED",
    "CircularDependencyError",
    "DuplicateTaskError",
    "GraphvizNotFound",
    "MissingDependencyError",
    "OktyvError",
    "ToolNotFoundError",
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


class OktyvError(ValueError):
    """Base class of oktyv_nb's validation errors; ``code`` names the case."""

    code: str = "OKTYV_ERROR"

    def __init__(self, message: str, *, task_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.task_id = task_id


class MissingDependencyError(OktyvError):
    """A task depends on, or references, a task id that does not exist."""

    code = "MISSING_DEPENDENCY"

    def __init__(self, message: str, *, task_id: str, missing: str) -> None:
        super().__init__(message, task_id=task_id)
        self.missing = missing


class DuplicateTaskError(OktyvError):
    """Two tasks share one id."""

    code = "DUPLICATE_TASK"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"Duplicate task ID: {task_id}", task_id=task_id)


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


class VariableResolutionError(OktyvError):
    """A ``${task.path}`` reference is malformed, or its path does not exist."""

    code = VARIABLE_RESOLUTION_ERROR


class VaultNotFoundError(OktyvError):
    """A task names a secret set the run's vault does not have."""

    code = VAULT_NOT_FOUND


def _install_hint() -> str:
    if sys.platform == "darwin":
        return "brew install graphviz"
    if sys.platform.startswith("win"):
        return "winget install graphviz (or choco install graphviz), then add it to PATH"
    return "sudo apt-get install graphviz (Debian/Ubuntu) or sudo dnf install graphviz (Fedora)"


class GraphvizNotFound(RuntimeError):
    """The Graphviz ``dot`` program is missing, so a graph cannot be rendered."""

    def __init__(self, message: str | None = None) -> None:
        self.install_command = _install_hint()
        super().__init__(
            message
            or "Graphviz's `dot` program was not found on PATH, so the graph cannot be "
            f"rendered (its DOT source is still available as .source). Install it: "
            f"{self.install_command}"
        )
