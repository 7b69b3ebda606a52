"""oktyv_nb: DAGs of concurrent tasks for Jupyter.

Build a DAG with :class:`DAG` (or a JSON request, or the :func:`builder` form), see it
rendered with graphviz, run it in the notebook's kernel and analyse ``run.df``.

The package is layered; each layer imports only from itself and the layers above it in
this list (see ``docs/architecture.md``):

* :mod:`oktyv_nb.errors`, :mod:`oktyv_nb.units`: the exception tree and the unit rule;
* :mod:`oktyv_nb.model`: what a DAG is (request schema, references, graph, tools, vault,
  the sandbox for requests from outside);
* :mod:`oktyv_nb.execution`: running a graph (records, events, engine, backends);
* :mod:`oktyv_nb.results`: reading a run (JSON result, statistics, DataFrames, pictures,
  :class:`Run`);
* :mod:`oktyv_nb.store`: runs kept in SQLite, history, resume after a crash, the result
  cache (:class:`RunStore`);
* front ends: the builder (:mod:`oktyv_nb.dag`), :func:`execute_request`
  (:mod:`oktyv_nb.api`), code export (:mod:`oktyv_nb.codegen`), Jupyter glue, the live view,
  the widget form, the command line (:mod:`oktyv_nb.cli`, ``oktyv-nb``) and the MCP server
  for agents (:mod:`oktyv_nb.mcp`, ``oktyv-nb-mcp``, extra ``oktyv_nb[mcp]``).

``import oktyv_nb`` and :func:`execute_request` load neither pandas, matplotlib, ipywidgets
nor the MCP SDK: those load when a DataFrame, a picture, the form or the server is asked
for.
"""

from oktyv_nb.api import aexecute_request, execute_request
from oktyv_nb.dag import DAG, DEFAULT, Rollback
from oktyv_nb.errors import (
    MAP_LIMIT,
    CircularDependencyError,
    DuplicateTaskError,
    GraphvizNotFound,
    InvalidOptionError,
    InvalidParamsError,
    InvalidRateError,
    MissingDependencyError,
    NotAStoreError,
    OktyvError,
    OktyvException,
    PathOutsideRootError,
    RenderError,
    RunNotFoundError,
    StoreError,
    StoreVersionError,
    ToolNotAllowedError,
    ToolNotFoundError,
    UnknownPoolError,
    VariableResolutionError,
    VaultNotFoundError,
)
from oktyv_nb.execution.backends import (
    DaskBackend,
    ProcessBackend,
    ThreadBackend,
    register_backend,
)
from oktyv_nb.execution.events import Event, EventBus, EventLog
from oktyv_nb.model import tools
from oktyv_nb.model.graph import Cache, RetryPolicy
from oktyv_nb.model.registry import ToolRegistry, default_registry, tool
from oktyv_nb.model.schema import ExecutionRequest, ExecutionResult
from oktyv_nb.model.vault import EnvVault
from oktyv_nb.results.run import Run
from oktyv_nb.results.stats import RunStats
from oktyv_nb.store import RunStore

__version__ = "0.1.0"

# Names whose modules pull in pandas or ipywidgets: loaded on first use only (PEP 562).
_LAZY = {
    "builder": "oktyv_nb.widgets",
    "compare": "oktyv_nb.results.frame",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'oktyv_nb' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "DAG",
    "DEFAULT",
    "MAP_LIMIT",
    "Cache",
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
    "InvalidOptionError",
    "InvalidParamsError",
    "InvalidRateError",
    "MissingDependencyError",
    "NotAStoreError",
    "OktyvError",
    "OktyvException",
    "PathOutsideRootError",
    "ProcessBackend",
    "RenderError",
    "RetryPolicy",
    "Rollback",
    "Run",
    "RunNotFoundError",
    "RunStats",
    "RunStore",
    "StoreError",
    "StoreVersionError",
    "ThreadBackend",
    "ToolNotAllowedError",
    "ToolNotFoundError",
    "ToolRegistry",
    "UnknownPoolError",
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
