"""What crosses to a worker process or a Dask worker and back: the pickling of a call, its
run on the worker, and the reply (used by :mod:`.processes` and :mod:`.dask`).

A call and its outcome are pickled (with ``cloudpickle`` when it is installed, so tools
defined in a notebook or as lambdas work; else with ``pickle``, which needs tools at module
level in an importable module):

* in the parent, :func:`_dumps_call` pickles ``(fn, kwargs)``; a tool or param that cannot be
  pickled raises :class:`UnpicklableError` (code ``UNPICKLABLE``) naming the tool and the
  param, which fails the task without reaching a worker;
* on the worker, :func:`_run_payload` loads the call, runs it (:func:`call_maybe_async`: an
  async tool with ``asyncio.run``) and pickles ``(ok, value, traceback)``. A result that
  cannot be pickled is an ``UNPICKLABLE`` failure; an exception raised by a tool goes back
  with its own class (so the record's ``code`` is the same as on the other backends) and
  the worker's traceback as text; one that cannot be pickled (or not rebuilt) goes back as a
  :class:`RemoteError` with the same code and message (:func:`_error_reply`);
* in the parent, :func:`_decode` turns the reply into ``(ok, value)``, hanging the worker's
  traceback on the exception as its ``__cause__`` (:class:`_RemoteTraceback`).

It also holds the errors of calls sent away (:class:`WorkerCrashedError`, code
``WORKER_CRASHED``) and the states of such a call in the parent (``_QUEUED`` ...).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import pickle
import time
import traceback
from collections.abc import Callable
from typing import Any

from oktyv_nb.errors import UNPICKLABLE, WORKER_CRASHED

__all__ = [
    "RemoteError",
    "UnpicklableError",
    "WorkerCrashedError",
    "call_maybe_async",
]

# The states of a call sent away, as the parent sees it: waiting for a free worker, sent,
# over (reported), cancelled before it was sent, abandoned by the engine while it runs.
_QUEUED, _RUNNING, _FINISHED, _CANCELLED, _ABANDONED = range(5)


# ---------------------------------------------------------------------------- errors
class WorkerCrashedError(RuntimeError):
    """The process running a call died; ``exitcode`` is its exit code (negative: the
    signal that killed it) when known."""

    code = WORKER_CRASHED

    def __init__(self, message: str, exitcode: int | None = None) -> None:
        super().__init__(message)
        self.exitcode = exitcode

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.exitcode))


class UnpicklableError(TypeError):
    """A tool, a param or a result could not be pickled to cross to or from a worker."""

    code = UNPICKLABLE


class RemoteError(Exception):
    """Stands for an exception raised in a worker that could not be pickled back.

    ``code`` is the original's record code (its ``code`` attribute, else its class name),
    ``exc_type`` its dotted class name; the message is the original's, plus why it could
    not be sent back.
    """

    def __init__(self, code: str, message: str, exc_type: str) -> None:
        super().__init__(message)
        self.code = code
        self.exc_type = exc_type

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, str(self), self.exc_type))


class _RemoteTraceback(Exception):
    """Carries a worker's formatted traceback as the ``__cause__`` of the exception."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


# ---------------------------------------------------------------------------- calls
def call_maybe_async(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Call ``fn``; when it gives a coroutine, run it to completion on a fresh loop."""
    value = fn(**kwargs)
    if inspect.isawaitable(value):
        return asyncio.run(_await(value))
    return value


async def _await(aw: Any) -> Any:
    return await aw


def _tool_name(fn: Any) -> str:
    """A readable name of a tool for messages: ``module.qualname`` or the type's name."""
    fn = getattr(fn, "__wrapped__", fn)  # a captured call names its tool
    target = fn.func if isinstance(fn, functools.partial) else fn
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    if not isinstance(name, str):
        return f"a {type(fn).__name__} object"
    module = getattr(target, "__module__", None)
    return f"{module}.{name}" if isinstance(module, str) and module != "builtins" else name


try:  # functions defined in a notebook, lambdas and closures travel by value with it
    import cloudpickle as _pickler
except ImportError:  # pragma: no cover - cloudpickle comes with dask
    _pickler = pickle  # type: ignore[assignment]


def _dumps(obj: Any) -> bytes:
    return _pickler.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _why(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _dumps_call(fn: Callable[..., Any], kwargs: dict[str, Any]) -> bytes:
    """The pickled call; raises :class:`UnpicklableError` naming the tool or param at fault."""
    try:
        return _dumps((fn, kwargs))
    except Exception as exc:
        raise _unpicklable(fn, kwargs, exc) from None


def _unpicklable(fn: Callable[..., Any], kwargs: dict[str, Any],
                 exc: BaseException) -> UnpicklableError:
    tool = _tool_name(fn)
    try:
        _dumps(fn)
    except Exception as why:
        return UnpicklableError(
            f"tool {tool} cannot be pickled to send it to a worker ({_why(why)}); define it "
            "as a function at module level in an importable module (no closure over locks, "
            "open files, sockets or clients), or run this DAG on backend='threads'"
        )
    for key, value in kwargs.items():
        try:
            _dumps(value)
        except Exception as why:
            return UnpicklableError(
                f"param {key!r} of tool {tool} ({type(value).__name__}) cannot be pickled "
                f"to send it to a worker ({_why(why)}); pass plain data (numbers, strings, "
                "lists, dicts, paths) and open resources inside the tool, or run this DAG "
                "on backend='threads'"
            )
    return UnpicklableError(f"the call of tool {tool} cannot be pickled ({_why(exc)})")


def _run_payload(data: bytes) -> bytes:
    """In a worker: run a pickled call; the pickled ``(ok, value, traceback)`` outcome."""
    try:
        fn, kwargs = pickle.loads(data)
    except BaseException as exc:
        return _error_reply(
            UnpicklableError(
                f"the worker could not load the call ({_why(exc)}); the tool and its params "
                "must be importable there: define the tool at module level in a module the "
                "worker can import (installing cloudpickle lets notebook functions travel)"
            ),
            None,
        )
    data = b""
    tool = _tool_name(fn)
    cpu0 = time.thread_time()
    try:
        value = call_maybe_async(fn, kwargs)
    except BaseException as exc:  # the task's error, KeyboardInterrupt and SystemExit included
        return _error_reply(exc, _format_tb(exc), time.thread_time() - cpu0)
    cpu = time.thread_time() - cpu0
    try:
        return _dumps((True, value, None, cpu))
    except Exception as exc:
        from oktyv_nb.execution.capture import WithOutput  # the rare path: import here

        shown = value.value if type(value) is WithOutput else value
        return _error_reply(
            UnpicklableError(
                f"the result of tool {tool} ({type(shown).__name__}) cannot be pickled to "
                f"send it back from the worker ({_why(exc)}); return plain data (numbers, "
                "strings, lists, dicts) or write it to a file and return the path"
            ),
            None,
        )


def _format_tb(exc: BaseException) -> str:
    """``exc`` formatted with its traceback, from the tool's frame on."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code in _OWN_FRAMES:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _error_reply(exc: BaseException, tb: str | None, cpu: float | None = None) -> bytes:
    try:
        blob = _dumps((False, exc, tb, cpu))
        pickle.loads(blob)  # the parent must be able to rebuild it, not only this side
        return blob
    except Exception as why:
        code = getattr(exc, "code", None)
        if not (isinstance(code, str) and code):
            code = type(exc).__name__
        try:
            message = str(exc)
        except Exception:
            message = f"<{type(exc).__name__}: str() of the exception raised>"
        cls = f"{type(exc).__module__}.{type(exc).__qualname__}"
        sub = RemoteError(
            code,
            f"{message} [raised in the worker as {cls}, which could not be pickled back: "
            f"{_why(why)}]",
            cls,
        )
        return _dumps((False, sub, tb, cpu))


def _decode(reply: bytes, tool: str, worker: str) -> tuple[bool, Any, float | None]:
    """In the parent: ``(ok, value, cpu_s)`` from a worker's reply; ``cpu_s`` is the CPU
    seconds the call's thread used in the worker (None when the call did not run)."""
    try:
        ok, value, tb, cpu = pickle.loads(reply)
    except Exception as exc:
        return False, UnpicklableError(
            f"the outcome of tool {tool} sent back by worker {worker} could not be unpickled "
            f"({_why(exc)})"
        ), None
    if not ok and tb and isinstance(value, BaseException):
        # The worker's traceback as text (a traceback pickled along, e.g. by tblib, would
        # show the worker's frames twice).
        value.__traceback__ = None
        value.__cause__ = _RemoteTraceback(f'\n"""\n{tb}"""')
    return ok, value, cpu


_OWN_FRAMES = frozenset((_run_payload.__code__, call_maybe_async.__code__))
