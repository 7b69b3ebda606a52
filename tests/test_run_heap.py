"""The garbage collector around runs (oktyv_nb.model.graph.run_heap): paused while a run is
set up, on but off the set-up's objects while the engine runs, as before afterwards."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest

import oktyv_nb as ok


@pytest.fixture(autouse=True)
def _collector() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    gc.unfreeze()
    if was:
        gc.enable()
    else:
        gc.disable()


def _seen() -> dict[str, object]:
    return {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}


def _request(n: int = 3) -> dict[str, object]:
    return {"tasks": [{"id": f"t{i}", "tool": "probe"} for i in range(n)]}


def test_the_engine_runs_with_the_collector_on_and_the_set_up_frozen() -> None:
    result = ok.execute_request(_request(), {"probe": _seen})
    for task in result.tasks.values():
        assert task.result["enabled"] is True and task.result["frozen"] > 0
    assert gc.isenabled()


def test_the_last_run_to_end_unfreezes_everything() -> None:
    """In a process of its own: a run left going by another test (a sync tool's thread that
    cannot be stopped) would keep a scope open here, and rightly keep the objects frozen.
    An interpreter that starts with objects frozen (CPython 3.12 does) is left as it is."""
    code = (
        "import gc, oktyv_nb as ok\n"
        "before = gc.get_freeze_count()\n"  # 0, or what the interpreter froze (3.12)
        "seen = []\n"
        "def probe():\n"
        "    seen.append(gc.get_freeze_count())\n"
        "ok.execute_request({'tasks': [{'id': 'a', 'tool': 'probe'}]}, {'probe': probe})\n"
        "ok.DAG().task('b', probe).run(live=False)\n"
        "print(min(seen) > 0, gc.isenabled(), gc.get_freeze_count() == before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out == ["True", "True", "True"], out


def test_async_tools_and_arun_too() -> None:
    async def probe() -> dict[str, object]:
        return _seen()

    async def main() -> None:
        result = await ok.aexecute_request(_request(), {"probe": probe})
        assert all(t.result["frozen"] > 0 for t in result.tasks.values())
        run = await ok.DAG().task("a", probe).arun(live=False)
        assert run.records["a"].result["enabled"] is True

    asyncio.run(main())
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_dag_run_and_a_nested_run_restore_the_collector() -> None:
    def outer() -> dict[str, object]:
        inner = ok.DAG().task("i", _seen).run(live=False)
        return {"inner": inner.records["i"].result, "after": _seen()}

    run = ok.DAG().task("o", outer).run(live=False)
    got = run.records["o"].result
    assert got["inner"]["enabled"] is True and got["after"]["enabled"] is True
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    result = ok.execute_request(_request(), {"probe": _seen})
    assert all(t.result == {"enabled": False, "frozen": 0} for t in result.tasks.values())
    assert not gc.isenabled() and gc.get_freeze_count() == 0


def test_objects_the_program_froze_stay_frozen() -> None:
    gc.freeze()
    frozen = gc.get_freeze_count()
    ok.execute_request(_request(), {"probe": _seen})
    # neither unfrozen (the count would be 0) nor frozen more (objects freed meanwhile
    # leave the permanent generation, so the count may only go down)
    assert 0 < gc.get_freeze_count() <= frozen and gc.isenabled()


def test_a_validation_error_leaves_the_collector_on() -> None:
    with pytest.raises(ok.OktyvError):
        ok.execute_request({"tasks": [{"id": "a", "tool": "probe", "dependsOn": ["x"]}]},
                           {"probe": _seen})
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_an_interrupted_run_leaves_the_collector_on() -> None:
    def stop(kind: str, record: object, time: float) -> None:
        if kind == "task_started":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ok.DAG().task("a", _seen).task("b", _seen, after=["a"]).run(live=False,
                                                                     on_event=stop)
    assert gc.isenabled() and gc.get_freeze_count() == 0
