"""The fluent builder: ``ok.DAG(...).task(...).task(...)`` (SPEC §2).

A :class:`DAG` holds task specs (the request's own model, milliseconds) and a registry of
the callables given to it, so :meth:`DAG.to_request` and :meth:`DAG.from_request` convert
both ways without loss. Times in the builder are **seconds** (``timeout=5.0``); the request
keeps milliseconds (``"timeout": 5000``).

Arguments are checked when a task is added (:meth:`DAG.task` raises at once for a duplicate
id, a malformed id, a bad priority, timeout or retry setting; :meth:`DAG.add_spec` checks a
request's task the same way); what depends on the whole DAG (unknown dependencies, cycles,
unknown tool names) is checked when it runs, or on :meth:`DAG.validate`.

A DAG is edited in place only through its methods: :meth:`DAG.remove`,
:meth:`DAG.replace_tasks` (all tasks at once, in order) and :meth:`DAG.configure` (the name
and run settings, checked by :class:`~oktyv_nb.execution.outcome.RunConfig` as the
constructor's and a run's are). :meth:`DAG.to_code` gives the builder code of a DAG
(:mod:`oktyv_nb.codegen`).

Size: the module is the builder's whole public surface (about 1,000 lines, most of them
docstrings and the argument checks that name the task and the field). The rules it applies
live below it (run settings in :mod:`~oktyv_nb.execution.outcome`, params in
:mod:`~oktyv_nb.model.params`, the request in :mod:`~oktyv_nb.model.schema`); splitting the
class would put a method's checks away from the signature they check.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import inspect
import os
import re
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oktyv_nb.errors import (
    CANCELLED,
    CircularDependencyError,
    DuplicateTaskError,
    InvalidOptionError,
    OktyvError,
    RunInterrupted,
)
from oktyv_nb.execution.engine import Engine, RunConfig, run_graph
from oktyv_nb.execution.events import Subscriber, subscribers_of
from oktyv_nb.execution.limits import check_pools
from oktyv_nb.execution.records import TaskRecord
from oktyv_nb.jupyter import in_notebook, run_sync
from oktyv_nb.model.graph import Cache, Graph, RetryPolicy, build_graph, run_heap
from oktyv_nb.model.params import check_params
from oktyv_nb.model.registry import ToolRegistry, default_registry, resolve_tools
from oktyv_nb.model.sandbox import Sandbox, as_sandbox
from oktyv_nb.model.schema import (
    TASK_ID_MAX,
    TASK_ID_PATTERN,
    CacheSpec,
    ExecutionConfig,
    ExecutionRequest,
    MapSpec,
    RequestLike,
    RetryPolicyModel,
    RollbackSpec,
    TaskSpec,
    parse_request,
)
from oktyv_nb.model.tools import BUILTIN_TOOLS
from oktyv_nb.model.variables import find_references, has_references
from oktyv_nb.model.vault import check_vault
from oktyv_nb.results.display import GRAPH_LIMIT
from oktyv_nb.results.display.theme import STATUS_STYLE
from oktyv_nb.results.run import reusable, reusable_maps
from oktyv_nb.store import RunStore
from oktyv_nb.units import check_seconds, format_seconds, ms_to_seconds, plural, seconds_to_ms

if TYPE_CHECKING:
    import graphviz
    import pandas as pd

    from oktyv_nb.live import SweepProgress
    from oktyv_nb.results.run import Run

__all__ = ["DAG", "TASK_OPTIONS", "Rollback"]

Tool = Callable[..., Any] | str

_ID = re.compile(TASK_ID_PATTERN)
_TRIGGERS = ("all_success", "all_done")
_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))
# How deep in nested runs this context is: a run started from inside another run (a tool or
# a callback calling dag.run()) shows no live view of its own by default.
_RUN_DEPTH: contextvars.ContextVar[int] = contextvars.ContextVar("oktyv_run_depth", default=0)


class _Default:
    """The type of :data:`DEFAULT`."""

    _instance: _Default | None = None

    def __new__(cls) -> _Default:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "DEFAULT"


#: "Not given": a run setting left at its default takes the DAG's own (``None`` is a value:
#: ``dag.run(timeout=None)`` runs without the DAG's timeout).
DEFAULT: Any = _Default()


@dataclass(slots=True)
class _RunPlan:
    """A run checked and ready to start (see :meth:`DAG._plan`)."""

    graph: Graph
    config: RunConfig
    backend: Any
    vault: Any
    subscribers: list[Subscriber]
    reuse: dict[str, TaskRecord] | None
    reuse_maps: dict[str, tuple[list[Any], list[TaskRecord]]] | None
    secrets: frozenset[str]
    settings: dict[str, Any]
    view: Any
    store: RunStore | None = None


@dataclass(frozen=True)
class Rollback:
    """A compensating call: ``ok.Rollback(tool, **params)``; params may reference
    ``${<the task itself>.result...}``."""

    tool: Tool
    params: dict[str, Any] = field(default_factory=dict)

    def __init__(self, tool: Tool, /, **params: Any) -> None:
        object.__setattr__(self, "tool", tool)
        object.__setattr__(self, "params", params)


def _given(**settings: Any) -> dict[str, Any]:
    """The settings that were given (not left at :data:`DEFAULT`)."""
    return {k: v for k, v in settings.items() if v is not DEFAULT}


def _configured(config: RunConfig, settings: Mapping[str, Any]) -> RunConfig:
    """``config`` with the run settings among ``settings`` replaced (checked by
    :class:`RunConfig`, the one home of their rules)."""
    fields = {k: settings[k] for k in _CONFIG_FIELDS if k in settings}
    return dataclasses.replace(config, **fields) if fields else config


def _check_name(name: Any) -> str | None:
    if name is not None and not isinstance(name, str):
        raise InvalidOptionError(
            f"DAG name must be a string, got {type(name).__name__}", option="name"
        )
    return name


def _same_callable(a: Any, b: Any) -> bool:
    if a is b:
        return True
    # a bound method is a new object on every attribute access: compare by owner + function
    return isinstance(a, types.MethodType) and isinstance(b, types.MethodType) and a == b


class DAG:
    """A DAG of tasks built fluently; every builder method returns the DAG.

    ``max_concurrent`` bounds tasks running at once; ``failure_mode`` is ``continue``,
    ``stop`` or ``rollback``; ``timeout`` bounds the whole run (**seconds**); ``strategy`` is
    ``dependencies`` (default) or ``levels``; ``backend`` says where tools run (a name or a
    backend object); ``tools`` maps extra tool names to callables (a dict or an
    ``ok.ToolRegistry``, copied); ``vault`` holds the secret sets tasks name (SPEC §8);
    ``capture`` (default on) keeps what each task prints to stdout/stderr and logs in its
    record (``run.df``'s ``stdout``/``stderr``, ``run.logs()``; SPEC §18) instead of letting
    it reach the notebook.
    ``root`` confines the built-in file tools and ``sqlite``'s database to a directory
    (relative paths resolve against it; a path resolving outside fails its task with
    ``PATH_OUTSIDE_ROOT``; SPEC §15; ``shell`` stays allowed, in the root), or is a
    :class:`~oktyv_nb.model.sandbox.Sandbox` (``allow_shell=False`` refuses ``shell``).
    ``store`` (an ``ok.RunStore`` or its path) journals every run and serves the result cache
    of tasks with ``cache=`` (SPEC §17).
    ``pools={"api": 3}`` and ``rates={"api": "5/s"}`` define limits shared by the tasks that
    join them with ``pool="api"`` (SPEC §20): at most 3 running at once, at most 5 starts a
    second (``N/s``, ``N/min``, ``N/h``; a token bucket with burst N).
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        max_concurrent: int = 10,
        failure_mode: str = "continue",
        timeout: float | None = None,
        strategy: str = "dependencies",
        backend: Any = None,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        vault: Mapping[str, Any] | None = None,
        root: str | os.PathLike[str] | Sandbox | None = None,
        capture: bool = True,
        store: RunStore | str | os.PathLike[str] | None = None,
        pools: Mapping[str, int] | None = None,
        rates: Mapping[str, str] | None = None,
    ) -> None:
        self.name = _check_name(name)
        self.config = RunConfig(max_concurrent, failure_mode, timeout, strategy, capture,  # type: ignore[arg-type]
                                pools or {}, rates or {})
        check_vault(vault)
        self.backend = backend
        self.vault = vault
        self.sandbox = as_sandbox(root)
        self.store = _store(store)
        self.tools = ToolRegistry(tools)
        self.specs: dict[str, TaskSpec] = {}
        self.last_run: Run | None = None
        self._graph: Graph | None = None
        self._graph_key = 0
        # Exact JSON values of a request this DAG came from, kept so that to_request() gives
        # them back unchanged: (seconds, ms) of the run timeout, and enableRollback.
        self._timeout_ms: tuple[float, float] | None = None
        self._enable_rollback = False

    # ------------------------------------------------------------------ building
    def task(
        self,
        id: str,  # the SPEC's name (shadows the builtin here only)
        tool: Tool,
        params: Mapping[str, Any] | None = None,
        /,
        *,
        after: Sequence[str] | str | None = None,
        priority: int | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        retry: RetryPolicy | None = None,
        rollback: Rollback | tuple[Tool, Mapping[str, Any]] | Mapping[str, Any] | None = None,
        vault: str | None = None,
        trigger: str | None = None,
        cache: bool | Cache | None = None,
        pool: str | None = None,
        replace: bool = False,
        **kwargs: Any,
    ) -> DAG:
        """Add task ``id`` calling ``tool(**params)``; returns the DAG.

        The tool's params are the keyword arguments not listed below. A tool parameter named
        like one of them (``timeout``, ``retries``, ...) goes in the positional ``params``
        dict instead: ``.task("s", ok.tools.shell, {"timeout": 5}, argv=["make"])``.

        ``tool`` is a callable (sync or async) or the name of a registered tool (``ok.tool``,
        the DAG's ``tools``, a built-in). ``after`` adds explicit dependencies (``${ref}``
        params add theirs implicitly); ``priority`` is 1..10 (default 5, higher starts first);
        ``timeout`` is **seconds** per attempt; ``retries=N`` allows N more attempts with
        exponential backoff from 1 s, ``retry=ok.RetryPolicy(...)`` gives full control;
        ``rollback=ok.Rollback(tool, **params)`` compensates the task in ``rollback`` mode;
        ``vault`` names the secret set passed as ``credentials``; ``trigger`` is
        ``all_success`` (default) or ``all_done``; ``cache=True`` or
        ``cache=ok.Cache(expire=seconds)`` takes the result from the run store's cache when
        the same tool (same source) was called with the same resolved params (SPEC §17);
        ``pool`` names a pool or rate of the DAG (``pools=``/``rates=``) the task takes a
        slot of (SPEC §20). An id the DAG has already is an ``ok.DuplicateTaskError``;
        ``replace=True`` puts the new task in the old one's place instead (a notebook cell
        that adds tasks can then be run again).
        """
        mapped = sorted(set(kwargs) & _MAP_OPTIONS)
        if mapped:
            raise InvalidOptionError(
                f"Task {id}: {mapped[0]}= is an option of mapped tasks; use "
                f"dag.map({id!r}, tool, over=..., param=...), or put a tool parameter named "
                f"{mapped[0]!r} in the params dict: .task({id!r}, tool, {{{mapped[0]!r}: ...}})",
                option=mapped[0], task_id=str(id),
            )
        return self._task(
            id, tool, params, kwargs, after=after, priority=priority, timeout=timeout,
            retries=retries, retry=retry, rollback=rollback, vault=vault, trigger=trigger,
            cache=cache, pool=pool, replace=replace,
        )

    def map(
        self,
        id: str,
        tool: Tool,
        params: Mapping[str, Any] | None = None,
        /,
        *,
        over: str | Sequence[Any],
        param: str,
        max_concurrent: int | None = None,
        after: Sequence[str] | str | None = None,
        priority: int | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        retry: RetryPolicy | None = None,
        rollback: Rollback | tuple[Tool, Mapping[str, Any]] | Mapping[str, Any] | None = None,
        vault: str | None = None,
        trigger: str | None = None,
        cache: bool | Cache | None = None,
        pool: str | None = None,
        replace: bool = False,
        **kwargs: Any,
    ) -> DAG:
        """Add mapped task ``id`` (SPEC §16): at run time, one child task ``id[i]`` per
        element of ``over``, calling ``tool(**params, <param>=element)``; returns the DAG.

        ``over`` is a reference to a list (``"${list.result.urls}"``: that task becomes a
        dependency) or a literal list; ``param`` names the tool parameter each element goes
        to; ``max_concurrent`` bounds the children running at once (within the run's). Every
        other option is :meth:`task`'s and applies to each child (its own timeout, retries,
        slot, cache and pool slot). ``${id.result}`` is the list of the children's results in
        element order, ``${id.result.3}`` one of them. At most :data:`ok.MAP_LIMIT` children.
        """
        task_id = self._check_id(id, replace)
        return self._task(
            task_id, tool, params, kwargs, after=after, priority=priority, timeout=timeout,
            retries=retries, retry=retry, rollback=rollback, vault=vault, trigger=trigger,
            cache=cache, pool=pool, map=_map_spec(task_id, over, param, max_concurrent),
            replace=replace,
        )

    def _task(
        self, id: Any, tool: Tool, params: Mapping[str, Any] | None, kwargs: dict[str, Any],
        *, after: Any, priority: Any, timeout: Any, retries: Any, retry: Any, rollback: Any,
        vault: Any, trigger: Any, cache: Any, pool: Any, map: MapSpec | None = None,
        replace: bool = False,
    ) -> DAG:
        """What :meth:`task` and :meth:`map` share: their options checked, the task added."""
        if not isinstance(replace, bool):
            raise InvalidOptionError(f"Task {id}: replace must be True or False, got "
                                     f"{replace!r}", option="replace")
        task_id = self._check_id(id, replace)
        if params is None:
            params = kwargs
        elif not isinstance(params, Mapping):
            raise InvalidOptionError(
                f"Task {task_id}: the third argument is a dict of tool params, got "
                f"{type(params).__name__}; pass params as keywords or as {{'name': value}}"
            )
        else:
            both = sorted(set(params) & set(kwargs))
            if both:
                raise InvalidOptionError(
                    f"Task {task_id}: param {both[0]!r} given both in the params dict and as "
                    "a keyword; give it once"
                )
            params = {**params, **kwargs}
        if retries is not None and retry is not None:
            raise InvalidOptionError(
                f"Task {task_id}: give retries=N or retry=ok.RetryPolicy(...), not both"
            )
        policy = None
        if retries is not None:
            if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
                raise InvalidOptionError(
                    f"Task {task_id}: retries must be an int >= 0 (the number of extra "
                    f"attempts), got {retries!r}"
                )
            policy = RetryPolicyModel(
                max_attempts=retries + 1, backoff="exponential", initial_delay=1000.0
            )
        elif retry is not None:
            policy = self._retry_policy(retry, task_id)
        timeout_ms = (
            seconds_to_ms(check_seconds(timeout, "timeout", task_id=task_id))
            if timeout is not None else None
        )
        return self._add(
            task_id, tool, params, after=after, priority=priority, timeout_ms=timeout_ms,
            policy=policy, rollback=rollback, vault=vault, trigger=trigger, cache=cache,
            pool=pool, map=map,
        )

    def add_spec(self, spec: TaskSpec) -> DAG:
        """Add a task given as a request's :class:`~oktyv_nb.model.schema.TaskSpec` (times in
        milliseconds there); returns the DAG.

        Checked as :meth:`task` checks its arguments, so the same mistakes raise the same
        ``ok.InvalidOptionError``, ``ok.DuplicateTaskError`` or
        ``ok.CircularDependencyError``, naming the task and the field. The DAG keeps a copy:
        changing ``spec`` afterwards does not change the DAG.
        """
        if not isinstance(spec, TaskSpec):
            raise InvalidOptionError(
                f"add_spec takes a TaskSpec (a request's task), got {type(spec).__name__}; "
                "use dag.task(id, tool, ...) for arguments"
            )
        task_id = self._check_id(spec.id)
        if spec.timeout is not None:
            check_seconds(ms_to_seconds(spec.timeout), "timeout", task_id=task_id)
        spec = _copy(spec)
        rollback = spec.rollback
        return self._add(
            task_id, spec.tool, spec.params, after=spec.depends_on,
            priority=spec.priority, timeout_ms=spec.timeout,
            policy=self._retry_policy(spec.retry_policy, task_id)
            if spec.retry_policy is not None else None,
            rollback=(rollback.tool, rollback.params) if rollback is not None else None,
            vault=spec.vault, trigger=spec.run_if, cache=spec.cache, pool=spec.pool,
            map=spec.map,
        )

    def replace_tasks(self, specs: Iterable[TaskSpec]) -> DAG:
        """Make ``specs`` the DAG's tasks, in this order (the old ones are dropped); returns
        the DAG.

        The specs are taken as :meth:`from_request` takes a request's tasks: each must be a
        :class:`~oktyv_nb.model.schema.TaskSpec` and no id may repeat
        (``ok.DuplicateTaskError``); dependencies, references, tools and cycles are checked
        by :meth:`validate` and by a run. On an error the DAG is left as it was. The DAG holds
        the given spec objects themselves (no copy); the graph is built anew on next use.
        """
        new: dict[str, TaskSpec] = {}
        for spec in specs:
            if not isinstance(spec, TaskSpec):
                raise InvalidOptionError(
                    f"replace_tasks takes TaskSpecs (a request's tasks), got "
                    f"{type(spec).__name__}"
                )
            if spec.id in new:
                raise DuplicateTaskError(spec.id)
            new[spec.id] = spec
        self.specs = new
        self._graph = None
        return self

    def configure(
        self,
        *,
        name: str | None = DEFAULT,  # type: ignore[assignment]
        max_concurrent: int = DEFAULT,  # type: ignore[assignment]
        failure_mode: str = DEFAULT,  # type: ignore[assignment]
        timeout: float | None = DEFAULT,  # type: ignore[assignment]
        strategy: str = DEFAULT,  # type: ignore[assignment]
        capture: bool = DEFAULT,  # type: ignore[assignment]
        pools: Mapping[str, int] = DEFAULT,  # type: ignore[assignment]
        rates: Mapping[str, str] = DEFAULT,  # type: ignore[assignment]
    ) -> DAG:
        """Change the DAG's name and its run settings (``pools``/``rates`` replace the old
        ones whole); settings not given stay as they are. Returns the DAG.

        Checked as the constructor and :meth:`run` check them (``timeout`` in seconds,
        ``timeout=None`` for no run timeout); on an ``ok.InvalidOptionError`` nothing
        changes. (``backend`` and ``vault``, which have no rules of their own, are plain
        attributes: ``dag.backend = "threads"``.)
        """
        given = _given(name=name, max_concurrent=max_concurrent, failure_mode=failure_mode,
                       timeout=timeout, strategy=strategy, capture=capture, pools=pools,
                       rates=rates)
        config = _configured(self.config, given)
        self.name = _check_name(given.get("name", self.name))
        self.config = config
        return self

    def _add(
        self,
        task_id: str,
        tool: Tool,
        params: dict[str, Any],
        *,
        after: Any,
        priority: Any,
        timeout_ms: float | None,
        policy: RetryPolicyModel | None,
        rollback: Any,
        vault: Any,
        trigger: Any,
        cache: Any = None,
        pool: Any = None,
        map: MapSpec | None = None,
    ) -> DAG:
        """The checks :meth:`task` and :meth:`add_spec` share; adds the task."""
        if pool is not None and (not isinstance(pool, str) or not pool):
            raise InvalidOptionError(
                f"Task {task_id}: pool must be the name of a pool or rate of the DAG (a "
                f"non-empty string), got {pool!r}", option="pool", task_id=task_id,
            )
        if priority is not None and (
            isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 10
        ):
            raise InvalidOptionError(
                f"Task {task_id}: priority must be an int from 1 to 10 (default 5), "
                f"got {priority!r}"
            )
        if trigger is not None and trigger not in _TRIGGERS:
            raise InvalidOptionError(
                f"Task {task_id}: trigger must be 'all_success' or 'all_done', got {trigger!r}"
            )
        if vault is not None:
            if not isinstance(vault, str) or not vault:
                raise InvalidOptionError(
                    f"Task {task_id}: vault must be the name of a secret set (a non-empty "
                    f"string), got {vault!r}"
                )
            if "credentials" in params:
                raise InvalidOptionError(
                    f"Task {task_id}: the vault set {vault!r} is passed to the tool as "
                    "`credentials`; remove the credentials= param or the vault"
                )
        deps = self._check_after(after, task_id)
        self._check_references(params, task_id)
        tool_name = self._tool_name(tool, task_id)
        checked = params
        if map is not None:
            if isinstance(map.over, str):
                self._check_references({"over": map.over}, task_id)
            if map.param in params:
                raise InvalidOptionError(
                    f"Task {task_id}: param {map.param!r} is the one each child gets its "
                    f"element as (param={map.param!r}); drop it from the params or map "
                    "another parameter", option="map.param", task_id=task_id,
                )
            checked = {**params, map.param: None}
        if callable(tool):  # a name is checked when the graph is built, once it resolves
            check_params(tool, tool_name, checked, task_id, has_vault=vault is not None)
        options = {
            "depends_on": deps, "priority": priority, "timeout": timeout_ms, "vault": vault,
            "retry_policy": policy, "rollback": self._rollback(rollback, task_id),
            "run_if": trigger, "cache": _cache_spec(cache, task_id), "map": map, "pool": pool,
        }
        # Only the options given, so that model_fields_set names what the task was given
        # (specs given the same fields share that set: TaskSpec.model_post_init).
        spec = TaskSpec(id=task_id, tool=tool_name, params=params,
                        **{k: v for k, v in options.items() if v is not None})
        self.specs[task_id] = spec
        self._graph = None
        return self

    def remove(self, task_id: str) -> DAG:
        """Remove a task (tasks that depend on it fail validation until fixed)."""
        if task_id not in self.specs:
            raise KeyError(f"no task {task_id!r} in this DAG; tasks: {', '.join(self.specs)}")
        del self.specs[task_id]
        self._graph = None
        return self

    def _check_id(self, task_id: Any, replace: bool = False) -> str:
        if not isinstance(task_id, str):
            raise InvalidOptionError(f"a task id must be a string, got {type(task_id).__name__}")
        if not _ID.match(task_id) or len(task_id) > TASK_ID_MAX:
            raise InvalidOptionError(
                f"Task id {task_id!r} is not valid: ids are 1-{TASK_ID_MAX} characters of "
                "letters, digits, _ and - (not starting with -), so that ${id.result} can "
                "reference them"
            )
        if task_id in self.specs and not replace:
            raise DuplicateTaskError(
                task_id, f"; the DAG has a task {task_id} already (a notebook cell run "
                f"again?): pass replace=True to put this one in its place, or "
                f"dag.remove({task_id!r}) first")
        return task_id

    @staticmethod
    def _check_after(after: Any, task_id: str) -> list[str] | None:
        if after is None:
            return None
        items = [after] if isinstance(after, str) else after
        if not isinstance(items, (list, tuple)):
            raise InvalidOptionError(
                f"Task {task_id}: after must be a task id or a list of task ids, got "
                f"{type(after).__name__}"
            )
        deps: dict[str, None] = {}
        for d in items:
            if not isinstance(d, str) or not d:
                raise InvalidOptionError(
                    f"Task {task_id}: after must hold task ids (strings), got {d!r}",
                    option="after",
                )
            if d == task_id:
                raise CircularDependencyError([task_id, task_id])
            deps[d] = None
        return list(deps) or None

    @staticmethod
    def _check_references(
        params: Mapping[str, Any], task_id: str, allow_self: bool = False
    ) -> None:
        try:
            if not has_references(params):
                return
            refs = find_references(params)
        except OktyvError as exc:
            exc.task_id = task_id
            exc.message = f"Task {task_id}: {exc}"
            exc.args = (exc.message,)
            raise
        if not allow_self and any(r.task_id == task_id for r in refs):
            raise CircularDependencyError([task_id, task_id])

    @staticmethod
    def _retry_policy(retry: Any, task_id: str) -> RetryPolicyModel:
        if isinstance(retry, RetryPolicyModel):
            return retry.model_copy()
        if not isinstance(retry, RetryPolicy):
            raise InvalidOptionError(
                f"Task {task_id}: retry must be ok.RetryPolicy(max_attempts=..., backoff=..., "
                f"initial_delay=<seconds>), got {retry!r}"
            )
        return RetryPolicyModel(
            max_attempts=retry.max_attempts,
            backoff=retry.backoff,  # type: ignore[arg-type]
            initial_delay=seconds_to_ms(retry.initial_delay),
        )

    def _tool_name(self, tool: Tool, task_id: str) -> str:
        """The registered name of ``tool``; a callable not registered yet is added to this
        DAG's ``tools`` under its ``__name__`` (made unique)."""
        if isinstance(tool, str):
            if not tool:
                raise InvalidOptionError(f"Task {task_id}: the tool name must not be empty")
            return tool
        if not callable(tool):
            raise InvalidOptionError(
                f"Task {task_id}: tool must be a callable or the name of a registered tool, "
                f"got {type(tool).__name__}"
            )
        table = resolve_tools(self.tools)
        for registry in (self.tools, default_registry, BUILTIN_TOOLS):
            for name, fn in registry.items():
                # the name must also find this very callable when the run looks it up
                if _same_callable(fn, tool) and _same_callable(table.get(name), tool):
                    return name
        target = tool.func if hasattr(tool, "func") else tool  # functools.partial
        base = getattr(target, "__name__", None) or type(target).__name__
        if not _ID.match(base):  # <lambda>, <locals> ...
            base = f"{task_id}_tool"
        name, n = base, 2
        while name in table:
            name = f"{base}_{n}"
            n += 1
        self.tools[name] = tool
        return name

    def _rollback(self, rollback: Any, task_id: str) -> RollbackSpec | None:
        if rollback is None:
            return None
        if isinstance(rollback, RollbackSpec):
            return rollback.model_copy(deep=True)
        if isinstance(rollback, Rollback):
            tool, params = rollback.tool, rollback.params
        elif isinstance(rollback, Mapping) and "tool" in rollback:
            tool, params = rollback["tool"], rollback.get("params") or {}
        elif isinstance(rollback, tuple) and len(rollback) == 2:
            tool, params = rollback
        else:
            raise InvalidOptionError(
                f"Task {task_id}: rollback must be ok.Rollback(tool, **params), "
                f"(tool, params) or {{'tool': ..., 'params': {{...}}}}, got {rollback!r}"
            )
        if not isinstance(params, Mapping):
            raise InvalidOptionError(
                f"Task {task_id}: rollback params must be a mapping, got {params!r}",
                option="rollback",
            )
        self._check_references(params, task_id, allow_self=True)  # ${<itself>.result...}
        return RollbackSpec(tool=self._tool_name(tool, task_id), params=dict(params))

    # ------------------------------------------------------------------ conversions
    def to_request(self) -> ExecutionRequest:
        """The JSON request (SPEC §3, milliseconds) of this DAG;
        ``.model_dump(by_alias=True, mode="json", exclude_none=True)`` gives the camelCase
        dict. Vault *names* are kept, secrets never (they are not part of a DAG's tasks)."""
        c = self.config
        timeout_ms = None
        if c.timeout is not None:
            kept = self._timeout_ms
            timeout_ms = kept[1] if kept and kept[0] == c.timeout else seconds_to_ms(c.timeout)
        rollback_flag = True if self._enable_rollback and c.failure_mode == "rollback" else None
        return ExecutionRequest(
            tasks=[_copy(s) for s in self.specs.values()],
            config=ExecutionConfig(
                max_concurrent=c.max_concurrent,
                failure_mode=c.failure_mode,
                timeout=timeout_ms,
                enable_rollback=rollback_flag,
                pools=dict(c.pools) or None,
                rates=dict(c.rates) or None,
            ),
        )

    def to_json(self, **kwargs: Any) -> str:
        """The request as camelCase JSON text (absent optional fields left out)."""
        return self.to_request().model_dump_json(by_alias=True, exclude_none=True, **kwargs)

    def to_code(self) -> str:
        """Python source that rebuilds this DAG with the fluent builder into a variable
        ``dag`` (see :func:`oktyv_nb.codegen.dag_to_code`)."""
        from oktyv_nb.codegen import dag_to_code

        return dag_to_code(self)

    @classmethod
    def from_request(
        cls,
        request: RequestLike,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        *,
        name: str | None = None,
        **config: Any,
    ) -> DAG:
        """A DAG equal to ``request`` (a model, a dict or JSON text; milliseconds there,
        seconds here); ``tools`` maps its tool names to callables. ``config`` overrides or
        adds settings the request does not carry (``strategy``, ``backend``, ``vault``)."""
        model = parse_request(request)
        c = model.config
        timeout_s = ms_to_seconds(c.timeout) if c.timeout is not None else None
        settings: dict[str, Any] = {
            "max_concurrent": c.max_concurrent,
            "failure_mode": c.failure_mode or "continue",
            "timeout": timeout_s,
            "pools": c.pools,
            "rates": c.rates,
        }
        settings.update(config)
        dag = cls(name, tools=tools, **settings)
        if c.timeout is not None:
            dag._timeout_ms = (timeout_s, c.timeout)  # type: ignore[assignment]
        dag._enable_rollback = bool(c.enable_rollback)
        return dag.replace_tasks(_copy(spec) for spec in model.tasks)

    def copy(self, name: str | None = None) -> DAG:
        """An independent copy with the same tools and settings (``name`` renames it)."""
        new = DAG(
            self.name if name is None else name,
            max_concurrent=self.config.max_concurrent,
            failure_mode=self.config.failure_mode,
            timeout=self.config.timeout,
            strategy=self.config.strategy,
            backend=self.backend,
            tools=self.tools,
            vault=self.vault,
            root=self.sandbox,
            store=self.store,
            pools=self.config.pools,
            rates=self.config.rates,
        )
        new._timeout_ms = self._timeout_ms
        new._enable_rollback = self._enable_rollback
        return new.replace_tasks(_copy(s) for s in self.specs.values())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DAG):
            return NotImplemented
        return self.to_request() == other.to_request() and self.config == other.config

    __hash__ = None  # type: ignore[assignment]

    # ------------------------------------------------------------------ inspection
    def validate(self) -> Graph:
        """Check the whole DAG (SPEC §4) and return its graph; raises an ``ok.OktyvError``
        (a ``ValueError``) naming the task and the fix."""
        key = self._version
        if self._graph is None or self._graph_key != key:
            self._graph = self._build()
            self._graph_key = key
        check_pools(self._graph, self.config.pools, self.config.rates)
        return self._graph

    @property
    def _version(self) -> int:
        """Changes whenever a task spec is added, replaced, removed or reordered: a hash of
        the specs' identities in order (one int kept, not a tuple of one a task)."""
        return hash(tuple(map(id, self.specs.values())))

    def _build(self) -> Graph:
        request = ExecutionRequest.model_construct(tasks=list(self.specs.values()))
        table = resolve_tools(self.tools)
        if self.sandbox is not None:
            table = self.sandbox.guard(table)
        return build_graph(request, table)

    @property
    def root(self) -> Path | None:
        """The directory the built-in file tools are confined to (None: not confined)."""
        return self.sandbox.root if self.sandbox is not None else None

    @property
    def task_ids(self) -> list[str]:
        return list(self.specs)

    @property
    def levels(self) -> list[list[str]]:
        """Task ids by level: level k holds the tasks whose longest dependency chain has k
        edges."""
        return self.validate().levels

    def __len__(self) -> int:
        return len(self.specs)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.specs

    def __iter__(self) -> Iterator[str]:
        return iter(self.specs)

    # ------------------------------------------------------------------ running
    def _plan(
        self,
        max_concurrent: Any = DEFAULT,
        failure_mode: Any = DEFAULT,
        timeout: Any = DEFAULT,
        strategy: Any = DEFAULT,
        backend: Any = DEFAULT,
        vault: Any = DEFAULT,
        resume: Run | None = None,
        on_event: Subscriber | Sequence[Subscriber] | None = None,
        live: bool | Callable[..., Any] | None = None,
        store: Any = DEFAULT,
    ) -> _RunPlan:
        """Everything a run needs, checked before any event loop is involved: a bad setting
        or an invalid DAG raises here, from the caller's own line."""
        settings = _given(
            max_concurrent=max_concurrent, failure_mode=failure_mode, timeout=timeout,
            strategy=strategy, backend=backend, vault=vault, store=store,
        )
        cfg = _configured(self.config, settings)
        graph = self._build()  # fresh: tools re-registered in a notebook cell are picked up
        self._graph, self._graph_key = graph, self._version
        subscribers = subscribers_of(on_event)
        check_vault(settings.get("vault", self.vault))
        depth = _RUN_DEPTH.get()
        if live is None:
            live = (
                depth == 0
                and threading.current_thread() is threading.main_thread()
                and in_notebook()
            )
        view = None
        if live:
            from oktyv_nb.live import LiveView

            view = LiveView(graph, title=self.name, display=live if callable(live) else None)
            if view.active:
                subscribers.append(view)  # the view itself: its event_kinds apply
        reuse = reusable(graph, resume) if resume is not None else None
        return _RunPlan(
            graph=graph, config=cfg, backend=settings.get("backend", self.backend),
            vault=settings.get("vault", self.vault), subscribers=subscribers,
            reuse=reuse,
            reuse_maps=reusable_maps(graph, resume, reuse) if resume is not None else None,
            # the secrets the earlier run knew: its reused results are scrubbed like new ones
            secrets=frozenset(resume.outcome.redactor.secrets if resume is not None else ()),
            settings=settings, view=view,
            store=_store(settings["store"]) if "store" in settings else self.store,
        )

    async def _execute(self, plan: _RunPlan, engines: list[Engine] | None = None) -> Run:
        """Run a checked plan; ``engines`` receives the engine (for interrupts from outside
        the loop, see :meth:`run`)."""
        from oktyv_nb.results.run import Run

        holder: list[Engine] = [] if engines is None else engines
        token = _RUN_DEPTH.set(_RUN_DEPTH.get() + 1)
        subscribers, journal = plan.subscribers, None
        if plan.store is not None:
            journal = plan.store.journal(dag=self.name, vault=plan.vault)
            subscribers = [*journal.subscribers, *subscribers]
        try:
            outcome = await run_graph(
                plan.graph, plan.config, backend=plan.backend, vault=plan.vault,
                subscribers=subscribers, reuse=plan.reuse, reuse_maps=plan.reuse_maps,
                secrets=plan.secrets,
                started=holder.append, cache=plan.store,
            )
            if journal is not None:
                await journal.wait()  # committed: store.load(run.execution_id) works now
        except BaseException:
            if holder:
                self._keep_partial(holder[0], plan.settings)
            if plan.view is not None:
                plan.view.close(self.last_run if holder else None)
            raise
        finally:
            _RUN_DEPTH.reset(token)
        run = Run(outcome, dag=self, settings=plan.settings)
        self.last_run = run
        if plan.view is not None:
            plan.view.close(run)
        return run

    async def arun(
        self,
        *,
        max_concurrent: int = DEFAULT,  # type: ignore[assignment]
        failure_mode: str = DEFAULT,  # type: ignore[assignment]
        timeout: float | None = DEFAULT,  # type: ignore[assignment]
        strategy: str = DEFAULT,  # type: ignore[assignment]
        backend: Any = DEFAULT,
        vault: Mapping[str, Any] | None = DEFAULT,  # type: ignore[assignment]
        resume: Run | None = None,
        on_event: Subscriber | Sequence[Subscriber] | None = None,
        live: bool | Callable[..., Any] | None = None,
        store: RunStore | str | os.PathLike[str] | None = DEFAULT,  # type: ignore[assignment]
    ) -> Run:
        """Run the DAG on the running loop (``await dag.arun()``) and return its
        :class:`~oktyv_nb.results.run.Run`.

        Settings given here override the DAG's for this run; those not given are the DAG's
        (``timeout`` in seconds; ``timeout=None`` runs without the DAG's timeout).
        ``resume=run`` re-runs only the tasks that did not succeed in ``run`` (and those
        that depend on them, and tasks changed since), reusing its successful results.
        ``on_event`` is a callable ``fn(kind, record, time)`` (or a list of them) called
        with every engine event (:mod:`oktyv_nb.execution.events`; ``ok.EventLog()`` keeps
        them). ``live`` shows the graph and a progress bar updating in the notebook
        (default: on in Jupyter, off elsewhere and in nested runs); ``live=callable`` hands
        it each frame instead (``live=print`` prints a progress line per frame in a script).
        The run is kept as :attr:`last_run`, the partial run too when interrupted (cancelled
        task, ``KeyboardInterrupt``). ``store`` (an ``ok.RunStore`` or its path; default the
        DAG's) journals the run and serves the cache; ``resume`` may be a run loaded from a
        store (``store.latest(dag)``), in this process or after a crash.
        """
        engines: list[Engine] = []
        try:
            with run_heap():  # the collector paused until the engine starts
                plan = self._plan(max_concurrent, failure_mode, timeout, strategy, backend,
                                  vault, resume, on_event, live, store=store)
                return await self._execute(plan, engines)
        except asyncio.CancelledError:
            note = self._partial_note(engines)
            if note is None:
                raise
        __tracebackhide__ = True  # IPython hides this frame
        raise asyncio.CancelledError(note) from None

    def _partial_note(self, engines: list[Engine]) -> str | None:
        """The one-line note about the interrupted run kept as :attr:`last_run`, if that
        run is the one ``engines`` ran."""
        partial = self.last_run
        if partial is None or not engines or partial.outcome is not engines[0].outcome:
            return None
        out = partial.outcome
        return interrupted_note(out.records.values(),
                                (out.perf_end or time.perf_counter()) - out.perf_start)

    def _keep_partial(self, engine: Engine, settings: dict[str, Any]) -> None:
        """Make an interrupted run's records available as :attr:`last_run`."""
        from oktyv_nb.results.run import Run

        outcome = engine.outcome
        if outcome is None:
            return
        if outcome.perf_end is None:
            outcome.perf_end = time.perf_counter()
        if self.last_run is None or self.last_run.outcome is not outcome:
            self.last_run = Run(outcome, dag=self, settings=settings)

    def run(
        self,
        *,
        max_concurrent: int = DEFAULT,  # type: ignore[assignment]
        failure_mode: str = DEFAULT,  # type: ignore[assignment]
        timeout: float | None = DEFAULT,  # type: ignore[assignment]
        strategy: str = DEFAULT,  # type: ignore[assignment]
        backend: Any = DEFAULT,
        vault: Mapping[str, Any] | None = DEFAULT,  # type: ignore[assignment]
        resume: Run | None = None,
        on_event: Subscriber | Sequence[Subscriber] | None = None,
        live: bool | Callable[..., Any] | None = None,
        store: RunStore | str | os.PathLike[str] | None = DEFAULT,  # type: ignore[assignment]
    ) -> Run:
        """Run the DAG and return its :class:`~oktyv_nb.results.run.Run`; same settings as
        :meth:`arun`.

        Works in a plain script and inside Jupyter, where the kernel's loop is already
        running (``nest-asyncio2`` is applied to that loop then, and only then; async tools
        run on it). From a sync tool (a worker thread) it runs on a loop of its own. The DAG
        and the settings are checked first, so a bad one raises from the caller's line. On
        Jupyter's stop button or Ctrl-C, running tasks are recorded ``CANCELLED``, the rest
        skipped, the partial run is kept as :attr:`last_run`, and the interrupt propagates.
        """
        engines: list[Engine] = []
        settings: dict[str, Any] = {}

        def on_interrupt() -> None:
            if engines:
                engines[0].interrupt()
                self._keep_partial(engines[0], settings)

        try:
            with run_heap():  # the collector paused until the engine starts
                plan = self._plan(max_concurrent, failure_mode, timeout, strategy, backend,
                                  vault, resume, on_event, live, store=store)
                settings = plan.settings
                return run_sync(self._execute(plan, engines), on_interrupt=on_interrupt)
        except KeyboardInterrupt as exc:
            note = None if isinstance(exc, RunInterrupted) else self._partial_note(engines)
            if note is None:
                raise
        # Out of the handler: the interrupt's trace through the event loop is not the
        # user's business; what the partial run holds and where it is, is.
        __tracebackhide__ = True  # IPython hides this frame
        raise RunInterrupted(note) from None

    def sweep(
        self,
        max_concurrent: Sequence[int] = (1, 2, 4, 8),
        *,
        repeat: int = 1,
        progress: bool | Callable[[str], Any] | None = None,
        **kwargs: Any,
    ) -> pd.DataFrame:
        """Run once per ``max_concurrent`` setting (``repeat`` times each), for Amdahl's law.

        One row per run: ``max_concurrent``, ``repeat``, ``makespan_s``, ``work_s``,
        ``speedup`` (work / makespan), ``relative_speedup`` (mean makespan of the first
        setting / this makespan), ``efficiency``, ``critical_path_s``, ``lower_bound_s``,
        ``bound_ratio``, ``avg_parallelism``, ``status``. Seconds. Other keyword arguments
        go to :meth:`run` (``live`` is off unless given).

        ``progress`` shows which setting runs, of how many, and that run's progress line
        (:class:`oktyv_nb.live.SweepProgress`): by default one line updated in place in
        Jupyter and nothing in a script; ``True`` prints a line per run in a script too,
        ``False`` shows nothing, a callable gets each line of text.
        """
        from oktyv_nb.live import SweepProgress
        from oktyv_nb.results.frame import sweep_frame

        shown = SweepProgress(_sweep_settings(max_concurrent, repeat), repeat, self.name,
                              progress)
        runs: list[tuple[int, int, Run]] = []
        try:
            for mc, r, options in _sweep_plan(shown, kwargs):
                runs.append((mc, r, self.run(max_concurrent=mc, **options)))
        finally:
            shown.finish(len(runs))
        return sweep_frame(runs)

    async def asweep(
        self,
        max_concurrent: Sequence[int] = (1, 2, 4, 8),
        *,
        repeat: int = 1,
        progress: bool | Callable[[str], Any] | None = None,
        **kwargs: Any,
    ) -> pd.DataFrame:
        """:meth:`sweep` on the running loop (``await dag.asweep(...)``)."""
        from oktyv_nb.live import SweepProgress
        from oktyv_nb.results.frame import sweep_frame

        shown = SweepProgress(_sweep_settings(max_concurrent, repeat), repeat, self.name,
                              progress)
        runs: list[tuple[int, int, Run]] = []
        try:
            for mc, r, options in _sweep_plan(shown, kwargs):
                runs.append((mc, r, await self.arun(max_concurrent=mc, **options)))
        finally:
            shown.finish(len(runs))
        return sweep_frame(runs)

    # ------------------------------------------------------------------ pictures
    def graph(self, **options: Any) -> graphviz.Digraph:
        """The levelled graph as a ``graphviz.Digraph`` (see
        :func:`oktyv_nb.render.build_digraph`)."""
        from oktyv_nb.results.display.render import build_digraph

        return build_digraph(self.validate(), title=self.name, **options)

    def to_svg(self, **options: Any) -> str:
        """SVG text of :meth:`graph`; raises ``ok.GraphvizNotFound`` without ``dot``."""
        from oktyv_nb.results.display.render import to_svg

        return to_svg(self.graph(**options))

    def save_graph(self, path: Any, **options: Any) -> Any:
        """Write the graph to ``path`` (``.svg`` or ``.png`` by suffix); returns the path."""
        from oktyv_nb.results.display.render import save_graph

        return save_graph(self.graph(**options), path)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        text = str(self)
        try:
            graph = self.validate()
        except ValueError as exc:
            return {
                "text/plain": text,
                "text/html": f"<pre>{escape(text)}</pre>"
                f"<p style='color:{STATUS_STYLE['failed'][1]}'><b>{type(exc).__name__}</b>: "
                f"{escape(str(exc))}</p>",
            }

        if len(graph) > GRAPH_LIMIT:  # dot would take long: the outline, and how to draw it
            note = (f"{plural(len(graph), 'task')}: call dag.graph() or dag.save_graph(path) "
                    "to draw it")
            return {"text/plain": f"{text}\n{note}",
                    "text/html": f"<pre>{escape(text)}</pre><p>{escape(note)}</p>"}
        from oktyv_nb.results.display.render import build_digraph, mimebundle

        bundle = mimebundle(build_digraph(graph, title=self.name))
        fallback = bundle.get("text/plain")  # no `dot`: the DOT text and the install hint
        bundle["text/plain"] = f"{text}\n{fallback}" if fallback else text
        return bundle

    def __repr__(self) -> str:

        name = f" {self.name!r}" if self.name else ""
        try:
            levels = f", {plural(len(self.validate().levels), 'level')}"
        except ValueError as exc:
            levels = f", invalid: {type(exc).__name__}"
        return (
            f"<DAG{name}: {plural(len(self.specs), 'task')}{levels}, "
            f"max_concurrent={self.config.max_concurrent}>"
        )

    def __str__(self) -> str:
        """A readable outline: the tasks level by level, with tools and dependencies."""
        lines = [repr(self)]
        try:
            graph = self.validate()
        except ValueError as exc:
            lines.append(f"  {type(exc).__name__}: {exc}")
            groups = [("tasks", list(self.specs))]
            deps = {tid: tuple(s.depends_on or ()) for tid, s in self.specs.items()}
        else:
            groups = [(f"level {k}", level) for k, level in enumerate(graph.levels)]
            deps = {tid: n.deps for tid, n in graph.nodes.items()}
        shown = 0
        for head, level in groups:
            lines.append(f"  {head}:")
            for tid in level:
                if shown == 50:
                    lines.append(f"    ... {len(self.specs) - shown} more")
                    return "\n".join(lines)
                spec = self.specs[tid]
                after = f" <- {', '.join(deps[tid])}" if deps[tid] else ""
                lines.append(f"    {tid} ({spec.tool}){after}")
                shown += 1
        return "\n".join(lines)


#: The options of :meth:`DAG.task` (``after``, ``priority``, ``timeout``...): a tool parameter
#: of one of these names goes in ``task()``'s positional params dict.
TASK_OPTIONS: frozenset[str] = frozenset(
    name for method in (DAG.task, DAG.map)
    for name, p in inspect.signature(method).parameters.items()
    if p.kind is p.KEYWORD_ONLY
)
_MAP_OPTIONS = frozenset(("over", "param", "max_concurrent"))


def interrupted_note(records: Iterable[TaskRecord], elapsed_s: float) -> str:
    """One line about an interrupted run: what its records hold and where the run is kept."""
    counts: dict[str, int] = {}
    total = 0
    for rec in records:
        total += 1
        key = rec.status
        if key == "failed" and rec.error is not None and rec.error.code == CANCELLED:
            key = "cancelled"
        counts[key] = counts.get(key, 0) + 1
    words = {"success": "succeeded", "failed": "failed", "cancelled": "cancelled while running",
             "skipped": "skipped"}
    parts = [f"{counts[k]} {w}" for k, w in words.items() if counts.get(k)]
    return (f"run interrupted after {format_seconds(elapsed_s)}: {', '.join(parts)} of "
            f"{plural(total, 'task')}; the partial run is dag.last_run")
_OPENED: weakref.WeakValueDictionary[str, RunStore] = weakref.WeakValueDictionary()


def _map_spec(task_id: str, over: Any, param: Any, max_concurrent: Any) -> MapSpec:
    """The :class:`MapSpec` of :meth:`DAG.map`'s options, or an error naming the fix."""
    if isinstance(over, str):
        over_value: str | list[Any] = over
    elif isinstance(over, (list, tuple)):
        over_value = list(over)
    else:
        raise InvalidOptionError(
            f"Task {task_id}: over must be a reference to a list ('${{list.result}}') or a "
            f"list, got {type(over).__name__}", option="over", task_id=task_id,
        )
    if not isinstance(param, str) or not param:
        raise InvalidOptionError(
            f"Task {task_id}: param must name the tool parameter that gets each element, got "
            f"{param!r}", option="param", task_id=task_id,
        )
    if max_concurrent is not None and (
        isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int)
        or max_concurrent < 1
    ):
        raise InvalidOptionError(
            f"Task {task_id}: max_concurrent must be an int >= 1 (or None), got "
            f"{max_concurrent!r}", option="max_concurrent", task_id=task_id,
        )
    try:
        return MapSpec(over=over_value, param=param, max_concurrent=max_concurrent)
    except ValueError as exc:  # pydantic: over is a string but not one reference
        raise InvalidOptionError(
            f"Task {task_id}: over must be one reference like '${{list.result}}' or a list, "
            f"got {over!r}", option="over", task_id=task_id,
        ) from exc


def _store(store: Any) -> RunStore | None:
    """A ``store=`` setting: a RunStore, a path to open one at, or None."""
    if store is None or isinstance(store, RunStore):
        return store
    if isinstance(store, (str, os.PathLike)):
        key = os.path.abspath(os.fspath(store)) if os.fspath(store) != ":memory:" else None
        opened = _OPENED.get(key) if key is not None else None
        if opened is None:
            opened = RunStore(store)
            if key is not None:
                _OPENED[key] = opened
        return opened
    raise InvalidOptionError(
        f"store must be an ok.RunStore or the path of one, got {type(store).__name__}",
        option="store",
    )


def _cache_spec(cache: Any, task_id: str) -> bool | CacheSpec | None:
    """A task's ``cache=`` option as the request's field: True, ``{"expire": s}`` or None."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return True
    if isinstance(cache, CacheSpec):
        return cache.model_copy() if cache.expire is not None else True
    if isinstance(cache, Cache):
        return True if cache.expire is None else CacheSpec(expire=cache.expire)
    raise InvalidOptionError(
        f"Task {task_id}: cache must be True, False or ok.Cache(expire=seconds), got "
        f"{cache!r}", option="cache",
    )


def _copy(spec: Any) -> Any:
    try:
        return spec.model_copy(deep=True)
    except Exception:  # params holding objects that cannot be deep-copied (locks, clients)
        return spec.model_copy()


def _sweep_plan(
    shown: SweepProgress, kwargs: dict[str, Any]
) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """The runs of a sweep in order: ``(max_concurrent, repeat index, run options)``, each
    announced to ``shown`` before it runs."""
    n = 0
    for mc in shown.settings:
        for r in range(shown.repeat):
            live = shown.start(n, mc, r)
            yield mc, r, {"live": live if live is not None else False, **kwargs}
            n += 1


def _sweep_settings(max_concurrent: Sequence[int] | int, repeat: int) -> list[int]:
    values = [max_concurrent] if isinstance(max_concurrent, int) else list(max_concurrent)
    if not values:
        raise InvalidOptionError(
            "sweep needs at least one max_concurrent setting, e.g. [1, 2, 4, 8]",
            option="max_concurrent",
        )
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise InvalidOptionError(f"sweep repeat must be an int >= 1, got {repeat!r}")
    return values
