"""Run a JSON request (SPEC §2–§3): ``execute_request`` and ``aexecute_request``."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from oktyv_nb.errors import InvalidOptionError
from oktyv_nb.execution.engine import run_graph
from oktyv_nb.execution.events import Subscriber, subscribers_of
from oktyv_nb.execution.outcome import RunConfig
from oktyv_nb.jupyter import run_sync
from oktyv_nb.model.graph import Graph, paused_gc, prepare, run_heap
from oktyv_nb.model.sandbox import Sandbox, as_sandbox
from oktyv_nb.model.schema import ExecutionConfig, ExecutionResult, RequestLike
from oktyv_nb.model.vault import check_vault
from oktyv_nb.results.result import to_result
from oktyv_nb.store import RunStore

__all__ = ["aexecute_request", "execute_request"]


async def aexecute_request(
    request: RequestLike,
    tools: Mapping[str, Callable[..., Any]] | None = None,
    vault: Mapping[str, Any] | None = None,
    *,
    backend: Any = None,
    on_event: Subscriber | None = None,
    root: str | os.PathLike[str] | Sandbox | None = None,
    store: RunStore | None = None,
) -> ExecutionResult:
    """Validate and run ``request`` on the running loop; returns the SPEC §3 result.

    Validation errors (an ``ok.OktyvError`` or a pydantic ``ValidationError``, both
    ``ValueError`` subclasses) are raised before anything runs. ``root`` confines the
    built-in file tools and ``sqlite``'s database to that directory (relative paths resolve
    against it; a path resolving outside fails its task with ``PATH_OUTSIDE_ROOT``), as the
    MCP server does; ``shell`` stays allowed, its ``cwd`` confined to the root, unless
    ``root`` is a :class:`~oktyv_nb.model.sandbox.Sandbox` with ``allow_shell=False``.
    ``store`` (an ``ok.RunStore``) journals the run and serves the cache of tasks with
    ``"cache"``.
    """
    with run_heap():  # the collector paused until the engine starts
        prepared = prepare(request, tools, keep_specs=store is not None,
                           sandbox=as_sandbox(root))
        _check_run(vault, on_event)
        return await _arun_prepared(prepared, backend=backend, vault=vault, on_event=on_event,
                                    store=_check_store(store))


def execute_request(
    request: RequestLike,
    tools: Mapping[str, Callable[..., Any]] | None = None,
    vault: Mapping[str, Any] | None = None,
    *,
    backend: Any = None,
    on_event: Subscriber | None = None,
    root: str | os.PathLike[str] | Sandbox | None = None,
    store: RunStore | None = None,
) -> ExecutionResult:
    """Validate and run ``request``; works in scripts and inside Jupyter's running loop.

    The request is validated before any event loop is involved, so a bad one raises from
    the caller's own line. ``root`` and ``store``: as for :func:`aexecute_request`.
    """
    with run_heap():  # the collector paused until the engine starts
        prepared = prepare(request, tools, keep_specs=store is not None,
                           sandbox=as_sandbox(root))
        _check_run(vault, on_event)
        return run_sync(_arun_prepared(prepared, backend=backend, vault=vault,
                                       on_event=on_event, store=_check_store(store)))


def _check_run(vault: Any, on_event: Any) -> None:
    check_vault(vault)
    subscribers_of(on_event)


async def _arun_prepared(
    prepared: tuple[ExecutionConfig, Graph], *, backend: Any, vault: Any,
    on_event: Subscriber | None, store: RunStore | None = None,
) -> ExecutionResult:
    request_config, graph = prepared
    subscribers = subscribers_of(on_event)
    journal = None
    if store is not None:
        journal = store.journal(vault=vault)
        subscribers = [*journal.subscribers, *subscribers]
    outcome = await run_graph(
        graph, RunConfig.from_request(request_config), backend=backend, vault=vault,
        subscribers=subscribers, cache=store,
    )
    if journal is not None:
        await journal.wait()
    with paused_gc():  # no subscriber or journal keeps the outcome: the graph may go early
        return to_result(outcome, release_graph=not subscribers)


def _check_store(store: Any) -> RunStore | None:
    if store is None or isinstance(store, RunStore):
        return store
    raise InvalidOptionError(
        f"store must be an ok.RunStore, got {type(store).__name__}; open one with "
        "ok.RunStore(path)", option="store",
    )
