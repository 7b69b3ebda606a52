"""Run a JSON request (SPEC §2–§3): ``execute_request`` and ``aexecute_request``."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pydantic import TypeAdapter

from oktyv_nb.execution.engine import Engine, RunConfig, RunOutcome
from oktyv_nb.execution.events import EventBus, Subscriber
from oktyv_nb.jupyter import run_sync
from oktyv_nb.model.graph import Graph, build_graph
from oktyv_nb.model.registry import resolve_tools
from oktyv_nb.model.schema import ExecutionConfig, ExecutionRequest, ExecutionResult, RequestData
from oktyv_nb.results.frame import to_result

__all__ = [
    "aexecute_request", "execute_request", "parse_request", "parse_request_data", "prepare"
]

RequestLike = ExecutionRequest | Mapping[str, Any] | str | bytes


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector around bulk work that runs no user code.

    Parsing a request, building its graph and building its result allocate tens of
    thousands of objects that all stay alive; the collector would only scan them again and
    again. Nothing is freed later than it would be: the collector runs again right after.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def parse_request(request: RequestLike) -> ExecutionRequest:
    """The request as a model: accepts the model, a dict, or JSON text (camel or snake case)."""
    if isinstance(request, ExecutionRequest):
        return request
    if isinstance(request, (str, bytes, bytearray)):
        return ExecutionRequest.model_validate_json(request)
    if isinstance(request, Mapping):
        return ExecutionRequest.model_validate(dict(request))
    raise TypeError(
        f"request must be an ExecutionRequest, a dict or JSON text, got {type(request).__name__}"
    )


def config_of(c: ExecutionConfig, **overrides: Any) -> RunConfig:
    """The engine's config (seconds) from a request's config (milliseconds)."""
    values: dict[str, Any] = {
        "max_concurrent": c.max_concurrent,
        "failure_mode": c.failure_mode or "continue",
        "timeout": c.timeout / 1000.0 if c.timeout is not None else None,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return RunConfig(**values)


def prepare(
    request: RequestLike,
    tools: Mapping[str, Callable[..., Any]] | None = None,
    *,
    keep_specs: bool = True,
) -> tuple[ExecutionConfig, Graph]:
    """Validate a request (SPEC §4) into its run config and graph; raises before anything
    runs. A dict or JSON text is validated as :data:`~oktyv_nb.models.RequestData` (the
    models' rules, without making a model per task)."""
    table = resolve_tools(tools)
    with paused_gc():
        if isinstance(request, ExecutionRequest):
            return request.config, build_graph(request, table, keep_specs=keep_specs)
        data = parse_request_data(request)
        return data["config"], build_graph(data["tasks"], table, keep_specs=keep_specs)


def parse_request_data(request: Mapping[str, Any] | str | bytes) -> RequestData:
    """A request dict or JSON text validated as plain dicts (:data:`RequestData`)."""
    if isinstance(request, (str, bytes, bytearray)):
        return _request_data.validate_json(request)
    if isinstance(request, Mapping):
        return _request_data.validate_python(
            request if isinstance(request, dict) else dict(request)
        )
    raise TypeError(
        f"request must be an ExecutionRequest, a dict or JSON text, got {type(request).__name__}"
    )


_request_data = TypeAdapter(RequestData)


async def arun_graph(
    graph: Graph,
    config: RunConfig,
    *,
    backend: Any = None,
    vault: Mapping[str, Any] | None = None,
    subscribers: list[Subscriber] | None = None,
    reuse: Mapping[str, Any] | None = None,
    on_start: Callable[[Engine], None] | None = None,
) -> RunOutcome:
    """Run a validated graph; ``on_start`` sees the engine before it runs (for interrupts)."""
    engine = Engine(
        graph, config, backend=backend, vault=vault, bus=EventBus(subscribers), reuse=reuse
    )
    if on_start is not None:
        on_start(engine)
    return await engine.run()


async def aexecute_request(
    request: RequestLike,
    tools: Mapping[str, Callable[..., Any]] | None = None,
    vault: Mapping[str, Any] | None = None,
    *,
    backend: Any = None,
    on_event: Subscriber | None = None,
) -> ExecutionResult:
    """Validate and run ``request`` on the running loop; returns the SPEC §3 result."""
    request_config, graph = prepare(request, tools, keep_specs=False)
    config = config_of(request_config)
    outcome = await arun_graph(
        graph, config, backend=backend, vault=vault,
        subscribers=[on_event] if on_event is not None else None,
    )
    with paused_gc():
        return to_result(outcome)


def execute_request(
    request: RequestLike,
    tools: Mapping[str, Callable[..., Any]] | None = None,
    vault: Mapping[str, Any] | None = None,
    *,
    backend: Any = None,
    on_event: Subscriber | None = None,
) -> ExecutionResult:
    """Validate and run ``request``; works in scripts and inside Jupyter's running loop."""
    return run_sync(aexecute_request(request, tools, vault, backend=backend, on_event=on_event))

