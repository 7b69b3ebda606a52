"""Tools and DAGs of the run store tests, importable by the test process and by the child
processes they start (which get this directory on ``PYTHONPATH``)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import oktyv_nb as ok

#: Every call of :func:`double` in this process, by argument.
CALLS: list[Any] = []


class Point:
    """A result that is no JSON value: pickled by reference to this module."""

    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __repr__(self) -> str:
        return f"Point({self.x}, {self.y})"


def double(x: int) -> int:
    CALLS.append(x)
    return 2 * x


def make_set(n: int) -> set[int]:
    return set(range(n))


def make_point(x: int, y: int) -> Point:
    return Point(x, y)


def announce(word: str) -> str:
    """Tell the parent process the fast tasks are done (a line on the process's stdout:
    ``print`` in a tool is captured into the task's record)."""
    os.write(1, f"{word}\n".encode())
    return word


async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def crash_dag(slow: float) -> ok.DAG:
    """Fast tasks, a ``signal`` once they are done, and a ``slow`` task running meanwhile."""
    return (
        ok.DAG("crash", max_concurrent=4)
        .task("slow", nap, seconds=slow)
        .task("a", double, x=1)
        .task("b", double, x="${a.result}")
        .task("c", make_set, n=3)
        .task("p", make_point, x=1, y=2)
        .task("signal", announce, word="READY", after=["b", "c", "p"])
        .task("after_slow", double, x=2, after=["slow"])
    )


def many_dag(name: str, n: int, seconds: float) -> ok.DAG:
    dag = ok.DAG(name, max_concurrent=4)
    for i in range(n):
        dag.task(f"t{i}", nap, seconds=seconds)
    return dag


def barrier(directory: str, me: str, others: list[str], timeout: float = 30.0) -> None:
    """Wait until every process named in ``others`` has reached this point too."""
    Path(directory, f"ready-{me}").touch()
    deadline = time.monotonic() + timeout
    while not all(Path(directory, f"ready-{o}").exists() for o in others):
        if time.monotonic() > deadline:
            raise TimeoutError("the other writer never came")
        time.sleep(0.01)


def main(argv: list[str]) -> None:
    """``python -c "import store_tools; store_tools.main(sys.argv[1:])" crash|many STORE ...``
    (imported, not run as ``__main__``, so that its classes pickle by reference)."""
    what, store_path = argv[0], argv[1]
    store = ok.RunStore(store_path)
    if what == "crash":
        crash_dag(slow=60).run(store=store, live=False)
    elif what == "many":
        me, other, n = argv[2], argv[3], int(argv[4])
        barrier(os.path.dirname(store_path), me, [other])
        run = many_dag(f"many-{me}", n, 0.004).run(store=store, live=False)
        print(run.execution_id, run.status, flush=True)
