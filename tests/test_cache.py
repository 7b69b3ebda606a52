"""The result cache (SPEC §17): keyed by the tool's name and source and the resolved params,
served from the run store, shown in records, the DataFrame, the JSON result and the graph."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest

import oktyv_nb as ok
from oktyv_nb.execution.cache import tool_identity


@pytest.fixture
def store(tmp_path: Path) -> ok.RunStore:
    s = ok.RunStore(tmp_path / "cache.sqlite")
    yield s
    s.close()


class Counter:
    """A tool that counts its calls."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **params: Any) -> dict[str, Any]:
        self.calls.append(params)
        return {"echo": params, "n": len(self.calls)}


def fetch(url: str, page: int = 1) -> dict[str, Any]:
    FETCHED.append((url, page))
    return {"url": url, "page": page, "items": [page, page + 1]}


FETCHED: list[tuple[str, int]] = []


def test_a_second_run_takes_the_result_from_the_cache(store: ok.RunStore) -> None:
    FETCHED.clear()
    dag = (
        ok.DAG("cached", store=store)
        .task("get", fetch, url="u", page=1, cache=True)
        .task("sum", lambda items: sum(items), items="${get.result.items}")
    )
    first = dag.run(live=False)
    assert FETCHED == [("u", 1)] and first.records["get"].cached is False
    second = dag.run(live=False)
    assert FETCHED == [("u", 1)], "the cached task was called again"
    rec = second.records["get"]
    assert (rec.status, rec.cached, rec.attempts, rec.result) == (
        "success", True, 0, first.records["get"].result)
    assert second.records["sum"].result == 3  # dependents get the cached value
    assert second.cached == ["get"] and "(1 cached)" in repr(second)
    assert second.df["cached"].tolist() == [True, False]
    assert second.df.loc["get", "attempts"] == 0
    task = json.loads(second.result.to_json())["tasks"]["get"]
    assert task["cached"] is True and task["attempts"] == 0
    assert "cached" in second.graph().source
    assert second.timeline().axes
    assert store.load(second.execution_id).records["get"].cached is True
    # changing a param misses, and is cached in turn
    dag.remove("sum").remove("get").task("get", fetch, url="u", page=2, cache=True)
    third = dag.run(live=False)
    assert FETCHED == [("u", 1), ("u", 2)] and not third.records["get"].cached
    assert dag.run(live=False).records["get"].cached


def test_resolved_references_are_part_of_the_key(store: ok.RunStore) -> None:
    counter = Counter()
    value = iter([1, 1, 2])
    dag = (
        ok.DAG("refs")
        .task("source", lambda: next(value))
        .task("use", counter, x="${source.result}", cache=True)
    )
    dag.run(store=store, live=False)
    assert dag.run(store=store, live=False).records["use"].cached  # source gave 1 again
    assert not dag.run(store=store, live=False).records["use"].cached  # now 2
    assert [c["x"] for c in counter.calls] == [1, 2]


def _load_tool(path: Path, body: str) -> Callable[..., Any]:
    path.write_text(textwrap.dedent(body))
    spec = importlib.util.spec_from_file_location("cache_tool_module", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["cache_tool_module"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.compute


def test_changing_the_tools_source_misses(store: ok.RunStore, tmp_path: Path) -> None:
    path = tmp_path / "cache_tool_module.py"
    try:
        v1 = _load_tool(path, """
            def compute(x):
                return x + 1
        """)
        run = ok.DAG("src").task("c", v1, x=1, cache=True).run(store=store, live=False)
        assert run.records["c"].result == 2
        again = ok.DAG("src").task("c", v1, x=1, cache=True).run(store=store, live=False)
        assert again.records["c"].cached
        v2 = _load_tool(path, """
            def compute(x):
                return x + 100
        """)
        assert tool_identity(v1)[0] == tool_identity(v2)[0]  # same name, other source
        changed = ok.DAG("src").task("c", v2, x=1, cache=True).run(store=store, live=False)
        assert not changed.records["c"].cached and changed.records["c"].result == 101
        back = ok.DAG("src").task("c", v1, x=1, cache=True).run(store=store, live=False)
        assert back.records["c"].cached and back.records["c"].result == 2
    finally:
        sys.modules.pop("cache_tool_module", None)


def test_code_without_source_is_keyed_by_its_bytecode(store: ok.RunStore) -> None:
    ns: dict[str, Any] = {}
    exec("def f(x):\n    return x * 3\n", ns)
    g: dict[str, Any] = {}
    exec("def f(x):\n    return x * 4\n", g)
    assert tool_identity(ns["f"]) != tool_identity(g["f"])
    ok.DAG("x").task("f", ns["f"], x=2, cache=True).run(store=store, live=False)
    run = ok.DAG("x").task("f", g["f"], x=2, cache=True).run(store=store, live=False)
    assert not run.records["f"].cached and run.records["f"].result == 8


def test_expiry(store: ok.RunStore) -> None:
    counter = Counter()
    dag = ok.DAG("exp").task("c", counter, x=1, cache=ok.Cache(expire=0.3))
    dag.run(store=store, live=False)
    assert dag.run(store=store, live=False).records["c"].cached
    time.sleep(0.4)
    late = dag.run(store=store, live=False)
    assert not late.records["c"].cached and len(counter.calls) == 2
    with pytest.raises(ValueError, match="expire"):
        ok.Cache(expire=0)
    with pytest.raises(ok.InvalidOptionError, match="cache"):
        ok.DAG().task("c", counter, cache="yes")


def test_params_that_are_not_json_are_not_cached(store: ok.RunStore) -> None:
    counter = Counter()
    dag = ok.DAG("nj").task("c", counter, pair=(1, 2), cache=True)
    dag.run(store=store, live=False)
    run = dag.run(store=store, live=False)
    rec = run.records["c"]
    assert rec.cached is False and "not JSON values" in rec.cache_note
    assert len(counter.calls) == 2
    task = json.loads(run.result.to_json())["tasks"]["c"]
    assert task["cached"] is False and "not JSON" in task["cacheNote"]


def test_pickled_results_are_cached_too(store: ok.RunStore) -> None:
    calls: list[int] = []

    def make(n: int) -> set[int]:
        calls.append(n)
        return set(range(n))

    dag = ok.DAG("pk").task("m", make, n=3, cache=True)
    dag.run(store=store, live=False)
    run = dag.run(store=store, live=False)
    assert run.records["m"].cached and run.records["m"].result == {0, 1, 2} and calls == [3]


def test_clear_cache(store: ok.RunStore) -> None:
    a, b = Counter(), Counter()
    dag = ok.DAG("clr", tools={"ta": a, "tb": b}).task("a", "ta", cache=True).task(
        "b", "tb", cache=True)
    dag.run(store=store, live=False)
    assert store.clear_cache(tool="ta") == 1
    run = dag.run(store=store, live=False)
    assert (run.records["a"].cached, run.records["b"].cached) == (False, True)
    assert store.clear_cache() == 2
    assert dag.run(store=store, live=False).cached == []
    assert store.clear_cache(fetch) == 0  # a callable: its qualified name


def test_cache_in_a_json_request(store: ok.RunStore) -> None:
    counter = Counter()
    request = {"tasks": [
        {"id": "a", "tool": "count", "params": {"x": 1}, "cache": True},
        {"id": "b", "tool": "count", "params": {"x": 2}, "cache": {"expire": 60}},
        {"id": "c", "tool": "count", "params": {"x": 3}},
    ]}
    ok.execute_request(request, {"count": counter}, store=store)
    result = ok.execute_request(json.dumps(request), {"count": counter}, store=store)
    dumped = json.loads(result.to_json())["tasks"]
    assert (dumped["a"]["cached"], dumped["b"]["cached"]) == (True, True)
    assert "cached" not in dumped["c"] and dumped["a"]["attempts"] == 0
    assert len(counter.calls) == 4
    dag = ok.DAG.from_request(request, {"count": counter})
    back = dag.to_request().model_dump(by_alias=True, mode="json", exclude_none=True)
    assert [t.get("cache") for t in back["tasks"]] == [True, {"expire": 60.0}, None]
    with pytest.raises(pydantic.ValidationError):
        ok.execute_request({"tasks": [{"id": "a", "tool": "count", "cache": {"expire": -1}}]},
                           {"count": counter})


def test_without_a_store_nothing_is_cached() -> None:
    counter = Counter()
    dag = ok.DAG("none").task("c", counter, cache=True)
    dag.run(live=False)
    run = dag.run(live=False)
    assert run.records["c"].cached is None and len(counter.calls) == 2
    assert run.df["cached"].tolist() == [False]


def fetch_cached(url: str, cache: int = 0) -> str:
    """A tool with a parameter of its own named like the task option."""
    return url


def test_builder_cache_option_round_trips() -> None:
    dag = (
        ok.DAG("rt")
        .task("a", fetch, url="x", cache=True)
        .task("b", fetch, url="y", cache=ok.Cache(expire=5))
        .task("c", fetch, url="z", cache=ok.Cache())
        .task("d", fetch_cached, {"cache": 1}, url="w")  # a tool param named cache: the dict
    )
    specs = dag.to_request().tasks
    assert specs[0].cache is True and specs[1].cache.expire == 5 and specs[2].cache is True
    assert specs[3].params == {"cache": 1, "url": "w"} and specs[3].cache is None
    assert ok.DAG.from_request(dag.to_request(), name="rt") == dag
