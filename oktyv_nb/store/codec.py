"""What the store writes and reads back: values, a run's tasks, task records.

Values (results, params that are not JSON) are stored as JSON when they are JSON values that
come back equal (so a tuple or a dict with int keys is not "JSON": it would come back
changed), else pickled with cloudpickle, else (``pickle=False``, or pickling failed) not
stored at all: a :class:`~oktyv_nb.execution.records.NotStored` takes their place when they
are read back, with their ``repr``. Secrets never reach the file: values are scrubbed by the
run's redactor first, and a pickle that still holds a secret's bytes is not stored.

Journaling must cost a task a few microseconds, so the common cases take shortcuts: a None,
string, int or bool result needs no check; the records of a commit are written in columns
(:func:`prepare_batch`: ids joined, statuses as bytes, times as an array of doubles) with
only the rarer fields in JSON; a task whose params are scalars is written as it is.

Reading a pickle runs code, as any pickle does: open only stores you trust.

Size: about 500 lines: the column layout of stored records and its inverse, kept together so
that writing and reading cannot drift apart.
"""

from __future__ import annotations

import json
import math
import pickle
import sys
from array import array
from collections.abc import Callable, Mapping
from typing import Any

from oktyv_nb.execution.records import (
    FINAL,
    STATUSES,
    SUCCESS,
    AttemptSpan,
    ErrorInfo,
    NotStored,
    TaskRecord,
)
from oktyv_nb.model.vault import Redactor

__all__ = [
    "JSON", "NOT_STORED", "PICKLE", "Prepared", "batch_entries", "decode_value", "dumps",
    "encode_value", "faithful_json", "pickle_value", "prepare_batch", "restore_record",
    "task_columns", "task_dicts",
]

JSON, PICKLE, NOT_STORED = "json", "pickle", "not_stored"
_REPR_LIMIT = 500
_loads = json.loads
_encoder = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
dumps = _encoder.encode  # compact, no NaN: what the store writes


def faithful_json(value: Any) -> str | None:
    """``value`` as compact JSON text when it comes back from JSON equal to itself, else
    None (objects, tuples, sets, non-string keys, NaN)."""
    try:
        text = dumps(value)
        if _loads(text) == value:
            return text
    except Exception:  # TypeError, ValueError, RecursionError, a failing __eq__ ...
        pass
    return None


def _safe_repr(value: Any, redactor: Redactor | None) -> str | None:
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__}: repr() raised>"
    if len(text) > _REPR_LIMIT:
        text = text[: _REPR_LIMIT - 1] + "…"
    if redactor:
        text = redactor.text(text)
    return text


def _not_stored(reason: str, text: str | None) -> tuple[str, dict[str, Any], None]:
    return NOT_STORED, {"reason": reason, "text": text}, None


def encode_value(
    value: Any, redactor: Redactor | None, allow_pickle: bool,
) -> tuple[str | None, Any, str | bytes | None]:
    """``(kind, payload, raw)`` of a value: ``(None, None, None)`` for None; ``("json",
    value, text)`` (``text`` when it was made); ``("pickle", value, None)`` for a value to
    pickle (:func:`pickle_value`, on the writer thread); ``("not_stored", {"reason",
    "text"}, None)``. ``redactor`` knows the run's secrets; the value is scrubbed first."""
    if value is None:
        return None, None, None
    if redactor:
        value = redactor.value(value)
    t = type(value)
    if t is str or t is int or t is bool:
        return JSON, value, None
    if t is float and math.isfinite(value):
        return JSON, value, None
    if t is dict or t is list:
        text = faithful_json(value)
        if text is not None:
            return JSON, value, text
    if not allow_pickle:
        return _not_stored("pickle=False", _safe_repr(value, redactor))
    return PICKLE, value, None


def pickle_value(
    value: Any, secrets: frozenset[str] | set[str], redactor: Redactor | None = None,
) -> tuple[str, Any, bytes | None]:
    """``("pickle", None, bytes)`` of a value, or ``("not_stored", note, None)`` when it
    cannot be pickled or its pickle would carry one of ``secrets``."""
    try:
        import cloudpickle

        blob = cloudpickle.dumps(value)
    except Exception as exc:
        return _not_stored(f"it could not be pickled: {type(exc).__name__}",
                           _safe_repr(value, redactor))
    if any(s.encode("utf-8", "surrogatepass") in blob for s in secrets):
        return _not_stored("it holds a secret", None)
    return PICKLE, None, blob


def decode_value(kind: str | None, data: Any) -> Any:
    """The value :func:`encode_value` stored: ``data`` is the JSON value, the pickle's bytes
    or the not-stored note. A pickle that cannot be loaded here (its class is not importable
    in this process, say) becomes a :class:`NotStored` too."""
    if kind is None:
        return None
    if kind == JSON:
        return data
    if kind == PICKLE:
        try:
            return pickle.loads(data)
        except Exception as exc:
            return NotStored(f"it could not be unpickled here: {type(exc).__name__}: {exc}"[:300])
    return NotStored(data.get("reason", "unknown"), data.get("text"))


# ------------------------------------------------------------------------ a run's tasks
_RARE = (
    ("priority", "priority"), ("timeout", "timeout"), ("vault", "vault"),
    ("retry_policy", "retryPolicy"), ("rollback", "rollback"), ("run_if", "runIf"),
    ("cache", "cache"), ("map", "map"), ("pool", "pool"),
)


def _model(o: Any) -> Any:
    dump = getattr(o, "model_dump", None)  # retry policy, rollback, cache
    if dump is None:
        raise TypeError(f"{type(o).__name__} is not JSON")
    return dump(by_alias=True, exclude_none=True)


def _plain(params: Mapping[str, Any]) -> bool:
    """True when ``params`` are JSON values that come back equal (scalars checked by type,
    anything else by a round trip)."""
    for v in params.values():
        t = type(v)
        if t is str or t is int or t is bool or v is None:
            continue
        if t is float and math.isfinite(v):
            continue
        return faithful_json(params) is not None
    return True


def task_columns(
    specs: list[Mapping[str, Any]], deps: Mapping[str, tuple[str, ...]],
    redactor: Redactor | None, allow_pickle: bool,
) -> tuple[Any, ...]:
    """The tasks of a run in the ``runs`` table's columns: ``task_ids`` (joined by
    newlines), ``tools``, ``params`` and ``depends_on`` (JSON lists, one item a task),
    ``options`` (JSON ``{position: {camelCase field: value}}`` of the tasks that set any
    other field), ``pickled`` (cloudpickle ``{task_id: {"params", "options"}}`` of the tasks
    whose params or options are not JSON values) and ``unstored`` (JSON ``{task_id:
    {"reason", "deps"}}`` of those that could not be pickled either, or would carry a
    secret: they never are reused). :func:`task_dicts` reads them back.
    """
    ids = [s["id"] for s in specs]
    tools = [s["tool"] for s in specs]
    params = [s["params"] for s in specs]
    depends = [s["depends_on"] for s in specs]
    if redactor:
        params = [redactor.value(p) for p in params]
    options: dict[str, dict[str, Any]] = {}
    odd: list[int] = []
    for i, s in enumerate(specs):
        p = params[i]
        if p and not _plain(p):
            odd.append(i)
        if s["priority"] is not None or s["timeout"] is not None or s["vault"] is not None \
                or s["retry_policy"] is not None or s["rollback"] is not None \
                or s["run_if"] is not None or s.get("cache") is not None \
                or s.get("map") is not None or s.get("pool") is not None:
            o = {alias: _model(v) if hasattr(v, "model_dump") else v
                 for key, alias in _RARE if (v := s.get(key)) is not None}
            if redactor:
                o = redactor.value(o)
            options[str(i)] = o
            rb = o.get("rollback")
            if rb and rb.get("params") and not _plain(rb["params"]) and i not in odd:
                odd.append(i)
    pickled: dict[str, Any] = {}
    unstored: dict[str, dict[str, Any]] = {}
    for i in odd:
        tid = ids[i]
        kept = {"params": params[i], "options": options.pop(str(i), None)}
        params[i] = None
        if allow_pickle:
            pickled[tid] = kept
        else:
            unstored[tid] = {"reason": "its params are not JSON values (pickle=False)"}
    blob = None
    if pickled:
        blob, failed = _pickle_tasks(pickled, redactor)
        unstored.update({tid: {"reason": why} for tid, why in failed.items()})
    for tid, u in unstored.items():
        u["deps"] = list(deps.get(tid, ()))
    return (
        "\n".join(ids), dumps(tools), dumps(params), dumps(depends),
        dumps(options) if options else None, blob, dumps(unstored) if unstored else None,
    )


def task_dicts(
    task_ids: str, tools: str, params: str, depends_on: str, options: str | None,
    pickled: bytes | None, unstored: str | None,
) -> list[dict[str, Any]]:
    """The request dicts (camelCase) of the tasks :func:`task_columns` wrote. A task whose
    params were not stored gets the single param ``params``: a :class:`NotStored`, which
    never equals anything, so the task is never reused."""
    ids = task_ids.split("\n") if task_ids else []
    tool_list = _loads(tools)
    param_list = _loads(params)
    dep_list = _loads(depends_on)
    opts = _loads(options) if options else {}
    lost = {tid: u for tid, u in _loads(unstored).items()} if unstored else {}
    kept: dict[str, Any] = {}
    if pickled:
        try:
            kept = pickle.loads(pickled)
        except Exception as exc:
            why = f"its params could not be unpickled here: {type(exc).__name__}"
            for i, tid in enumerate(ids):
                if param_list[i] is None:
                    lost.setdefault(tid, {"reason": why})
    out = []
    for i, tid in enumerate(ids):
        t: dict[str, Any] = {"id": tid, "tool": tool_list[i], "params": param_list[i]}
        deps = dep_list[i]
        o = opts.get(str(i))
        if tid in kept:
            t["params"] = kept[tid]["params"]
            o = kept[tid]["options"]
        elif tid in lost or t["params"] is None:
            u = lost.get(tid, {})
            t["params"] = {"params": NotStored(u.get("reason", "its params were not stored"))}
            deps = u.get("deps", deps)
        if deps is not None:
            t["dependsOn"] = deps
        if o:
            t.update(o)
        out.append(t)
    return out


def _pickle_tasks(
    tasks: dict[str, Any], redactor: Redactor | None
) -> tuple[bytes | None, dict[str, str]]:
    import cloudpickle

    secrets = [s.encode("utf-8", "surrogatepass") for s in (redactor.secrets if redactor else ())]
    failed: dict[str, str] = {}
    keep: dict[str, Any] = {}
    for tid, t in tasks.items():
        try:
            blob = cloudpickle.dumps(t)
        except Exception as exc:
            failed[tid] = f"its params could not be pickled: {type(exc).__name__}"
            continue
        if any(s in blob for s in secrets):
            failed[tid] = "its params hold a secret"
            continue
        keep[tid] = t
    return (cloudpickle.dumps(keep) if keep else None), failed


# ------------------------------------------------------------------------ task records
#: Status codes of the journal's ``status`` column (one byte a task).
STATUS_CODES = {st: i for i, st in enumerate(STATUSES)}
_NAN = float("nan")
_BIG_ENDIAN = sys.byteorder == "big"


def _error(err: ErrorInfo | None, redactor: Redactor | None) -> list[Any] | None:
    if err is None:
        return None
    message, stack = err.message, err.stack
    if redactor:
        message = redactor.text(message)
        stack = redactor.text(stack) if stack else stack
    return [err.code, message, stack, err.cause, err.root]


class Prepared:
    """The journal row of one commit of a run, made on the event loop (see
    :func:`prepare_batch`); :meth:`finish` pickles what must be pickled and gives the row,
    on the writer thread. It can be finished again after a failed transaction."""

    __slots__ = ("columns", "pickles", "rare", "results", "secrets")

    def __init__(
        self, columns: tuple[Any, ...], rare: dict[str, dict[str, Any]],
        pickles: list[tuple[int, Any]], results: list[tuple[int, TaskRecord, Any, Any, Any]],
        secrets: frozenset[str],
    ) -> None:
        self.columns = columns  # n, ids, status, attempts, times, workers, worker_ix
        self.rare = rare
        self.pickles = pickles  # (position, value to pickle)
        self.results = results  # (position, record, kind, payload, raw) of stored results
        self.secrets = secrets

    def finish(
        self, put_blob: Callable[[bytes], int],
    ) -> tuple[tuple[Any, ...], list[tuple[TaskRecord, str | None, Any, Any]]]:
        """The row (``rare`` last), and ``(record, kind, payload, raw)`` of every stored
        result; pickles are handed to ``put_blob``, which gives their ids."""
        rare = self.rare
        done: dict[int, tuple[str, Any, Any]] = {}
        if self.pickles:
            rare = dict(rare)
            for i, value in self.pickles:
                kind, payload, raw = pickle_value(value, self.secrets)
                if kind == PICKLE:
                    payload = put_blob(raw)  # type: ignore[arg-type]
                rare[str(i)] = {**rare[str(i)], "kind": kind, "result": payload}
                done[i] = (kind, payload, raw)
        results = []
        for i, rec, kind, payload, raw in self.results:
            if i in done:
                kind, payload, raw = done[i]
            results.append((rec, kind, payload, raw))
        return (*self.columns, _rare_text(rare) if rare else None), results


def prepare_batch(
    recs: list[TaskRecord], offset: float, redactor: Redactor | None, allow_pickle: bool,
) -> Prepared:
    """The journal row of one commit of a run: ``n, ids, status, attempts, times, workers,
    worker_ix, rare`` (see :mod:`oktyv_nb.store.db`; times shifted by ``offset``, to seconds
    since the run started).

    The common record (a first-attempt success returning None) costs a few comprehension
    steps; only records with an error, a result, retries or a flag get a ``rare`` entry.
    Values to pickle are left to :meth:`Prepared.finish`.
    """
    nan = _NAN
    codes = STATUS_CODES
    workers: dict[str | None, int] = {None: 0}
    add_worker = workers.setdefault
    worker_ix = array("H", [add_worker(r.worker, len(workers)) for r in recs])
    times = array("d", [nan if x is None else x + offset
                        for r in recs for x in (r.ready_at, r.start, r.end)])
    attempts = array("l", [r.attempts for r in recs])
    status = bytes([codes[r.status] for r in recs])
    rare: dict[str, dict[str, Any]] = {}
    pickles: list[tuple[int, Any]] = []
    results: list[tuple[int, TaskRecord, Any, Any, Any]] = []
    for i, r in enumerate(recs):
        if r.status == SUCCESS and r.attempts == 1 and r.result is None and not r.reused \
                and r.cached is None and r.rolled_back is None and r.rollback_error is None:
            continue
        entry = _rare(i, r, offset, redactor, allow_pickle, pickles, results)
        if entry:
            rare[str(i)] = entry
    names = [""] * len(workers)
    for w, ix in workers.items():
        names[ix] = w or ""
    arrays = [attempts, times, worker_ix]
    if _BIG_ENDIAN:  # pragma: no cover - the file is little-endian everywhere
        for a in arrays:
            a.byteswap()
    columns = (
        len(recs), "\n".join([r.task_id for r in recs]), status, arrays[0].tobytes(),
        arrays[1].tobytes(), dumps(names[1:]), arrays[2].tobytes(),
    )
    secrets = frozenset(redactor.secrets) if redactor else frozenset()
    return Prepared(columns, rare, pickles, results, secrets)


def _rare(
    i: int, rec: TaskRecord, offset: float, redactor: Redactor | None, allow_pickle: bool,
    pickles: list[tuple[int, Any]], results: list[tuple[int, TaskRecord, Any, Any, Any]],
) -> dict[str, Any]:
    rare: dict[str, Any] = {}
    attempts = rec.attempts
    if rec.status == SUCCESS:
        kind, payload, raw = encode_value(rec.result, redactor, allow_pickle)
        if kind == PICKLE:
            pickles.append((i, payload))
            payload = None
        if kind is not None:
            rare["kind"] = kind
            rare["result"] = payload
        results.append((i, rec, kind, payload, raw))
    elif rec.error is not None:
        rare["error"] = _error(rec.error, redactor)
    if attempts and not (attempts == 1 and rec.status == SUCCESS):
        spans = _spans(rec, offset)
        if spans:
            rare["spans"] = spans
    if rec.reused:
        rare["reused"] = True
    if rec.cached is not None:
        rare["cached"] = rec.cached
        if rec.cache_note:
            rare["cache_note"] = rec.cache_note
    if rec.rolled_back is not None:
        rare["rolled_back"] = rec.rolled_back
    if rec.rollback_error is not None:
        rare["rollback_error"] = _error(rec.rollback_error, redactor)
    return rare


def _spans(rec: TaskRecord, offset: float) -> list[list[Any]]:
    return [[s.start + offset, s.end + offset, s.outcome, s.worker] for s in rec.spans]


def _rare_text(rare: dict[str, dict[str, Any]]) -> str:
    """The rare fields as JSON (an entry that cannot be encoded, which only a stray object
    in a record could cause, is written with its result not stored)."""
    try:
        return dumps(rare)
    except (TypeError, ValueError):
        out = {}
        for k, v in rare.items():
            try:
                dumps(v)
            except (TypeError, ValueError):
                v = {"kind": NOT_STORED, "result": {"reason": "it could not be encoded",
                                                    "text": None}}
            out[k] = v
        return dumps(out)


def _array(typecode: str, data: bytes) -> array[Any]:
    a = array(typecode)
    a.frombytes(data)
    if _BIG_ENDIAN:  # pragma: no cover
        a.byteswap()
    return a


def batch_entries(row: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """The entries of a journal row ``(n, ids, status, attempts, times, workers, worker_ix,
    rare)``: ``(task_id, status, attempts, ready, start, end, worker, rare)`` each."""
    n, ids, status, attempts, times, workers, worker_ix, rare = row
    names = [None, *_loads(workers)]
    tids = ids.split("\n") if n else []
    att = _array("l", attempts)
    t = _array("d", times)
    wix = _array("H", worker_ix)
    extra = _loads(rare) if rare else {}
    out = []
    for i in range(n):
        r, s, e = t[3 * i], t[3 * i + 1], t[3 * i + 2]
        out.append((
            tids[i], STATUSES[status[i]], att[i], None if r != r else r, None if s != s else s,
            None if e != e else e, names[wix[i]], extra.get(str(i)),
        ))
    return out


def _error_info(data: list[Any] | None) -> ErrorInfo | None:
    if data is None:
        return None
    code, message, stack, cause, root = data
    return ErrorInfo(code, message, stack, cause, root)


def restore_record(rec: TaskRecord, entry: tuple[Any, ...], blobs: Mapping[int, bytes]) -> bool:
    """Fill ``rec`` from its latest journal entry; returns whether that entry was final."""
    (_tid, status, attempts, ready, start, end, worker, rare) = entry
    rec.status = status
    rec.attempts = attempts
    rec.ready_at = ready
    rec.start = start
    rec.end = end
    rec.worker = worker
    if rare is not None:
        rec.error = _error_info(rare.get("error"))
        if status == SUCCESS and "kind" in rare:
            kind, payload = rare["kind"], rare.get("result")
            if kind == PICKLE:
                data = blobs.get(payload)
                rec.result = (decode_value(kind, data) if data is not None
                              else NotStored("its pickle is missing from the store"))
            else:
                rec.result = decode_value(kind, payload)
        for sp in rare.get("spans", ()):
            rec.add_span(AttemptSpan(*sp))
        rec.reused = rare.get("reused")
        rec.cached = rare.get("cached")
        rec.cache_note = rare.get("cache_note")
        rec.rolled_back = rare.get("rolled_back")
        rec.rollback_error = _error_info(rare.get("rollback_error"))
    return status in FINAL
