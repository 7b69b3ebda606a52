"""oktyv_nb: DAGs of concurrent tasks for Jupyter.

Build a DAG with :class:`DAG` (or a JSON request, or the :func:`builder` form), see it
rendered with graphviz, run it in the notebook's kernel and analyse ``run.df``.
"""

from oktyv_nb.api import aexecute_request, execute_request
from oktyv_nb.dag import DAG, Rollback
from oktyv_nb.errors import (
    CircularDependencyError,
    DuplicateTaskError,
    GraphvizNotFound,
    MissingDependencyError,
    OktyvError,
    ToolNotFoundError,
    VariableResolutionError,
    VaultNotFoundError,
)
from oktyv_nb.execution.backends import DaskBackend, ProcessBackend, ThreadBackend, register_backend
from oktyv_nb.execution.events import Event, EventBus, EventLog
from oktyv_nb.model import tools
from oktyv_nb.model.graph import RetryPolicy
from oktyv_nb.model.registry import ToolRegistry, default_registry, tool
from oktyv_nb.model.schema import ExecutionRequest, ExecutionResult
from oktyv_nb.model.vault import EnvVault
from oktyv_nb.results.frame import RunStats, compare
from oktyv_nb.results.run import Run

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # The widget form pulls in ipywidgets; load it on first use only.
    if name == "builder":
        from oktyv_nb.widgets import builder

        return builder
    raise AttributeError(f"module 'oktyv_nb' has no attribute {name!r}")


__all__ = [
    "DAG",
    "CircularDependencyError",
    "DaskBackend",
    "DuplicateTaskError",
    "EnvVault",
    "Event",
    "EventBus",
    "EventLog",
    "ExecutionRequest",
    "ExecutionResult",
    "GraphvizNotFound",
    "MissingDependencyError",
    "OktyvError",
    "ProcessBackend",
    "RetryPolicy",
    "Rollback",
    "Run",
    "RunStats",
    "ThreadBackend",
    "ToolNotFoundError",
    "ToolRegistry",
    "VariableResolutionError",
    "VaultNotFoundError",
    "aexecute_request",
    "builder",
    "compare",
    "default_registry",
    "execute_request",
    "register_backend",
    "tool",
    "tools",
]
