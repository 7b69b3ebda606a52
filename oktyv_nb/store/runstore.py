""":class:`RunStore`: runs that outlive the kernel, and the result cache (SPEC §17)."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from oktyv_nb.errors import RUN_ABORTED, RunNotFoundError
from oktyv_nb.execution.cache import tool_identity
from oktyv_nb.execution.outcome import RunConfig, RunOutcome
from oktyv_nb.execution.records import (
    FAILED,
    SKIPPED,
    SUCCESS,
    AttemptSpan,
    ErrorInfo,
    NotStored,
    TaskRecord,
    utc_datetime,
)
from oktyv_nb.model.graph import Graph, build_graph
from oktyv_nb.model.schema import TaskSpec
from oktyv_nb.results.run import Run
from oktyv_nb.store.codec import JSON, batch_entries, decode_value, restore_record, task_dicts
from oktyv_nb.store.db import Database
from oktyv_nb.store.journal import Journal, Writer, process_start

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RUNNING", "RunStore"]

ABORTED, RUNNING = "aborted", "running"
WRITERS = ("thread", "loop")
_HEAD = (
    "run, execution_id, dag, request_config, config, backend, start, end, interrupted, pid, "
    "pid_start, host, ntasks, succeeded, failed, skipped, makespan_s"
)
_TASKS = "task_ids, tools, params, depends_on, options, pickled, unstored"
_COLUMNS = [
    "execution_id", "dag", "status", "start", "end", "makespan_s", "tasks", "succeeded",
    "failed", "skipped", "backend", "max_concurrent",
]


class RunStore:
    """Runs kept in an SQLite file (WAL mode), readable from any process; and the cache.

    ``ok.RunStore(path)`` (a ``str`` or an ``os.PathLike``; ``":memory:"`` for a store that
    lives as long as the object) opens the store, making it when the file does not exist or
    is empty. Give it to a run (``ok.DAG(..., store=store)``, ``dag.run(store=store)``,
    ``ok.execute_request(..., store=store)``) and the run is journaled as it goes: its header
    when it starts, every task start and final record within a fraction of a second (on a
    writer thread, never blocking the event loop), all of it when it ends.

    Results are stored as JSON when they are JSON values, otherwise pickled (cloudpickle);
    with ``pickle=False`` only their ``repr`` is kept, and such tasks run again on resume.
    Secrets (the vault's values) are never written. Reading a pickled result unpickles it:
    open only stores you trust, as with any pickle.

    ``writer="loop"`` commits on the event loop instead of a thread (for benchmarks).
    """

    def __init__(self, path: str | os.PathLike[str], *, pickle: bool = True,
                 writer: str = "thread") -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"RunStore path must be a str or an os.PathLike, got "
                            f"{type(path).__name__}")
        if writer not in WRITERS:
            raise ValueError(f"RunStore writer must be 'thread' or 'loop', got {writer!r}")
        self.path = os.fspath(path)
        self.pickle = bool(pickle)
        self.writer_mode = writer
        self.db = Database(self.path)
        self._writer = Writer(self.db)
        self._host = socket.gethostname()

    # ------------------------------------------------------------------ writing
    def journal(self, *, dag: str | None = None,
                vault: Mapping[str, Any] | None = None) -> Journal:
        """A journal for one run: subscribe its ``subscribers`` to the run's events, then
        ``await journal.wait()`` once it has ended (the front ends do this)."""
        return Journal(self._writer, dag=dag, vault=vault, allow_pickle=self.pickle,
                       mode=self.writer_mode)

    def get(self, key: str, expire: float | None) -> tuple[bool, Any]:
        """The result cached under ``key`` when younger than ``expire`` seconds (None: any
        age): ``(True, value)``, else ``(False, None)``. The engine's cache lookup."""
        with self.db.reading() as c:
            row = c.execute("SELECT created, kind, value FROM cache WHERE key = ?",
                            (key,)).fetchone()
        if row is None:
            return False, None
        created, kind, data = row
        if expire is not None and time.time() - created > expire:
            return False, None
        value = json.loads(data) if kind == JSON else decode_value(kind, data)
        if isinstance(value, NotStored):  # e.g. its class cannot be imported here
            return False, None
        return True, value

    def clear_cache(self, tool: str | Callable[..., Any] | None = None) -> int:
        """Forget cached results: all of them, or those of ``tool`` (a tool name, a
        qualified name ``module.function``, or the callable). Returns how many."""
        with self.db.transaction() as c:
            if tool is None:
                cur = c.execute("DELETE FROM cache")
            elif callable(tool):
                cur = c.execute("DELETE FROM cache WHERE qualname = ?",
                                (tool_identity(tool)[0],))
            else:
                cur = c.execute("DELETE FROM cache WHERE tool = ? OR qualname = ?",
                                (tool, tool))
            return cur.rowcount

    def delete(self, execution_id: str) -> None:
        """Remove a stored run (its header and records)."""
        with self.db.transaction() as c:
            row = c.execute("SELECT run FROM runs WHERE execution_id = ?",
                            (execution_id,)).fetchone()
            if row is None:
                raise RunNotFoundError(f"no run {execution_id!r} in {self.path!r}",
                                       path=self.path)
            c.execute("DELETE FROM records WHERE run = ?", row)
            c.execute("DELETE FROM blobs WHERE run = ?", row)
            c.execute("DELETE FROM runs WHERE run = ?", row)

    def flush(self) -> None:
        """Commit everything queued now (runs commit on their own within
        ``COMMIT_INTERVAL`` seconds, and ``dag.run()`` returns once its run is committed)."""
        self._writer.flush()

    def close(self) -> None:
        """Commit what is queued, then close the file."""
        self._writer.close()
        self.db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        extra = "" if self.pickle else ", pickle=False"
        return f"RunStore({self.path!r}{extra})"

    # ------------------------------------------------------------------ reading
    def _state(self, head: tuple[Any, ...]) -> str:
        """``running`` or ``aborted`` for a run with no end record."""
        pid, pid_start, host = head[9], head[10], head[11]
        if host != self._host or pid is None:
            return RUNNING  # another machine's process: cannot tell
        return RUNNING if _alive(pid, pid_start) else ABORTED

    def runs(self, dag: Any = None, limit: int | None = None) -> pd.DataFrame:
        """The history: one row per run, newest first, indexed by ``execution_id``, with
        ``dag``, ``status`` (``success``/``partial``/``failure``; ``running``, or
        ``aborted`` for a run whose process died), ``start``, ``end`` (tz-aware UTC; NaT
        until it ends), ``makespan_s``, ``tasks``, ``succeeded``, ``failed``, ``skipped``,
        ``backend``, ``max_concurrent``. ``dag`` (a name or a DAG) filters."""
        import pandas as pd

        rows = []
        with self.db.reading() as c:
            for head in self._heads(c, dag, limit):
                rows.append(self._row(c, head))
        df = pd.DataFrame(rows, columns=_COLUMNS).set_index("execution_id")
        for col in ("start", "end"):
            df[col] = pd.to_datetime(df[col].astype("float64"), unit="s", utc=True)
        for col in ("tasks", "succeeded", "failed", "skipped", "max_concurrent"):
            df[col] = df[col].astype("int64")
        df["makespan_s"] = df["makespan_s"].astype("float64")
        for col in ("dag", "status", "backend"):
            df[col] = df[col].astype("string")
        return df

    def _heads(self, c: Any, dag: Any, limit: int | None) -> list[tuple[Any, ...]]:
        sql = f"SELECT {_HEAD} FROM runs"
        args: list[Any] = []
        if dag is not None:
            name = dag if isinstance(dag, str) else getattr(dag, "name", None)
            if name is None:
                sql += " WHERE dag IS NULL"
            else:
                sql += " WHERE dag = ?"
                args.append(name)
        sql += " ORDER BY start DESC, run DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return c.execute(sql, args).fetchall()

    def _row(self, c: Any, head: tuple[Any, ...]) -> list[Any]:
        (run, eid, dag, _rc, config, backend, start, end, _int, _pid, _ps, _host,
         ntasks, succeeded, failed, skipped, makespan) = head
        mc = json.loads(config).get("max_concurrent")
        if end is not None:
            status = "success" if not failed else ("partial" if succeeded else "failure")
            return [eid, dag, status, start, end, makespan, ntasks, succeeded, failed,
                    skipped, backend, mc]
        status = self._state(head)
        counts = dict.fromkeys((SUCCESS, FAILED, SKIPPED, "started"), 0)
        first = last = None
        for e in _latest_entries(c, run).values():
            st = e[1]
            counts[st if st in counts else "started"] += 1
            if st in counts and e[4] is not None and e[5] is not None:
                first = e[4] if first is None else min(first, e[4])
                last = e[5] if last is None else max(last, e[5])
        failed, skipped = counts[FAILED], counts[SKIPPED]
        if status == ABORTED:  # as load() reads it: started -> failed, the rest skipped
            failed += counts["started"]
            skipped = ntasks - counts[SUCCESS] - failed
        span = (last - first) if first is not None and last is not None else 0.0
        return [eid, dag, status, start, None, span, ntasks, counts[SUCCESS], failed, skipped,
                backend, mc]

    def request(self, execution_id: str) -> dict[str, Any]:
        """The request of a stored run, as ``to_request()`` gave it (camelCase dict, absent
        fields left out); params the store did not keep are a :class:`NotStored`."""
        with self.db.reading() as c:
            head = self._find(c, execution_id)
            columns = c.execute(f"SELECT {_TASKS} FROM runs WHERE run = ?",
                                (head[0],)).fetchone()
        return {"tasks": task_dicts(*columns), "config": json.loads(head[3])}

    def latest(self, dag: Any = None) -> Run | None:
        """The newest stored run (of ``dag``, a name or a DAG, when given), loaded; None when
        there is none."""
        with self.db.reading() as c:
            heads = self._heads(c, dag, 1)
            if not heads:
                return None
            return self._load(c, heads[0])

    def load(self, execution_id: str) -> Run:
        """The stored run ``execution_id`` (or a unique prefix of it) as a :class:`Run`:
        ``df``, ``stats``, ``graph()``, ``timeline()``, ``result`` as for a live run, in any
        process, without its tools. A run whose process died is ``aborted``: its tasks with
        no final record are ``failed`` (they had started) or ``skipped`` with code
        ``RUN_ABORTED``, and ``run.complete`` is False."""
        with self.db.reading() as c:
            return self._load(c, self._find(c, execution_id))

    def _find(self, c: Any, execution_id: str) -> tuple[Any, ...]:
        head = c.execute(f"SELECT {_HEAD} FROM runs WHERE execution_id = ?",
                         (execution_id,)).fetchone()
        if head is None and isinstance(execution_id, str) and len(execution_id) >= 4:
            found = c.execute(
                f"SELECT {_HEAD} FROM runs WHERE substr(execution_id, 1, ?) = ? LIMIT 2",
                (len(execution_id), execution_id),
            ).fetchall()
            head = found[0] if len(found) == 1 else None
        if head is None:
            raise RunNotFoundError(
                f"no run {execution_id!r} in the store {self.path!r}; store.runs() lists "
                "them", path=self.path,
            )
        return head

    def _load(self, c: Any, head: tuple[Any, ...]) -> Run:
        run_key, eid, dag, _rc, config, backend, start, end, interrupted, pid, _ps, host = \
            head[:12]
        columns = c.execute(f"SELECT {_TASKS} FROM runs WHERE run = ?", (run_key,)).fetchone()
        specs = [TaskSpec.model_validate(t).__dict__ for t in task_dicts(*columns)]
        graph = build_graph(specs, _STORED_TOOLS)
        entries = _latest_entries(c, run_key)
        blobs = dict(c.execute("SELECT id, value FROM blobs WHERE run = ?", (run_key,)))
        records = {tid: TaskRecord(tid, n.tool, n.level) for tid, n in graph.nodes.items()}
        final: set[str] = set()
        last = 0.0  # seconds since the run started
        children: dict[str, list[TaskRecord]] = {}
        for tid, entry in entries.items():
            rec = records.get(tid)
            if rec is None:
                rec = _child_record(tid, graph, children)
                if rec is None:
                    continue
            if restore_record(rec, entry, blobs):
                final.add(tid)
            for t in (rec.start, rec.end):
                if t is not None and t > last:
                    last = t
        aborted = end is None and self._state(head) == ABORTED
        if aborted:
            who = f"pid {pid} on {host}"
            for rec in [*records.values(), *(c for cs in children.values() for c in cs)]:
                if rec.task_id not in final:
                    _abort(rec, last, who)
        for tid, kids in children.items():  # an expanded map's record gathers its children
            kids.sort(key=lambda c: c.map_index)  # type: ignore[arg-type, return-value]
            parent = records[tid]
            parent.children = kids
            if parent.status != SUCCESS:
                parent.result = [c.result if c.status == SUCCESS else None for c in kids]
        cfg = json.loads(config)
        outcome = RunOutcome(  # its clock: seconds since the run started
            execution_id=eid, graph=graph, config=RunConfig(**cfg), records=records,
            perf_start=0.0, wall_start=utc_datetime(start),
            perf_end=end - start if end is not None else last, backend=backend or "asyncio",
            interrupted=bool(interrupted), aborted=aborted,
        )
        return Run(outcome, name=dag, label=eid[:8])


def _latest_entries(c: Any, run: int) -> dict[str, tuple[Any, ...]]:
    """Each task's latest journal entry in run ``run``."""
    latest: dict[str, tuple[Any, ...]] = {}
    for row in c.execute(
        "SELECT n, ids, status, attempts, times, workers, worker_ix, rare FROM records "
        "WHERE run = ? ORDER BY seq", (run,),
    ):
        for e in batch_entries(row):
            latest[e[0]] = e
    return latest


_CHILD_ID = re.compile(r"(.+)\[(\d+)\]")


def _child_record(
    tid: str, graph: Graph, children: dict[str, list[TaskRecord]]
) -> TaskRecord | None:
    """The record of stored child ``tid`` (``fetch[3]``) of a mapped task of ``graph``, new
    and listed under its map in ``children``; None for an id that is no such child."""
    m = _CHILD_ID.fullmatch(tid)
    node = graph.nodes.get(m.group(1)) if m else None
    if node is None or node.map is None:
        return None
    rec = TaskRecord(tid, node.tool, node.level)
    rec.map_of = node.id
    rec.map_index = int(m.group(2))  # type: ignore[union-attr]
    children.setdefault(node.id, []).append(rec)
    return rec


def _abort(rec: TaskRecord, last: float, who: str) -> None:
    """An unfinished task of an aborted run: failed when it had started, else skipped."""
    if rec.start is not None and rec.attempts:
        end = max(last, rec.start)
        spans = rec.spans if rec.attempts > 1 else []
        begin = max([rec.start, *(s.end for s in spans)])
        rec.add_span(AttemptSpan(begin, end, FAILED, rec.worker))
        rec.status = FAILED
        rec.end = end
        rec.error = ErrorInfo(
            RUN_ABORTED, f"Task {rec.task_id} was running when its run's process ({who}) died"
        )
    else:
        rec.status = SKIPPED
        rec.start = rec.end = last
        rec.attempts = 0
        rec.error = ErrorInfo(
            RUN_ABORTED, f"Task {rec.task_id} did not start: its run's process ({who}) died"
        )
    rec.result = None


class _StoredTools:
    """The tool table of a loaded run: every name is a placeholder that says the tool is not
    here (a loaded run is read, not run; ``dag.run(resume=run)`` runs the DAG's own tools)."""

    def __init__(self) -> None:
        self._made: dict[str, Callable[..., Any]] = {}

    def lookup(self, name: str, task_id: str | None = None) -> Callable[..., Any]:
        fn = self._made.get(name)
        if fn is None:
            def stored_tool(**params: Any) -> Any:
                raise RuntimeError(
                    f"tool {name!r} of a stored run is not available: a run loaded from a "
                    "store is for reading; run its DAG with dag.run(resume=run)"
                )

            stored_tool.__qualname__ = f"stored_tool[{name}]"
            fn = self._made[name] = stored_tool
        return fn


_STORED_TOOLS = _StoredTools()


def _alive(pid: int, pid_start: str | None) -> bool:
    """Whether process ``pid`` (which started at ``pid_start``, when known) still runs."""
    if os.name == "nt":  # pragma: no cover - exercised on Windows only
        return _alive_windows(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS): the pid exists
    if state in (b"Z", b"X"):
        return False  # a zombie: dead, not reaped yet
    return pid_start is None or process_start(pid) == pid_start


def _alive_windows(pid: int) -> bool:  # pragma: no cover
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x00100000 | 0x1000, False, pid)  # SYNCHRONIZE | QUERY
    if not handle:
        return False
    try:
        return kernel32.WaitForSingleObject(handle, 0) == 0x102  # WAIT_TIMEOUT: running
    finally:
        kernel32.CloseHandle(handle)

