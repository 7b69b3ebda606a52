"""The journal: one run written into a store as it goes, by a subscriber of its events.

A :class:`Journal` subscribes to the engine's one event stream
(:mod:`oktyv_nb.execution.events`); the scheduler knows nothing of it. On the event loop it
only appends the event's live record to a queue (a ``deque``: no lock, no allocation beyond
the queue's own); ``run_started`` hands the journal to the writer and ``run_finished`` wakes
it. Everything
else happens on the store's :class:`Writer` thread, every :data:`COMMIT_INTERVAL` seconds:
it drains the queues, turns the records it finds into one row of columns per run (a record
started and finished since the last commit is written once, final: see
:func:`~oktyv_nb.store.codec.batch_columns`), writes them in one transaction and commits.
So every start and final record is committed within ``COMMIT_INTERVAL`` plus the time the
lock takes, and a process killed mid-run keeps all of them but the last fraction of a
second.

A record read on the writer thread may be changing on the loop; that is harmless, because
the engine pushes a record again after its last change (``task_finished``, then
``task_rolled_back``), and a row is always written from the record's state at write time.

``writer="loop"`` (for measurement, see ``bench/store.py``) commits the same batches on the
event loop instead, from a timer, blocking it while SQLite writes.
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


class Journal:
    """Writes one run into a store; subscribe :attr:`subscribers` to its event stream.

    ``done`` resolves once the run's end is committed (:meth:`wait` awaits it without
    blocking the loop).
    """

    def __init__(
        self, writer: Writer, *, dag: str | None, vault: Mapping[str, Any] | None,
        allow_pickle: bool, mode: str = "thread",
    ) -> None:
        self.writer = writer
        self.dag = dag
        self.vault = vault
        self.allow_pickle = allow_pickle
        self.qualnames: dict[str, str] = {}  # task id -> its tool's qualified name (cache)
        self.queue: deque[TaskRecord] = deque()
        self.outcome: RunOutcome | None = None
        self.redactor = Redactor()
        self.run_key: int | None = None
        self.ended = False
        self.failures = 0
        self.error: BaseException | None = None
        self.done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._pending: dict[str, TaskRecord] = {}
        self._tentative: int | None = None
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.mode = mode
        push = self.queue.append
        if mode == "loop":
            def on_task(kind: str, rec: TaskRecord, time: float) -> None:
                push(rec)
                if self._timer is None:
                    self._timer = self._loop.call_later(  # type: ignore[union-attr]
                        COMMIT_INTERVAL, self._flush_on_loop
                    )
        else:
            def on_task(kind: str, rec: TaskRecord, time: float) -> None:
                push(rec)

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
            self._learn_secrets(outcome)
            self.qualnames = {
                tid: tool_identity(n.fn)[0]
                for tid, n in outcome.graph.nodes.items() if n.cache is not None
            }
            if self.mode == "loop":
                self._loop = asyncio.get_running_loop()
                self.writer.flush_now(self)
            else:
                self.writer.attach(self)
            return
        self.ended = True
        if self.mode == "loop":
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.writer.flush_now(self)
            if not self.done.done():  # the commit failed: the writer thread retries it
                self.writer.attach(self)
        else:
            self.writer.wake()

    def _flush_on_loop(self) -> None:
        self._timer = None
        self.writer.flush_now(self)

    def _learn_secrets(self, outcome: RunOutcome) -> None:
        """Every secret the run may use, known before anything is written: the sets its
        tasks name (the engine learns each only when its task starts)."""
        if self.vault is None:
            return
        names = {n.vault for n in outcome.graph.nodes.values() if n.vault is not None}
        for name in names:
            with contextlib.suppress(Exception):
                self.redactor.add(lookup_secrets(self.vault, name, "").values())

    async def wait(self) -> None:
        """Wait (without blocking the loop) until the run's end is committed; a store that
        could not be written is reported as a warning, never as the run's error."""
        try:
            await asyncio.wrap_future(self.done)
        except Exception as exc:
            warnings.warn(f"oktyv_nb run store: the run was not fully written: {exc}",
                          RuntimeWarning, stacklevel=2)

    # ------------------------------------------------------------------ on the writer
    def write(self, conn: Any) -> None:
        """Write what is queued (in the caller's transaction)."""
        outcome = self.outcome
        if outcome is None:
            return
        ended = self.ended  # read first: when set, every record was queued before it
        self._closing = ended
        queue = self.queue
        pending = self._pending
        while queue:
            rec = queue.popleft()
            pending[rec.task_id] = rec
        secrets = outcome.redactor.secrets
        if secrets and not secrets <= self.redactor.secrets:
            self.redactor.add(frozenset(secrets))  # a copy: the loop may be adding to it
        redactor = self.redactor if self.redactor else None
        offset = -outcome.perf_start  # task times: seconds since the run started
        run = self.run_key
        if run is None:
            run = self._tentative = self._header(conn, outcome, redactor)
        recs = [r for r in pending.values() if r.start is not None or r.status in FINAL]
        if recs:  # (a record with no start and not final has nothing to say yet)

            def put_blob(blob: bytes) -> int:
                return conn.execute(_INSERT_BLOB, (run, blob)).lastrowid

            row, results = codec.batch_columns(recs, offset, redactor, self.allow_pickle,
                                               put_blob)
            conn.execute(_INSERT_RECORDS, (run, *row))
            cache_rows = []
            for rec, kind, payload, raw in results:
                if rec.cache_key is not None and not rec.cached and kind != codec.NOT_STORED:
                    if kind == codec.JSON and raw is None:
                        raw = codec.dumps(payload)
                    cache_rows.append((
                        rec.cache_key, rec.tool, self.qualnames.get(rec.task_id, rec.tool),
                        time.time(), kind, raw, outcome.execution_id, rec.task_id,
                    ))
            if cache_rows:
                conn.executemany(_INSERT_CACHE, cache_rows)
        if ended:
            conn.execute(_END_RUN, (*_summary(outcome), run))

    def _header(self, conn: Any, outcome: RunOutcome, redactor: Redactor | None) -> int:
        graph = outcome.graph
        specs = [n.spec for n in graph.nodes.values()]
        deps = {tid: n.deps for tid, n in graph.nodes.items()}
        tasks = codec.task_columns(specs, deps, redactor, self.allow_pickle)
        c = outcome.config
        config = codec.dumps({
            "max_concurrent": c.max_concurrent, "failure_mode": c.failure_mode,
            "timeout": c.timeout, "strategy": c.strategy,
        })
        pid = os.getpid()
        cur = conn.execute(_INSERT_RUN, (
            outcome.execution_id, self.dag, *tasks, codec.dumps(_request_config(c)), config,
            outcome.backend, outcome.wall_start.timestamp(), pid, process_start(pid),
            socket.gethostname(), len(graph.nodes),
        ))
        return cur.lastrowid

    def committed(self) -> bool:
        """The last :meth:`write` was committed; returns True when the run is all written."""
        if self._tentative is not None:
            self.run_key, self._tentative = self._tentative, None
        self._pending.clear()
        self.failures = 0
        if self._closing and not self.queue:
            if not self.done.done():
                self.done.set_result(None)
            return True
        return False

    def failed(self, exc: BaseException) -> bool:
        """The last :meth:`write` was rolled back; returns True when the journal gives up."""
        self._tentative = None
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
            if not active:  # idle until a run starts (or the store closes)
                self._wake.wait()
                self._wake.clear()
                continue
            # A run that just started waits for the next commit like the rest: its header
            # then shares a transaction with its first records, and a short run is written
            # once, when it ends, without competing with it for the interpreter.
            self._wake.wait(COMMIT_INTERVAL)
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
        """Commit every active journal's queue now, on the calling thread."""
        with self._lock:
            journals = list(self._active)
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
