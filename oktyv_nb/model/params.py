"""A task's params against its tool's signature (SPEC §4, ``INVALID_PARAMS``).

A tool is called with its params as keyword arguments, so the params must be names the tool
takes, and every parameter without a default must be among them. A tool that takes
``**kwargs`` takes any name. ``credentials`` is given by the engine to a task with a vault, so
it counts as given there (a tool without that parameter fails such a task when it runs). A
callable whose signature cannot be read (some C functions) is not checked: its call reports
what is wrong.

:func:`signature_of` reads a tool once (cached per callable); :func:`check_params` is the
per-task check, two set operations.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from oktyv_nb.errors import InvalidParamsError

__all__ = ["ToolSignature", "check_params", "params_fit", "signature_of"]

#: the parameter the engine passes itself to a task that has a vault
ENGINE_GIVEN = "credentials"


class ToolSignature:
    """What a tool accepts as keyword arguments: ``names`` (None: any), ``required``."""

    __slots__ = ("names", "required")

    def __init__(self, names: frozenset[str] | None, required: frozenset[str]) -> None:
        self.names = names
        self.required = required


_ANY = ToolSignature(None, frozenset())
_cache: weakref.WeakKeyDictionary[Any, ToolSignature] = weakref.WeakKeyDictionary()


def signature_of(fn: Callable[..., Any]) -> ToolSignature:
    """The keyword arguments ``fn`` takes (cached; unreadable signatures take anything)."""
    try:
        return _cache[fn]
    except (KeyError, TypeError):  # TypeError: a callable that cannot be weakly referenced
        pass
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        sig = _ANY
    else:
        if any(p.kind is p.VAR_KEYWORD for p in params):
            sig = ToolSignature(None, frozenset(
                p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty))
        else:
            named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
            sig = ToolSignature(
                frozenset(p.name for p in named),
                frozenset(p.name for p in named if p.default is p.empty),
            )
    with contextlib.suppress(TypeError):
        _cache[fn] = sig
    return sig


def params_fit(sig: ToolSignature, params: Any, has_vault: bool) -> bool:
    """Whether param names ``params`` (a dict or other iterable of names) fit ``sig``: the
    fast test; :func:`check_params` says what does not fit."""
    if sig.names is None and not sig.required:
        return True
    if has_vault and (sig.names is None or ENGINE_GIVEN in sig.names):
        params = {*params, ENGINE_GIVEN}
    return (sig.names is None or sig.names.issuperset(params)) and sig.required.issubset(params)


def check_params(
    fn: Callable[..., Any], tool: str, params: Iterable[str] | None, task_id: str,
    *, has_vault: bool = False,
) -> None:
    """Raise :class:`InvalidParamsError` if a task's param names do not fit ``fn``."""
    sig = signature_of(fn)
    if params_fit(sig, params or (), has_vault):
        return
    given = set(params or ())
    if has_vault and (sig.names is None or ENGINE_GIVEN in sig.names):
        given.add(ENGINE_GIVEN)
    unknown = sorted(given - sig.names) if sig.names is not None else []
    missing = sorted(sig.required - given)
    if not unknown and not missing:
        return
    accepted = sorted(sig.names) if sig.names is not None else None
    suggestions = {
        name: difflib.get_close_matches(name, accepted or [], n=3, cutoff=0.6)
        for name in unknown
    }
    raise InvalidParamsError(
        tool, task_id=task_id, unknown=unknown, missing=missing,
        suggestions={k: v for k, v in suggestions.items() if v}, accepted=accepted,
    )
