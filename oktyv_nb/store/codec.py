"""What the store writes and reads back: values, a run's tasks, task records.

Values (results, params that are not JSON) are stored as JSON when they are JSON values that
come back equal (so a tuple or a dict with int keys is not "JSON": it would come back
changed), else pickled with cloudpickle, else (``pickle=False``, or pickling failed) not
stored at all: a :class:`~oktyv_nb.execution.records.NotStored` takes their place when they
are read back, with their ``repr``. Secrets never reach the file: JSON values are scrubbed by
the run's redactor first, and a pickle that still holds a secret's bytes is not stored.

Reading a pickle runs code, as any pickle does: open only stores you trust.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable, Mapping
from typing import Any

from oktyv_nb.execution.records import (
    FINAL,
    SUCCESS,
    AttemptSpan,
    ErrorInfo,
    NotStored,
    TaskRecord,
)
from oktyv_nb.model.vault import Redactor

__all__ = [
    "JSON", "NOT_STORED", "PICKLE", "decode_value", "encode_value", "faithful_json",
    "record_row", "restore_record", "task_entries",
]

JSON, PICKLE, NOT_STORED = "json", "pickle", "not_stored"
_REPR_LIMIT = 500
_dumps = json.dumps
_loads = json.loads


def faithful_json(value: Any) -> str | None:
    """``value`` as compact JSON text when it comes back from JSON equal to itself, else
    None (objects, tuples, sets, non-string keys, NaN)."""
    try:
        text = _dumps(value, allow_nan=False, separators=(",", ":"))
        if _loads(text) == value:
            return text
    except Exception:  # TypeError, ValueError, RecursionError, a failing __eq__ ...
        pass
    return None


def _safe_repr(value: Any, redactor: Redactor | None, secrets: Iterable[str]) -> str | None:
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__}: repr() raised>"
    if len(text) > _REPR_LIMIT:
        text = text[: _REPR_LIMIT - 1] + "…"
    if redactor:
        text = redactor.text(text)
    if any(s in text for s in secrets):
        return None
    return text


def _not_stored(reason: str, text: str | None) -> tuple[str, str]:
    return NOT_STORED, _dumps({"reason": reason, "text": text})


def encode_value(
    value: Any, redactor: Redactor | None, allow_pickle: bool
) -> tuple[str | None, str | bytes | None]:
    """``(kind, data)`` of a value: ``(None, None)`` for None, else JSON, a pickle, or the
    reason it is not stored. ``redactor`` knows the run's secrets."""
    if value is None:
        return None, None
    if redactor:
        value = redactor.value(value)
    text = faithful_json(value)
    if text is not None:
        return JSON, text
    secrets = redactor.secrets if redactor else ()
    if not allow_pickle:
        return _not_stored("pickle=False", _safe_repr(value, redactor, secrets))
    try:
        import cloudpickle

        blob = cloudpickle.dumps(value)
    except Exception as exc:
        return _not_stored(f"it could not be pickled: {type(exc).__name__}",
                           _safe_repr(value, redactor, secrets))
    if secrets and any(s.encode("utf-8", "surrogatepass") in blob for s in secrets):
        return _not_stored("it holds a secret", None)
    return PICKLE, blob


def decode_value(kind: str | None, data: Any) -> Any:
    """The value :func:`encode_value` stored (a :class:`NotStored` when it was not, or cannot
    be unpickled here, e.g. its class is not importable in this process)."""
    if kind is None:
        return None
    if kind == JSON:
        return _loads(data)
    if kind == PICKLE:
        try:
            return pickle.loads(data)
        except Exception as exc:
            return NotStored(f"it could not be unpickled here: {type(exc).__name__}: {exc}"[:300])
    d = _loads(data)
    return NotStored(d.get("reason", "unknown"), d.get("text"))


# ------------------------------------------------------------------------ a run's tasks
_FIELDS = (
    ("id", "id"), ("tool", "tool"), ("params", "params"), ("depends_on", "dependsOn"),
    ("priority", "priority"), ("timeout", "timeout"), ("vault", "vault"),
    ("retry_policy", "retryPolicy"), ("rollback", "rollback"), ("run_if", "runIf"),
    ("cache", "cache"),
)


def _task_dict(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A task's spec (snake_case dict of its fields) as the request's camelCase dict."""
    d: dict[str, Any] = {}
    for key, alias in _FIELDS:
        v = spec.get(key)
        if v is None:
            continue
        dump = getattr(v, "model_dump", None)  # retry policy, rollback, cache
        d[alias] = dump(by_alias=True, exclude_none=True) if dump is not None else v
    return d


def task_entries(
    specs: list[Mapping[str, Any]], deps: Mapping[str, tuple[str, ...]],
    redactor: Redactor | None, allow_pickle: bool,
) -> tuple[str, bytes | None, str | None]:
    """The tasks of a run as ``(JSON text, pickled tasks, unstored)``.

    Tasks whose fields are JSON values are in the JSON list as they are; a task holding other
    values is pickled whole (its JSON entry keeps only ``id``, ``tool`` and its
    dependencies); one that cannot be pickled (or would carry a secret) is listed in
    ``unstored`` (JSON ``{task_id: reason}``) and never reused.
    """
    tasks = [_task_dict(s) for s in specs]
    if redactor:
        tasks = [redactor.value(t) for t in tasks]
    text = faithful_json(tasks)
    if text is not None:
        return text, None, None
    out: list[Any] = []
    pickled: dict[str, Any] = {}
    unstored: dict[str, str] = {}
    for t in tasks:
        if faithful_json(t) is not None:
            out.append(t)
            continue
        tid = t["id"]
        out.append({"id": tid, "tool": t["tool"], "dependsOn": list(deps.get(tid, ()))})
        if allow_pickle:
            pickled[tid] = t
        else:
            unstored[tid] = "its params are not JSON values (pickle=False)"
    blob = None
    if pickled:
        blob, failed = _pickle_tasks(pickled, redactor)
        unstored.update(failed)
    return _dumps(out, separators=(",", ":")), blob, (_dumps(unstored) if unstored else None)


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
def _t(x: float | None, offset: float) -> float | None:
    return None if x is None else x + offset


def _error(err: ErrorInfo | None, redactor: Redactor | None) -> str | None:
    if err is None:
        return None
    message, stack = err.message, err.stack
    if redactor:
        message = redactor.text(message)
        stack = redactor.text(stack) if stack else stack
    return _dumps([err.code, message, stack, err.cause, err.root])


def record_row(
    run: int, rec: TaskRecord, offset: float, redactor: Redactor | None, allow_pickle: bool,
) -> tuple[tuple[Any, ...], str | None, Any]:
    """The ``tasks`` row of a record (times shifted by ``offset`` to Unix seconds), and its
    result's ``(kind, data)`` for the cache."""
    status = rec.status
    final = status in FINAL
    kind = data = None
    if status == SUCCESS:
        kind, data = encode_value(rec.result, redactor, allow_pickle)
    extra: dict[str, Any] | None = None
    if not (status == SUCCESS and rec.attempts == 1) and rec.attempts:
        spans = rec.spans
        if spans:
            extra = {"spans": [[s.start + offset, s.end + offset, s.outcome, s.worker]
                               for s in spans]}
    if rec.reused or rec.cached is not None or rec.rolled_back is not None \
            or rec.rollback_error is not None:
        extra = extra or {}
        if rec.reused:
            extra["reused"] = True
        if rec.cached is not None:
            extra["cached"] = rec.cached
            if rec.cache_note:
                extra["cache_note"] = rec.cache_note
        if rec.rolled_back is not None:
            extra["rolled_back"] = rec.rolled_back
        if rec.rollback_error is not None:
            extra["rollback_error"] = _error(rec.rollback_error, redactor)
    row = (
        run, rec.task_id, final, status, rec.attempts, _t(rec.ready_at, offset),
        _t(rec.start, offset), _t(rec.end, offset), rec.worker, _error(rec.error, redactor),
        None if extra is None else _dumps(extra), kind, data,
    )
    return row, kind, data


def _error_info(text: str | None) -> ErrorInfo | None:
    if text is None:
        return None
    code, message, stack, cause, root = _loads(text)
    return ErrorInfo(code, message, stack, cause, root)


def restore_record(rec: TaskRecord, row: tuple[Any, ...]) -> bool:
    """Fill ``rec`` from a ``tasks`` row (``final, status, attempts, ready, start, end,
    worker, error, extra, kind, value``); returns whether the row was final."""
    final, status, attempts, ready, start, end, worker, error, extra, kind, value = row
    rec.status = status
    rec.attempts = attempts
    rec.ready_at = ready
    rec.start = start
    rec.end = end
    rec.worker = worker
    rec.error = _error_info(error)
    if status == SUCCESS:
        rec.result = decode_value(kind, value)
    if extra is not None:
        x = _loads(extra)
        for s in x.get("spans", ()):
            rec.add_span(AttemptSpan(*s))
        rec.reused = x.get("reused")
        rec.cached = x.get("cached")
        rec.cache_note = x.get("cache_note")
        rec.rolled_back = x.get("rolled_back")
        rec.rollback_error = _error_info(x.get("rollback_error"))
    return bool(final)
