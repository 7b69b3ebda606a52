"""The validated task graph: nodes, edges, levels, critical path (SPEC §4).

Invariants, established once by :func:`build_graph` and relied on everywhere after:

* task ids are unique and every dependency, explicit or implied by a ``${ref}``, names an
  existing task;
* the graph is acyclic; ``levels[k]`` holds the tasks whose longest chain of dependencies has
  ``k`` edges, in insertion order;
* every tool and rollback tool is resolved to a callable.

Times here are **seconds** (the request's milliseconds are converted once, at the boundary).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import (
    CircularDependencyError,
    DuplicateTaskError,
    MissingDependencyError,
    OktyvError,
    ToolNotFoundError,
)
from .models import ExecutionRequest, TaskSpec
from .registry import ToolTable
from .variables import find_references, has_references

__all__ = ["Graph", "RetryPolicy", "TaskNode", "build_graph", "critical_path", "is_async"]

DEFAULT_PRIORITY = 5


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failed attempt is retried; ``initial_delay`` in **seconds**.

    The delay before retry ``k`` (``k = 0`` for the first retry) is ``initial_delay * 2**k``
    (exponential) or ``initial_delay * (k + 1)`` (linear).
    """

    max_attempts: int = 1
    backoff: str = "exponential"
    initial_delay: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(
                f"RetryPolicy.max_attempts must be an int >= 1, got {self.max_attempts!r}"
            )
        if self.backoff not in ("exponential", "linear"):
            raise ValueError(
                f"RetryPolicy.backoff must be 'exponential' or 'linear', got {self.backoff!r}"
            )
        if self.initial_delay < 0:
            raise ValueError(
                f"RetryPolicy.initial_delay must be >= 0 s, got {self.initial_delay!r}"
            )

    def delay(self, k: int) -> float:
        """Seconds to wait before retry ``k`` (0-based)."""
        if self.backoff == "exponential":
            return self.initial_delay * 2**k
        return self.initial_delay * (k + 1)


NO_RETRY = RetryPolicy()


class TaskNode:
    """One validated task, as the engine uses it. Seconds throughout."""

    __slots__ = (
        "chain",
        "dependents",
        "deps",
        "fn",
        "has_refs",
        "id",
        "index",
        "is_async",
        "level",
        "params",
        "priority",
        "retry",
        "rollback",
        "rollback_fn",
        "spec",
        "timeout",
        "tool",
        "trigger",
        "vault",
    )

    def __init__(self, spec: TaskSpec, index: int, fn: Callable[..., Any]) -> None:
        self.spec = spec
        self.id = spec.id
        self.index = index
        self.tool = spec.tool
        self.fn = fn
        self.is_async = is_async(fn)
        self.params = spec.params
        self.has_refs = has_references(spec.params)
        self.priority = spec.priority if spec.priority is not None else DEFAULT_PRIORITY
        self.timeout = spec.timeout / 1000.0 if spec.timeout is not None else None
        rp = spec.retry_policy
        self.retry = (
            RetryPolicy(rp.max_attempts, rp.backoff, rp.initial_delay / 1000.0) if rp else NO_RETRY
        )
        self.rollback = spec.rollback
        self.rollback_fn: Callable[..., Any] | None = None
        self.vault = spec.vault
        self.trigger = spec.run_if or "all_success"
        self.deps: tuple[str, ...] = ()
        self.dependents: list[TaskNode] = []
        self.level = 0
        self.chain = 1

    def __repr__(self) -> str:
        return f"<TaskNode {self.id} tool={self.tool} level={self.level}>"


def is_async(fn: Callable[..., Any]) -> bool:
    """True when calling ``fn`` gives a coroutine: async functions, partials of them and
    objects with an async ``__call__``."""
    target = fn
    while hasattr(target, "func"):  # functools.partial
        target = target.func
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 - async __call__ on objects
    )


class Graph:
    """A validated DAG. Build it with :func:`build_graph`."""

    __slots__ = ("levels", "nodes", "order")

    def __init__(self, nodes: dict[str, TaskNode], levels: list[list[str]], order: list[str]):
        self.nodes = nodes  # insertion order
        self.levels = levels
        self.order = order  # a topological order

    def __len__(self) -> int:
        return len(self.nodes)

    def edges(self) -> list[tuple[str, str]]:
        """(dependency, dependent) pairs, in insertion order of the dependents."""
        return [(d, n.id) for n in self.nodes.values() for d in n.deps]


def _dependencies(spec: TaskSpec, ids: Mapping[str, Any]) -> tuple[str, ...]:
    deps: dict[str, None] = {}
    for d in spec.depends_on or ():
        if d not in ids:
            raise MissingDependencyError(
                f"Task {spec.id} depends on non-existent task {d}", task_id=spec.id, missing=d
            )
        deps[d] = None
    for ref in _references(spec, spec.params, "params"):
        if ref.task_id not in ids:
            raise MissingDependencyError(
                f"Task {spec.id} references ${{{ref.text}}} but there is no task "
                f"{ref.task_id}; fix the id or add the task",
                task_id=spec.id,
                missing=ref.task_id,
            )
        deps[ref.task_id] = None
    if spec.rollback is not None:
        for ref in _references(spec, spec.rollback.params, "rollback.params"):
            if ref.task_id not in ids:
                raise MissingDependencyError(
                    f"Task {spec.id} rollback references ${{{ref.text}}} but there is no "
                    f"task {ref.task_id}",
                    task_id=spec.id,
                    missing=ref.task_id,
                )
    return tuple(deps)


def _references(spec: TaskSpec, params: Any, where: str) -> list[Any]:
    if not has_references(params):
        return []
    try:
        return find_references(params)
    except OktyvError as exc:
        exc.task_id = spec.id
        exc.args = (f"Task {spec.id}, {where}: {exc}",)
        exc.message = exc.args[0]
        raise


def build_graph(request: ExecutionRequest, tools: ToolTable) -> Graph:
    """Validate ``request`` (SPEC §4) and return its graph, or raise an OktyvError."""
    nodes: dict[str, TaskNode] = {}
    for spec in request.tasks:
        if spec.id in nodes:
            raise DuplicateTaskError(spec.id)
        nodes[spec.id] = None  # type: ignore[assignment]  # placeholder until tools resolve
    specs = request.tasks
    deps = {spec.id: _dependencies(spec, nodes) for spec in specs}
    order, levels_of = _toposort(specs, deps)
    for i, spec in enumerate(specs):
        node = TaskNode(spec, i, tools.lookup(spec.tool, spec.id))
        if spec.rollback is not None:
            try:
                node.rollback_fn = tools.lookup(spec.rollback.tool, spec.id)
            except ToolNotFoundError as exc:
                raise ToolNotFoundError(
                    exc.tool, task_id=spec.id, suggestions=exc.suggestions, rollback=True
                ) from None
        node.deps = deps[spec.id]
        node.level = levels_of[spec.id]
        nodes[spec.id] = node
    for node in nodes.values():
        for d in node.deps:
            nodes[d].dependents.append(node)
    for tid in reversed(order):  # longest chain of dependents, this task included
        node = nodes[tid]
        if node.dependents:
            node.chain = 1 + max(d.chain for d in node.dependents)
    depth = max(levels_of.values(), default=-1) + 1
    levels: list[list[str]] = [[] for _ in range(depth)]
    for spec in specs:
        levels[levels_of[spec.id]].append(spec.id)
    return Graph(nodes, levels, order)


def _toposort(
    specs: Sequence[TaskSpec], deps: Mapping[str, tuple[str, ...]]
) -> tuple[list[str], dict[str, int]]:
    """Kahn's algorithm; levels as longest dependency chains. Raises on a cycle."""
    remaining = {s.id: len(deps[s.id]) for s in specs}
    dependents: dict[str, list[str]] = {s.id: [] for s in specs}
    for s in specs:
        for d in deps[s.id]:
            dependents[d].append(s.id)
    level = dict.fromkeys(remaining, 0)
    order = [tid for tid, n in remaining.items() if n == 0]
    i = 0
    while i < len(order):
        tid = order[i]
        i += 1
        lv = level[tid] + 1
        for d in dependents[tid]:
            if level[d] < lv:
                level[d] = lv
            remaining[d] -= 1
            if remaining[d] == 0:
                order.append(d)
    if len(order) < len(specs):
        raise CircularDependencyError(_find_cycle(specs, deps, set(order)))
    return order, level


def _find_cycle(
    specs: Sequence[TaskSpec], deps: Mapping[str, tuple[str, ...]], acyclic: set[str]
) -> list[str]:
    """A cycle among the tasks Kahn's algorithm could not order, in dependency order.

    Each id in the result is an immediate dependency of the next one; first == last.
    """
    start = next(s.id for s in specs if s.id not in acyclic)
    # Walk dependencies backwards from start until an id repeats; every unordered task has
    # an unordered dependency, so the walk never leaves the unordered set.
    seen: dict[str, int] = {}
    path: list[str] = []
    tid = start
    while tid not in seen:
        seen[tid] = len(path)
        path.append(tid)
        tid = next(d for d in deps[tid] if d not in acyclic)
    loop = path[seen[tid]:]  # each element depends on the next
    loop.reverse()  # now each is a dependency of the next
    # Rotate so the cycle starts at its earliest-inserted task, for a stable message.
    index = {s.id: i for i, s in enumerate(specs)}
    k = min(range(len(loop)), key=lambda j: index[loop[j]])
    loop = loop[k:] + loop[:k]
    return [*loop, loop[0]]


def critical_path(graph: Graph, durations: Mapping[str, float]) -> tuple[list[str], float]:
    """The chain of dependencies with the largest sum of ``durations`` (seconds)."""
    best: dict[str, float] = {}
    prev: dict[str, str | None] = {}
    for tid in graph.order:
        node = graph.nodes[tid]
        p = max(node.deps, key=lambda d: best[d], default=None)
        best[tid] = durations.get(tid, 0.0) + (best[p] if p is not None else 0.0)
        prev[tid] = p
    if not best:
        return [], 0.0
    end = max(graph.order, key=lambda t: (best[t], -graph.nodes[t].index))
    path = []
    cur: str | None = end
    while cur is not None:
        path.append(cur)
        cur = prev[cur]
    path.reverse()
    return path, best[end]
