"""The engine: runs a validated graph on an asyncio loop.

:mod:`.scheduler` is the state machine (its state is described at its top);
:mod:`.loop_workers` runs async tools on the loop; :mod:`.calls` prepares a call (references,
credentials, redaction); :mod:`.rollback` is the compensation pass. :func:`run_graph` is the
one entry every front end uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from oktyv_nb.execution.cache import ResultCache
from oktyv_nb.execution.engine.scheduler import Engine
from oktyv_nb.execution.events import EventBus, Subscriber
from oktyv_nb.execution.outcome import RunConfig, RunOutcome
from oktyv_nb.execution.records import TaskRecord
from oktyv_nb.model.graph import Graph, run_heap

__all__ = ["Engine", "RunConfig", "RunOutcome", "run_graph"]


async def run_graph(
    graph: Graph,
    config: RunConfig,
    *,
    backend: Any = None,
    vault: Mapping[str, Any] | None = None,
    subscribers: Iterable[Subscriber] | None = None,
    reuse: Mapping[str, TaskRecord] | None = None,
    reuse_maps: Mapping[str, tuple[list[Any], list[TaskRecord]]] | None = None,
    secrets: Iterable[str] = (),
    started: Callable[[Engine], None] | None = None,
    cache: ResultCache | None = None,
) -> RunOutcome:
    """Run a validated graph once and return its outcome.

    ``reuse`` holds an earlier run's records to reuse and ``secrets`` the secrets that run
    knew, so that its reused results are scrubbed from every output; ``reuse_maps`` the
    children of its mapped tasks that may be reused when a map's elements are unchanged.
    ``started`` is told the engine before it runs, so that a caller that must interrupt it
    from outside the loop (``dag.run()`` under Jupyter's stop button) can. ``cache`` is the
    result cache of tasks with a ``cache`` setting (:mod:`oktyv_nb.execution.cache`).

    The collector is paused while the engine is set up, and the objects alive when it
    starts are kept off the collector's scans while it runs
    (:func:`~oktyv_nb.model.graph.run_heap`).
    """
    with run_heap() as heap:
        engine = Engine(
            graph, config, backend=backend, vault=vault, bus=EventBus(subscribers),
            reuse=reuse, reuse_maps=reuse_maps, secrets=secrets, cache=cache,
        )
        if started is not None:
            started(engine)
        heap.engine_phase()
        return await engine.run()
