"""Module-level tools for the backend tests: worker processes and Dask workers import them."""

from __future__ import annotations

import asyncio
import ctypes
import os
import threading
import time
from pathlib import Path
from typing import Any


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


async def aio_square(x: int) -> int:
    await asyncio.sleep(0.01)
    return x * x


def concat(items: list[Any], extra: Any = None) -> list[Any]:
    return [*items, extra] if extra is not None else list(items)


def noop() -> None:
    return None


def spin(n: int) -> int:
    """A pure-Python loop of ``n`` steps (CPU-bound, holds the GIL)."""
    total = 0
    for i in range(n):
        total += i % 7
    return total


def calibrate(seconds: float) -> int:
    """About how many :func:`spin` steps take ``seconds`` on this machine."""
    n = 100_000
    while True:
        t0 = time.perf_counter()
        spin(n)
        took = time.perf_counter() - t0
        if took > 0.05:
            return int(n * seconds / took)
        n *= 4


def pid() -> int:
    return os.getpid()


def where() -> str:
    """The thread this ran on."""
    return threading.current_thread().name


def crash(code: int = 1) -> None:
    """Kill the worker process at once, as a bug in a C extension would."""
    os._exit(code)


def segfault() -> None:
    ctypes.string_at(0)


def fail(message: str) -> None:
    raise ValueError(message)


class CodedError(Exception):
    """An exception with a ``code`` attribute (the record's code)."""

    code = "CUSTOM_CODE"


def fail_coded(message: str) -> None:
    raise CodedError(message)


class LockedError(Exception):
    """An exception that cannot be pickled: it holds a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def fail_unpicklable(message: str) -> None:
    raise LockedError(message)


def return_lock() -> Any:
    return threading.Lock()


def sleep_with_pid(seconds: float, pid_file: str) -> str:
    """Write this process's pid to ``pid_file``, then sleep ``seconds``."""
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)
    return "finished"


def sleep_and(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def spin_timed(n: int) -> dict[str, Any]:
    """:func:`spin` that says where and when it ran: pid, wall ``start``/``end`` (epoch
    seconds) and the CPU seconds its thread spent on it."""
    start, cpu = time.time(), time.thread_time()
    spin(n)
    return {"pid": os.getpid(), "start": start, "end": time.time(),
            "cpu": time.thread_time() - cpu}
