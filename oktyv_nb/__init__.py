"""oktyv_nb: DAGs of concurrent tasks for Jupyter.

Build a DAG with :class:`DAG` (or a JSON request, or the :func:`builder` form), see it
rendered with graphviz, run it in the notebook's kernel and analyse ``run.df``.
"""

from . import tools
from .api import aexecute_request, execute_request
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
from .events import Event, EventBus
from .graph import RetryPolicy
from .models import ExecutionRequest, ExecutionResult
from .registry import ToolRegistry, default_registry, tool
from .vault import EnvVault

__version__ = "0.1.0"

__all__ = [
    "CircularDependencyError",
    "DuplicateTaskError",
    "EnvVault",
    "Event",
    "EventBus",
    "ExecutionRequest",
    "ExecutionResult",
    "GraphvizNotFound",
    "MissingDependencyError",
    "OktyvError",
    "RetryPolicy",
    "ToolNotFoundError",
    "ToolRegistry",
    "VariableResolutionError",
    "VaultNotFoundError",
    "aexecute_request",
    "default_registry",
    "execute_request",
    "tool",
    "tools",
]
