"""Mapped tasks (SPEC §16) and shared pools and rate limits (SPEC §20)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from typing import Any

import pytest

import oktyv_nb as ok
from oktyv_nb.execution.events import EventLog


class Peak:
    """Counts the calls running at once (the tools measure their own concurrency)."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.lock = threading.Lock()
        self.calls: list[Any] = []

    def enter(self, value: Any) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.calls.append(value)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


def list_urls(n: int = 6) -> dict[str, Any]:
    return {"urls": [f"u{i}" for i in range(n)]}


def upper(url: str, suffix: str = "") -> str:
    if url == "bad":
        raise RuntimeError(f"cannot fetch {url}")
    return url.upper() + suffix


def gather(pages: list[Any]) -> list[Any]:
    return list(pages)


def absolute(x: int) -> int:
    return abs(x)


# ---------------------------------------------------------------------- expansion
def test_map_over_a_reference_expands_into_children() -> None:
    dag = (
        ok.DAG("crawl")
        .task("list", list_urls)
        .map("fetch", upper, over="${list.result.urls}", param="url", suffix="!")
        .task("total", gather, pages="${fetch.result}")
    )
    run = dag.run(live=False)
    assert run.status == "success"
    fetch = run.result.tasks["fetch"]
    assert fetch.status == "success"
    assert fetch.result == [f"U{i}!" for i in range(6)]
    assert [c.task_id for c in fetch.children] == [f"fetch[{i}]" for i in range(6)]
    assert all(c.status == "success" and c.attempts == 1 for c in fetch.children)
    assert fetch.attempts == 6
    assert run.result.tasks["total"].result == fetch.result
    # the summary and the dag info count the request's tasks only
    assert run.result.summary.total == 3
    assert run.result.dag.levels == [["list"], ["fetch"], ["total"]]
    # start/end of the map span its children
    assert fetch.start_time <= min(c.start_time for c in fetch.children)
    assert fetch.end_time >= max(c.end_time for c in fetch.children)


def test_map_over_a_literal_list_and_a_tuple_result() -> None:
    dag = ok.DAG().map("m", upper, over=["a", "b"], param="url")
    run = dag.run(live=False)
    assert run.result.tasks["m"].result == ["A", "B"]
    dag2 = (ok.DAG().task("t", lambda: ("x", "y"))
            .map("m", upper, over="${t.result}", param="url"))
    assert dag2.run(live=False).result.tasks["m"].result == ["X", "Y"]


def test_empty_list_succeeds_with_an_empty_result() -> None:
    dag = (ok.DAG().task("list", list_urls, n=0)
           .map("fetch", upper, over="${list.result.urls}", param="url")
           .task("total", gather, pages="${fetch.result}"))
    run = dag.run(live=False)
    assert run.status == "success"
    assert run.result.tasks["fetch"].result == []
    assert run.result.tasks["fetch"].children == []
    assert run.result.tasks["total"].result == []
    assert list(run.df.index) == ["list", "fetch", "total"]  # nothing expanded: its own row


def test_not_a_list_fails_with_map_not_a_list() -> None:
    dag = (ok.DAG().task("list", lambda: {"urls": "u0"})
           .map("fetch", upper, over="${list.result.urls}", param="url")
           .task("after", gather, pages="${fetch.result}"))
    run = dag.run(live=False)
    fetch = run.result.tasks["fetch"]
    assert fetch.status == "failed"
    assert fetch.error.code == "MAP_NOT_A_LIST"
    assert "fetch" in fetch.error.message and "str" in fetch.error.message
    assert fetch.children is None
    assert run.result.tasks["after"].status == "skipped"
    assert run.df.loc["fetch", "error_code"] == "MAP_NOT_A_LIST"


def test_too_many_elements_fail_with_map_too_large() -> None:
    dag = (ok.DAG().task("list", lambda: list(range(ok.MAP_LIMIT + 1)))
           .map("fetch", upper, over="${list.result}", param="url"))
    run = dag.run(live=False)
    err = run.result.tasks["fetch"].error
    assert err.code == "MAP_TOO_LARGE"
    assert f"{ok.MAP_LIMIT:,}" in err.message


def test_a_reference_that_cannot_resolve_fails_the_map() -> None:
    dag = (ok.DAG().task("list", lambda: {"other": 1})
           .map("fetch", upper, over="${list.result.urls}", param="url"))
    err = dag.run(live=False).result.tasks["fetch"].error
    assert err.code == "VARIABLE_RESOLUTION_ERROR"
    assert err.message.startswith("Task fetch, map.over")


# ---------------------------------------------------------------------- per child
def test_children_retry_and_time_out_one_by_one() -> None:
    tries: dict[str, int] = {}

    async def flaky(x: str) -> str:
        tries[x] = tries.get(x, 0) + 1
        if x == "slow":
            await asyncio.sleep(5)
        if x == "flaky" and tries[x] < 2:
            raise RuntimeError("first call fails")
        return x

    dag = ok.DAG().map("m", flaky, over=["ok", "flaky", "slow"], param="x", timeout=0.2,
                       retry=ok.RetryPolicy(max_attempts=2, initial_delay=0.01))
    t0 = time.perf_counter()
    run = dag.run(live=False)
    assert time.perf_counter() - t0 < 3  # the slow child timed out, twice
    kids = {c.task_id: c for c in run.result.tasks["m"].children}
    assert kids["m[0]"].status == "success" and kids["m[0]"].attempts == 1
    assert kids["m[1]"].status == "success" and kids["m[1]"].attempts == 2
    assert kids["m[2]"].status == "failed" and kids["m[2]"].attempts == 2
    assert kids["m[2]"].error.code == "TASK_TIMEOUT"
    m = run.result.tasks["m"]
    assert m.status == "failed" and m.error.code == "MAP_CHILD_FAILED"
    assert "index 2" in m.error.message
    assert m.attempts == 5
    assert m.result == ["ok", "flaky", None]
    att = run.attempts
    assert list(att[att.task_id == "m[1]"].outcome) == ["error", "success"]


def test_max_concurrent_bounds_a_maps_children() -> None:
    peak = Peak()

    async def work(x: int) -> int:
        peak.enter(x)
        await asyncio.sleep(0.02)
        peak.leave()
        return x * 2

    dag = ok.DAG(max_concurrent=10).map("m", work, over=list(range(20)), param="x",
                                         max_concurrent=3)
    run = dag.run(live=False)
    assert run.result.tasks["m"].result == [x * 2 for x in range(20)]
    assert peak.peak == 3, peak.peak


def test_run_max_concurrent_still_bounds_children() -> None:
    peak = Peak()

    def work(x: int) -> int:
        peak.enter(x)
        time.sleep(0.02)
        peak.leave()
        return x

    ok.DAG(max_concurrent=2).map("m", work, over=list(range(8)), param="x",
                                 max_concurrent=5).run(live=False)
    assert peak.peak == 2


def test_continue_mode_other_children_go_on_and_dependents_are_skipped() -> None:
    dag = (ok.DAG(max_concurrent=1)
           .map("m", upper, over=["a", "bad", "c", "d"], param="url")
           .task("strict", gather, pages="${m.result}")
           .task("lenient", gather, pages="${m.result}", trigger="all_done")
           .task("third", lambda v: v, v="${m.result.3}", trigger="all_done"))
    run = dag.run(live=False)
    tasks = run.result.tasks
    assert [c.status for c in tasks["m"].children] == ["success", "failed", "success",
                                                       "success"]
    assert tasks["m"].status == "failed"
    assert tasks["strict"].status == "skipped"
    assert tasks["strict"].error.code == "DEPENDENCY_FAILED"
    # all_done dependents see None for the failed child (SPEC §16)
    assert tasks["lenient"].result == ["A", None, "C", "D"]
    assert tasks["third"].result == "D"
    assert tasks["m"].result == ["A", None, "C", "D"]  # kept in JSON even though failed


def test_stop_mode_a_failed_child_stops_new_starts() -> None:
    started: list[str] = []

    def work(url: str) -> str:
        started.append(url)
        time.sleep(0.01)
        return upper(url)

    dag = ok.DAG(max_concurrent=1, failure_mode="stop").map(
        "m", work, over=["a", "bad", "c", "d"], param="url")
    run = dag.run(live=False)
    kids = run.result.tasks["m"].children
    assert started == ["a", "bad"]
    assert [c.status for c in kids] == ["success", "failed", "skipped", "skipped"]
    assert kids[2].error.code == "RUN_STOPPED"
    assert run.result.tasks["m"].status == "failed"


def test_result_references_one_child() -> None:
    dag = (ok.DAG().map("m", upper, over=["a", "b", "c", "d"], param="url")
           .task("pick", lambda v: v, v="${m.result.3}"))
    assert dag.run(live=False).result.tasks["pick"].result == "D"


def test_maps_nest_over_a_maps_results() -> None:
    def split(word: str) -> list[str]:
        return list(word)

    def length(items: list[str]) -> int:
        return len(items)

    dag = (ok.DAG()
           .map("words", split, over=["ab", "cde"], param="word")
           .map("lens", length, over="${words.result}", param="items")
           .task("sum", lambda values: sum(values), values="${lens.result}"))
    run = dag.run(live=False)
    assert run.result.tasks["words"].result == [["a", "b"], ["c", "d", "e"]]
    assert run.result.tasks["lens"].result == [2, 3]
    assert run.result.tasks["sum"].result == 5


# ---------------------------------------------------------------------- outputs
def test_dataframe_has_a_row_per_child_with_map_of_and_map_index() -> None:
    dag = (ok.DAG().task("list", list_urls, n=3)
           .map("fetch", upper, over="${list.result.urls}", param="url"))
    run = dag.run(live=False)
    df = run.df
    assert list(df.index) == ["list", "fetch[0]", "fetch[1]", "fetch[2]"]
    assert df["map_of"].isna()["list"]
    assert list(df["map_of"].iloc[1:]) == ["fetch"] * 3
    assert str(df["map_index"].dtype) == "Int64"
    assert list(df["map_index"].iloc[1:]) == [0, 1, 2]
    assert list(df["result"].iloc[1:]) == ["U0", "U1", "U2"]
    assert list(df.loc["fetch[1]", "depends_on"]) == ["list"]
    stats = run.stats
    assert stats.tasks == 2  # request tasks
    # work counts the children's attempts
    busy = sum(r.duration for r in run.outcome.ran())
    assert stats.work_s == pytest.approx(busy, rel=1e-6, abs=1e-9)


def test_json_round_trip_of_a_result_with_children() -> None:
    run = ok.DAG().map("m", upper, over=["a", "bad"], param="url").run(live=False)
    text = run.result.to_json()
    data = json.loads(text)
    assert [c["taskId"] for c in data["tasks"]["m"]["children"]] == ["m[0]", "m[1]"]
    assert data["tasks"]["m"]["result"] == ["A", None]
    again = ok.ExecutionResult.model_validate_json(text)
    assert again.tasks["m"].children[1].error.code == "RuntimeError"


def test_events_for_children_reach_subscribers() -> None:
    log = EventLog()
    ok.DAG().map("m", upper, over=["a", "b"], param="url").run(live=False, on_event=log)
    seen = [(e.kind, e.task_id) for e in log if e.task_id is not None]
    for child in ("m[0]", "m[1]"):
        assert ("task_ready", child) in seen
        assert ("task_started", child) in seen
        assert ("task_finished", child) in seen
    assert ("task_finished", "m") in seen
    assert seen.index(("task_finished", "m")) > seen.index(("task_finished", "m[1]"))


def test_execute_request_with_a_json_map() -> None:
    request = {
        "tasks": [
            {"id": "list", "tool": "lister"},
            {"id": "fetch", "tool": "upper", "params": {"suffix": "?"},
             "map": {"over": "${list.result.urls}", "param": "url", "maxConcurrent": 2}},
        ],
        "config": {"maxConcurrent": 4},
    }
    result = ok.execute_request(request, tools={"lister": list_urls, "upper": upper})
    assert result.tasks["fetch"].result == [f"U{i}?" for i in range(6)]
    assert result.dag.edges[0].from_ == "list"


# ---------------------------------------------------------------------- builder
def test_to_request_from_request_and_code_keep_the_map() -> None:
    dag = (ok.DAG("crawl", pools={"api": 2}, rates={"api": "50/s"})
           .task("list", list_urls)
           .map("fetch", upper, over="${list.result.urls}", param="url", max_concurrent=4,
                timeout=5, retries=2, pool="api", suffix="!"))
    req = dag.to_request()
    spec = req.tasks[1]
    assert spec.map.over == "${list.result.urls}" and spec.map.param == "url"
    assert spec.map.max_concurrent == 4 and spec.pool == "api"
    data = json.loads(dag.to_json())
    assert data["tasks"][1]["map"] == {"over": "${list.result.urls}", "param": "url",
                                       "maxConcurrent": 4}
    assert data["config"]["pools"] == {"api": 2} and data["config"]["rates"] == {"api": "50/s"}
    back = ok.DAG.from_request(data, tools={"list_urls": list_urls, "upper": upper},
                               name="crawl")
    assert back == dag
    code = dag.to_code()
    assert ".map(" in code and 'over="${list.result.urls}"' in code and 'pool="api"' in code
    scope: dict[str, Any] = {"list_urls": list_urls, "upper": upper}
    exec(code, scope)
    assert scope["dag"] == dag
    assert scope["dag"].run(live=False).result.tasks["fetch"].result == [
        f"U{i}!" for i in range(6)]


def test_builder_errors_name_the_task_and_the_fix() -> None:
    with pytest.raises(ok.InvalidOptionError, match=r"Task m: over must be"):
        ok.DAG().map("m", upper, over=42, param="url")  # type: ignore[arg-type]
    with pytest.raises(ok.InvalidOptionError, match=r"Task m: over must be one reference"):
        ok.DAG().map("m", upper, over="list.result", param="url")
    with pytest.raises(ok.InvalidOptionError, match=r"param 'url' is the one each child"):
        ok.DAG().map("m", upper, {"url": "x"}, over=["a"], param="url")
    with pytest.raises(ok.InvalidParamsError, match="nope"):
        ok.DAG().map("m", upper, over=["a"], param="nope")
    with pytest.raises(ok.InvalidOptionError, match=r"dag.map\('m'"):
        ok.DAG().task("m", upper, over=["a"], param="url")
    with pytest.raises(ok.MissingDependencyError, match="no task list"):
        ok.DAG().map("m", upper, over="${list.result}", param="url").validate()
    with pytest.raises(ok.InvalidOptionError, match="max_concurrent"):
        ok.DAG().map("m", upper, over=["a"], param="url", max_concurrent=0)


def test_request_errors_for_a_bad_map() -> None:
    bad = {"tasks": [{"id": "m", "tool": "upper", "map": {"over": "nope", "param": "url"}}]}
    with pytest.raises(ValueError, match=r"map\.over must be one reference"):
        ok.execute_request(bad, tools={"upper": upper})
    dup = {"tasks": [{"id": "m", "tool": "upper", "params": {"url": 1},
                      "map": {"over": [1], "param": "url"}}]}
    with pytest.raises(ok.InvalidOptionError, match=r"map\.param 'url' is also one of its"):
        ok.execute_request(dup, tools={"upper": upper})


def test_a_stored_run_keeps_every_child(tmp_path: Any) -> None:
    store = ok.RunStore(tmp_path / "runs.db")
    dag = (ok.DAG("stored", store=store).task("list", lambda: ["a", "bad", "c"])
           .map("m", upper, over="${list.result}", param="url", pool="p"))
    dag.configure(pools={"p": 2})
    assert dag.config.pools == {"p": 2}
    with pytest.raises(ok.InvalidRateError):
        dag.configure(rates={"p": "often"})
    assert dag.config.rates == {}
    run = dag.run(live=False)
    back = store.load(run.execution_id)
    m = back.result.tasks["m"]
    assert m.status == "failed" and m.error.code == "MAP_CHILD_FAILED"
    assert [c.task_id for c in m.children] == ["m[0]", "m[1]", "m[2]"]
    assert [c.status for c in m.children] == ["success", "failed", "success"]
    assert m.result == ["A", None, "C"]
    assert list(back.df.index) == ["list", "m[0]", "m[1]", "m[2]"]
    assert list(back.df["map_index"].iloc[1:]) == [0, 1, 2]
    assert back.outcome.graph.nodes["m"].map.param == "url"


# ---------------------------------------------------------------------- rerun
def test_rerun_failed_runs_only_the_failed_children() -> None:
    calls: list[str] = []
    broken = {"b"}

    def work(x: str) -> str:
        calls.append(x)
        if x in broken:
            raise RuntimeError("down")
        return x.upper()

    dag = (ok.DAG().task("list", lambda: ["a", "b", "c"])
           .map("m", work, over="${list.result}", param="x"))
    first = dag.run(live=False)
    assert first.result.tasks["m"].status == "failed"
    assert sorted(calls) == ["a", "b", "c"]
    calls.clear()
    broken.clear()
    second = first.rerun_failed()
    assert calls == ["b"]
    kids = second.result.tasks["m"].children
    assert [c.reused for c in kids] == [True, None, True]
    assert second.result.tasks["m"].result == ["A", "B", "C"]
    assert second.result.tasks["m"].status == "success"


def test_rerun_failed_runs_every_child_when_the_list_changed() -> None:
    calls: list[str] = []

    def work(x: str) -> str:
        calls.append(x)
        return upper(x)

    dag = ok.DAG().task("list", lambda: ["a", "bad"]).map("m", work, over="${list.result}",
                                                           param="x")
    first = dag.run(live=False)
    assert first.result.tasks["m"].status == "failed"
    dag.remove("list").task("list", lambda: ["a", "ok"])  # changed: it runs again
    calls.clear()
    second = first.rerun_failed()
    assert sorted(calls) == ["a", "ok"]  # new elements: every child runs
    assert second.result.tasks["m"].result == ["A", "OK"]
    assert not any(c.reused for c in second.result.tasks["m"].children)


# ---------------------------------------------------------------------- pools and rates
def test_a_pool_bounds_its_tasks_while_others_go_on() -> None:
    in_pool = Peak()
    free = Peak()

    async def api(x: int) -> int:
        in_pool.enter(x)
        await asyncio.sleep(0.03)
        in_pool.leave()
        return x

    async def local(x: int) -> int:
        free.enter(x)
        await asyncio.sleep(0.03)
        free.leave()
        return x

    dag = ok.DAG(max_concurrent=8, pools={"api": 2})
    for i in range(8):
        dag.task(f"api{i}", api, x=i, pool="api")
    for i in range(6):
        dag.task(f"local{i}", local, x=i)
    run = dag.run(live=False)
    assert run.status == "success"
    assert in_pool.peak == 2
    assert free.peak == 6  # waiting for the pool held no run slot
    # wait_s includes the wait for the pool
    df = run.df
    assert df.loc[[f"api{i}" for i in range(8)], "wait_s"].max() > 0.05


def test_every_child_of_a_map_in_a_pool_takes_a_slot() -> None:
    peak = Peak()

    def call(x: int) -> int:
        peak.enter(x)
        time.sleep(0.02)
        peak.leave()
        return x

    dag = (ok.DAG(max_concurrent=6, pools={"svc": 3})
           .map("a", call, over=list(range(6)), param="x", pool="svc")
           .map("b", call, over=list(range(6, 12)), param="x", pool="svc", after="a"))
    dag.run(live=False)
    assert peak.peak == 3


def test_a_rate_limit_holds_over_a_few_seconds() -> None:
    stamps: list[float] = []

    async def hit(x: int) -> int:
        stamps.append(time.perf_counter())
        return x

    dag = ok.DAG(max_concurrent=10, rates={"api": "10/s"}).map(
        "m", hit, over=list(range(30)), param="x", pool="api")
    t0 = time.perf_counter()
    run = dag.run(live=False)
    elapsed = time.perf_counter() - t0
    assert run.status == "success"
    # burst 10 at once, then 10 a second: 30 calls need about 2 s, never much less
    assert elapsed > 1.7, elapsed
    stamps.sort()
    # a token bucket of burst 10 and 10/s: any window of t seconds holds at most
    # 10 + 10 t starts (one more allowed for timer slack)
    for i in range(len(stamps)):
        for j in range(i + 1, len(stamps)):
            assert j - i + 1 <= 10 + 10 * (stamps[j] - stamps[i]) + 1, (i, j)


def test_retries_take_rate_tokens_too() -> None:
    stamps: list[float] = []

    def flaky() -> None:
        stamps.append(time.perf_counter())
        raise RuntimeError("again")

    ok.DAG(rates={"r": "2/s"}).task(
        "t", flaky, pool="r", retry=ok.RetryPolicy(max_attempts=4, initial_delay=0.0)
    ).run(live=False)
    assert len(stamps) == 4
    assert stamps[3] - stamps[0] > 0.9  # burst 2, then one every 0.5 s


def test_unknown_pool_and_bad_rate_are_clear_errors() -> None:
    dag = ok.DAG(pools={"api": 2}).task("t", upper, url="a", pool="db")
    with pytest.raises(ok.UnknownPoolError, match=r"Task t: pool 'db' is not defined") as e:
        dag.run(live=False)
    assert e.value.code == "UNKNOWN_POOL"
    for bad in ("5", "5/day", "0/s", "-1/s", "x/s", 5):
        with pytest.raises(ok.InvalidRateError, match="rate 'api'") as e2:
            ok.DAG(rates={"api": bad})  # type: ignore[dict-item]
        assert e2.value.code == "INVALID_RATE"
    with pytest.raises(ok.InvalidOptionError, match="pool 'api' must have an int"):
        ok.DAG(pools={"api": 0})
    request = {"tasks": [{"id": "t", "tool": "upper", "params": {"url": "a"}, "pool": "x"}]}
    with pytest.raises(ok.UnknownPoolError):
        ok.execute_request(request, tools={"upper": upper})
    rated = {"tasks": [], "config": {"rates": {"x": "fast"}}}
    with pytest.raises(ok.InvalidRateError):
        ok.execute_request(rated)


def test_a_name_only_in_rates_is_a_pool_of_its_rate() -> None:
    run = ok.DAG(rates={"r": "100/min"}).task("t", upper, url="a", pool="r").run(live=False)
    assert run.result.tasks["t"].result == "A"


# ---------------------------------------------------------------------- pictures
def test_graph_draws_a_map_as_a_stack_with_counts() -> None:
    dag = (ok.DAG().task("list", list_urls)
           .map("fetch", upper, over="${list.result.urls}", param="url"))
    before = dag.graph().source
    assert "box3d" in before and "fetch ×?" in before
    run = (ok.DAG().map("fetch", upper, over=["a", "bad", "c"], param="url")).run(live=False)
    src = run.graph().source
    assert "fetch ×3" in src
    assert "2 ✓ 1 ✗ / 3" in src
    assert "fetch[0]" not in src  # children are not drawn one by one


def test_a_5000_child_map_stays_one_node() -> None:
    run = ok.DAG().map("m", str, over=list(range(5000)), param="object").run(live=False)
    assert run.result.tasks["m"].status == "success"
    src = run.graph().source
    assert "m ×5000" in src and "5000 ✓ / 5000" in src
    assert len(src) < 5000  # not a node per child
    svg = run.graph().pipe(format="svg").decode()
    assert svg.count('class="node"') < 10


def test_live_frames_show_a_maps_counts() -> None:
    frames: list[Any] = []

    async def slow(x: int) -> int:
        await asyncio.sleep(0.2 * (x + 1))
        return x

    dag = ok.DAG().map("m", slow, over=[0, 1, 2, 3], param="x")
    dag.run(live=frames.append)
    shown = [f.maps.get("m") for f in frames if not f.final]
    assert any(s is not None and s.endswith("/ 4") and "✓" in s and s != "4 ✓ / 4"
               for s in shown), shown
    final = frames[-1]
    assert final.final and final.maps["m"] == "4 ✓ / 4"
    svg = frames[1].svg()
    assert "/ 4" in svg


def _attempt_bars(fig: Any) -> list[tuple[float, float, float]]:
    """(row y, x0, x1) of every attempt bar of a timeline."""
    from matplotlib.collections import PolyCollection

    out = []
    for coll in fig.axes[0].collections:
        if isinstance(coll, PolyCollection) and (coll.get_gid() or "").startswith("attempts:"):
            for path in coll.get_paths():
                v = path.vertices
                out.append(((v[:, 1].min() + v[:, 1].max()) / 2, v[:, 0].min(), v[:, 0].max()))
    return out


def test_timeline_groups_a_maps_children() -> None:
    from oktyv_nb.results.display.timeline import MAP_ROWS

    flaky_seen: set[str] = set()

    def flaky(url: str) -> str:
        if url == "b" and url not in flaky_seen:
            flaky_seen.add(url)
            raise RuntimeError("once")
        return url

    run = (ok.DAG().task("list", lambda: ["a", "b", "c"])
           .map("m", flaky, over="${list.result}", param="url", retries=1)
           .task("after", gather, pages="${m.result}")).run(live=False)
    fig = run.timeline()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    head = labels.index("m ×3")
    assert labels[head + 1: head + 4] == ["  [0]", "  [1]", "  [2]"]
    bars = _attempt_bars(fig)
    spans = sum(len(r.spans) for r in run.outcome.ran())
    assert len(bars) == spans == 6  # list, after, three children, one of them twice
    rows_of_kids = {round(y) for y, *_ in bars} & {head + 1, head + 2, head + 3}
    assert len(rows_of_kids) == 3

    big = ok.DAG(max_concurrent=8).map("m", str, over=list(range(2000)),
                                       param="object").run(live=False)
    t0 = time.perf_counter()
    fig = big.timeline()
    took = time.perf_counter() - t0
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0] == "m ×2000" and labels[1] == "  children"
    assert len(labels) <= MAP_ROWS + 1  # packed into lanes, not a row a child
    assert len(_attempt_bars(fig)) == 2000
    assert took < 30, took  # loose: drawing stays linear
    by_worker = big.timeline(group_by="worker")
    assert len(_attempt_bars(by_worker)) == 2000


# ---------------------------------------------------------------------- every child's fate
def test_a_run_timeout_mid_map_gives_every_child_one_record() -> None:
    async def slow(x: int) -> int:
        await asyncio.sleep(0.05 if x < 3 else 10)
        return x

    dag = ok.DAG(max_concurrent=4, timeout=0.5, pools={"p": 2}).map(
        "m", slow, over=list(range(12)), param="x", max_concurrent=3, pool="p")
    t0 = time.perf_counter()
    run = dag.run(live=False)
    assert time.perf_counter() - t0 < 3
    kids = run.result.tasks["m"].children
    assert len(kids) == 12
    assert [k.status for k in kids[:3]] == ["success"] * 3
    assert {k.status for k in kids[3:]} <= {"failed", "skipped"}
    assert all(k.error.code == "EXECUTION_TIMEOUT" for k in kids[3:])
    assert run.result.tasks["m"].status == "failed"
    assert len(run.df) == 12


def test_an_interrupt_mid_map_gives_every_child_one_record() -> None:
    async def slow(x: int) -> int:
        await asyncio.sleep(0.02 if x == 0 else 10)
        return x

    dag = ok.DAG(max_concurrent=3).map("m", slow, over=list(range(8)), param="x")
    log = EventLog()

    async def main() -> None:
        task = asyncio.ensure_future(dag.arun(live=False, on_event=log))
        await asyncio.sleep(0.3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    run = dag.last_run
    assert run is not None
    kids = run.outcome.records["m"].children
    assert kids is not None and len(kids) == 8
    assert kids[0].status == "success"
    assert all(k.status in ("failed", "skipped") for k in kids[1:])
    finished = [e.task_id for e in log if e.kind == "task_finished"]
    assert sorted(finished) == sorted(["m", *(f"m[{i}]" for i in range(8))])  # once each


def test_levels_strategy_waits_for_a_whole_map() -> None:
    order: list[str] = []

    def work(x: str) -> str:
        order.append(x)
        time.sleep(0.01)
        return x

    dag = (ok.DAG(strategy="levels", max_concurrent=4)
           .map("m", work, over=["a", "b", "c"], param="x")
           .task("side", work, x="side")
           .task("next", work, x="next", after=["m", "side"]))
    run = dag.run(live=False)
    assert run.status == "success"
    assert order[-1] == "next"


def test_children_run_on_the_processes_backend() -> None:
    run = ok.DAG(backend="processes", max_concurrent=2).map(
        "m", absolute, over=[-1, -2, 3], param="x").run(live=False)
    assert run.result.tasks["m"].result == [1, 2, 3]
    assert run.df["worker"].str.startswith("pid:").all()


def test_each_child_is_cached_apart(tmp_path: Any) -> None:
    calls: list[int] = []

    def square(x: int) -> int:
        calls.append(x)
        return x * x

    store = ok.RunStore(tmp_path / "cache.db")
    ok.DAG(store=store).map("m", square, over=[1, 2], param="x", cache=True).run(live=False)
    calls.clear()
    run = ok.DAG(store=store).map("m", square, over=[1, 2, 3], param="x",
                                  cache=True).run(live=False)
    assert calls == [3]
    assert list(run.df["cached"]) == [True, True, False]
    assert run.result.tasks["m"].result == [1, 4, 9]
