"""Backends: where a resolved call runs (SPEC §9).

The scheduler, variables, retries, timeouts and records belong to the engine; a backend only
runs ``fn(**kwargs)`` and reports the outcome. The seam is :class:`Backend` (in
:mod:`~oktyv_nb.execution.backends.base`; its docstring says what the engine calls, when and
on which thread, and how to add a backend). This package holds the registry of names
(:func:`get_backend`, :func:`register_backend`) and re-exports the backends.

The four backends (names for ``backend=``; objects may be passed too):

``asyncio`` (:class:`AsyncioBackend`, the default) and ``threads`` (:class:`ThreadBackend`)
    in this process, in a shared pool of threads: :mod:`~oktyv_nb.execution.backends.threads`.
``processes`` (:class:`ProcessBackend`)
    in worker processes of a :class:`ProcessPool`:
    :mod:`~oktyv_nb.execution.backends.processes`.
``dask`` (:class:`DaskBackend`)
    as tasks of a Dask ``distributed`` cluster: :mod:`~oktyv_nb.execution.backends.dask`
    (``distributed`` is imported only when a :class:`DaskBackend` is made).

Calls sent to processes and Dask workers are pickled there and back by
:mod:`~oktyv_nb.execution.backends.wire`: a tool, param or result that cannot be pickled
fails its task with code ``UNPICKLABLE``; a tool's exception comes back with its own class
(or as a :class:`RemoteError` with the same code and message). Each backend module's
docstring says what happens to an abandoned call (timeout, interrupt) and to a crashed
worker there.

A backend object serves one run at a time; names give each run a fresh object (the process
pool behind ``processes`` is shared and stays warm between runs). Processes and Dask run at
most as many calls as they have workers (threads); with ``max_concurrent`` above that, the
extra calls wait in the backend and that wait counts in the task's duration and towards its
timeout.
"""

from __future__ import annotations

from collections.abc import Callable

from oktyv_nb.errors import UNPICKLABLE, InvalidOptionError
from oktyv_nb.execution.backends.base import Backend, Channel, Done
from oktyv_nb.execution.backends.dask import DaskBackend
from oktyv_nb.execution.backends.processes import (
    ProcessBackend,
    ProcessPool,
    shared_process_pool,
)
from oktyv_nb.execution.backends.threads import (
    AsyncioBackend,
    ThreadBackend,
    ThreadPool,
    shared_pool,
)
from oktyv_nb.execution.backends.wire import (
    RemoteError,
    UnpicklableError,
    WorkerCrashedError,
    call_maybe_async,
)

__all__ = [
    "UNPICKLABLE",
    "AsyncioBackend",
    "Backend",
    "Channel",
    "DaskBackend",
    "Done",
    "ProcessBackend",
    "ProcessPool",
    "RemoteError",
    "ThreadBackend",
    "ThreadPool",
    "UnpicklableError",
    "WorkerCrashedError",
    "call_maybe_async",
    "get_backend",
    "register_backend",
    "shared_pool",
    "shared_process_pool",
]


def get_backend(backend: str | Backend | None) -> Backend:
    """A backend object from a name (``asyncio``, ``threads``, ``processes``, ``dask``, or
    one given to :func:`register_backend`: a fresh object each call) or the object itself
    (a :class:`Backend`, or any object with its ``open``, ``submit`` and ``aclose``)."""
    if backend is None or backend == "asyncio":
        return AsyncioBackend()
    if backend == "threads":
        return ThreadBackend()
    if isinstance(backend, str):
        factory = _NAMED.get(backend)
        if factory is None:
            names = sorted(["asyncio", "threads", *_NAMED])
            raise InvalidOptionError(
                f"unknown backend {backend!r}; use one of {names} or a backend object",
                option="backend",
            )
        return factory()
    for attr in ("submit", "open", "aclose"):
        if not callable(getattr(backend, attr, None)):
            raise InvalidOptionError(
                f"backend {backend!r} has no {attr}() method; "
                "see oktyv_nb.execution.backends.Backend",
                option="backend",
            )
    return backend


_NAMED: dict[str, Callable[[], Backend]] = {}


def register_backend(name: str, factory: Callable[[], Backend]) -> None:
    """Make ``backend=name`` build a backend with ``factory()`` for each run."""
    _NAMED[name] = factory


register_backend("processes", ProcessBackend)
register_backend("dask", DaskBackend)
