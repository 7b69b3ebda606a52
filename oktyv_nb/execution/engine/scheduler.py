"""The scheduler: runs a validated :class:`~oktyv_nb.graph.Graph` on an asyncio loop.

State (all of it lives on one :class:`Engine` and is touched only on the loop's thread):

``records``
    one :class:`~oktyv_nb.records.TaskRecord` per task, in graph order. A record leaves
    ``pending`` exactly once for a final status; :meth:`Engine._finish` is the only place
    that counts it (``nfinished``), so every task ends with exactly one record.
``remaining``
    per task, how many dependencies have not finished yet. At zero the task is *ready*.
``ready``
    a heap of ready tasks keyed ``(-priority, -chain, index)``: higher priority first, then
    the task with the longest chain of dependents behind it, then insertion order.
``open``
    the attempts now holding a concurrency slot (``len(open) <= max_concurrent``). A
    task waiting out a retry backoff holds no slot: it sits in ``backoff`` with a timer.
``stopping``
    None while new attempts may start; otherwise the code given to tasks that never start:
    ``RUN_STOPPED`` (stop/rollback mode after a failure), ``EXECUTION_TIMEOUT`` (whole-run
    timeout) or ``CANCELLED`` (interrupt).

Flow: a finished attempt either schedules a retry or finishes its task; finishing a task
decrements its dependents' ``remaining`` (or skips them when it did not succeed and they need
all their dependencies to succeed), then :meth:`Engine._pump` starts ready tasks while slots
are free. With ``strategy="levels"`` ready tasks of a later level are parked until every task
of the earlier levels has finished (the original design's level-by-level schedule).

A call gets its params with ``${ref}`` resolved and, when the task names a ``vault`` set,
that set as the keyword argument ``credentials``. A failure before the call (a reference
that cannot be resolved, a missing vault set) is never retried.

Stopping: after a failure in ``stop``/``rollback`` mode running attempts finish, tasks
waiting out a backoff fail with their last error and the rest are skipped ``RUN_STOPPED``.
A whole-run timeout or an interrupt (:meth:`Engine.interrupt`, cancellation of
:meth:`Engine.run`, ``KeyboardInterrupt``) halts at once: running attempts and tasks waiting
to retry fail with ``EXECUTION_TIMEOUT``/``CANCELLED``, everything else is skipped with that
code. A sync tool's thread cannot be killed: its late outcome is dropped and the run does not
wait for it. An error inside the engine's own callbacks ends the run the same way and is
re-raised by :meth:`Engine.run`; it never leaves the run hanging.

Times are ``time.perf_counter()`` seconds; ``timeout`` values are seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from oktyv_nb.errors import (
    CANCELLED,
    DEPENDENCY_FAILED,
    EXECUTION_TIMEOUT,
    RUN_STOPPED,
    TASK_TIMEOUT,
    OktyvError,
    VariableResolutionError,
)
from oktyv_nb.execution.backends import Backend, get_backend
from oktyv_nb.execution.events import EventBus, EventKind
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
    TaskRecord,
    error_from_exception,
    utc_datetime,
)
from oktyv_nb.model.graph import Graph, TaskNode, is_async
from oktyv_nb.model.variables import resolve
from oktyv_nb.model.vault import Redactor, lookup_secrets

__all__ = ["Engine", "RunConfig", "RunOutcome"]

FailureMode = Literal["continue", "stop", "rollback"]
Strategy = Literal["dependencies", "levels"]
LOOP_WORKER = "event-loop"
CANCEL_GRACE = 1.0  # seconds given to cancelled async tools to unwind at the end of a run
WORKER_SLICE = 0.005  # seconds a loop worker may run quick calls before yielding to the loop

perf = time.perf_counter


@dataclass(frozen=True, slots=True)
class RunConfig:
    """How to run: concurrency bound, failure mode, whole-run ``timeout`` (seconds)."""

    max_concurrent: int = 10
    failure_mode: FailureMode = "continue"
    timeout: float | None = None
    strategy: Strategy = "dependencies"

    def __post_init__(self) -> None:
        if not isinstance(self.max_concurrent, int) or self.max_concurrent < 1:
            raise ValueError(f"max_concurrent must be an int >= 1, got {self.max_concurrent!r}")
        if self.failure_mode not in ("continue", "stop", "rollback"):
            raise ValueError(
                f"failure_mode must be 'continue', 'stop' or 'rollback', got {self.failure_mode!r}"
            )
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout!r}")
        if self.strategy not in ("dependencies", "levels"):
            raise ValueError(
                f"strategy must be 'dependencies' or 'levels', got {self.strategy!r}"
            )


@dataclass(slots=True)
class RunOutcome:
    """What a run leaves behind: the records and its clock anchors."""

    execution_id: str
    graph: Graph = field(repr=False)
    config: RunConfig
    records: dict[str, TaskRecord] = field(repr=False)
    perf_start: float
    wall_start: datetime
    perf_end: float | None = None
    backend: str = "asyncio"
    interrupted: bool = False
    redactor: Redactor = field(default_factory=Redactor, repr=False)

    @property
    def base(self) -> float:
        """Add to a perf-counter time (seconds) to get Unix seconds."""
        return self.wall_start.timestamp() - self.perf_start

    def wall(self, t: float) -> datetime:
        """The UTC datetime of perf-counter time ``t``, exactly as the JSON result has it
        (the same float, turned into a datetime by the same converter)."""
        return utc_datetime(self.base + t)


class _Timeout(Exception):
    code = TASK_TIMEOUT


class Attempt:
    """One call of a task's tool, holding one concurrency slot until closed."""

    __slots__ = ("closed", "engine", "handle", "kwargs", "node", "rec", "start", "task", "timer")

    def __init__(self, engine: Engine, node: TaskNode, rec: TaskRecord, start: float) -> None:
        self.engine = engine
        self.node = node
        self.rec = rec
        self.start = start
        self.closed = False
        self.kwargs: dict[str, Any] | None = None
        self.task: asyncio.Task[Any] | None = None
        self.handle: Any = None
        self.timer: asyncio.TimerHandle | None = None

    def __call__(
        self, ok: bool, value: Any, worker: str | None, retryable: bool = True
    ) -> None:
        """The backend's ``done`` callback (and the engine's own, for async tools)."""
        try:
            self.engine._attempt_done(self, ok, value, worker, retryable)
        except BaseException as exc:
            self.engine._crash(exc)


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
    ) -> None:
        self.graph = graph
        self.config = config or RunConfig()
        self.backend = get_backend(backend)
        self.vault = vault
        self.bus = bus if bus is not None else EventBus()
        self.dispatch = self.bus.dispatch  # kind -> subscriber(s) or None, kept up to date
        self.reuse = reuse or {}
        nodes = graph.nodes
        self.records = {tid: TaskRecord(tid, n.tool, n.level) for tid, n in nodes.items()}
        self.remaining = {tid: len(n.deps) for tid, n in nodes.items()}
        self.ready: list[tuple[int, int, int, TaskNode]] = []
        self.open: dict[Attempt, None] = {}
        self.backoff: dict[str, asyncio.TimerHandle] = {}
        self.stopping: str | None = None
        self.nfinished = 0
        self.total = len(nodes)
        self.succeeded: list[TaskRecord] = []  # in completion order, for rollback
        self.any_failed = False
        self.abandoned: list[asyncio.Task[Any]] = []
        self.jobs: deque[Attempt] = deque()  # async calls waiting for a loop worker
        self.idle: list[asyncio.Future[None]] = []  # loop workers waiting for a job
        self.workers: set[asyncio.Task[None]] = set()
        self.in_worker = False  # a loop worker is finishing a call and will take a job
        self.coming = 0  # workers woken or started that have not looked at the jobs yet
        self.closing = False
        self.on_loop = bool(getattr(self.backend, "runs_coroutines_on_loop", False))
        self.redactor = Redactor()
        self.pumping = False
        levels = config.strategy == "levels" if config else False
        self.by_level = levels
        self.level = 0
        self.parked: list[list[TaskNode]] = [[] for _ in graph.levels] if levels else []
        self.level_left = [len(lv) for lv in graph.levels] if levels else []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.done: asyncio.Future[None] | None = None
        self.outcome: RunOutcome | None = None
        self.perf_start = 0.0

    # ------------------------------------------------------------------ public
    async def run(self) -> RunOutcome:
        """Run every task once (with retries); returns when each has its final record.

        On cancellation or KeyboardInterrupt the running tasks are recorded ``CANCELLED``,
        the rest skipped, :attr:`outcome` holds the partial run, and the interrupt propagates.
        """
        if self.done is not None:
            raise RuntimeError("an Engine runs its graph once; make a new Engine to run again")
        loop = self.loop = asyncio.get_running_loop()
        opener = getattr(self.backend, "aopen", None)  # e.g. a Dask cluster starting up:
        if opener is not None:  # before the clock starts, without blocking the loop
            await opener(loop)
        else:
            self.backend.open(loop)
        self.done = loop.create_future()
        self.perf_start = perf()
        self.outcome = RunOutcome(
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
            self._pump()
            self._check()
            if self.config.timeout is not None and not self.done.done():
                timer = loop.call_later(self.config.timeout, self._guarded, self._on_run_timeout)
            await asyncio.shield(self.done)
            if self.config.failure_mode == "rollback" and self.any_failed:
                await self._rollback()
        except GeneratorExit:  # the coroutine is being closed unfinished: nothing may await
            self.interrupt()
            raise
        except BaseException:  # cancelled, interrupted, or an internal error: records first
            try:
                self.interrupt()
            finally:
                self._end(timer)
                await self._cleanup()
            raise
        self._end(timer)
        await self._cleanup()
        return self.outcome

    def _end(self, timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()
        self.outcome.perf_end = perf()  # type: ignore[union-attr]
        self._emit("run_finished", self.outcome)

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
        for rec in reused:
            self._finish(rec, SUCCESS, now)
        for node in self.graph.nodes.values():
            if not node.deps and self.records[node.id].status == PENDING:
                self._make_ready(node, now)

    def _make_ready(self, node: TaskNode, now: float) -> None:
        rec = self.records[node.id]
        rec.status = READY
        rec.ready_at = now
        if self.by_level and node.level > self.level:
            self.parked[node.level].append(node)
        else:
            heapq.heappush(self.ready, (-node.priority, -node.chain, node.index, node))
        emit = self.dispatch["task_ready"]  # inlined here and below: three events per task
        if emit is not None:
            try:
                emit("task_ready", rec, now - self.perf_start)
            except Exception as exc:
                self.bus.drop(emit, exc)

    def _pump(self) -> None:
        if self.pumping:  # a task that failed while starting: the outer loop goes on
            return
        self.pumping = True
        ready = self.ready
        open_ = self.open
        limit = self.config.max_concurrent
        try:
            while ready and len(open_) < limit and self.stopping is None:
                self._start(heapq.heappop(ready)[3])
        finally:
            self.pumping = False
        jobs = self.jobs
        if jobs and len(jobs) > self.coming + self.in_worker:  # someone must be woken
            self._staff()

    def _staff(self) -> None:
        """Make sure a loop worker will take each queued async call.

        A worker that is finishing a call (``in_worker``) takes the next job itself, so a
        chain of quick async tools runs without a single task switch.
        """
        wanted = len(self.jobs) - self.coming - (1 if self.in_worker else 0)
        idle = self.idle
        while wanted > 0 and idle:
            fut = idle.pop()
            if not fut.done():
                fut.set_result(None)
                self.coming += 1
                wanted -= 1
        while wanted > 0:
            self.workers.add(self.loop.create_task(self._worker()))  # type: ignore[union-attr]
            self.coming += 1
            wanted -= 1

    def _start(self, node: TaskNode) -> None:
        rec = self.records[node.id]
        now = perf()
        rec.status = RUNNING
        rec.attempts += 1
        if rec.start is None:
            rec.start = now
        att = Attempt(self, node, rec, now)
        self.open[att] = None
        emit = self.dispatch["task_started"]
        if emit is not None:
            try:
                emit("task_started", rec, now - self.perf_start)
            except Exception as exc:
                self.bus.drop(emit, exc)
        try:
            kwargs = (
                self._arguments(node) if node.has_refs or node.vault is not None else node.params
            )
        except Exception as exc:  # bad reference or missing secret: never retried
            self._attempt_done(att, False, _in_task(node.id, exc), None, retryable=False)
            return
        try:
            if node.is_async and self.on_loop:
                att.kwargs = kwargs
                self.jobs.append(att)
            else:
                att.handle = self.backend.submit(node.fn, kwargs, att)
        except Exception as exc:  # the backend could not start the call
            self._attempt_done(att, False, exc, None)
            return
        if node.timeout is not None and not att.closed:
            att.timer = self.loop.call_later(  # type: ignore[union-attr]
                node.timeout, self._guarded, self._on_timeout, att
            )

    async def _worker(self) -> None:
        """A loop worker: runs queued async calls one after another, on the loop.

        Reusing a few long-lived tasks instead of one task per call saves a task creation
        and a trip through the loop per call; the tool still runs inside a real task, so
        ``asyncio.current_task()`` and ``asyncio.timeout()`` work in it. A timeout or a halt
        cancels the worker while it awaits the abandoned call; the worker then takes up the
        next job. It yields to the loop at least every ``WORKER_SLICE`` seconds. Calls on
        one worker share its context: a ``contextvars`` value a tool sets stays visible to
        later calls on that worker (set them inside ``copy_context().run`` to keep them
        private).
        """
        me = asyncio.current_task()
        assert me is not None
        jobs = self.jobs
        last = perf()
        self.coming -= 1  # started by _staff
        while not self.closing:
            if not jobs:
                fut = self.loop.create_future()  # type: ignore[union-attr]
                self.idle.append(fut)
                try:
                    await fut
                except asyncio.CancelledError:
                    if self.closing:
                        return
                    _uncancel(me)
                if fut.done() and not fut.cancelled():
                    self.coming -= 1  # woken by _staff
                else:
                    with contextlib.suppress(ValueError):
                        self.idle.remove(fut)
                last = perf()
                continue
            att = jobs.popleft()
            if att.closed:  # halted before it started
                continue
            att.task = me
            kwargs = att.kwargs
            att.kwargs = None
            retryable = True
            try:
                value = await att.node.fn(**kwargs)  # type: ignore[arg-type]
                ok = True
            except asyncio.CancelledError:
                if att.closed or self.closing:  # our timeout or halt: go on with the next
                    _uncancel(me)
                    if self.closing:
                        return
                    continue
                ok, retryable = False, False  # cancelled by the tool itself or by others
                value = ErrorInfo(CANCELLED, f"Task {att.node.id} was cancelled")
                _uncancel(me)
            except (KeyboardInterrupt, SystemExit):  # landed in this tool: stop the run first
                self.interrupt()
                raise
            except BaseException as exc:  # other BaseExceptions are errors, not retried
                ok, value, retryable = False, exc, isinstance(exc, Exception)
            att.task = None
            if att.closed:  # finished after its timeout: the outcome is dropped
                _uncancel(me)
                continue
            self.in_worker = True
            try:
                self._attempt_done(att, ok, value, LOOP_WORKER, retryable)
            except BaseException as exc:  # an engine bug: end the run, never hang it
                self._crash(exc)
            finally:
                self.in_worker = False
            value = None
            now = perf()
            if now - last > WORKER_SLICE:  # let timers, I/O and displays run
                await asyncio.sleep(0)
                last = perf()

    def _arguments(self, node: TaskNode) -> dict[str, Any]:
        """The call's keyword arguments: params with references resolved, plus
        ``credentials`` (the task's vault set) when it names one."""
        kwargs = resolve(node.params, self._view) if node.has_refs else node.params
        if node.vault is not None:
            secrets = lookup_secrets(self.vault, node.vault, node.id)
            self.redactor.add(secrets.values())
            kwargs = {**kwargs, "credentials": secrets}
        return kwargs

    def _view(self, task_id: str) -> Callable[[str], Any]:
        """A field getter over ``task_id``'s record in its JSON form (SPEC §5)."""
        rec = self.records[task_id]
        outcome = self.outcome

        def field(name: str) -> Any:
            if name == "result":
                if rec.status != SUCCESS:
                    raise VariableResolutionError(
                        f"task {task_id} {rec.status if rec.status in FINAL else 'has not run'}"
                        f"; it has no result to reference (use ${{{task_id}.status}} or "
                        f"${{{task_id}.error.message}})",
                        task_id=task_id,
                    )
                return rec.result
            if name == "status":
                return rec.status
            if name == "taskId":
                return task_id
            if name == "duration":
                return rec.duration * 1000.0
            if name == "attempts":
                return rec.attempts
            if name == "error":
                return self._error_dict(rec.error)
            if name == "rollbackError":
                return self._error_dict(rec.rollback_error)
            if name in ("startTime", "endTime"):
                t = rec.start if name == "startTime" else rec.end
                return outcome.wall(t).isoformat() if (t is not None and outcome) else None
            return {"rolledBack": rec.rolled_back, "reused": rec.reused}[name]

        return field

    def _error_dict(self, err: ErrorInfo | None) -> dict[str, Any] | None:
        if err is None:
            return None
        d = err.to_dict()
        return self.redactor.value(d) if self.redactor else d

    # ------------------------------------------------------------------ completion
    def _attempt_done(
        self, att: Attempt, ok: bool, value: Any, worker: str | None, retryable: bool = True
    ) -> None:
        if att.closed:
            return  # a late outcome of an abandoned attempt: dropped
        att.closed = True
        del self.open[att]
        if att.timer is not None:
            att.timer.cancel()
        now = perf()
        rec = att.rec
        node = att.node
        if worker is not None:
            rec.worker = worker
        if ok:
            if rec.attempts > 1:  # a first attempt's span is the record itself
                rec.add_span(AttemptSpan(att.start, now, SUCCESS, worker))
            rec.result = value
            rec.error = None
            self._succeed(rec, node, now)
        else:
            err = value if isinstance(value, ErrorInfo) else error_from_exception(value)
            if self.redactor:  # records never hold a secret: subscribers see them live
                err = _redacted(err, self.redactor)
            outcome = _SPAN_OUTCOME.get(err.code, FAILED)
            rec.add_span(AttemptSpan(att.start, now, outcome, worker))
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
        self._pump()
        self._check()

    def _retry(self, node: TaskNode) -> None:
        del self.backoff[node.id]
        rec = self.records[node.id]
        rec.status = READY
        heapq.heappush(self.ready, (-node.priority, -node.chain, node.index, node))
        self._emit("task_ready", rec)
        self._pump()
        self._check()

    def _on_timeout(self, att: Attempt) -> None:
        node = att.node
        err = ErrorInfo(
            TASK_TIMEOUT,
            f"Task {node.id} timed out after {node.timeout:g} s (attempt {att.rec.attempts})",
        )
        self._abandon(att)
        self._attempt_done(att, False, err, self._where(att))

    def _where(self, att: Attempt) -> str | None:
        """Where an attempt that is being abandoned ran, as far as the engine knows."""
        if att.node.is_async and self.on_loop:
            return LOOP_WORKER
        return att.rec.worker

    def _abandon(self, att: Attempt) -> None:
        """Cancel an attempt's async task, or tell the backend to drop its call."""
        with contextlib.suppress(Exception):  # best effort: the loop may be closed
            if att.task is not None:  # a loop worker awaiting the call: it goes on
                att.task.cancel()
            elif att.handle is not None or not self.backend.runs_coroutines_on_loop:
                self.backend.abandon(att.handle)

    def _succeed(self, rec: TaskRecord, node: TaskNode, now: float) -> None:
        """:meth:`_finish` for a success, the common case: nothing to skip, so no stack."""
        rec.status = SUCCESS
        rec.end = now
        self.nfinished += 1
        self.succeeded.append(rec)
        if self.by_level:
            self._level_done(node.level)
        emit = self.dispatch["task_finished"]
        if emit is not None:
            try:
                emit("task_finished", rec, now - self.perf_start)
            except Exception as exc:
                self.bus.drop(emit, exc)
        remaining = self.remaining
        records = self.records
        for dep in node.dependents:
            tid = dep.id
            left = remaining[tid] - 1
            remaining[tid] = left
            if left == 0 and records[tid].status == PENDING:  # not skipped meanwhile
                self._make_ready(dep, now)
        if self.stopping is not None and self.backoff:
            self._drop_backoffs(self.stopping, "the run stopped", now)

    def _finish(self, rec: TaskRecord, status: str, now: float, propagate: bool = True) -> None:
        """Give ``rec`` its final ``status``; skip or release its dependents."""
        rec.status = status
        rec.end = now
        if rec.start is None:
            rec.start = now
        stack = [rec]
        records = self.records
        nodes = self.graph.nodes
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
            if self.by_level:
                self._level_done(node.level)
            self._emit("task_finished", rec, now)
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
        """Tasks waiting out a retry backoff when the run stops: they ran, so they fail.

        After a failure (``RUN_STOPPED``) each keeps its last attempt's error; on a run
        timeout or interrupt the error says so.
        """
        waiting = list(self.backoff.items())
        self.backoff.clear()  # first, so that _finish below finds none: no recursion
        for tid, handle in waiting:
            handle.cancel()
            rec = self.records[tid]
            if code != RUN_STOPPED:
                rec.error = ErrorInfo(code, f"Task {tid}: {why} while it waited to retry")
            self._finish(rec, FAILED, now, propagate=False)

    def _level_done(self, level: int) -> None:
        self.level_left[level] -= 1
        while self.level < len(self.level_left) and self.level_left[self.level] == 0:
            self.level += 1
            if self.level < len(self.parked):
                for node in self.parked[self.level]:
                    heapq.heappush(self.ready, (-node.priority, -node.chain, node.index, node))
                self.parked[self.level] = []

    def _check(self) -> None:
        if self.stopping is not None and not self.open and self.nfinished < self.total:
            self._skip_rest(self.stopping, "the run stopped after a failure")
        if self.nfinished == self.total and self.done is not None and not self.done.done():
            with contextlib.suppress(RuntimeError):  # a loop closed under an interrupt
                self.done.set_result(None)

    def _skip_rest(self, code: str, why: str) -> None:
        """Finish every task not finished yet and not running: tasks waiting to retry fail,
        the others are skipped, all with ``code``."""
        now = perf()
        if self.backoff:
            self._drop_backoffs(code, why, now)
        running = {att.rec.task_id for att in self.open}
        for rec in self.records.values():
            if rec.status in FINAL or rec.task_id in running:
                continue
            rec.status = SKIPPED
            rec.error = ErrorInfo(code, f"Task {rec.task_id} did not start: {why}")
            self._finish(rec, SKIPPED, now, propagate=False)

    def _halt(self, code: str, why: str) -> None:
        """Stop now: every open attempt fails with ``code`` (not retried; its dependents are
        not blamed on it but skipped with ``code`` too), everything else is finished."""
        self.stopping = code
        now = perf()
        for att in list(self.open):
            self._abandon(att)
            att.closed = True
            del self.open[att]
            if att.timer is not None:
                att.timer.cancel()
            rec = att.rec
            rec.worker = self._where(att)
            rec.add_span(AttemptSpan(att.start, now, _SPAN_OUTCOME.get(code, FAILED),
                                     rec.worker))
            rec.error = ErrorInfo(code, f"Task {rec.task_id}: {why}")
            self._finish(rec, FAILED, now, propagate=False)
        self._skip_rest(code, why)
        self._check()

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

    # ------------------------------------------------------------------ rollback
    async def _rollback(self) -> None:
        """Compensate succeeded tasks that declare a rollback, last finished first."""
        for rec in reversed(self.succeeded):
            node = self.graph.nodes[rec.task_id]
            if node.rollback is None or node.rollback_fn is None or rec.reused:
                continue
            try:
                kwargs = resolve(node.rollback.params, self._view)
                if node.vault is not None:
                    secrets = lookup_secrets(self.vault, node.vault, node.id)
                    kwargs = {**kwargs, "credentials": secrets}
                await self._call(node.rollback_fn, kwargs, node.timeout)
            except Exception as exc:
                rec.rolled_back = False
                err = error_from_exception(exc)
                rec.rollback_error = _redacted(err, self.redactor) if self.redactor else err
            else:
                rec.rolled_back = True
            self._emit("task_rolled_back", rec)

    async def _call(
        self, fn: Callable[..., Any], kwargs: dict[str, Any], timeout: float | None
    ) -> Any:
        """One call outside the scheduler (rollbacks), on the same backend; ``timeout`` in
        seconds."""
        loop = asyncio.get_running_loop()
        handle = None
        if is_async(fn) and self.on_loop:
            aw = fn(**kwargs)
        else:
            fut: asyncio.Future[Any] = loop.create_future()

            def done(ok: bool, value: Any, worker: str | None) -> None:
                if not fut.done():
                    (fut.set_result if ok else fut.set_exception)(value)

            handle = self.backend.submit(fn, kwargs, done)
            aw = fut
        try:
            return await asyncio.wait_for(aw, timeout)
        except TimeoutError:
            if handle is not None:
                self.backend.abandon(handle)
            raise _Timeout(f"rollback timed out after {timeout:g} s") from None

    # ------------------------------------------------------------------ plumbing
    def _emit(
        self, kind: EventKind, rec: TaskRecord | RunOutcome, now: float | None = None
    ) -> None:
        """Tell the subscribers; ``now`` is a perf-counter time (seconds), default now."""
        if self.dispatch[kind] is not None:
            self.bus.emit(kind, rec, (perf() if now is None else now) - self.perf_start)

    async def _cleanup(self) -> None:
        for att in list(self.open):  # only on internal errors: never leave a task behind
            self._abandon(att)
        for handle in self.backoff.values():
            handle.cancel()
        self.closing = True
        self.jobs.clear()
        for w in self.workers:
            w.cancel()
        self.abandoned.extend(self.workers)
        pending = [t for t in self.abandoned if not t.done()]
        if pending:
            # interrupted again while unwinding: leave them cancelled
            with contextlib.suppress(BaseException):
                await asyncio.wait(pending, timeout=CANCEL_GRACE)
        for t in self.abandoned:  # their outcome was recorded: mark it retrieved
            if t.done() and not t.cancelled():
                t.exception()
        with contextlib.suppress(Exception):
            await self.backend.aclose()


def _uncancel(task: asyncio.Task[Any]) -> None:
    """Withdraw the cancellation requests that were meant for one call, not the worker."""
    while task.cancelling():
        task.uncancel()


_SPAN_OUTCOME = {TASK_TIMEOUT: "timeout", CANCELLED: "cancelled", EXECUTION_TIMEOUT: "timeout"}


def _in_task(task_id: str, exc: Exception) -> Exception:
    """``exc`` with its message naming ``task_id`` (for errors raised before the call)."""
    if isinstance(exc, OktyvError) and not exc.message.startswith(f"Task {task_id}"):
        exc.message = f"Task {task_id}: {exc.message}"
        exc.args = (exc.message,)
    return exc


def _redacted(err: ErrorInfo, redactor: Redactor) -> ErrorInfo:
    text = redactor.text
    return ErrorInfo(
        err.code, text(err.message), text(err.stack) if err.stack else err.stack, err.cause
    )


_FAILED_DEP = "Skipped: dependency "
_BECAUSE = " because "


def _skip_error(failed: TaskRecord) -> ErrorInfo:
    """The error of a task skipped because its dependency ``failed`` did not succeed.

    ``cause`` is that dependency; the message also names the task whose failure started
    the chain of skips (``Skipped: dependency B was skipped because A failed``), read off
    the dependency's own skip message in O(1), since ids hold no spaces.
    """
    dep = failed.task_id
    if failed.status == FAILED:
        return ErrorInfo(DEPENDENCY_FAILED, f"{_FAILED_DEP}{dep} failed", cause=dep)
    why = f"{_FAILED_DEP}{dep} was skipped"
    err = failed.error
    if err is not None and err.code == DEPENDENCY_FAILED:
        msg = err.message
        root = (msg.rsplit(_BECAUSE, 1)[1] if _BECAUSE in msg
                else msg[len(_FAILED_DEP):]).removesuffix(" failed")
        why += f"{_BECAUSE}{root} failed"
    return ErrorInfo(DEPENDENCY_FAILED, why, cause=dep)
