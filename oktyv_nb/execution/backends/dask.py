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
    another one, and a crash fails only the calls running in that worker process (with one
    thread per worker, only the call that crashed it). The nanny restarts the worker.

Sending and fetching
    The calls the engine submits in one turn of its loop go to the scheduler as one graph
    (``Client.map``). Each call's outcome is awaited on the client's own event loop, all of
    them concurrently (the client merges overlapping fetches into one request), and handed
    to the engine's loop through a :class:`~oktyv_nb.execution.backends.base.Channel`.

Queueing: with ``max_concurrent`` above the cluster's thread count, the extra calls wait in
the backend and that wait counts in the task's duration and towards its timeout. A cluster
the backend starts itself has threads enough for the run's ``max_concurrent`` (see
:class:`DaskBackend`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
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
    backend and closes it when the run ends (defaults: ``processes=True``, the dashboard on a
    free port; the scheduler's ``allowed-failures`` is 0, so a task whose worker dies fails
    at once with ``WORKER_CRASHED``). Unless ``n_workers`` or ``threads_per_worker`` is
    given, the cluster is sized for the run's ``max_concurrent``: ``min(max_concurrent,
    os.cpu_count())`` worker processes (one worker with ``processes=False``) with enough
    threads each for ``max_concurrent`` calls at once; used outside a run, one thread per
    worker and Dask's default number of workers. See the module docstring.
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
        self._sized = not {"n_workers", "threads_per_worker"} & local_cluster_kwargs.keys()
        self._max_concurrent: int | None = None
        self._channel: Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: deque[_DaskJob] = deque()
        self._inflight: dict[_DaskJob, None] = {}
        self._capacity = 1
        self._poll: asyncio.TimerHandle | None = None
        self._polling = False
        self._flushing = False  # a _flush is scheduled on the loop

    # ------------------------------------------------------------------ lifecycle
    def size_for(self, max_concurrent: int) -> None:
        """The cluster this backend starts runs ``max_concurrent`` calls at once."""
        self._max_concurrent = max_concurrent

    def cluster_options(self) -> dict[str, Any]:
        """The ``LocalCluster`` options of the cluster this backend would start now."""
        options = dict(self.cluster_kwargs)
        calls = self._max_concurrent
        if self._sized and calls is not None:
            workers = min(calls, os.cpu_count() or 1) if options.get("processes", True) else 1
            options["n_workers"] = workers
            options["threads_per_worker"] = -(-calls // workers)
        return options

    def _start_cluster(self) -> None:
        import dask
        from distributed import Client, LocalCluster

        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            cluster = LocalCluster(**self.cluster_options())
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
        self._flushing = False
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
        """Send waiting calls at the end of this turn of the loop (see :meth:`_flush`)."""
        if not self._flushing and self._loop is not None:
            self._flushing = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Send waiting calls while the cluster has a worker thread free for each: all the
        calls of one turn of the loop in one message to the scheduler."""
        self._flushing = False
        if self._channel is None:
            return
        batch: list[_DaskJob] = []
        free = self._capacity - len(self._inflight)
        while self._waiting and len(batch) < free:
            job = self._waiting.popleft()
            if job.state == _QUEUED:
                batch.append(job)
        if batch:
            self._send(batch)
        if self._waiting and self._poll is None and not self._polling and self._loop:
            self._poll = self._loop.call_later(self.POLL_S, self._refresh)

    def _send(self, batch: list[_DaskJob]) -> None:
        payloads = []
        keys = []
        for job in batch:
            payloads.append(job.payload)
            job.payload = None
            safe = "".join(c if c.isalnum() or c in "._" else "_" for c in job.tool)
            keys.append(f"{safe}-{uuid.uuid4().hex}")
        try:
            futures = self.client.map(_dask_call, payloads, key=keys, pure=False)
        except Exception as exc:
            for job in batch:
                job.state = _FINISHED
                job.channel.put(job.done, False, RuntimeError(
                    f"Dask did not accept the call of tool {job.tool}: {_why(exc)}"), None)
            return
        sent = list(zip(batch, futures, strict=True))
        for job, fut in sent:
            job.state = _RUNNING
            job.future = fut
            self._inflight[job] = None
        self.client.loop.add_callback(self._watch_all, self.client, sent)

    async def _watch_all(self, client: Any, sent: list[tuple[_DaskJob, Any]]) -> None:
        await asyncio.gather(*(self._watch(client, job, fut) for job, fut in sent))

    async def _watch(self, client: Any, job: _DaskJob, fut: Any) -> None:
        """On the client's event loop: await the call's outcome, hand it to the engine's loop.

        Every call in flight has its own watcher, so outcomes are fetched concurrently (the
        client merges the fetches that overlap into one request), not one after the other.
        """
        from distributed import KilledWorker
        from distributed.client import FutureCancelledError

        worker: str | None = None
        threads: int | None = None
        cancelled = False
        cpu: float | None = None
        try:
            worker, reply = await client.gather(fut, asynchronous=True)
        except KilledWorker as exc:
            last = getattr(exc, "last_worker", None)
            worker = getattr(last, "address", None) or None
            ok, value = False, WorkerCrashedError(
                f"the Dask worker {worker or ''} died while running tool {job.tool} "
                f"(KilledWorker: the worker process exited or was killed; see its nanny's "
                f"log for the exit code); the cluster restarts it"
            )
            try:  # the dead worker is gone from the scheduler now
                threads = max(1, sum((await client.nthreads(asynchronous=True)).values()))
            except Exception:
                threads = None
        except FutureCancelledError as exc:
            ok, value = False, WorkerCrashedError(
                f"the Dask cluster dropped the call of tool {job.tool} ({_why(exc)})"
            )
        except asyncio.CancelledError:  # the client's loop is stopping
            cancelled = True
            ok, value = False, WorkerCrashedError(
                f"the Dask client closed while running tool {job.tool}"
            )
        except BaseException as exc:  # an error Dask raised itself (e.g. loading the call)
            ok, value = False, exc
        else:
            ok, value, cpu = _decode(reply, job.tool, worker)
        job.channel.put(functools.partial(self._finished, job, threads), ok, value, worker, cpu)
        if cancelled:
            raise asyncio.CancelledError

    def _finished(self, job: _DaskJob, threads: int | None, ok: bool, value: Any,
                  worker: str | None, cpu_s: float | None = None) -> None:
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
            job.done(ok, value, worker, cpu_s)

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

