"""The validated task graph: nodes, edges, levels, critical path (SPEC §4).

Invariants, established once by :func:`build_graph` and relied on everywhere after:

* task ids are unique and every dependency, explicit or implied by a ``${ref}``, names an
  existing task;
* the graph is acyclic; ``levels[k]`` holds the tasks whose longest chain of dependencies has
  ``k`` edges, in insertion order;
* every tool and rollback tool is resolved to a callable.

Times here are **seconds** (the request's milliseconds are converted once, at the boundary).

Size: about 500 lines: validation, levelling and the hot-loop node class share the index
arithmetic of one Kahn pass.
"""

from __future__ import annotations

import gc
import inspect
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from oktyv_nb.errors import (
    CircularDependencyError,
    DuplicateTaskError,
    InvalidOptionError,
    MissingDependencyError,
    OktyvError,
    ToolNotFoundError,
)
from oktyv_nb.model.params import ToolSignature, check_params, params_fit, signature_of
from oktyv_nb.model.registry import ToolTable, resolve_tools
from oktyv_nb.model.sandbox import Sandbox
from oktyv_nb.model.schema import (
    ExecutionConfig,
    ExecutionRequest,
    RequestLike,
    TaskData,
    parse_request_data,
    task_data,
)
from oktyv_nb.model.variables import find_references, has_references
from oktyv_nb.units import check_seconds

__all__ = [
    "Cache", "Graph", "RetryPolicy", "TaskNode", "build_graph", "cache_of", "critical_path",
    "is_async", "paused_gc", "prepare", "run_heap",
]

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
        n = self.max_attempts
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidOptionError(
                f"RetryPolicy.max_attempts must be an int >= 1, got {n!r}", option="max_attempts"
            )
        if not isinstance(self.backoff, str) or self.backoff not in ("exponential", "linear"):
            raise InvalidOptionError(
                f"RetryPolicy.backoff must be 'exponential' or 'linear', got {self.backoff!r}",
                option="backoff",
            )
        object.__setattr__(self, "initial_delay", check_seconds(
            self.initial_delay, "RetryPolicy.initial_delay", allow_zero=True
        ))

    def delay(self, k: int) -> float:
        """Seconds to wait before retry ``k`` (0-based); ``inf`` once the exponential delay
        no longer fits a float (``0`` stays ``0`` however many retries)."""
        if self.backoff == "exponential":
            try:
                return math.ldexp(self.initial_delay, k)  # initial_delay * 2**k, exactly
            except OverflowError:
                return math.inf
        return self.initial_delay * (k + 1)


NO_RETRY = RetryPolicy()


@dataclass(frozen=True, slots=True)
class Cache:
    """Cache a task's result in the run's store (SPEC §17): ``.task(..., cache=ok.Cache())``
    (the same as ``cache=True``) or ``ok.Cache(expire=seconds)``; a stored result older than
    ``expire`` **seconds** is not used.

    The key is the tool's qualified name (and the name the task uses), a hash of its source
    code (of its bytecode when Python cannot find the source) and its resolved params as
    canonical JSON; a call whose
    params are not JSON values is not cached (its record says so). A hit is a ``success``
    record with ``cached`` true, no attempt and no call. Without a store nothing is cached.
    """

    expire: float | None = None

    def __post_init__(self) -> None:
        e = self.expire
        if e is not None and (
            isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 < e < float("inf")
        ):
            raise ValueError(f"Cache.expire must be a number of seconds > 0, got {e!r}")


def cache_of(value: Any) -> Cache | None:
    """A task's ``cache`` setting (``True``, a :class:`Cache`, the request's ``CacheSpec``,
    False or None) as the :class:`Cache` the engine uses, or None."""
    if value is None or value is False:
        return None
    if value is True:
        return _CACHE_FOREVER
    if isinstance(value, Cache):
        return value
    return Cache(getattr(value, "expire", None))


_CACHE_FOREVER = Cache()
_NO_DEPENDENTS: tuple[TaskNode, ...] = ()  # every leaf's; build_graph gives others a tuple
_NO_PARAMS: dict[str, Any] = {}  # shared by every task without params; never written to


class TaskNode:
    """One validated task, as the engine uses it. Seconds throughout."""

    __slots__ = (
        "cache",
        "chain",
        "dependents",
        "deps",
        "extra",
        "fn",
        "has_refs",
        "id",
        "index",
        "is_async",
        "level",
        "map",
        "params",
        "parent",
        "pool",
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

    def __init__(
        self, spec: TaskData, index: int, fn: Callable[..., Any], fn_is_async: bool,
        has_refs: bool,
    ) -> None:
        self.spec = spec
        self.id = spec["id"]
        self.index = index
        self.tool = spec["tool"]
        self.fn = fn
        self.is_async = fn_is_async
        self.params = spec["params"]
        self.has_refs = has_refs
        p = spec["priority"]
        self.priority = DEFAULT_PRIORITY if p is None else p
        t = spec["timeout"]
        self.timeout = None if t is None else t / 1000.0
        rp = spec["retry_policy"]
        self.retry = (
            RetryPolicy(rp.max_attempts, rp.backoff, rp.initial_delay / 1000.0) if rp else NO_RETRY
        )
        self.rollback = spec["rollback"]
        self.rollback_fn: Callable[..., Any] | None = None
        self.vault = spec["vault"]
        self.trigger = spec["run_if"] or "all_success"
        self.cache = cache_of(spec.get("cache"))
        self.map = spec.get("map")  # the MapSpec of a mapped task, or None
        self.pool = spec.get("pool")
        self.parent: TaskNode | None = None  # a map's child: its mapped task
        self.extra: dict[str, Any] | None = None  # a child's own param: {param: element}
        self.deps: tuple[str, ...] = ()
        self.dependents: tuple[TaskNode, ...] = _NO_DEPENDENTS
        self.level = 0
        self.chain = 1

    def child(self, i: int, element: Any, index: int) -> TaskNode:
        """Child ``i`` of this mapped task (SPEC §16): the same task with id ``id[i]``, the
        element as its ``map.param``, no dependencies (its map's are met) and no dependents
        (its map gathers it); ``index`` orders it among ready tasks."""
        c = object.__new__(TaskNode)
        for name in _COPIED:
            setattr(c, name, getattr(self, name))
        c.id = f"{self.id}[{i}]"
        c.index = index
        c.map = None
        c.parent = self
        c.extra = {self.map.param: element}
        c.deps = ()
        c.dependents = _NO_DEPENDENTS
        return c

    def __repr__(self) -> str:
        return f"<TaskNode {self.id} tool={self.tool} level={self.level}>"


_COPIED = tuple(n for n in TaskNode.__slots__ if n not in
                ("id", "index", "map", "parent", "extra", "deps", "dependents"))


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


def _dependencies(spec: TaskData, ids: Mapping[str, Any], refs: bool) -> tuple[str, ...]:
    deps: dict[str, None] = {}
    for d in spec["depends_on"] or ():
        if d not in ids:
            raise _no_such_dependency(spec, d)
        deps[d] = None
    if refs:
        for target in _targets(spec, spec["params"], "params", ids):
            deps[target] = None
    m = spec.get("map")
    if m is not None and isinstance(m.over, str):
        for target in _targets(spec, m.over, "map.over", ids):
            deps[target] = None
    if spec["rollback"] is not None and _rollback_references(spec):
        _targets(spec, spec["rollback"].params, "rollback.params", ids)  # checked, not deps
    return tuple(deps)


def _rollback_references(spec: TaskData) -> bool:
    try:
        return has_references(spec["rollback"].params)
    except OktyvError as exc:  # params nested too deep
        raise exc.in_task(spec["id"], "rollback.params") from None


def _no_such_dependency(spec: TaskData, missing: str) -> MissingDependencyError:
    return MissingDependencyError(
        f"Task {spec['id']} depends on non-existent task {missing}", task_id=spec["id"],
        missing=missing,
    )


def _targets(spec: TaskData, params: Any, where: str, ids: Mapping[str, Any]) -> list[str]:
    """The task ids that ``params`` (``where`` in ``spec``) reference; each must exist."""
    targets = []
    for ref in _references(spec, params, where):
        if ref.task_id not in ids:
            what = "rollback references" if where.startswith("rollback") else "references"
            raise MissingDependencyError(
                f"Task {spec['id']} {what} ${{{ref.text}}} but there is no task "
                f"{ref.task_id}; fix the id or add the task",
                task_id=spec["id"],
                missing=ref.task_id,
            )
        targets.append(ref.task_id)
    return targets


def _has_references(spec: TaskData) -> bool:
    try:
        return has_references(spec["params"])
    except OktyvError as exc:  # params nested too deep
        raise exc.in_task(spec["id"]) from None


def _references(spec: TaskData, params: Any, where: str) -> list[Any]:
    try:
        return find_references(params)
    except OktyvError as exc:
        exc.task_id = spec["id"]
        exc.args = (f"Task {spec['id']}, {where}: {exc}",)
        exc.message = exc.args[0]
        raise


def _mapped_params(spec: TaskData, params: Any) -> dict[str, Any]:
    """A mapped task's params as each child's call has them: its own plus ``map.param``
    (which it must not give itself)."""
    param = spec["map"].param
    if param in params:
        raise InvalidOptionError(
            f"Task {spec['id']}: map.param {param!r} is also one of its params; each child "
            f"gets its element as {param!r}, so drop it from params or map another parameter",
            option="map.param", task_id=spec["id"],
        )
    return {**(params or {}), param: None}


def build_graph(
    request: ExecutionRequest | Sequence[TaskData],
    tools: ToolTable,
    *,
    keep_specs: bool = True,
) -> Graph:
    """Validate a request's tasks (SPEC §4) and return their graph, or raise an OktyvError.

    ``request`` is a request model or its tasks as :data:`~oktyv_nb.models.TaskData` dicts.
    Each node's ``spec`` is its task's dict (a model's own ``__dict__``); with
    ``keep_specs=False`` the nodes do not hold on to them (a run of a one-off request does
    not need them after validation; resuming a DAG's run does), and a list of dicts given
    is consumed: each entry is set to None once its node is made, so that the parsed
    request and the graph are never both whole in memory (:func:`prepare` passes its own).

    One pass over the tasks for ids, one for dependencies, Kahn's algorithm on integer
    indices for order, levels and chains; tool lookups are cached per name.
    """
    specs = (
        [task_data(t) for t in request.tasks] if isinstance(request, ExecutionRequest) else request
    )
    ids = {spec["id"]: i for i, spec in enumerate(specs)}
    if len(ids) < len(specs):
        seen: set[str] = set()
        for spec in specs:
            if spec["id"] in seen:
                raise DuplicateTaskError(spec["id"])
            seen.add(spec["id"])
    refs = [bool(spec["params"]) and _has_references(spec) for spec in specs]
    deps: list[tuple[str, ...]] = []
    for spec, r in zip(specs, refs, strict=True):
        dl = spec["depends_on"]
        if r or spec["rollback"] is not None or spec.get("map") is not None:
            deps.append(_dependencies(spec, ids, r))
        elif not dl:
            deps.append(())
        else:  # the common case, inline; _toposort reports an id that does not exist
            deps.append((dl[0],) if len(dl) == 1 else tuple(dict.fromkeys(dl)))
    order, level, chain, children = _toposort(specs, ids, deps)
    found: dict[str, tuple[Callable[..., Any], bool, ToolSignature]] = {}

    def lookup(name: str, task_id: str) -> tuple[Callable[..., Any], bool, ToolSignature]:
        hit = found.get(name)
        if hit is None:
            fn = tools.lookup(name, task_id)
            hit = found[name] = (fn, is_async(fn), signature_of(fn))
        return hit

    made: list[TaskNode] = []
    # Without keep_specs, a list of dicts (prepare's own) lets each go once its node is made:
    # the parsed request and the graph are not both whole at once.
    release = not keep_specs and isinstance(specs, list)
    tool_names: dict[str, str] = {}  # one string per tool name, shared by its nodes
    for i, spec in enumerate(specs):
        fn, fn_async, sig = found.get(spec["tool"]) or lookup(spec["tool"], spec["id"])
        params = spec["params"] or ()
        vaulted = spec["vault"] is not None
        if spec.get("map") is not None:
            params = _mapped_params(spec, params)
        if not params_fit(sig, params, vaulted):
            check_params(fn, spec["tool"], params, spec["id"], has_vault=vaulted)
        node = TaskNode(spec, i, fn, fn_async, refs[i])
        if spec["rollback"] is not None:
            rb = spec["rollback"]
            try:
                node.rollback_fn, _, rb_sig = lookup(rb.tool, spec["id"])
            except ToolNotFoundError as exc:
                raise ToolNotFoundError(
                    exc.tool, task_id=spec["id"], suggestions=exc.suggestions, rollback=True
                ) from None
            if not params_fit(rb_sig, rb.params or (), vaulted):
                check_params(node.rollback_fn, rb.tool, rb.params, spec["id"],
                             has_vault=vaulted)
        if not keep_specs:
            node.spec = None  # type: ignore[assignment]
            if release:
                specs[i] = None  # type: ignore[index]
        if not params:
            node.params = _NO_PARAMS
        node.tool = tool_names.setdefault(node.tool, node.tool)
        node.deps = deps[i]
        node.level = level[i]
        node.chain = chain[i]
        made.append(node)
    pick = made.__getitem__
    for node, kids in zip(made, children, strict=True):
        if kids:
            node.dependents = tuple(map(pick, kids))
    levels: list[list[str]] = [[] for _ in range(max(level, default=-1) + 1)]
    for tid, lv in zip(ids, level, strict=True):
        levels[lv].append(tid)
    nodes = dict(zip(ids, made, strict=True))  # both in task order
    in_order = isinstance(order, range)
    return Graph(nodes, levels, list(ids) if in_order else [made[i].id for i in order])


def _toposort(
    specs: Sequence[TaskData], ids: Mapping[str, int], deps: Sequence[tuple[str, ...]]
) -> tuple[Sequence[int], list[int], list[int], list[list[int]]]:
    """Kahn's algorithm on indices: a topological order (``range(n)`` when the tasks are
    listed in it), each task's level (its longest
    chain of dependencies), chain (its longest chain of dependents, itself included) and
    children (its dependents). Raises MissingDependencyError, CircularDependencyError."""
    n = len(specs)
    children: list[list[int]] = [[] for _ in range(n)]
    level = [0] * n
    forward = False  # does any task depend on a task listed after it?
    for i, ds in enumerate(deps):
        if ds:
            top = -1
            for d in ds:
                j = ids.get(d, -1)
                if j < 0:
                    raise _no_such_dependency(specs[i], d)
                children[j].append(i)
                if j >= i:
                    forward = True
                elif level[j] > top:
                    top = level[j]
            level[i] = top + 1
    order: Sequence[int]
    if not forward:  # listed in dependency order (the usual case): one pass was enough
        order = range(n)
    else:
        level = [0] * n
        remaining = [len(d) for d in deps]
        kahn = [i for i in range(n) if not remaining[i]]
        for i in kahn:  # the list grows while it is walked
            lv = level[i] + 1
            for c in children[i]:
                if level[c] < lv:
                    level[c] = lv
                remaining[c] -= 1
                if not remaining[c]:
                    kahn.append(c)
        order = kahn
    if len(order) < n:
        done = {specs[i]["id"] for i in order}
        raise CircularDependencyError(
            _find_cycle(specs, {s["id"]: deps[i] for i, s in enumerate(specs)}, done)
        )
    chain = [1] * n
    get = chain.__getitem__
    for i in reversed(order):
        kids = children[i]
        if kids:
            chain[i] = 1 + max(map(get, kids))
    return order, level, chain, children



def _find_cycle(
    specs: Sequence[TaskData], deps: Mapping[str, tuple[str, ...]], acyclic: set[str]
) -> list[str]:
    """A cycle among the tasks Kahn's algorithm could not order, in dependency order.

    Each id in the result is an immediate dependency of the next one; first == last.
    """
    start = next(s["id"] for s in specs if s["id"] not in acyclic)
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
    index = {s["id"]: i for i, s in enumerate(specs)}
    k = min(range(len(loop)), key=lambda j: index[loop[j]])
    loop = loop[k:] + loop[:k]
    return [*loop, loop[0]]


def critical_path(graph: Graph, durations: Mapping[str, float]) -> tuple[list[str], float]:
    """The chain of dependencies with the largest sum of ``durations`` (seconds)."""
    best: dict[str, float] = {}
    prev: dict[str, str | None] = {}
    for tid in graph.order:
        node = graph.nodes[tid]
        p = max(node.deps, key=best.__getitem__, default=None)
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


class _Heap:
    """The garbage collector's state across the :func:`run_heap` scopes of the process."""

    lock = threading.Lock()
    depth = 0  # scopes open now, in every thread and task
    engines = 0  # of them, scopes whose engine runs
    managed = False  # whether the open scopes manage the collector

    @classmethod
    def apply(cls) -> None:
        """With the collector managed: on while an engine runs or no scope is open."""
        if cls.managed:
            if cls.engines or not cls.depth:
                gc.enable()
            else:
                gc.disable()


class RunHeap:
    """One :func:`run_heap` scope."""

    __slots__ = ("engine",)

    def __init__(self) -> None:
        self.engine = False

    def engine_phase(self) -> None:
        """The engine starts: everything alive now goes to the permanent generation, unscanned
        (``gc.freeze()``), and the collector runs again, over the run's own objects only."""
        with _Heap.lock:
            if not self.engine:
                self.engine = True
                _Heap.engines += 1
                if _Heap.managed:
                    gc.freeze()
                _Heap.apply()


@contextmanager
def run_heap() -> Iterator[RunHeap]:
    """The garbage collector around a run: off while it is validated and set up, and while
    its results are built; on while its engine runs, but off the set-up's objects.

    Validating a request and setting up its run allocate tens of thousands of objects that
    all stay alive; the collector would scan them again and again (at 100,000 tasks its
    collections cost more than the engine). So the collector is paused inside a scope, except
    from :meth:`RunHeap.engine_phase` to the end of that scope: that call moves every object
    alive (the graph, the records, the request, whatever the program held) to the permanent
    generation (``gc.freeze()``), so the collections the run triggers scan only what the run
    makes. When the last scope closes, the objects made since go the same way and all of them
    back to the oldest generation (``gc.unfreeze()``): nothing is scanned just for having been
    made. Reference counting frees objects as usual throughout; only a cycle of objects that
    existed when the engine started is collected after the run rather than during it. While
    any engine runs the collector stays on. A collector the program disabled, or objects it
    froze itself (``gc.get_freeze_count()`` non-zero outside any run), are left alone; so is
    an interpreter that starts with objects frozen (CPython 3.12 does): there the collector
    runs as it would without oktyv_nb. Scopes
    nest and may overlap across threads and tasks.
    """
    scope = RunHeap()
    with _Heap.lock:
        if _Heap.depth == 0:
            _Heap.managed = gc.isenabled() and gc.get_freeze_count() == 0
        _Heap.depth += 1
        _Heap.apply()
    try:
        yield scope
    finally:
        with _Heap.lock:
            if scope.engine:
                _Heap.engines -= 1
            _Heap.depth -= 1
            if _Heap.managed and _Heap.depth == 0:
                gc.freeze()
                gc.unfreeze()
            _Heap.apply()


def prepare(
    request: RequestLike,
    tools: Mapping[str, Callable[..., Any]] | None = None,
    *,
    keep_specs: bool = True,
    sandbox: Sandbox | None = None,
) -> tuple[ExecutionConfig, Graph]:
    """Validate a request (SPEC §4) into its run config and graph; raises before anything
    runs. A dict or JSON text is validated as :data:`~oktyv_nb.model.schema.RequestData`
    (the models' rules, without making a model per task). A ``sandbox`` confines the
    built-in file tools and may refuse ``shell`` (:mod:`oktyv_nb.model.sandbox`)."""
    table = resolve_tools(tools)
    if sandbox is not None:
        table = sandbox.guard(table)
    with paused_gc():
        if isinstance(request, ExecutionRequest):
            return request.config, build_graph(request, table, keep_specs=keep_specs)
        data = parse_request_data(request)
        return data["config"], build_graph(data["tasks"], table, keep_specs=keep_specs)
