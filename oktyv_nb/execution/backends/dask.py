"""The ``dask`` backend: :class:`DaskBackend`, every tool as a task of a Dask
``distributed`` cluster.

The cluster is the ``distributed.Client`` given, or a ``LocalCluster`` started when the run
opens the backend and closed when it ends. ``worker`` is the Dask worker's address. Needs
``pip install 'oktyv_nb[dask]'``; ``distributed`` is imported only when a
:class:`DaskBackend` is made. The workers must be able to import ``oktyv_nb`` and the
tools' modules; calls and outcomes cross as described in
:mod:`~oktyv_nb.execution.backends.wire`.

When the engine abandons a call (a task timeout, an interrupt)
    the future is cancelled; a call not started yet never runs, while a running call cannot
    be interrupted by Dask: its worker thread runs it to the end and the result is dropped.

Crashes (code ``WORKER_CRASHED``)
    a worker that dies makes the scheduler give up on the tasks it was processing (after
    ``distributed.scheduler.allowed-failures`` deaths, set to 0 for the clusters this
    backend starts) and raise ``KilledWorker``, mapped to ``WORKER_CRASHED``. Because the
    scheduler blames *every* task that was processing on the dead worker, the backend never
    sends more calls than the cluster has worker threads (re-reading the thread count after
    a crash, and every 0.5 s while calls wait), so a call is not queued on a worker behind
    another one, and a neighbour's crash does not fail it. The nanny restarts the worker.

Queueing: with ``max_concurrent`` above the cluster's thread count, the extra calls wait in
the backend and that wait counts in the task's duration and towards its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from oktyv_nb.execution.backends.base import Backend, Channel, Done
from oktyv_nb.execution.backends.wire import (
    _ABANDONED,
    _CANCELLED,
    _FINISHED,
    _QUEUED,
    _RUNNING,
    UnpicklableError,
    WorkerCrashedError,
    _decode,
    _dumps_call,
    _run_payload,
    _tool_name,
    _why,
)

__all__ = ["DaskBackend"]


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            "backend='dask' needs Dask's distributed scheduler, which is not installed: "
            "pip install 'oktyv_nb[dask]'"
        ) from exc
    return distributed


def _dask_call(payload: bytes) -> tuple[str, bytes]:
    """On a Dask worker: run a pickled call; ``(worker address, pickled outcome)``."""
    from distributed import get_worker

    try:
        address = get_worker().address
    except ValueError:  # not on a worker (a local scheduler)
        address = "dask"
    return address, _run_payload(payload)


class _DaskJob:
    __slots__ = ("channel", "done", "future", "payload", "state", "tool")

    def __init__(self, channel: Channel, done: Done, tool: str, payload: bytes) -> None:
        self.channel = channel
        self.done = done
        self.tool = tool
        self.payload: bytes | None = payload
        self.future: Any = None
        self.state = _QUEUED


class DaskBackend(Backend):
    """Every tool as a task of a Dask ``distributed`` cluster.

    ``DaskBackend(client)`` uses a ``distributed.Client`` (any address; a synchronous client);
    ``DaskBackend(**local_cluster_kwargs)`` starts a ``LocalCluster`` when a run opens the
    backend and closes it when the run ends (defaults: ``processes=True``,
    ``threads_per_worker=1``, the dashboard on a free port; the scheduler's
    ``allowed-failures`` is 0, so a task whose worker dies fails at once with
    ``WORKER_CRASHED``). See the module docstring.
    """

    name = "dask"
    runs_coroutines_on_loop = False
    POLL_S = 0.5  # how often the cluster's thread count is re-read while calls wait

    def __init__(self, client: Any = None, **local_cluster_kwargs: Any) -> None:
        _import_distributed()
        if client is not None and local_cluster_kwargs:
            raise TypeError(
                "give a distributed.Client or LocalCluster options "
                f"({', '.join(sorted(local_cluster_kwargs))}), not both"
            )
        self.client = client
        self.cluster: Any = None
        self.owns_cluster = client is None
        self.cluster_kwargs: dict[str, Any] = {
            "processes": True, "threads_per_worker": 1, "dashboard_address": ":0",
            **local_cluster_kwargs,
        }
        self._channel: Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: deque[_DaskJob] = deque()
        self._inflight: dict[_DaskJob, None] = {}
        self._capacity = 1
        self._poll: asyncio.TimerHandle | None = None
        self._polling = False

    # ------------------------------------------------------------------ lifecycle
    def _start_cluster(self) -> None:
        import dask
        from distributed import Client, LocalCluster

        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            cluster = LocalCluster(**self.cluster_kwargs)
        try:
            client = Client(cluster, set_as_default=False)
        except BaseException:
            cluster.close()
            raise
        self.cluster, self.client = cluster, client

    async def aopen(self, loop: asyncio.AbstractEventLoop) -> None:
        """As :meth:`open`, starting the local cluster in a thread (the loop keeps running)."""
        if self.client is None:
            starting = loop.run_in_executor(None, self._start_cluster)
            try:
                await asyncio.shield(starting)
            except BaseException:  # interrupted: close the cluster once it has started
                starting.add_done_callback(lambda _: threading.Thread(
                    target=_close_cluster, args=(self.client, self.cluster), daemon=True,
                ).start())
                raise
        self.open(loop)

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the local cluster (when no client was given; blocks for its start-up)."""
        if self.client is None:
            self._start_cluster()
        if getattr(self.client, "asynchronous", False):
            raise TypeError("DaskBackend needs a synchronous distributed.Client "
                            "(created without asynchronous=True)")
        self._loop = loop
        self._channel = Channel(loop)
        self._capacity = self._threads()

    async def aclose(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        self._waiting.clear()
        futures = [job.future for job in self._inflight if job.future is not None]
        self._inflight.clear()
        self._channel = None
        if self.owns_cluster and self.client is not None:
            client, cluster = self.client, self.cluster
            self.client = self.cluster = None
            await asyncio.to_thread(_close_cluster, client, cluster)
        elif futures and self.client is not None:  # abandoned calls of this run
            await asyncio.to_thread(_cancel, self.client, futures)

    def _threads(self) -> int:
        """Worker threads of the cluster now (at least 1)."""
        try:
            return max(1, sum(self.client.nthreads().values()))
        except Exception:
            return max(1, self._capacity)

    # ------------------------------------------------------------------ calls
    def submit(self, fn: Callable[..., Any], kwargs: dict[str, Any], done: Done) -> _DaskJob:
        channel = self._channel
        assert channel is not None, "backend used before open()"
        tool = _tool_name(fn)
        try:
            payload = _dumps_call(fn, kwargs)
        except UnpicklableError as exc:
            job = _DaskJob(channel, done, tool, b"")
            job.state = _FINISHED
            channel.put(done, False, exc, None)
            return job
        job = _DaskJob(channel, done, tool, payload)
        self._waiting.append(job)
        self._pump()
        return job

    def abandon(self, handle: Any) -> None:
        if not isinstance(handle, _DaskJob):
            return
        if handle.state == _QUEUED:
            handle.state = _CANCELLED
            handle.payload = None
            with contextlib.suppress(ValueError):
                self._waiting.remove(handle)
        elif handle.state == _RUNNING:
            handle.state = _ABANDONED
            if handle.future is not None and self.client is not None:
                # Future.cancel waits for the scheduler: not on the engine's loop.
                threading.Thread(target=_cancel, args=(self.client, [handle.future]),
                                 daemon=True, name="oktyv-dask-cancel").start()

    def _pump(self) -> None:
        """Send waiting calls while the cluster has a worker thread free for each."""
        while self._waiting and len(self._inflight) < self._capacity:
            job = self._waiting.popleft()
            if job.state != _QUEUED:
                continue
            self._send(job)
        if self._waiting and self._poll is None and not self._polling and self._loop:
            self._poll = self._loop.call_later(self.POLL_S, self._refresh)

    def _send(self, job: _DaskJob) -> None:
        payload, job.payload = job.payload, None
        safe = "".join(c if c.isalnum() or c in "._" else "_" for c in job.tool)
        try:
            fut = self.client.submit(
                _dask_call, payload, key=f"{safe}-{uuid.uuid4().hex}", pure=False
            )
        except Exception as exc:
            job.state = _FINISHED
            job.channel.put(job.done, False, RuntimeError(
                f"Dask did not accept the call of tool {job.tool}: {_why(exc)}"), None)
            return
        job.state = _RUNNING
        job.future = fut
        self._inflight[job] = None
        fut.add_done_callback(functools.partial(self._completed, job))

    def _completed(self, job: _DaskJob, fut: Any) -> None:
        """In Dask's callback thread: fetch the outcome, hand it to the loop."""
        from distributed import KilledWorker
        from distributed.client import FutureCancelledError

        worker: str | None = None
        threads: int | None = None
        try:
            worker, reply = fut.result()
        except KilledWorker as exc:
            last = getattr(exc, "last_worker", None)
            worker = getattr(last, "address", None) or None
            ok, value = False, WorkerCrashedError(
                f"the Dask worker {worker or ''} died while running tool {job.tool} "
                f"(KilledWorker: the worker process exited or was killed; see its nanny's "
                f"log for the exit code); the cluster restarts it"
            )
            threads = self._threads()  # the dead worker is gone from the scheduler now
        except FutureCancelledError as exc:
            ok, value = False, WorkerCrashedError(
                f"the Dask cluster dropped the call of tool {job.tool} ({_why(exc)})"
            )
        except BaseException as exc:  # an error Dask raised itself (e.g. loading the call)
            ok, value = False, exc
        else:
            ok, value = _decode(reply, job.tool, worker)
        job.channel.put(functools.partial(self._finished, job, threads), ok, value, worker)

    def _finished(self, job: _DaskJob, threads: int | None, ok: bool, value: Any,
                  worker: str | None) -> None:
        """On the loop: free the call's slot, send waiting calls, report the outcome."""
        self._inflight.pop(job, None)
        job.future = None
        if threads is not None:
            self._capacity = threads
        abandoned = job.state == _ABANDONED
        job.state = _FINISHED
        if self._channel is not None:
            self._pump()
        if not abandoned:
            job.done(ok, value, worker)

    def _refresh(self) -> None:
        """While calls wait: re-read the cluster's thread count (in a thread)."""
        self._poll = None
        if self._loop is None or self._channel is None or not self._waiting:
            return
        self._polling = True
        fut = self._loop.run_in_executor(None, self._threads)
        fut.add_done_callback(self._refreshed)

    def _refreshed(self, fut: asyncio.Future[int]) -> None:
        self._polling = False
        if fut.cancelled() or fut.exception() is not None or self._channel is None:
            return
        self._capacity = fut.result()
        self._pump()

    def __repr__(self) -> str:
        where = "LocalCluster on demand" if self.owns_cluster else repr(self.client)
        return f"{type(self).__name__}({where})"


def _cancel(client: Any, futures: list[Any]) -> None:
    with contextlib.suppress(Exception):
        client.cancel(futures)


def _close_cluster(client: Any, cluster: Any) -> None:
    with contextlib.suppress(Exception):
        client.close()
    if cluster is not None:
        with contextlib.suppress(Exception):
            cluster.close()

