"""oktyv_nb: DAGs of concurrent tasks for Jupyter.

Build a DAG with :class:`DAG` (or a JSON request, or the :func:`builder` form), see it
rendered with graphviz, run it in the notebook's kernel and analyse ``run.df``.
"""

from . import tools
from .api import aexecute_request, execute_request
from .backends import DaskBackend, ProcessBackend, ThreadBackend, register_backend
from .dag import DAG, Rollback
from .errors import (
    CircularDependencyError,
    DuplicateTaskError,
    GraphvizNotFound,
    MissingDependencyError,
    OktyvError,
    ToolNotFoundError,
    VariableResolutionError,
    VaultNotFoundError,
)
from .events import Event, EventBus, EventLog
from .graph import RetryPolicy
from .models import ExecutionRequest, ExecutionResult
from .registry import ToolRegistry, default_registry, tool
from .results import RunStats, compare
from .run import Run
from .vault import EnvVault

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # The widget form pulls in ipywidgets; load it on first use only.
    if name == "builder":
        from .widgets import builder

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
