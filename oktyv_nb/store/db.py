"""The store's SQLite file: its schema, its version check, and its connections.

One file per store, in WAL mode (readers never wait for the writer, nor the writer for
readers), ``synchronous=NORMAL`` (a commit survives a process crash; the last commits may be
lost only if the machine itself loses power). A store is recognised by its header's
``application_id`` (:data:`APPLICATION_ID`) and versioned by ``user_version``
(:data:`SCHEMA_VERSION`), so an empty or foreign file is told apart from an old store
without reading any table.

Tables (a run's ``start``/``end`` and the cache's ``created`` are Unix seconds; task times
are seconds since their run's ``start``, which keeps them precise to the nanosecond):

``runs``
    one row per run: ``execution_id``, ``dag`` (its name); its tasks, in columns (see
    :func:`~oktyv_nb.store.codec.task_columns`: ``task_ids`` joined by newlines, then JSON
    lists ``tools``, ``params``, ``depends_on``, the other fields in ``options``, ``pickled``
    and ``unstored`` for params that are not JSON values) and ``request_config`` (JSON): the
    request as ``to_request()`` gives it, which :meth:`RunStore.request` puts back together;
    ``config`` (JSON: the run settings, seconds), ``backend``, ``start``, ``end`` (NULL until
    it ends), ``interrupted``, the writer's ``pid``, ``pid_start`` (when that process
    started, to tell a reused pid) and ``host``, ``ntasks`` and, once it ended,
    ``succeeded``/``failed``/``skipped``/``makespan_s``.
``records``
    the journal, append-only: one row per commit of a run, its records in columns: ``seq``,
    ``run``, ``n``, ``ids`` (the task ids joined by newlines), ``status`` (one byte a task,
    the index in :data:`~oktyv_nb.execution.records.STATUSES`), ``attempts`` (int64s),
    ``times`` (three float64s a task: ready, start, end; NaN for none), ``workers`` (JSON
    list of the worker names used) and ``worker_ix`` (uint16s: 0 for none, else 1 + the
    index in ``workers``), all little-endian; and ``rare`` (JSON object keyed by position:
    ``error`` ``[code, message, stack, cause, root]``, the result as ``kind`` + ``result``
    (``json``: the value; ``pickle``: its ``blobs`` id; ``not_stored``: ``{"reason",
    "text"}``), ``spans`` of the attempts, ``reused``, ``cached``, ``cache_note``,
    ``rolled_back``, ``rollback_error``). A task's latest entry is its state; an entry not
    final (``running``, ``ready``, ``retrying``) says it started. Columns rather than a row
    per task keep a task's journaling to a few list appends.
``blobs``
    pickled results (``id``, ``run``, ``value``: cloudpickle bytes).
``cache``
    the result cache: ``key`` (see :mod:`oktyv_nb.execution.cache`), ``tool`` (the task's
    tool name), ``qualname``, ``created``, ``kind`` (``json``: ``value`` is JSON text;
    ``pickle``: cloudpickle bytes; NULL: the result was None) + ``value``, and the run and
    task that stored it.

Writes go through :meth:`Database.transaction` (``BEGIN IMMEDIATE``: the write lock is taken
first, so a transaction never fails half-way for a lock; SQLite's busy handler waits up to
:data:`BUSY_TIMEOUT` seconds for it, and a transaction that still finds the lock taken is
retried), so several processes may write one store at once and none loses a write.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator

from oktyv_nb.errors import NotAStoreError, StoreError, StoreVersionError

__all__ = ["APPLICATION_ID", "BUSY_TIMEOUT", "SCHEMA_VERSION", "Database"]

SCHEMA_VERSION = 1
#: The SQLite header's application_id of a run store: "Oktv".
APPLICATION_ID = 0x4F6B7476
#: Seconds a write waits for another process's lock before it is retried.
BUSY_TIMEOUT = 30.0
_RETRIES = 20  # of a transaction that still found the lock taken (10 minutes in all)
_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE runs (
    run INTEGER PRIMARY KEY,
    execution_id TEXT NOT NULL UNIQUE,
    dag TEXT,
    task_ids TEXT NOT NULL,
    tools TEXT NOT NULL,
    params TEXT NOT NULL,
    depends_on TEXT NOT NULL,
    options TEXT,
    pickled BLOB,
    unstored TEXT,
    request_config TEXT NOT NULL,
    config TEXT NOT NULL,
    backend TEXT,
    start REAL NOT NULL,
    end REAL,
    interrupted INTEGER,
    pid INTEGER,
    pid_start TEXT,
    host TEXT,
    ntasks INTEGER NOT NULL,
    succeeded INTEGER,
    failed INTEGER,
    skipped INTEGER,
    makespan_s REAL
);
CREATE INDEX runs_by_start ON runs (start);
CREATE INDEX runs_by_dag ON runs (dag, start);
CREATE TABLE records (
    seq INTEGER PRIMARY KEY,
    run INTEGER NOT NULL,
    n INTEGER NOT NULL,
    ids TEXT NOT NULL,
    status BLOB NOT NULL,
    attempts BLOB NOT NULL,
    times BLOB NOT NULL,
    workers TEXT NOT NULL,
    worker_ix BLOB NOT NULL,
    rare TEXT
);
CREATE INDEX records_by_run ON records (run);
CREATE TABLE blobs (
    id INTEGER PRIMARY KEY,
    run INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE INDEX blobs_by_run ON blobs (run);
CREATE TABLE cache (
    key TEXT PRIMARY KEY,
    tool TEXT NOT NULL,
    qualname TEXT NOT NULL,
    created REAL NOT NULL,
    kind TEXT,
    value BLOB,
    execution_id TEXT,
    task_id TEXT
);
CREATE INDEX cache_by_tool ON cache (tool);
"""


def _locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class Database:
    """The connections to one store file.

    Writes use one connection (``check_same_thread=False``) guarded by a lock: the store's
    writer thread and the rare direct writes (``clear_cache``) take turns. Reads use one
    connection per thread, so a cache lookup on the event loop never waits for the writer.
    ``":memory:"`` keeps everything on the one connection (a memory database is private to
    its connection), for tests.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.memory = path == ":memory:"
        self.lock = threading.RLock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        if not self.memory:
            _check_file(path)
        self.conn = self._connect()
        try:
            self._open()
        except BaseException:
            self.conn.close()
            raise
        self.closed = False

    def _connect(self, read_only: bool = False) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the run store {self.path!r}: {exc}",
                             path=self.path) from exc
        conn.execute("PRAGMA synchronous=NORMAL")
        if read_only:
            conn.execute("PRAGMA query_only=1")
        return conn

    def _open(self) -> None:
        """Check the file is a store of this version, or make an empty file one."""
        for attempt in range(_RETRIES):
            try:
                if self._check() == "empty":
                    self._create()
                return
            except sqlite3.OperationalError as exc:
                if not _locked(exc) or attempt == _RETRIES - 1:
                    raise StoreError(f"cannot open the run store {self.path!r}: {exc}",
                                     path=self.path) from exc
                time.sleep(0.05)
            except sqlite3.DatabaseError as exc:  # "file is not a database"
                raise NotAStoreError(
                    f"{self.path!r} is not an oktyv_nb run store ({exc})", path=self.path
                ) from exc

    def _check(self) -> str:
        c = self.conn
        app = c.execute("PRAGMA application_id").fetchone()[0]
        version = c.execute("PRAGMA user_version").fetchone()[0]
        if app == APPLICATION_ID:
            if version != SCHEMA_VERSION:
                raise StoreVersionError(
                    f"the run store {self.path!r} has schema version {version}, and this "
                    f"oktyv_nb reads version {SCHEMA_VERSION}; open it with the oktyv_nb that "
                    "wrote it, or start a new store file",
                    path=self.path, found=version, expected=SCHEMA_VERSION,
                )
            return "store"
        tables = c.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app != 0 or tables:
            raise NotAStoreError(
                f"{self.path!r} is an SQLite database but not an oktyv_nb run store "
                f"(application_id {app:#x}, {tables} schema objects); give RunStore a new "
                "file name",
                path=self.path,
            )
        return "empty"

    def _create(self) -> None:
        c = self.conn
        if not self.memory:
            c.execute("PRAGMA journal_mode=WAL")  # persistent: set once, for every process
        c.execute("BEGIN IMMEDIATE")
        try:
            if self._check() == "empty":  # another process may have made it meanwhile
                for statement in _SCHEMA.split(";"):  # not executescript: it commits
                    if statement.strip():
                        c.execute(statement)
                c.execute(f"PRAGMA application_id={APPLICATION_ID}")
                c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            c.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                c.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` … ``COMMIT``), retried while another
        process holds the lock; rolled back when the body raises."""
        with self.lock:
            c = self.conn
            for attempt in range(_RETRIES):
                try:
                    c.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:
                    if not _locked(exc) or attempt == _RETRIES - 1:
                        raise
            try:
                yield c
                c.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    c.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot of the store."""
        if self.memory:
            with self.lock:
                yield self.conn
            return
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect(read_only=True)
            with self.lock:
                self._readers.append(conn)
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("COMMIT")

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            for conn in [*self._readers, self.conn]:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()


def _check_file(path: str) -> None:
    """A file that exists and is not SQLite at all is refused before SQLite touches it."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise StoreError(
                f"cannot create the run store {path!r}: the directory {parent!r} does not "
                "exist", path=path,
            ) from None
        return
    except IsADirectoryError:
        raise NotAStoreError(f"{path!r} is a directory, not a run store file",
                             path=path) from None
    except OSError as exc:
        raise StoreError(f"cannot read the run store {path!r}: {exc}", path=path) from exc
    if head and head != _SQLITE_MAGIC:
        raise NotAStoreError(
            f"{path!r} is not an oktyv_nb run store (not an SQLite file); give RunStore a new "
            "file name", path=path,
        )
