"""The scheduler: runs a validated :class:`~oktyv_nb.model.graph.Graph` on an asyncio loop.

Constant state (set when the :class:`Engine` is made):

``graph``, ``config``
    the validated graph and the run settings (:class:`~oktyv_nb.execution.outcome.RunConfig`).
``backend``
    where sync tools (and, on some backends, every tool) run: the seam of
    :mod:`oktyv_nb.execution.backends`. ``on_loop`` is true when async tools run on the
    engine's own loop, in :class:`~oktyv_nb.execution.engine.loop_workers.LoopWorkers`.
``vault``, ``reuse``
    the run's secret sets, and the records of an earlier run to reuse (``resume``); the
    ``secrets`` that earlier run knew seed the run's :class:`~oktyv_nb.model.vault.Redactor`,
    so that a reused result is scrubbed like the run's own.
    the run's secret sets, and the records of an earlier run to reuse (``resume``).
``cache``
    the result cache (:mod:`oktyv_nb.execution.cache`; the run store) or None. A task with a
    ``cache`` setting is looked up before its first attempt: a hit finishes it ``success``
    with ``cached`` true, no attempt and no call, without taking a concurrency slot.

Changing state (all of it touched only on the loop's thread):

``records``
    one :class:`~oktyv_nb.execution.records.TaskRecord` per task, in graph order. A record
    leaves ``pending`` exactly once for a final status; :meth:`Engine._finish` (and its fast
    path :meth:`Engine._succeed`) is the only place that counts it (``nfinished``), so every
    task ends with exactly one record. ``succeeded`` lists the successes in completion
    order (for rollback); ``any_failed`` says whether a task failed.
``remaining``
    per task, how many dependencies have not finished yet. At zero the task is *ready*.
``ready``
    a heap of ready tasks keyed ``(-priority, -chain, index)``: higher priority first, then
    the task with the longest chain of dependents behind it, then insertion order.
``running``
    the attempts now holding a concurrency slot (``len(running) <= max_concurrent``), as a
    dict used as an ordered set. A task waiting out a retry backoff holds no slot: it sits
    in ``backoff`` with a timer.
``gate``
    with ``strategy="levels"``, a :class:`LevelGate` holding back ready tasks of later
    levels until every task of the earlier levels has finished (the original design's
    level-by-level schedule); None otherwise.
``stopping``
    None while new attempts may start; otherwise the code given to tasks that never start:
    ``RUN_STOPPED`` (stop/rollback mode after a failure), ``EXECUTION_TIMEOUT`` (whole-run
    timeout) or ``CANCELLED`` (interrupt).
``starting``
    True while :meth:`Engine._fill_slots` starts ready tasks (a task that fails while
    starting calls back into it; the outer loop goes on).
``lookup``, ``nodes``, ``maps``, ``total``
    every record and node by id. Until a mapped task expands they are the request's own
    (``records`` and ``graph.nodes``); its expansion copies them once and adds one child
    node and record per element (``fetch[i]``; :meth:`TaskNode.child`), and raises
    ``total`` by the number of children. ``maps`` holds per expanded map a
    :class:`MapRun`: how many children have no final record yet, and the
    :class:`~oktyv_nb.execution.limits.Limit` of its ``max_concurrent``. A child has no
    dependencies and no dependents: its final record goes to :meth:`Engine._child_done`,
    and the last one finishes the map (:meth:`Engine._map_done`), which then releases or
    skips the map's dependents as any task does.
``pools``
    the run's :class:`~oktyv_nb.execution.limits.Limit` per pool or rate name. A ready task
    of a pool or a map is *admitted* when it is popped: when one of its limits is full or
    out of tokens it waits in that limit's own heap, holding no run slot; an attempt that
    ends hands one waiting task back to ``ready``, and a rated pool's timer does when its
    bucket refills.

Example: ``a -> c, b -> c`` with ``max_concurrent=1``. ``remaining = {a: 0, b: 0, c: 2}``,
``ready = [a, b]``; ``a`` starts (``running = {a}``); when it succeeds, ``remaining[c] = 1``
and ``b`` starts; when ``b`` succeeds ``c`` is ready and starts; its success makes
``nfinished == 3`` and the run's ``done`` future resolves.

Flow: a finished attempt either schedules a retry or finishes its task; finishing a task
decrements its dependents' ``remaining`` (or skips them when it did not succeed and they need
all their dependencies to succeed), then :meth:`Engine._fill_slots` starts ready tasks while
slots are free. A call gets its params with ``${ref}`` resolved and, when the task names a
``vault`` set, that set as the keyword argument ``credentials``
(:mod:`~oktyv_nb.execution.engine.calls`). A failure before the call (a reference that cannot
be resolved, a missing vault set) is never retried.

Stopping: after a failure in ``stop``/``rollback`` mode running attempts finish, tasks
waiting to retry (out a backoff, or ready again and waiting for a slot) fail with their last
error and the rest are skipped ``RUN_STOPPED``;
in ``rollback`` mode :func:`~oktyv_nb.execution.engine.rollback.compensate` runs next. A
whole-run timeout or an interrupt (:meth:`Engine.interrupt`, cancellation of
:meth:`Engine.run`, ``KeyboardInterrupt``) halts at once: running attempts and tasks waiting
to retry fail with ``EXECUTION_TIMEOUT``/``CANCELLED``, everything else is skipped with that
code. A sync tool's thread cannot be killed: its late outcome is dropped and the run does not
wait for it. An async tool is cancelled; one that ignores the cancellation is given
:data:`~oktyv_nb.execution.engine.loop_workers.CANCEL_GRACE` seconds (from its timeout, or
the run's end) and then abandoned: listed in the outcome's ``abandoned``, reported with a
``RuntimeWarning`` and let go, so that neither the run nor the loop's shutdown waits for it.
An error inside the engine's own callbacks ends the run the same way and is re-raised by
:meth:`Engine.run`; it never leaves the run hanging.

Times are ``time.perf_counter()`` seconds; ``timeout`` values are seconds.

Size: about 800 lines, because the state machine is kept whole: every transition reads and
writes the state described above, and reading them side by side is the point. The concerns
around it live next door (:mod:`.loop_workers`, :mod:`.calls`, :mod:`.rollback`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from oktyv_nb.errors import (
    CANCELLED,
    DEPENDENCY_FAILED,
    EXECUTION_TIMEOUT,
    MAP_CHILD_FAILED,
    MAP_LIMIT,
    MAP_NOT_A_LIST,
    MAP_TOO_LARGE,
    RUN_STOPPED,
    TASK_TIMEOUT,
    OktyvException,
)
from oktyv_nb.execution.backends import Backend, get_backend
from oktyv_nb.execution.cache import ResultCache, cache_key
from oktyv_nb.execution.capture import Captured, install, take_output
from oktyv_nb.execution.engine.calls import RecordView, call_kwargs, redacted
from oktyv_nb.execution.engine.loop_workers import (
    CANCEL_GRACE,
    LOOP_WORKER,
    LoopWorkers,
    let_go,
)
from oktyv_nb.execution.engine.rollback import compensate
from oktyv_nb.execution.events import EventBus, EventKind
from oktyv_nb.execution.limits import Limit, check_pools, parse_rate
from oktyv_nb.execution.outcome import RunConfig, RunOutcome
from oktyv_nb.execution.records import (
    FAILED,
    FINAL,
    PENDING,
    READY,
    RETRYING,
    RUNNING,
    SKIPPED,
    SUCCESS,
    AttemptSpan,
    ErrorInfo,
    NotStored,
    TaskRecord,
    error_from_exception,
)
from oktyv_nb.model.graph import Graph, TaskNode
from oktyv_nb.model.variables import resolve
from oktyv_nb.model.vault import Redactor

__all__ = ["Engine", "LevelGate"]

perf = time.perf_counter


_UNWRAP: Any = object()  # _attempt_done: the call's output, if any, travels with its value


class _Timeout(Exception):
    code = TASK_TIMEOUT


class Attempt:
    """One call of a task's tool, holding one concurrency slot until closed."""

    __slots__ = (
        "closed", "engine", "handle", "kwargs", "limits", "node", "rec", "start", "task", "timer",
        "worker",
    )

    def __init__(
        self, engine: Engine, node: TaskNode, rec: TaskRecord, start: float,
        limits: tuple[Limit, ...] = (),
    ) -> None:
        self.engine = engine
        self.limits = limits  # the pools (and map bound) whose slots it holds
        self.node = node
        self.rec = rec
        self.start = start
        self.closed = False
        self.kwargs: dict[str, Any] | None = None
        self.task: asyncio.Task[Any] | None = None  # the loop worker awaiting the call
        self.handle: Any = None  # the backend's handle of the call
        self.timer: asyncio.TimerHandle | None = None  # the attempt's timeout
        self.worker: str | None = None  # where the call runs, when the backend says so early

    def __call__(
        self, ok: bool, value: Any, worker: str | None, cpu_s: float | None = None
    ) -> None:
        """The backend's ``done`` callback: report the call's outcome to the engine."""
        try:
            self.engine._attempt_done(self, ok, value, worker, cpu_s=cpu_s)
        except BaseException as exc:
            self.engine._crash(exc)


class LevelGate:
    """``strategy="levels"``: ready tasks of a later level wait until every task of the
    earlier levels has finished."""

    __slots__ = ("held", "left", "level")

    def __init__(self, graph: Graph) -> None:
        self.level = 0  # the level now running
        self.held: list[list[TaskNode]] = [[] for _ in graph.levels]  # per level, waiting
        self.left = [len(lv) for lv in graph.levels]  # per level, tasks not finished yet

    def holds(self, node: TaskNode) -> bool:
        """Keep ``node`` back when its level has not started yet (True: held)."""
        if node.level > self.level:
            self.held[node.level].append(node)
            return True
        return False

    def finished(self, level: int, ready: list[tuple[int, int, int, TaskNode]]) -> None:
        """A task of ``level`` finished: release the next levels into ``ready`` once theirs
        are all done."""
        self.left[level] -= 1
        while self.level < len(self.left) and self.left[self.level] == 0:
            self.level += 1
            if self.level < len(self.held):
                for node in self.held[self.level]:
                    heapq.heappush(ready, (-node.priority, -node.chain, node.index, node))
                self.held[self.level] = []


class Engine:
    """Runs one graph once. Use :meth:`run` (a coroutine) and read :attr:`outcome`."""

    def __init__(
        self,
        graph: Graph,
        config: RunConfig | None = None,
        *,
        backend: str | Backend | None = None,
        vault: Mapping[str, Any] | None = None,
        bus: EventBus | None = None,
        reuse: Mapping[str, TaskRecord] | None = None,
        secrets: Iterable[str] = (),
        cache: ResultCache | None = None,
        reuse_maps: Mapping[str, tuple[list[Any], list[TaskRecord]]] | None = None,
    ) -> None:
        self.graph = graph
        self.config = config = config or RunConfig()
        self.backend = get_backend(backend)
        self.on_loop = bool(getattr(self.backend, "runs_coroutines_on_loop", False))
        self.vault = vault
        self.bus = bus if bus is not None else EventBus()
        self.dispatch = self.bus.dispatch  # kind -> subscriber(s) or None, kept up to date
        self.reuse = reuse or {}
        self.reuse_maps = reuse_maps or {}
        self.cache = cache
        nodes = graph.nodes
        if config.pools or config.rates or any(n.pool is not None for n in nodes.values()):
            check_pools(graph, config.pools, config.rates)
        self.pools = {
            name: Limit(name, config.pools.get(name),
                        parse_rate(name, config.rates[name]) if name in config.rates else None)
            for name in {**config.pools, **config.rates}
        }
        self.records = {tid: TaskRecord(tid, n.tool, n.level) for tid, n in nodes.items()}
        # every record and node by id, a map's children included: the request's own until
        # a map expands (then copies that grow)
        self.lookup: dict[str, TaskRecord] = self.records
        self.nodes: dict[str, TaskNode] = nodes
        self.maps: dict[str, MapRun] = {}  # per expanded mapped task, its children's state
        self.next_index = len(nodes)  # ready-heap tie-break of the next child
        self.remaining = {tid: len(n.deps) for tid, n in nodes.items()}
        self.ready: list[tuple[int, int, int, TaskNode]] = []
        self.running: dict[Attempt, None] = {}
        self.backoff: dict[str, asyncio.TimerHandle] = {}
        self.gate = LevelGate(graph) if config.strategy == "levels" else None
        self.stopping: str | None = None
        self.starting = False
        self.nfinished = 0
        self.total = len(nodes)
        self.succeeded: list[TaskRecord] = []  # in completion order, for rollback
        self.any_failed = False
        self.abandoned: list[asyncio.Task[Any]] = []  # cancelled tasks to wait for at the end
        # per cancelled async call's task: the task id it ran and when it was cancelled
        self.cancelled_at: dict[asyncio.Task[Any], tuple[str, float]] = {}
        self.deadline: float | None = None  # perf-counter end of the whole-run timeout
        self.workers = LoopWorkers(self)
        self.redactor = Redactor(secrets)  # an earlier run's too: its reused results
        self.bus.redact = self.redactor.text
        self.bus.on_interrupt = self._subscriber_interrupt
        self.view = RecordView(self.records, self.redactor)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.done: asyncio.Future[None] | None = None
        self.outcome: RunOutcome | None = None
        self.perf_start = 0.0
        self.capture = config.capture
        self._captured: dict[Any, Any] = {}  # tool -> its Captured wrapper, for this run

    def call_fn(self, node: TaskNode) -> Any:
        """What a backend runs for ``node``'s attempts: its tool, or with capture on the tool
        wrapped so that its output comes back with its outcome (:mod:`..capture`). (Loop
        workers capture around their own calls.)"""
        if not self.capture:
            return node.fn
        fn = node.fn
        wrapped = self._captured.get(fn)
        if wrapped is None:
            wrapped = self._captured[fn] = Captured(fn)
        return wrapped

    # ------------------------------------------------------------------ public
    async def run(self) -> RunOutcome:
        """Run every task once (with retries); returns when each has its final record.

        On cancellation or KeyboardInterrupt the running tasks are recorded ``CANCELLED``,
        the rest skipped, :attr:`outcome` holds the partial run, and the interrupt propagates.
        """
        if self.done is not None:
            raise RuntimeError("an Engine runs its graph once; make a new Engine to run again")
        loop = self.loop = self.workers.loop = asyncio.get_running_loop()
        config = self.config
        sizer = getattr(self.backend, "size_for", None)  # workers it starts, for this run
        if sizer is not None:
            sizer(self.config.max_concurrent)
        if self.capture:
            install()  # the streams may have been swapped since the last run
        opener = getattr(self.backend, "aopen", None)  # e.g. a Dask cluster starting up:
        if opener is not None:  # before the clock starts, without blocking the loop
            await opener(loop)
        else:
            self.backend.open(loop)
        self.done = loop.create_future()
        self.perf_start = perf()
        if config.timeout is not None:
            self.deadline = self.perf_start + config.timeout
        self.outcome = self.view.outcome = RunOutcome(
            execution_id=str(uuid.uuid4()),
            graph=self.graph,
            config=self.config,
            records=self.records,
            perf_start=self.perf_start,
            wall_start=datetime.now(UTC),
            backend=getattr(self.backend, "name", type(self.backend).__name__),
            redactor=self.redactor,
        )
        timer = None
        try:
            self._emit("run_started", self.outcome)
            self._seed()
            self._fill_slots()
            self._maybe_done()
            if self.config.timeout is not None and not self.done.done():
                timer = loop.call_later(self.config.timeout, self._guarded, self._on_run_timeout)
            await asyncio.shield(self.done)
            self._raise_subscriber_interrupt()
            if self.config.failure_mode == "rollback" and self.any_failed:
                await compensate(self)
                self._raise_subscriber_interrupt()
        except GeneratorExit:  # the coroutine is being closed unfinished: nothing may await
            self.interrupt()
            raise
        except BaseException:  # cancelled, interrupted, or an internal error: records first
            try:
                self.interrupt()
            finally:
                try:
                    self._end(timer)
                finally:
                    await self._cleanup()
            raise
        try:
            self._end(timer)
        finally:
            await self._cleanup()  # whatever run_finished's subscribers did
        self._raise_subscriber_interrupt()
        return self.outcome

    def _end(self, timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()
        self.outcome.perf_end = perf()  # type: ignore[union-attr]
        self._emit("run_finished", self.outcome)

    def _subscriber_interrupt(self, exc: BaseException) -> None:
        """A subscriber raised KeyboardInterrupt or SystemExit (the bus keeps it): end the
        run once the engine's current callback is done, as for any interrupt. Called inside
        an emit, so it changes no record itself."""
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)

    def _raise_subscriber_interrupt(self) -> None:
        exc = self.bus.interrupt
        if exc is not None:
            raise exc

    def interrupt(self, code: str = CANCELLED) -> None:
        """Stop now: running tasks fail with ``code``, the others are skipped. Synchronous."""
        if self.nfinished == self.total:
            return
        if self.outcome is not None:
            self.outcome.interrupted = True
            if self.outcome.perf_end is None:
                self.outcome.perf_end = perf()
        self._halt(code, "the run was interrupted")

    # ------------------------------------------------------------------ scheduling
    def _seed(self) -> None:
        now = perf()
        reused = [self.records[tid] for tid in self.graph.order if tid in self.reuse]
        for rec in reused:  # final before any propagates, so none of them is made ready
            old = self.reuse[rec.task_id]
            rec.status = SUCCESS
            rec.result = old.result
            rec.reused = True
            rec.start = rec.end = now
            rec.worker = old.worker
            rec.children = old.children
        for rec in reused:
            self._finish(rec, SUCCESS, now)
        for node in self.graph.nodes.values():
            if not node.deps and self.records[node.id].status == PENDING:
                self._make_ready(node, now)

    def _make_ready(self, node: TaskNode, now: float) -> None:
        rec = self.lookup[node.id]
        rec.status = READY
        rec.ready_at = now
        if self.gate is None or not self.gate.holds(node):
            heapq.heappush(self.ready, (-node.priority, -node.chain, node.index, node))
        emit = self.dispatch["task_ready"]  # inlined here and below: three events per task
        if emit is not None:
            try:
                emit("task_ready", rec, now - self.perf_start)
            except BaseException as exc:
                self.bus.failed(emit, exc)

    def _fill_slots(self) -> None:
        """Start ready tasks while concurrency slots are free and the run is not stopping."""
        if self.starting:  # a task that failed while starting: the outer loop goes on
            return
        self.starting = True
        ready = self.ready
        running = self.running
        limit = self.config.max_concurrent
        try:
            while ready and len(running) < limit and self.stopping is None:
                entry = heapq.heappop(ready)
                node = entry[3]
                if (node.pool is None and node.parent is None) or node.map is not None:
                    self._start(node)
                else:
                    limits = self._admit(entry)
                    if limits is not None:
                        self._start(node, limits)
        finally:
            self.starting = False
        workers = self.workers
        if len(workers.jobs) > workers.coming + workers.in_worker:  # more calls than takers
            workers.staff()

    def _admit(self, entry: tuple[int, int, int, TaskNode]) -> tuple[Limit, ...] | None:
        """The limits (pool, map bound) a ready task takes a slot of, taken; or None when
        one of them is full (or out of tokens): the task then waits in that limit's heap,
        holding no run slot."""
        node = entry[3]
        limits: tuple[Limit, ...] = ()
        if node.parent is not None:
            bound = self.maps[node.parent.id].limit
            if bound is not None:
                limits = (bound,)
        if node.pool is not None:
            limits = (*limits, self.pools[node.pool])
        now = perf()
        for lim in limits:
            if not lim.admits(now):
                lim.hold(entry)
                if lim.timer is None and lim.rated and (lim.cap is None or lim.used < lim.cap):
                    lim.timer = self.loop.call_later(  # type: ignore[union-attr]
                        lim.next_token_in(), self._guarded, self._refilled, lim
                    )
                return None
        for lim in limits:
            lim.take()
        return limits

    def _refilled(self, lim: Limit) -> None:
        """A rated pool's bucket holds a token again: hand waiting tasks back."""
        lim.timer = None
        lim.admits(perf())  # brings the tokens up to date
        n = max(1, int(lim.tokens))
        self._wake(lim, n)
        self._fill_slots()
        self._maybe_done()

    def _wake(self, lim: Limit, n: int = 1) -> None:
        """Move up to ``n`` of the tasks ``lim`` holds back into the ready heap."""
        waiting = lim.waiting
        ready = self.ready
        for _ in range(min(n, len(waiting))):
            heapq.heappush(ready, heapq.heappop(waiting))

    def _release(self, att: Attempt) -> None:
        """An attempt holding pool slots ended: free them, hand a waiting task back."""
        for lim in att.limits:
            lim.give_back()
            if lim.waiting:
                self._wake(lim)
        att.limits = ()

    def _start(self, node: TaskNode, limits: tuple[Limit, ...] = ()) -> None:
        if node.map is not None:
            self._expand(node)
            return
        rec = self.lookup[node.id]
        kwargs: dict[str, Any] | None = None
        if node.cache is not None and self.cache is not None and not rec.attempts:
            kwargs = self._from_cache(node, rec)
            if rec.cached:
                for lim in limits:  # a hit makes no call: its slots are free again
                    lim.give_back()
                    if lim.waiting:
                        self._wake(lim)
                return
        now = perf()
        rec.status = RUNNING
        rec.attempts += 1
        if rec.start is None:
            rec.start = now
        att = Attempt(self, node, rec, now, limits)
        self.running[att] = None
        emit = self.dispatch["task_started"]
        if emit is not None:
            try:
                emit("task_started", rec, now - self.perf_start)
            except BaseException as exc:
                self.bus.failed(emit, exc)
        try:
            if kwargs is None:
                kwargs = (
                    call_kwargs(node, self.view, self.vault, self.redactor)
                    if node.has_refs or node.vault is not None else node.params
                )
                if node.extra is not None:  # a map's child: its element
                    kwargs = {**kwargs, **node.extra}
        except OktyvException as exc:  # bad reference or missing secret: never retried
            self._attempt_done(att, False, exc.in_task(node.id), None, retryable=False)
            return
        except Exception as exc:
            self._attempt_done(att, False, exc, None, retryable=False)
            return
        try:
            if node.is_async and self.on_loop:
                att.kwargs = kwargs
                self.workers.jobs.append(att)  # a loop worker takes it (see LoopWorkers)
            else:
                att.handle = self.backend.submit(self.call_fn(node), kwargs, att)
        except Exception as exc:  # the backend could not start the call
            self._attempt_done(att, False, exc, None)
            return
        if node.timeout is not None and not att.closed:
            att.timer = self.loop.call_later(  # type: ignore[union-attr]
                node.timeout, self._guarded, self._on_timeout, att
            )

    def _from_cache(self, node: TaskNode, rec: TaskRecord) -> dict[str, Any] | None:
        """Look ``node``'s call up in the cache. A hit finishes the task (``rec.cached`` is
        True); otherwise returns the call's kwargs (None when they cannot be made: the
        attempt then fails as usual) and ``rec`` says why nothing was found."""
        try:
            kwargs = (
                call_kwargs(node, self.view, self.vault, self.redactor)
                if node.has_refs or node.vault is not None else node.params
            )
            if node.extra is not None:
                kwargs = {**kwargs, **node.extra}
        except Exception:
            return None  # the attempt makes them again and records the error
        key, note = cache_key(node, kwargs)
        rec.cached = False
        rec.cache_note = note
        if key is None:
            return kwargs
        try:
            hit, value = self.cache.get(key, node.cache.expire)  # type: ignore[union-attr]
        except Exception as exc:  # an unreadable cache is a miss, never a failed task
            rec.cache_note = f"not cached: the cache could not be read ({type(exc).__name__})"
            return kwargs
        if not hit:
            rec.cache_key = key
            return kwargs
        now = perf()
        rec.cached = True
        rec.result = value
        rec.start = now
        self._succeed(rec, node, now)
        return None

    # ------------------------------------------------------------------ mapped tasks
    def _expand(self, node: TaskNode) -> None:
        """A mapped task whose dependencies are met: one child per element of ``over``
        (SPEC §16), each made ready as a task of its own; the map stays ``running`` until
        :meth:`_child_done` has heard from every child."""
        now = perf()
        rec = self.lookup[node.id]
        rec.status = RUNNING
        rec.start = now
        self._emit("task_started", rec, now)
        spec = node.map
        over = spec.over
        try:
            items = resolve(over, self.view) if isinstance(over, str) else over
        except OktyvException as exc:
            self._map_failed(rec, error_from_exception(exc.in_task(node.id, "map.over")), now)
            return
        where = f"map.over {over}" if isinstance(over, str) else "map.over"
        if not isinstance(items, (list, tuple)):
            self._map_failed(rec, ErrorInfo(MAP_NOT_A_LIST, (
                f"Task {node.id}: {where} is a {type(items).__name__}, not a list; map over "
                "a list (or tuple), e.g. a field of the upstream result that holds one")), now)
            return
        if len(items) > MAP_LIMIT:
            self._map_failed(rec, ErrorInfo(MAP_TOO_LARGE, (
                f"Task {node.id}: {where} has {len(items):,} elements, more than the "
                f"{MAP_LIMIT:,} one map may expand into; split the list over several maps "
                "or batch its elements")), now)
            return
        items = list(items)
        if self.outcome is not None:
            self.outcome.map_items[node.id] = items
        if self.lookup is self.records:  # the first map of the run: ids beyond the request
            self.lookup = dict(self.records)
            self.nodes = dict(self.graph.nodes)
        lookup = self.lookup
        nodes = self.nodes
        old = self.reuse_maps.get(node.id)
        reuse = old[1] if old is not None and _same_items(old[0], items) else None
        base = self.next_index
        self.next_index = base + len(items)
        children: list[TaskRecord] = []
        kids: list[TaskNode] = []
        for i, element in enumerate(items):
            child = node.child(i, element, base + i)
            crec = TaskRecord(child.id, child.tool, child.level)
            crec.map_of = node.id
            crec.map_index = i
            lookup[child.id] = crec
            nodes[child.id] = child
            children.append(crec)
            kids.append(child)
        rec.children = children
        bound = spec.max_concurrent
        self.maps[node.id] = MapRun(len(items), Limit(node.id, bound) if bound else None)
        self.total += len(items)
        if not items:
            self._map_done(node, rec, now, True)
            return
        reused = []
        if reuse is not None:
            for crec, orec in zip(children, reuse, strict=False):
                if orec.status == SUCCESS and not isinstance(orec.result, NotStored):
                    crec.status = SUCCESS
                    crec.result = orec.result
                    crec.reused = True
                    crec.start = crec.end = now
                    crec.worker = orec.worker
                    reused.append(crec)
        for child, crec in zip(kids, children, strict=True):
            if crec.status == PENDING:
                self._make_ready(child, now)
        for crec in reused:
            self._finish(crec, SUCCESS, now)

    def _map_failed(self, rec: TaskRecord, err: ErrorInfo, now: float) -> None:
        """A mapped task that could not expand: it fails, never retried."""
        rec.error = redacted(err, self.redactor) if self.redactor else err
        self._finish(rec, FAILED, now)

    def _child_done(self, node: TaskNode, now: float, propagate: bool) -> None:
        """A child of mapped task ``node`` has its final record; the last one finishes the
        map."""
        state = self.maps[node.id]
        state.left -= 1
        if state.left == 0:
            self._map_done(node, self.lookup[node.id], now, propagate)

    def _map_done(self, node: TaskNode, rec: TaskRecord, now: float, propagate: bool) -> None:
        """Every child has its record: the map's own record gathers them (SPEC §16)."""
        children = rec.children or []
        rec.result = [c.result if c.status == SUCCESS else None for c in children]
        rec.attempts = sum(c.attempts for c in children)
        ends = [c.end for c in children if c.end is not None]
        rec.end = max(ends, default=now)
        starts = [c.start for c in children if c.start is not None]
        if starts:
            rec.start = min(min(starts), rec.start if rec.start is not None else now)
        cpu = [c.cpu_s for c in children if c.cpu_s is not None]
        rec.cpu_s = sum(cpu) if cpu else None
        failed = [c.map_index for c in children if c.status != SUCCESS]
        if not failed:
            rec.error = None
            self._finish(rec, SUCCESS, rec.end, propagate)
            return
        shown = ", ".join(str(i) for i in failed[:20]) + (", ..." if len(failed) > 20 else "")
        first = next(c for c in children if c.status != SUCCESS)
        why = f"; {first.task_id}: {first.error.code}" if first.error is not None else ""
        count = "its one child" if len(children) == 1 else (
            f"{len(failed)} of {len(children)} children")
        rec.error = ErrorInfo(MAP_CHILD_FAILED, (
            f"Task {node.id}: {count} did not succeed (index {shown}){why}"))
        self._finish(rec, FAILED, rec.end, propagate)

    # ------------------------------------------------------------------ completion
    def _attempt_done(
        self, att: Attempt, ok: bool, value: Any, worker: str | None, retryable: bool = True,
        cpu_s: float | None = None, output: Any = _UNWRAP,
    ) -> None:
        """An attempt's outcome. ``output`` is what the call printed (``(stdout, stderr)`` or
        None), when the caller captured it apart (loop workers); by default it is unwrapped
        from ``value`` when capture is on (:func:`~oktyv_nb.execution.capture.take_output`)."""
        if att.closed:
            return  # a late outcome of an abandoned attempt: dropped
        att.closed = True
        del self.running[att]
        if att.timer is not None:
            att.timer.cancel()
        if att.limits:
            self._release(att)
        now = perf()
        rec = att.rec
        node = att.node
        if worker is not None:
            rec.worker = worker
        if cpu_s is not None:
            rec.cpu_s = cpu_s if rec.cpu_s is None else rec.cpu_s + cpu_s
        if output is _UNWRAP:
            if self.capture:
                value, output = take_output(ok, value)
            else:
                output = None
        if output is not None:
            if self.redactor:
                output = (self.redactor.text(output[0]), self.redactor.text(output[1]))
            rec.add_output(output)
        if ok:
            if rec.attempts > 1:  # a first attempt's span is the record itself
                rec.add_span(AttemptSpan(att.start, now, SUCCESS, worker, cpu_s,
                                         output=output))
            rec.result = value
            rec.error = None
            self._succeed(rec, node, now)
        else:
            err = value if isinstance(value, ErrorInfo) else error_from_exception(value)
            if self.redactor:  # records never hold a secret: subscribers see them live
                err = redacted(err, self.redactor)
            outcome = _SPAN_OUTCOME.get(err.code, FAILED)
            rec.add_span(AttemptSpan(att.start, now, outcome, worker, cpu_s, err, output))
            rec.error = err
            if retryable and rec.attempts < node.retry.max_attempts and self.stopping is None:
                rec.status = RETRYING
                delay = node.retry.delay(rec.attempts - 1)
                self.backoff[node.id] = self.loop.call_later(  # type: ignore[union-attr]
                    delay, self._guarded, self._retry, node
                )
                self._emit("task_retrying", rec, now)
            else:
                self._finish(rec, FAILED, now)
        self._fill_slots()
        self._maybe_done()

    def _retry(self, node: TaskNode) -> None:
        del self.backoff[node.id]
        rec = self.lookup[node.id]
        rec.status = READY
        heapq.heappush(self.ready, (-node.priority, -node.chain, node.index, node))
        self._emit("task_ready", rec)
        self._fill_slots()
        self._maybe_done()

    def _on_timeout(self, att: Attempt) -> None:
        node = att.node
        err = ErrorInfo(
            TASK_TIMEOUT,
            f"Task {node.id} timed out after {node.timeout:g} s (attempt {att.rec.attempts})",
        )
        self._abandon(att)
        self._attempt_done(att, False, err, self._worker_of(att))

    def _worker_of(self, att: Attempt) -> str | None:
        """Where an attempt that is being abandoned ran, as far as the engine knows."""
        if att.node.is_async and self.on_loop:
            return LOOP_WORKER
        return att.worker or att.rec.worker

    def _abandon(self, att: Attempt) -> None:
        """Cancel an attempt's async task, or tell the backend to drop its call."""
        with contextlib.suppress(Exception):  # best effort: the loop may be closed
            if att.task is not None:  # a loop worker awaiting the call: it goes on
                self.cancelled(att.task, att.node.id)
            elif att.handle is not None or not self.on_loop:
                self.backend.abandon(att.handle)

    def _succeed(self, rec: TaskRecord, node: TaskNode, now: float) -> None:
        """:meth:`_finish` for a success, the common case: nothing to skip, so no stack."""
        rec.status = SUCCESS
        rec.end = now
        self.nfinished += 1
        self.succeeded.append(rec)
        if self.gate is not None and node.parent is None:
            self.gate.finished(node.level, self.ready)
        emit = self.dispatch["task_finished"]
        if emit is not None:
            try:
                emit("task_finished", rec, now - self.perf_start)
            except BaseException as exc:
                self.bus.failed(emit, exc)
        remaining = self.remaining
        records = self.records
        for dep in node.dependents:
            tid = dep.id
            left = remaining[tid] - 1
            remaining[tid] = left
            if left == 0 and records[tid].status == PENDING:  # not skipped meanwhile
                self._make_ready(dep, now)
        if node.parent is not None:
            self._child_done(node.parent, now, True)
        if self.stopping is not None and self.backoff:
            self._drop_backoffs(self.stopping, "the run stopped", now)

    def _finish(self, rec: TaskRecord, status: str, now: float, propagate: bool = True) -> None:
        """Give ``rec`` its final ``status``; skip or release its dependents."""
        rec.status = status
        rec.end = now
        if rec.start is None:
            rec.start = now
        stack = [rec]
        records = self.lookup
        nodes = self.nodes
        while stack:
            rec = stack.pop()
            status = rec.status
            self.nfinished += 1
            node = nodes[rec.task_id]
            if status == SUCCESS:
                self.succeeded.append(rec)
            elif status == FAILED:
                self.any_failed = True
                if self.config.failure_mode != "continue" and self.stopping is None:
                    self.stopping = RUN_STOPPED
            if self.gate is not None and node.parent is None:
                self.gate.finished(node.level, self.ready)
            self._emit("task_finished", rec, now)
            if node.parent is not None:
                self._child_done(node.parent, now, propagate)
                continue
            if not propagate:
                continue
            for dep in node.dependents:
                drec = records[dep.id]
                if drec.status in FINAL:
                    continue
                if status != SUCCESS and dep.trigger == "all_success":
                    drec.status = SKIPPED
                    drec.start = drec.end = now
                    drec.error = _skip_error(rec)
                    stack.append(drec)
                else:
                    left = self.remaining[dep.id] - 1
                    self.remaining[dep.id] = left
                    if left == 0:
                        self._make_ready(dep, now)
        if self.stopping is not None and self.backoff:
            self._drop_backoffs(self.stopping, "the run stopped", now)

    def _drop_backoffs(self, code: str, why: str, now: float) -> None:
        """Tasks waiting out a retry backoff when the run stops: they ran, so they fail
        (:meth:`_fail_waiting`)."""
        waiting = list(self.backoff.items())
        self.backoff.clear()  # first, so that _finish below finds none: no recursion
        for tid, handle in waiting:
            handle.cancel()
            self._fail_waiting(self.lookup[tid], code, why, now)

    def _fail_waiting(self, rec: TaskRecord, code: str, why: str, now: float) -> None:
        """A task that has run and waits to run again (out a backoff, or ready for a slot
        after one) when the run stops: it fails. After a failure (``RUN_STOPPED``) it keeps
        its last attempt's error; on a run timeout or interrupt the error says so."""
        if code != RUN_STOPPED or rec.error is None:
            rec.error = ErrorInfo(code, f"Task {rec.task_id}: {why} while it waited to retry")
        self._finish(rec, FAILED, now, propagate=False)

    def _maybe_done(self) -> None:
        """Skip what can no longer start once a stopping run has nothing running; resolve
        the run's ``done`` future once every task has its final record."""
        if self.stopping is not None and not self.running and self.nfinished < self.total:
            self._skip_rest(self.stopping, "the run stopped after a failure")
        if self.nfinished == self.total and self.done is not None and not self.done.done():
            with contextlib.suppress(RuntimeError):  # a loop closed under an interrupt
                self.done.set_result(None)

    def _skip_rest(self, code: str, why: str) -> None:
        """Finish every task not finished yet and not running: tasks that ran and wait to
        run again fail, the others (which never started) are skipped, all with ``code``."""
        now = perf()
        if self.backoff:
            self._drop_backoffs(code, why, now)
        running = {att.rec.task_id for att in self.running}
        for rec in list(self.lookup.values()):
            if rec.status in FINAL or rec.task_id in running:
                continue
            if rec.children is not None:  # an expanded map: it ends when its children do
                continue
            if rec.attempts:  # ready again after its backoff, waiting for a slot
                self._fail_waiting(rec, code, why, now)
                continue
            rec.status = SKIPPED
            rec.error = ErrorInfo(code, f"Task {rec.task_id} did not start: {why}")
            self._finish(rec, SKIPPED, now, propagate=False)

    def _halt(self, code: str, why: str) -> None:
        """Stop now: every running attempt fails with ``code`` (not retried; its dependents
        are not blamed on it but skipped with ``code`` too), everything else is finished."""
        self.stopping = code
        now = perf()
        for att in list(self.running):
            self._abandon(att)
            att.closed = True
            del self.running[att]
            if att.timer is not None:
                att.timer.cancel()
            att.limits = ()  # nothing starts after a halt: no slot to hand on
            rec = att.rec
            rec.worker = self._worker_of(att)
            rec.error = ErrorInfo(code, f"Task {rec.task_id}: {why}")
            rec.add_span(AttemptSpan(att.start, now, _SPAN_OUTCOME.get(code, FAILED),
                                     rec.worker, error=rec.error))
            self._finish(rec, FAILED, now, propagate=False)
        self._skip_rest(code, why)
        self._maybe_done()

    def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
        """Run a loop callback of the engine; an internal error ends the run, never hangs it."""
        try:
            fn(*args)
        except BaseException as exc:
            self._crash(exc)

    def _crash(self, exc: BaseException) -> None:
        """An engine callback raised: hand the error to :meth:`run`, which records the rest
        as ``CANCELLED`` and re-raises it."""
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise exc
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)
        elif self.loop is not None:
            self.loop.call_exception_handler(
                {"message": "oktyv_nb engine callback failed", "exception": exc}
            )

    def _on_run_timeout(self) -> None:
        self._halt(EXECUTION_TIMEOUT, f"the run timed out after {self.config.timeout:g} s")

    # ------------------------------------------------------------------ plumbing
    def _emit(
        self, kind: EventKind, rec: TaskRecord | RunOutcome, now: float | None = None
    ) -> None:
        """Tell the subscribers; ``now`` is a perf-counter time (seconds), default now."""
        if self.dispatch[kind] is not None:
            self.bus.emit(kind, rec, (perf() if now is None else now) - self.perf_start)

    def cancelled(self, task: asyncio.Task[Any], task_id: str) -> None:
        """Cancel ``task``, the async call of ``task_id``; :meth:`_cleanup` lets it go if it
        is still running :data:`CANCEL_GRACE` seconds later."""
        self.cancelled_at[task] = (task_id, perf())
        task.cancel()

    async def _cleanup(self) -> None:
        for att in list(self.running):  # only on internal errors: never leave a task behind
            self._abandon(att)
        for handle in self.backoff.values():
            handle.cancel()
        for lim in self.pools.values():
            if lim.timer is not None:
                lim.timer.cancel()
        self.abandoned.extend(self.workers.close())
        self.abandoned.extend(t for t in self.cancelled_at if t not in self.abandoned)
        pending = [t for t in self.abandoned if not t.done()]
        # interrupted again while unwinding: leave them cancelled
        with contextlib.suppress(BaseException):
            if pending:
                await asyncio.sleep(0)  # most unwind at once: idle workers, polite tools
                pending = [t for t in pending if not t.done()]
            if pending:  # each has CANCEL_GRACE from its cancellation (or from now)
                now = perf()
                since = max(self.cancelled_at.get(t, ("", now))[1] for t in pending)
                await asyncio.wait(pending, timeout=max(since + CANCEL_GRACE - perf(), 0.01))
        stuck = [t for t in pending if not t.done()]
        if stuck:
            self._let_go(stuck)
        for t in self.abandoned:  # their outcome was recorded: mark it retrieved
            if t.done() and not t.cancelled():
                t.exception()
        # The engine and its loop workers refer to each other, so only the cyclic collector
        # frees them: let go of the run's tasks now, or they would stay in asyncio's set of
        # tasks (which every asyncio.all_tasks() walks) until it does.
        self.workers.workers.clear()
        self.abandoned.clear()
        self.cancelled_at.clear()
        self.succeeded = []  # rollback is done; the records live on in the outcome
        with contextlib.suppress(Exception):
            await self.backend.aclose()

    def _let_go(self, stuck: list[asyncio.Task[Any]]) -> None:
        """Tasks that ignored cancellation for CANCEL_GRACE seconds: let them go (asyncio
        no longer waits for them), list their task ids in the outcome and warn."""
        order = self.graph.nodes
        ids = {self.cancelled_at[t][0] for t in stuck if t in self.cancelled_at}
        for t in stuck:
            let_go(t)
        ids_in_order = [tid for tid in order if tid in ids]
        if self.outcome is not None:
            self.outcome.abandoned.extend(ids_in_order)
        who = ", ".join(ids_in_order) or "an async call"
        with contextlib.suppress(Exception):  # warnings turned into errors: the run is over
            warnings.warn(
                f"oktyv_nb: {who}: the async tool ignored cancellation for {CANCEL_GRACE:g} s "
                "and was abandoned; it may go on running on the event loop until that loop "
                "is closed",
                RuntimeWarning,
                stacklevel=2,
            )


class MapRun:
    """An expanded mapped task's state: children without a final record yet (``left``) and
    the bound of its ``max_concurrent`` (a :class:`Limit`, or None)."""

    __slots__ = ("left", "limit")

    def __init__(self, left: int, limit: Limit | None) -> None:
        self.left = left
        self.limit = limit


def _same_items(old: list[Any], new: list[Any]) -> bool:
    """True when a map's elements are unchanged (equal, element by element)."""
    try:
        return len(old) == len(new) and all(a == b for a, b in zip(old, new, strict=True))
    except Exception:  # elements that do not compare: treat as changed
        return False


_SPAN_OUTCOME = {TASK_TIMEOUT: "timeout", CANCELLED: "cancelled", EXECUTION_TIMEOUT: "timeout"}


def _skip_error(failed: TaskRecord) -> ErrorInfo:
    """The error of a task skipped because its dependency ``failed`` did not succeed.

    ``cause`` is that dependency; ``root`` (and the message) the task whose failure started
    the chain of skips: ``Skipped: dependency B was skipped because A failed``.
    """
    dep = failed.task_id
    if failed.status == FAILED:
        return ErrorInfo(DEPENDENCY_FAILED, f"Skipped: dependency {dep} failed", cause=dep,
                         root=dep)
    err = failed.error
    root = err.root if err is not None and err.code == DEPENDENCY_FAILED else None
    why = f"Skipped: dependency {dep} was skipped"
    if root is not None:
        why += f" because {root} failed"
    return ErrorInfo(DEPENDENCY_FAILED, why, cause=dep, root=root)
