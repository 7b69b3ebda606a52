"""The journal: one run written into a store as it goes, by a subscriber of its events.

A :class:`Journal` subscribes to the engine's one event stream
(:mod:`oktyv_nb.execution.events`); the scheduler knows nothing of it. Per event it only
appends the event's live record to a queue (a ``deque``) and, for the first event after a
batch, arms a timer. Every :data:`COMMIT_INTERVAL` seconds, and when the run ends, the timer
turns the queue into one batch of columns (a record started and finished since the last
batch is written once, final: see :func:`~oktyv_nb.store.codec.prepare_batch`): a few
microseconds a task of pure computation on the loop. The store's :class:`Writer` thread does
the rest, where waiting happens: it pickles the results that are not JSON values, writes the
batches in one transaction (waiting for another process's lock if need be) and commits. The
event loop never waits for the disk or for a lock.

Why batches are made on the loop and not on the thread: both threads would need the
interpreter lock for that work, and two threads taking turns at it cost far more than the
work itself (measured with ``bench/store.py``: about 9 µs a task instead of 2–3 µs on no-op
tasks); the thread keeps what releases that lock (SQLite) and what may take long (pickles).

So every start and final record is committed within ``COMMIT_INTERVAL`` plus the time the
commit takes, and a process killed mid-run keeps all of them but the last fraction of a
second. ``writer="loop"`` (for measurement) also commits on the loop, from the timer.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import socket
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from oktyv_nb.execution.cache import tool_identity
from oktyv_nb.execution.records import FAILED, FINAL, SKIPPED, SUCCESS, TaskRecord
from oktyv_nb.model.vault import Redactor, lookup_secrets
from oktyv_nb.store import codec

if TYPE_CHECKING:
    from oktyv_nb.execution.outcome import RunOutcome
    from oktyv_nb.store.db import Database

__all__ = ["COMMIT_INTERVAL", "Journal", "Writer", "process_start"]

#: Seconds between the writer's commits while a run is going on.
COMMIT_INTERVAL = 0.2
_GIVE_UP = 5  # failed commits of an ended run before its journal gives up, with a warning

_INSERT_RUN = (
    "INSERT INTO runs (execution_id, dag, task_ids, tools, params, depends_on, options, "
    "pickled, unstored, request_config, config, backend, start, pid, pid_start, host, ntasks) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_RECORDS = (
    "INSERT INTO records (run, n, ids, status, attempts, times, workers, worker_ix, rare) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_BLOB = "INSERT INTO blobs (run, value) VALUES (?, ?)"
_INSERT_CACHE = "INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_END_RUN = (
    "UPDATE runs SET end = ?, interrupted = ?, succeeded = ?, failed = ?, skipped = ?, "
    "makespan_s = ? WHERE run = ?"
)


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, as the kernel counts it (Linux), to tell a pid reused
    by another process; None where that is not known."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()  # field 22, starttime
    except (OSError, IndexError):
        return None


_PROCESS: tuple[int, str | None, str] | None = None


def _this_process() -> tuple[int, str | None, str]:
    """``(pid, start, host)`` of this process, read once (again after a fork)."""
    global _PROCESS
    pid = os.getpid()
    if _PROCESS is None or _PROCESS[0] != pid:
        _PROCESS = (pid, process_start(pid), socket.gethostname())
    return _PROCESS


class Journal:
    """Writes one run into a store; subscribe :attr:`subscribers` to its event stream.

    On the loop: events queue records; every :data:`COMMIT_INTERVAL` seconds (a timer armed
    by the first event after the last batch) and when the run ends, :meth:`_prepare` turns
    the queue into a :class:`~oktyv_nb.store.codec.Prepared` batch for the writer. On the
    writer thread: :meth:`write`. ``done`` resolves once the run's end is committed
    (:meth:`wait` awaits it without blocking the loop).
    """

    def __init__(
        self, writer: Writer, *, dag: str | None, vault: Mapping[str, Any] | None,
        allow_pickle: bool, mode: str = "thread",
    ) -> None:
        self.writer = writer
        self.dag = dag
        self.vault = vault
        self.allow_pickle = allow_pickle
        self.mode = mode
        self.qualnames: dict[str, str] = {}  # task id -> its tool's qualified name (cache)
        self.queue: deque[TaskRecord] = deque()  # records, from the events (loop)
        self.ready: deque[codec.Prepared] = deque()  # batches, loop -> writer
        self.outcome: RunOutcome | None = None
        self.redactor = Redactor()
        self.header: tuple[Any, ...] | None = None
        self.summary: tuple[Any, ...] | None = None
        self.run_key: int | None = None
        self.ended = False
        self.failures = 0
        self.error: BaseException | None = None
        self.done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._inflight: list[codec.Prepared] = []
        self._tentative: int | None = None
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        push = self.queue.append

        def on_task(kind: str, rec: TaskRecord, time: float) -> None:
            push(rec)
            if self._timer is None:
                self._arm()

        on_task.event_kinds = ("task_started", "task_finished", "task_rolled_back")  # type: ignore[attr-defined]
        self.on_task = on_task

        def on_run(kind: str, outcome: RunOutcome, time: float) -> None:
            self._on_run(kind, outcome)

        on_run.event_kinds = ("run_started", "run_finished")  # type: ignore[attr-defined]
        self.on_run = on_run
        #: The event subscribers to give the run.
        self.subscribers = [on_run, on_task]

    # ------------------------------------------------------------------ on the loop
    def _on_run(self, kind: str, outcome: RunOutcome) -> None:
        if kind == "run_started":
            self.outcome = outcome
            self._loop = asyncio.get_running_loop()
            self._learn_secrets(outcome)
            self.qualnames = {
                tid: tool_identity(n.fn)[0]
                for tid, n in outcome.graph.nodes.items() if n.cache is not None
            }
            if self.mode != "loop":
                self.writer.attach(self)
            self._arm()  # the header goes with the first batch, or alone if none comes
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._prepare()
        self.summary = _summary(outcome)
        self.ended = True  # after the last batch: the writer reads it first
        self._hand_over()

    def _arm(self) -> None:
        self._timer = self._loop.call_later(  # type: ignore[union-attr]
            COMMIT_INTERVAL, self._tick
        )

    def _tick(self) -> None:
        self._timer = None
        self._prepare()
        self._hand_over()

    def _hand_over(self) -> None:
        if self.mode == "loop":
            self.writer.flush_now(self)
            if self.ended and not self.done.done():  # that commit failed: the thread retries
                self.writer.attach(self)
        else:
            self.writer.wake()

    def _prepare(self) -> None:
        """Turn what the events queued into a batch for the writer (on the loop: the
        records change only here, so they are read whole)."""
        outcome = self.outcome
        if outcome is None:
            return
        secrets = outcome.redactor.secrets
        if secrets and not secrets <= self.redactor.secrets:
            self.redactor.add(secrets)
        redactor = self.redactor if self.redactor else None
        if self.header is None:
            self.header = self._header(outcome, redactor)
        queue = self.queue
        pending: dict[str, TaskRecord] = {}
        while queue:
            rec = queue.popleft()
            pending[rec.task_id] = rec
        recs = [r for r in pending.values() if r.start is not None or r.status in FINAL]
        if recs:  # (a record with no start and not final has nothing to say yet)
            offset = -outcome.perf_start  # task times: seconds since the run started
            self.ready.append(codec.prepare_batch(recs, offset, redactor, self.allow_pickle))

    def _learn_secrets(self, outcome: RunOutcome) -> None:
        """Every secret the run may use, known before anything is written: the sets its
        tasks name (the engine learns each only when its task starts)."""
        if self.vault is None:
            return
        names = {n.vault for n in outcome.graph.nodes.values() if n.vault is not None}
        for name in names:
            with contextlib.suppress(Exception):
                self.redactor.add(lookup_secrets(self.vault, name, "").values())

    def _header(self, outcome: RunOutcome, redactor: Redactor | None) -> tuple[Any, ...]:
        graph = outcome.graph
        specs = [n.spec if n.spec is not None else _spec_of(n) for n in graph.nodes.values()]
        deps = {tid: n.deps for tid, n in graph.nodes.items()}
        tasks = codec.task_columns(specs, deps, redactor, self.allow_pickle)
        c = outcome.config
        config = codec.dumps({
            "max_concurrent": c.max_concurrent, "failure_mode": c.failure_mode,
            "timeout": c.timeout, "strategy": c.strategy,
        })
        pid, started, host = _this_process()
        return (
            outcome.execution_id, self.dag, *tasks, codec.dumps(_request_config(c)), config,
            outcome.backend, outcome.wall_start.timestamp(), pid, started, host,
            len(graph.nodes),
        )

    async def wait(self) -> None:
        """Wait (without blocking the loop) until the run's end is committed; a store that
        could not be written is reported as a warning, never as the run's error."""
        try:
            await asyncio.wrap_future(self.done)
        except Exception as exc:
            warnings.warn(f"oktyv_nb run store: the run was not fully written: {exc}",
                          RuntimeWarning, stacklevel=2)

    # ------------------------------------------------------------------ on the writer
    def has_work(self) -> bool:
        """Whether :meth:`write` has anything to write."""
        return self.header is not None and (
            self.run_key is None or bool(self.ready) or bool(self._inflight)
            or (self.ended and not self.done.done())
        )

    def write(self, conn: Any) -> None:
        """Write the batches made so far (in the caller's transaction)."""
        ended = self.ended  # read first: when set, every batch was made before it
        header = self.header
        if header is None:
            return  # not even the first batch yet
        run = self.run_key
        if run is None:
            run = self._tentative = conn.execute(_INSERT_RUN, header).lastrowid
        ready = self.ready
        while ready:
            self._inflight.append(ready.popleft())

        def put_blob(blob: bytes) -> int:
            return conn.execute(_INSERT_BLOB, (run, blob)).lastrowid

        outcome = self.outcome
        for batch in self._inflight:
            row, results = batch.finish(put_blob)
            conn.execute(_INSERT_RECORDS, (run, *row))
            cache_rows = []
            for rec, kind, payload, raw in results:
                if rec.cache_key is not None and not rec.cached and kind != codec.NOT_STORED:
                    if kind == codec.JSON and raw is None:
                        raw = codec.dumps(payload)
                    cache_rows.append((
                        rec.cache_key, rec.tool,
                        self.qualnames.get(rec.map_of or rec.task_id, rec.tool),
                        time.time(), kind, raw, outcome.execution_id,  # type: ignore[union-attr]
                        rec.task_id,
                    ))
            if cache_rows:
                conn.executemany(_INSERT_CACHE, cache_rows)
        if ended and not ready:
            conn.execute(_END_RUN, (*self.summary, run))  # type: ignore[misc]
            self._closing = True

    def committed(self) -> bool:
        """The last :meth:`write` was committed; returns True when the run is all written."""
        if self._tentative is not None:
            self.run_key, self._tentative = self._tentative, None
        self._inflight.clear()
        self.failures = 0
        if self._closing:
            if not self.done.done():
                self.done.set_result(None)
            return True
        return False

    def failed(self, exc: BaseException) -> bool:
        """The last :meth:`write` was rolled back (its batches are written again next
        time); returns True when the journal gives up."""
        self._tentative = None
        self._closing = False
        self.failures += 1
        self.error = exc
        if self.failures == 1:
            warnings.warn(
                f"oktyv_nb run store: a write failed ({type(exc).__name__}: {exc}); retrying",
                RuntimeWarning, stacklevel=2,
            )
        if self.ended and self.failures >= _GIVE_UP:
            if not self.done.done():
                self.done.set_exception(exc)
            return True
        return False


def _spec_of(node: Any) -> dict[str, Any]:
    """The fields a node keeps of a spec it was built without (``keep_specs=False``)."""
    return {
        "id": node.id, "tool": node.tool, "params": node.params,
        "depends_on": list(node.deps) or None, "priority": None, "timeout": None,
        "vault": node.vault, "retry_policy": None, "rollback": None, "run_if": None,
        "cache": None,
    }


def _request_config(c: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"maxConcurrent": c.max_concurrent, "failureMode": c.failure_mode}
    if c.timeout is not None:
        d["timeout"] = c.timeout * 1000.0
    return d


def _summary(outcome: RunOutcome) -> tuple[Any, ...]:
    """``end, interrupted, succeeded, failed, skipped, makespan_s`` of an ended run."""
    n = {SUCCESS: 0, FAILED: 0, SKIPPED: 0}
    first = float("inf")
    last = float("-inf")
    for r in outcome.records.values():
        st = r.status
        if st in n:
            n[st] += 1
        else:
            n[FAILED] += 1  # only in a run that crashed: counted as the result counts it
        if st == SUCCESS and r.attempts == 1:
            s, e = r.start, r.end
            if s is not None and s < first:
                first = s
            if e is not None and e > last:
                last = e
        elif r.attempts:
            for sp in r.spans:
                if sp.start < first:
                    first = sp.start
                if sp.end > last:
                    last = sp.end
    makespan = last - first if last >= first else 0.0
    end = outcome.perf_end if outcome.perf_end is not None else outcome.perf_start
    return (end + outcome.clock_offset, int(outcome.interrupted), n[SUCCESS], n[FAILED],
            n[SKIPPED], makespan)


class Writer:
    """A store's writer thread: commits every active journal's queue every
    :data:`COMMIT_INTERVAL` seconds, and at once when a run ends. Started on first use;
    sleeps without waking while no run is going on."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._active: list[Journal] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop = False
        _WRITERS.add(self)

    def attach(self, journal: Journal) -> None:
        with self._lock:
            if journal not in self._active:
                self._active.append(journal)
            if self._thread is None or not self._thread.is_alive():
                self._stop = False
                self._thread = threading.Thread(
                    target=self._run, name="oktyv-store-writer", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while True:
            with self._lock:
                active = bool(self._active)
                if not active and self._stop:
                    self._thread = None
                    return
            # Woken by a journal handing over a batch; the timeout only retries a write
            # that failed. Cleared before the flush, so a wake-up is never lost.
            self._wake.wait(COMMIT_INTERVAL if active else None)
            self._wake.clear()
            self.flush()

    def _commit(self, journals: list[Journal]) -> None:
        """One transaction for ``journals``; their bookkeeping under the same lock, so that
        a flush from another thread never sees a write half accounted for."""
        with self.db.lock:
            try:
                with self.db.transaction() as conn:
                    for j in journals:
                        j.write(conn)
            except Exception as exc:
                gone = [j for j in journals if j.failed(exc)]
            else:
                gone = [j for j in journals if j.committed()]
        if gone:
            with self._lock:
                self._active = [j for j in self._active if j not in gone]

    def flush(self) -> None:
        """Commit every active journal's batches now, on the calling thread."""
        with self._lock:
            journals = [j for j in self._active if j.has_work()]
        if journals:
            self._commit(journals)

    def flush_now(self, journal: Journal) -> None:
        """Commit ``journal``'s queue on the calling thread (``writer="loop"``)."""
        self._commit([journal])

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued and stop the thread once no run is going on (waits at most
        ``timeout`` s for it)."""
        with self._lock:
            self._stop = True
            thread = self._thread
        self._wake.set()
        self.flush()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)


_WRITERS: weakref.WeakSet[Writer] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    """At interpreter exit, commit what every store's writer still holds (a run still going
    on in a daemon thread is written as far as it got)."""
    for w in list(_WRITERS):
        with contextlib.suppress(Exception):
            w.flush()
