"""SPEC §5: ``${taskId.path}`` references, resolved from the referenced task's record."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from engine_helpers import Tracker, run, task

import oktyv_nb as ok
from oktyv_nb.model.schema import ExecutionRequest, TaskSpec
from oktyv_nb.model.variables import find_references, has_references, resolve


@dataclass
class Point:
    x: int
    y: list[int]

    def norm(self) -> int:
        return self.x

    @property
    def broken(self) -> int:
        raise RuntimeError("property blew up")


@dataclass
class Bag:
    """A data object whose values are fields, one of them private."""

    point: Point = field(default_factory=lambda: Point(3, [4, 5]))
    _private: str = "hidden"


class Plain:
    """An object that is not a data object: its attributes are not walkable."""

    def __init__(self) -> None:
        self.point = Point(3, [4, 5])


def make_value() -> dict[str, Any]:
    return {"n": 7, "f": 1.5, "s": "text", "none": None, "flag": True,
            "items": [10, {"deep": "yes"}, [1, 2]], "obj": Bag(), "by_int": {1: "one"},
            "plain": Plain(),
            "braces": "{0.__class__} ${B.result}"}


def echo(**kwargs: Any) -> dict[str, Any]:
    return kwargs


TOOLS = {"make": make_value, "echo": echo}


def run_echo(params: dict[str, Any], **extra: Any) -> Any:
    result = run([{"id": "A", "tool": "make"},
                  {"id": "B", "tool": "echo", "params": params, **extra}], TOOLS)
    return result


def echoed(params: dict[str, Any]) -> dict[str, Any]:
    result = run_echo(params)
    assert result.tasks["B"].status == "success", result.tasks["B"].error
    return result.tasks["B"].result


# ------------------------------------------------------------------ whole values keep type


def test_full_reference_keeps_the_value_and_its_type() -> None:
    got = echoed({
        "n": "${A.result.n}", "f": "${A.result.f}", "none": "${A.result.none}",
        "flag": "${A.result.flag}", "items": "${A.result.items}", "all": "${A.result}",
        "spaced": "${ A.result.n }",
    })
    assert got["n"] == 7 and got["f"] == 1.5 and got["none"] is None and got["flag"] is True
    assert got["items"] == [10, {"deep": "yes"}, [1, 2]]
    assert got["all"]["n"] == 7
    assert got["spaced"] == 7


def test_full_reference_passes_the_object_itself() -> None:
    seen: dict[str, Any] = {}

    def take(obj: Any, point: Any) -> None:
        seen.update(obj=obj, point=point)

    result = run([{"id": "A", "tool": "make"},
                  {"id": "B", "tool": "take",
                   "params": {"obj": "${A.result.obj}", "point": "${A.result.obj.point}"}}],
                 {"make": make_value, "take": take})
    assert result.status == "success"
    assert isinstance(seen["obj"], Bag) and isinstance(seen["point"], Point)
    assert seen["obj"].point is seen["point"]


# ------------------------------------------------------------------ embedded references


def test_embedded_references_are_formatted() -> None:
    got = echoed({
        "scalar": "n=${A.result.n} f=${A.result.f} none=${A.result.none} ${A.result.flag}",
        "dict": "d=${A.result.items.1}",
        "list": "l=${A.result.items.2}",
        "two": "${A.result.n}${A.result.s}",
    })
    assert got["scalar"] == "n=7 f=1.5 none=None True"
    assert got["dict"] == 'd={"deep": "yes"}'
    assert json.loads(got["dict"][2:]) == {"deep": "yes"}
    assert got["list"] == "l=[1, 2]"
    assert got["two"] == "7text"


def test_nested_params_are_walked() -> None:
    got = echoed({
        "outer": {"inner": ["${A.result.n}", {"x": "s=${A.result.s}"}], "plain": "keep"},
        "list": [["${A.result.items.0}"]],
        "num": 3,
    })
    assert got == {"outer": {"inner": [7, {"x": "s=text"}], "plain": "keep"},
                   "list": [[10]], "num": 3}


def test_tuples_are_walked_and_stay_tuples() -> None:
    seen: dict[str, Any] = {}

    def take(pair: Any) -> None:
        seen["pair"] = pair

    request = ExecutionRequest(tasks=[
        TaskSpec(id="A", tool="make"),
        TaskSpec(id="B", tool="take", params={"pair": ("${A.result.n}", ("${A.result.s}", "l"))}),
    ])
    result = ok.execute_request(request, {"make": make_value, "take": take})
    assert result.status == "success"
    assert seen["pair"] == (7, ("text", "l"))
    assert result.dag.edges[0].from_ == "A"


# ------------------------------------------------------------------ walking


def test_list_indices_dict_keys_and_attributes() -> None:
    got = echoed({
        "first": "${A.result.items.0}", "last": "${A.result.items.-1.1}",
        "deep": "${A.result.items.1.deep}", "attr": "${A.result.obj.point.x}",
        "attr_list": "${A.result.obj.point.y.1}", "int_key": "${A.result.by_int.1}",
    })
    assert got == {"first": 10, "last": 2, "deep": "yes", "attr": 3, "attr_list": 5,
                   "int_key": "one"}


def test_record_fields(tracker: Tracker) -> None:
    tasks = [
        task("A", params={"seconds": 0.05, "value": 1}),
        {"id": "B", "tool": "echo", "params": {
            "duration": "${A.duration}", "status": "${A.status}", "attempts": "${A.attempts}",
            "id": "${A.taskId}", "start": "${A.startTime}", "end": "${A.endTime}",
            "error": "${A.error}", "text": "took ${A.duration} ms"}},
    ]
    result = run(tasks, {**tracker.tools, "echo": echo})
    got = result.tasks["B"].result
    a = result.tasks["A"]
    assert got["duration"] == pytest.approx(a.duration)  # ms
    assert got["duration"] >= 45
    assert got["status"] == "success" and got["attempts"] == 1 and got["id"] == "A"
    assert datetime.fromisoformat(got["start"]) == a.start_time
    assert datetime.fromisoformat(got["end"]) == a.end_time
    assert got["error"] is None
    assert got["text"].startswith("took ") and got["text"].endswith(" ms")


def test_reference_implies_dependency_and_waits(tracker: Tracker) -> None:
    tasks = [task("A", params={"seconds": 0.15, "value": 2}),
             task("B", params={"value": "${A.result}"})]
    result = run(tasks, tracker.tools)
    assert result.tasks["B"].result == 2
    assert result.dag.edges[0].from_ == "A" and result.dag.edges[0].to == "B"
    assert tracker.start("B") >= tracker.end("A")


# ------------------------------------------------------------------ no evaluation


@pytest.mark.parametrize(
    "path",
    ["${A.result.obj.__class__}", "${A.result.obj._private}", "${A.result.obj.__dict__}",
     "${A.result.obj.point.norm}", "${A.result.__class__}", "${A.result.items.__len__}",
     "${A.result.obj.point.broken}", "${A.result.plain.point}", "${A.result.s.upper}",
     "${A.result.items.1.deep.__class__}"],
)
def test_dunder_private_callable_and_raising_attributes_are_refused(path: str) -> None:
    result = run_echo({"x": path})
    b = result.tasks["B"]
    assert b.status == "failed"
    assert b.error.code == "VARIABLE_RESOLUTION_ERROR"
    assert path in b.error.message
    assert b.attempts == 1


def test_format_strings_stay_inert() -> None:
    got = echoed({"a": "{0.__class__} {x} %s ${A.result.n} {}", "b": "${A.result.braces}",
                  "c": "value: ${A.result.braces}", "d": "\\1 \\g<0> ${A.result.s}"})
    assert got["a"] == "{0.__class__} {x} %s 7 {}"
    assert got["b"] == "{0.__class__} ${B.result}"  # a value is never resolved again
    assert got["c"] == "value: {0.__class__} ${B.result}"
    assert got["d"] == "\\1 \\g<0> text"


# ------------------------------------------------------------------ missing paths


@pytest.mark.parametrize(
    ("path", "named"),
    [("${A.result.nope}", "'nope'"), ("${A.result.items.7}", "'7'"),
     ("${A.result.items.x}", "'x'"), ("${A.result.n.more}", "'more'"),
     ("x=${A.result.obj.nothing}", "'nothing'")],
)
def test_missing_path_fails_the_task_and_is_not_retried(path: str, named: str) -> None:
    result = run([
        {"id": "A", "tool": "make"},
        {"id": "B", "tool": "echo", "params": {"x": path},
         "retryPolicy": {"maxAttempts": 3, "initialDelay": 1}},
        {"id": "C", "tool": "echo", "dependsOn": ["B"]},
    ], TOOLS)
    b = result.tasks["B"]
    assert b.status == "failed" and b.attempts == 1
    assert b.error.code == "VARIABLE_RESOLUTION_ERROR"
    assert named in b.error.message and "Task B" in b.error.message
    assert result.tasks["C"].status == "skipped"
    assert result.tasks["C"].error.code == "DEPENDENCY_FAILED"
    assert result.status == "partial"


def test_unknown_record_field_is_a_validation_error() -> None:
    with pytest.raises(ok.VariableResolutionError) as info:
        run([{"id": "A", "tool": "make"},
             {"id": "B", "tool": "echo", "params": {"x": "${A.reslt.n}"}}], TOOLS)
    assert "'reslt'" in str(info.value) and "result" in str(info.value)
    assert info.value.task_id == "B"


# ------------------------------------------------------------------ the resolver itself


def test_resolve_directly() -> None:
    record = {"result": {"k": [1, 2]}, "status": "success"}

    def lookup(task_id: str) -> Any:
        assert task_id == "T"
        return record.__getitem__

    params = {"a": ("${T.result.k}", ["${T.status}!"]), "b": 1, "c": None}
    assert resolve(params, lookup) == {"a": ([1, 2], ["success!"]), "b": 1, "c": None}
    assert has_references(params)
    assert not has_references({"a": ["$", "{x}", "$ {y}"]})
    refs = find_references(params)
    assert [(r.task_id, r.path) for r in refs] == [("T", ("result", "k")), ("T", ("status",))]


def test_referenced_times_equal_the_result_times_exactly() -> None:
    # ${x.startTime}/${x.endTime} and the result's startTime/endTime come from one float and
    # one converter: over many tasks, not one microsecond apart (rounding once differed).
    def same(**kw: Any) -> dict[str, Any]:
        return kw

    n = 300
    tasks = [{"id": f"a{i}", "tool": "same", "params": {"i": i}} for i in range(n)]
    tasks += [{"id": f"b{i}", "tool": "same",
               "params": {"start": f"${{a{i}.startTime}}", "end": f"${{a{i}.endTime}}"}}
              for i in range(n)]
    result = ok.execute_request({"tasks": tasks}, tools={"same": same})
    for i in range(n):
        got, a = result.tasks[f"b{i}"].result, result.tasks[f"a{i}"]
        assert datetime.fromisoformat(got["start"]) == a.start_time, i
        assert datetime.fromisoformat(got["end"]) == a.end_time, i


def test_named_tuples_and_pydantic_models_are_data() -> None:
    from typing import NamedTuple

    from pydantic import BaseModel

    class Pair(NamedTuple):
        left: int
        right: str

    class Model(BaseModel):
        size: int
        tags: list[str]

        @property
        def computed(self) -> int:
            return 1

    def make() -> dict[str, Any]:
        return {"pair": Pair(1, "r"), "model": Model(size=3, tags=["x", "y"]), "cls": Point}

    ok_params = {"l": "${A.result.pair.left}", "i": "${A.result.pair.1}",
                 "s": "${A.result.model.size}", "t": "${A.result.model.tags.1}"}
    result = run([{"id": "A", "tool": "make"}, {"id": "B", "tool": "echo", "params": ok_params}],
                 {"make": make, "echo": echo})
    assert result.tasks["B"].result == {"l": 1, "i": "r", "s": 3, "t": "y"}
    for bad in ("${A.result.model.computed}", "${A.result.cls.x}", "${A.result.pair.count}",
                "${A.result.model.model_fields}"):
        result = run([{"id": "A", "tool": "make"},
                      {"id": "B", "tool": "echo", "params": {"x": bad}}],
                     {"make": make, "echo": echo})
        assert result.tasks["B"].error.code == "VARIABLE_RESOLUTION_ERROR", bad
