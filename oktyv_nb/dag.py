"""The fluent builder: ``ok.DAG(...).task(...).task(...)`` (SPEC §2).

A :class:`DAG` holds task specs (the request's own model) and a registry of the callables
given to it, so ``to_request()`` / ``from_request()`` convert both ways without loss. Times
in the builder are **seconds**; the request keeps milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .api import RequestLike, arun_graph, parse_request
from .engine import Engine, RunConfig
from .errors import DuplicateTaskError
from .events import Subscriber
from .graph import Graph, RetryPolicy, build_graph
from .jupyter import in_notebook, run_sync
from .models import (
    ExecutionConfig,
    ExecutionRequest,
    RetryPolicyModel,
    RollbackSpec,
    TaskSpec,
)
from .registry import ToolRegistry, default_registry, resolve_tools
from .tools import BUILTIN_TOOLS

if TYPE_CHECKING:
    import graphviz
    import pandas as pd

    from .run import Run

__all__ = ["DAG", "Rollback"]

Tool = Callable[..., Any] | str


@dataclass(frozen=True)
class Rollback:
    """A compensating call: ``ok.Rollback(tool, **params)``; params may reference
    ``${<the task itself>.result...}``."""

    tool: Tool
    params: dict[str, Any] = field(default_factory=dict)

    def __init__(self, tool: Tool, /, **params: Any) -> None:
        object.__setattr__(self, "tool", tool)
        object.__setattr__(self, "params", params)


def _seconds_to_ms(value: float | None, what: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{what} must be a number of seconds > 0, got {value!r}")
    return float(value) * 1000.0


class DAG:
    """A DAG of tasks built fluently; every builder method returns the DAG.

    ``max_concurrent`` bounds tasks running at once; ``failure_mode`` is ``continue``,
    ``stop`` or ``rollback``; ``timeout`` bounds the whole run (seconds); ``strategy`` is
    ``dependencies`` (default) or ``levels``; ``backend`` says where tools run.
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
    ) -> None:
        self.name = name
        self.config = RunConfig(max_concurrent, failure_mode, timeout, strategy)  # type: ignore[arg-type]
        self.backend = backend
        self.vault = vault
        self.tools = ToolRegistry(tools)
        self.specs: dict[str, TaskSpec] = {}
        self.last_run: Run | None = None
        self._graph: Graph | None = None

    # ------------------------------------------------------------------ building
    def task(
        self,
        id: str,  # noqa: A002 - the SPEC's name
        tool: Tool,
        *,
        after: Sequence[str] | str | None = None,
        priority: int | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        retry: RetryPolicy | None = None,
        rollback: Rollback | tuple[Tool, Mapping[str, Any]] | Mapping[str, Any] | None = None,
        vault: str | None = None,
        trigger: str | None = None,
        **params: Any,
    ) -> DAG:
        """Add task ``id`` calling ``tool(**params)``.

        ``after`` adds explicit dependencies (``${ref}`` params add theirs implicitly);
        ``timeout`` is seconds per attempt; ``retries=N`` allows N more attempts with
        exponential backoff from 1 s, ``retry=ok.RetryPolicy(...)`` gives full control;
        ``trigger`` is ``all_success`` (default) or ``all_done``.
        """
        if id in self.specs:
            raise DuplicateTaskError(id)
        if retries is not None and retry is not None:
            raise ValueError(f"Task {id}: give retries=N or retry=RetryPolicy(...), not both")
        policy = None
        if retries is not None:
            if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
                raise ValueError(f"Task {id}: retries must be an int >= 0, got {retries!r}")
            policy = RetryPolicyModel(max_attempts=retries + 1, backoff="exponential",
                                      initial_delay=1000.0)
        elif retry is not None:
            if not isinstance(retry, RetryPolicy):
                raise TypeError(f"Task {id}: retry must be an ok.RetryPolicy, got {retry!r}")
            policy = RetryPolicyModel(max_attempts=retry.max_attempts, backoff=retry.backoff,  # type: ignore[arg-type]
                                      initial_delay=retry.initial_delay * 1000.0)
        if isinstance(after, str):
            after = [after]
        spec = TaskSpec(
            id=id,
            tool=self._tool_name(tool, id),
            params=params,
            depends_on=list(after) if after else None,
            priority=priority,
            timeout=_seconds_to_ms(timeout, f"Task {id}: timeout"),
            vault=vault,
            retry_policy=policy,
            rollback=self._rollback(rollback, id),
            run_if=trigger,  # type: ignore[arg-type]
        )
        self.specs[id] = spec
        self._graph = None
        return self

    def remove(self, task_id: str) -> DAG:
        """Remove a task (tasks that depend on it will fail validation until fixed)."""
        del self.specs[task_id]
        self._graph = None
        return self

    def _tool_name(self, tool: Tool, task_id: str) -> str:
        if isinstance(tool, str):
            if not tool:
                raise ValueError(f"Task {task_id}: tool name must not be empty")
            return tool
        if not callable(tool):
            raise TypeError(
                f"Task {task_id}: tool must be a callable or a registered tool name, "
                f"got {type(tool).__name__}"
            )
        for registry in (self.tools, default_registry, BUILTIN_TOOLS):
            for name, fn in registry.items():
                if fn is tool:
                    return name
        base = getattr(tool, "__name__", None) or type(tool).__name__
        if not base.isidentifier():  # <lambda>
            base = f"{task_id}_tool"
        name, n = base, 2
        while name in self.tools or name in BUILTIN_TOOLS or name in default_registry:
            name = f"{base}_{n}"
            n += 1
        self.tools[name] = tool
        return name

    def _rollback(self, rollback: Any, task_id: str) -> RollbackSpec | None:
        if rollback is None:
            return None
        if isinstance(rollback, Rollback):
            tool, params = rollback.tool, rollback.params
        elif isinstance(rollback, RollbackSpec):
            return rollback
        elif isinstance(rollback, Mapping):
            tool, params = rollback["tool"], rollback.get("params", {})
        elif isinstance(rollback, tuple) and len(rollback) == 2:
            tool, params = rollback
        else:
            raise TypeError(
                f"Task {task_id}: rollback must be ok.Rollback(tool, **params), "
                f"(tool, params) or {{'tool': ..., 'params': {{...}}}}, got {rollback!r}"
            )
        return RollbackSpec(tool=self._tool_name(tool, task_id), params=dict(params))

    # ------------------------------------------------------------------ conversions
    def to_request(self) -> ExecutionRequest:
        """The JSON request (SPEC §3) of this DAG; ``.model_dump(by_alias=True)`` for a dict."""
        c = self.config
        return ExecutionRequest(
            tasks=[s.model_copy(deep=True) for s in self.specs.values()],
            config=ExecutionConfig(
                max_concurrent=c.max_concurrent,
                failure_mode=c.failure_mode,
                timeout=c.timeout * 1000.0 if c.timeout is not None else None,
            ),
        )

    @classmethod
    def from_request(
        cls,
        request: RequestLike,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        *,
        name: str | None = None,
        **config: Any,
    ) -> DAG:
        """A DAG equal to ``request``; ``tools`` maps its tool names to callables."""
        model = parse_request(request)
        c = model.config
        settings: dict[str, Any] = {
            "max_concurrent": c.max_concurrent,
            "failure_mode": c.failure_mode or "continue",
            "timeout": c.timeout / 1000.0 if c.timeout is not None else None,
        }
        settings.update(config)
        dag = cls(name, tools=tools, **settings)
        for spec in model.tasks:
            if spec.id in dag.specs:
                raise DuplicateTaskError(spec.id)
            dag.specs[spec.id] = spec.model_copy(deep=True)
        return dag

    def copy(self) -> DAG:
        """An independent copy (same tools)."""
        new = DAG.from_request(self.to_request(), self.tools, name=self.name)
        new.config = self.config
        new.backend = self.backend
        new.vault = self.vault
        return new

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DAG):
            return NotImplemented
        return (
            self.to_request() == other.to_request()
            and self.config == other.config
        )

    __hash__ = None  # type: ignore[assignment]

    # ------------------------------------------------------------------ inspection
    def validate(self) -> Graph:
        """Check the DAG (SPEC §4) and return its graph; raises an OktyvError."""
        if self._graph is None:
            self._graph = build_graph(self.to_request_fast(), resolve_tools(self.tools))
        return self._graph

    def to_request_fast(self) -> ExecutionRequest:
        return ExecutionRequest.model_construct(tasks=list(self.specs.values()))

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

    def __iter__(self) -> Iterable[str]:  # type: ignore[override]
        return iter(self.specs)

    # ------------------------------------------------------------------ running
    def _run_args(
        self, overrides: dict[str, Any]
    ) -> tuple[RunConfig, Any, Any]:
        c = self.config
        cfg = RunConfig(
            max_concurrent=overrides.pop("max_concurrent", None) or c.max_concurrent,
            failure_mode=overrides.pop("failure_mode", None) or c.failure_mode,
            timeout=overrides.pop("timeout", c.timeout),
            strategy=overrides.pop("strategy", None) or c.strategy,
        )
        backend = overrides.pop("backend", None) or self.backend
        vault = overrides.pop("vault", None) or self.vault
        return cfg, backend, vault

    async def arun(
        self,
        *,
        max_concurrent: int | None = None,
        failure_mode: str | None = None,
        timeout: float | None = None,
        strategy: str | None = None,
        backend: Any = None,
        vault: Mapping[str, Any] | None = None,
        resume: Run | None = None,
        on_event: Subscriber | Sequence[Subscriber] | None = None,
        live: bool | None = None,
        _engine_hook: Callable[[Engine], None] | None = None,
    ) -> Run:
        """Run the DAG on the running loop; settings given here override the DAG's.

        ``resume=run`` re-runs only the tasks that did not succeed in ``run``, reusing its
        successful results. ``live`` shows the graph and a progress bar updating in a
        notebook (default: on inside Jupyter). The run is kept as :attr:`last_run`, even
        when interrupted.
        """
        from .run import Run

        graph = self.validate()
        overrides = {
            "max_concurrent": max_concurrent, "failure_mode": failure_mode,
            "strategy": strategy, "backend": backend, "vault": vault,
        }
        if timeout is not None:
            overrides["timeout"] = timeout
        cfg, be, vlt = self._run_args(overrides)
        subscribers: list[Subscriber] = []
        if on_event is not None:
            subscribers.extend([on_event] if callable(on_event) else on_event)
        view = None
        if live or (live is None and in_notebook()):
            from .live import LiveView

            view = LiveView(graph, title=self.name)
            subscribers.append(view)
        reuse = None
        if resume is not None:
            reuse = {
                tid: rec for tid, rec in resume.outcome.records.items()
                if rec.status == "success" and tid in graph.nodes
            }
        holder: list[Engine] = []

        def started(engine: Engine) -> None:
            holder.append(engine)
            if _engine_hook is not None:
                _engine_hook(engine)

        try:
            outcome = await arun_graph(
                graph, cfg, backend=be, vault=vlt, subscribers=subscribers, reuse=reuse,
                on_start=started,
            )
        except BaseException:
            if holder and holder[0].outcome is not None:
                self.last_run = Run(holder[0].outcome, dag=self)
            if view is not None:
                view.close()
            raise
        run = Run(outcome, dag=self)
        self.last_run = run
        if view is not None:
            view.close(run)
        return run

    def run(self, **kwargs: Any) -> Run:
        """Run the DAG and return its :class:`~oktyv_nb.run.Run`.

        Works in a plain script and inside Jupyter, where the kernel's loop is already
        running (``nest-asyncio2`` is applied to it then, and only then). Same settings as
        :meth:`arun`.
        """
        holder: list[Engine] = []
        hook = kwargs.pop("_engine_hook", None)

        def capture(engine: Engine) -> None:
            holder.append(engine)
            if hook is not None:
                hook(engine)

        def on_interrupt() -> None:
            from .run import Run

            if holder:
                holder[0].interrupt()
                if holder[0].outcome is not None:
                    self.last_run = Run(holder[0].outcome, dag=self)

        return run_sync(self.arun(**kwargs, _engine_hook=capture), on_interrupt=on_interrupt)

    def sweep(
        self, max_concurrent: Sequence[int] = (1, 2, 4, 8), *, repeat: int = 1, **kwargs: Any
    ) -> pd.DataFrame:
        """Run once per ``max_concurrent`` setting (``repeat`` times each); one row per run
        with makespan, work, speedup and efficiency (for Amdahl's law)."""
        import pandas as pd

        rows = []
        for mc in max_concurrent:
            for r in range(repeat):
                run = self.run(max_concurrent=mc, live=False, **kwargs)
                st = run.stats
                rows.append({
                    "max_concurrent": mc, "repeat": r, "makespan_s": st.makespan_s,
                    "work_s": st.work_s, "speedup": st.speedup, "efficiency": st.efficiency,
                    "lower_bound_s": st.lower_bound_s, "bound_ratio": st.bound_ratio,
                    "status": run.status,
                })
        return pd.DataFrame(rows)

    # ------------------------------------------------------------------ pictures
    def graph(self, **options: Any) -> graphviz.Digraph:
        """The levelled graph as a ``graphviz.Digraph`` (see :func:`oktyv_nb.render.build_digraph`)."""
        from .render import build_digraph

        return build_digraph(self.validate(), title=self.name, **options)

    def to_svg(self, **options: Any) -> str:
        """SVG text of :meth:`graph`; raises ok.GraphvizNotFound without ``dot``."""
        from .render import to_svg

        return to_svg(self.graph(**options))

    def save_graph(self, path: Any, **options: Any) -> Any:
        """Write the graph to ``path`` (``.svg`` or ``.png`` by suffix); returns the path."""
        from .render import save_graph

        return save_graph(self.graph(**options), path)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from .render import mimebundle

        try:
            graph = self.validate()
        except ValueError as exc:
            text = f"{self!r}\ninvalid: {exc}"
            return {"text/plain": text}
        from .render import build_digraph

        bundle = mimebundle(build_digraph(graph, title=self.name))
        bundle["text/plain"] = repr(self)
        return bundle

    def __repr__(self) -> str:
        name = f" {self.name!r}" if self.name else ""
        try:
            levels = f", {len(self.validate().levels)} levels"
        except ValueError as exc:
            levels = f", invalid: {type(exc).__name__}"
        return f"<DAG{name}: {len(self.specs)} tasks{levels}, max_concurrent={self.config.max_concurrent}>"
