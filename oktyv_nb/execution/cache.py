"""The result cache's seam in the engine (SPEC §17): cache keys, and what a cache must do.

A task with a ``cache`` setting, run with a cache (a :class:`ResultCache`: the run store), is
looked up before its first attempt: the key (:func:`cache_key`) is made of

* the tool's qualified name (``module.qualname``) and the name the task calls it by (two
  callable objects of one class, registered under two names, are two tools),
* a hash of its source code (``inspect.getsource``; of its marshalled bytecode when Python
  cannot find the source, for code typed into ``exec``), so that changing the tool misses,
* the name of the task's vault set (never the secrets), and
* the call's resolved params (references already replaced by values, ``credentials`` left
  out) as canonical JSON: sorted keys, no spaces.

Params that are not JSON values (or would not come back equal from JSON: tuples, non-string
keys) make no key: that call is not cached and its record says why. The engine only *reads*
the cache here; storing a result under the key is the store's work, done by its journal from
the task's record (``cache_key``), off the event loop.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import marshal
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from oktyv_nb.model.graph import TaskNode

__all__ = ["ResultCache", "cache_key", "tool_identity"]


class ResultCache(Protocol):
    """What the engine asks of a cache: ``get(key, expire)`` gives ``(True, value)`` for a
    stored result younger than ``expire`` seconds (None: any age), else ``(False, None)``."""

    def get(self, key: str, expire: float | None) -> tuple[bool, Any]: ...


_dumps = functools.partial(json.dumps, sort_keys=True, separators=(",", ":"), allow_nan=False)
_identities: weakref.WeakKeyDictionary[Any, tuple[str, str]] = weakref.WeakKeyDictionary()


def tool_identity(fn: Callable[..., Any]) -> tuple[str, str]:
    """``(qualified name, source hash)`` of a tool, remembered per callable.

    A ``functools.partial`` is its function plus its bound arguments (as JSON when they are
    JSON values, else by ``repr``); a callable object is its class's ``__call__``; a builtin
    has its name and no source.
    """
    try:
        return _identities[fn]
    except (KeyError, TypeError):  # not seen yet, or not weakly referenceable
        pass
    ident = _identity(fn)
    with contextlib.suppress(TypeError):
        _identities[fn] = ident
    return ident


def _identity(fn: Any) -> tuple[str, str]:
    extra = ""
    if isinstance(fn, functools.partial):
        try:
            extra = _dumps([list(fn.args), fn.keywords])
        except (TypeError, ValueError):
            extra = repr((fn.args, fn.keywords))
        name, digest = tool_identity(fn.func)
        return name, hashlib.sha256(f"{digest}\0{extra}".encode()).hexdigest()
    target = getattr(fn, "__func__", fn)  # a bound method: its function
    if not (inspect.isfunction(target) or inspect.isbuiltin(target)) and callable(target):
        target = type(target).__call__  # a callable object
    module = getattr(target, "__module__", None) or ""
    qual = getattr(target, "__qualname__", None) or getattr(target, "__name__", "?")
    name = f"{module}.{qual}" if module else qual
    source: bytes = b""
    try:
        source = inspect.getsource(target).encode("utf-8", "surrogatepass")
    except (OSError, TypeError):
        code = getattr(target, "__code__", None)
        if code is not None:
            try:
                source = marshal.dumps(code)
            except ValueError:
                source = repr(code.co_code).encode()
    return name, hashlib.sha256(source).hexdigest()


def cache_key(node: TaskNode, kwargs: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(key, None)`` for a call of ``node`` with ``kwargs``, or ``(None, why)`` when the
    call cannot be cached."""
    params = kwargs
    if node.vault is not None and "credentials" in kwargs:
        params = {k: v for k, v in kwargs.items() if k != "credentials"}
    try:
        text = _dumps(params)
        faithful = json.loads(text) == params
    except (TypeError, ValueError, RecursionError, OverflowError):
        faithful = False
    if not faithful:
        return None, "not cached: its params are not JSON values"
    name, digest = tool_identity(node.fn)
    raw = f"{name}\0{node.tool}\0{digest}\0{node.vault or ''}\0{text}"
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest(), None
