"""Start time of the MCP server (SPEC §15): from process start to the first ``list_tools``
answer.

``python bench/mcp_start.py [--runs N]`` starts ``python -m oktyv_nb.mcp`` N times (default
10) with the official SDK's stdio client, and times each start from just before the process
is spawned to the moment the answer to ``tools/list`` (sent right after the ``initialize``
handshake) has arrived. It prints each run, then the median, minimum and maximum, and the
import time of the SDK and of ``oktyv_nb`` alone for comparison. Seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


async def one_start(root: str) -> float:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "oktyv_nb.mcp", "--root", root],
        env={"PYTHONPATH": str(PROJECT)},
        cwd=root,
    )
    with open(os.devnull, "w") as errlog:
        t0 = time.perf_counter()
        async with stdio_client(params, errlog=errlog) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            listed = await session.list_tools()
            elapsed = time.perf_counter() - t0
    assert {t.name for t in listed.tools} == {
        "parallel_execute", "validate_request", "describe_tools"
    }
    return elapsed


def import_time(module: str, runs: int = 3) -> float:
    """Median wall time of ``python -c 'import <module>'`` (a fresh process each time)."""
    times = []
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True, env=env)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="server starts to time")
    args = parser.parse_args(argv)
    from importlib.metadata import version

    import mcp  # noqa: F401 - fail early when the SDK is missing

    print(f"python {platform.python_version()}, mcp {version('mcp')}, "
          f"{os.cpu_count()} cores, {platform.platform()}")
    with tempfile.TemporaryDirectory() as root:
        asyncio.run(one_start(root))  # warm-up: the file cache, compiled bytecode
        times = []
        for i in range(args.runs):
            t = asyncio.run(one_start(root))
            times.append(t)
            print(f"run {i + 1:2}: {t:.3f} s")
    print(f"start to first list_tools answer: median {statistics.median(times):.3f} s, "
          f"min {min(times):.3f} s, max {max(times):.3f} s ({len(times)} runs)")
    print(f"for comparison, import alone: python -c 'import oktyv_nb' "
          f"{import_time('oktyv_nb'):.3f} s, 'import mcp.server' "
          f"{import_time('mcp.server'):.3f} s, 'import oktyv_nb.mcp.server' "
          f"{import_time('oktyv_nb.mcp.server'):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
