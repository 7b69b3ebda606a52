"""SPEC §3: the result model's JSON shape, and JSON-safe results."""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from engine_helpers import Tracker, run, task

from oktyv_nb.model.schema import ExecutionResult, jsonable

TASK_KEYS = {"taskId", "status", "duration", "startTime", "endTime", "attempts"}


@dataclass
class Point:
    x: int
    y: int


def test_result_dump_shape(tracker: Tracker) -> None:
    tasks = [
        task("A", params={"value": {"n": 1}}),
        task("B", params={"fail": True}, dependsOn=["A"]),
        task("C", dependsOn=["B"]),
    ]
    result = run(tasks, tracker.tools)
    d = result.model_dump(by_alias=True, mode="json")
    assert set(d) == {"executionId", "status", "startTime", "endTime", "duration", "tasks",
                      "summary", "dag"}
    uuid.UUID(d["executionId"], version=4)
    assert d["status"] == "partial"
    assert set(d["tasks"]) == {"A", "B", "C"}
    for tid, entry in d["tasks"].items():
        assert set(entry) >= TASK_KEYS
        assert entry["taskId"] == tid
        for key in ("startTime", "endTime"):
            assert datetime.fromisoformat(entry[key]).tzinfo is not None
        assert isinstance(entry["duration"], float)
    assert d["tasks"]["A"]["result"] == {"n": 1}
    assert d["tasks"]["B"]["error"]["code"] == "ValueError"
    assert d["tasks"]["B"]["error"]["message"] == "B failed on purpose"
    assert "Traceback" in d["tasks"]["B"]["error"]["stack"]
    assert d["tasks"]["C"]["error"]["code"] == "DEPENDENCY_FAILED"
    assert d["summary"] == {"total": 3, "succeeded": 1, "failed": 1, "skipped": 1}
    assert d["dag"] == {
        "levels": [["A"], ["B"], ["C"]],
        "edges": [{"from": "A", "to": "B"}, {"from": "B", "to": "C"}],
    }
    start = datetime.fromisoformat(d["startTime"])
    end = datetime.fromisoformat(d["endTime"])
    assert start <= end
    assert abs((end - start).total_seconds() * 1000 - d["duration"]) < 1.0
    # round trip through JSON text and back into the model
    again = ExecutionResult.model_validate_json(result.to_json())
    assert again.model_dump() == result.model_dump()


def test_to_json_drops_absent_optionals(tracker: Tracker) -> None:
    result = run([task("A")], tracker.tools)
    entry = json.loads(result.to_json())["tasks"]["A"]
    assert set(entry) == TASK_KEYS  # a None result is absent, like the other optionals
    full = result.model_dump(by_alias=True, mode="json")["tasks"]["A"]
    assert full["result"] is None and full["error"] is None


def test_results_of_any_type_become_json() -> None:
    nan = float("nan")

    def weird() -> Any:
        return {"point": Point(1, 2), "set": {3}, "tuple": (1, "a"), "nan": nan, 4: b"xy"}

    result = run([{"id": "A", "tool": "weird"}], {"weird": weird})
    text = result.to_json()
    value = json.loads(text)["tasks"]["A"]["result"]
    assert value["point"] == "Point(x=1, y=2)"
    assert value["set"] == [3]
    assert value["tuple"] == [1, "a"]
    assert value["nan"] == "nan"
    assert value["4"] == "b'xy'"


def test_jsonable_keeps_json_values_as_they_are() -> None:
    v = {"a": [1, 2.5, None, True, "s"]}
    assert jsonable(v) is v
    assert jsonable(math.inf) == "inf"
    assert jsonable(datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02T03:04:05"


def test_the_result_assembled_from_records_is_what_validation_makes() -> None:
    """to_result skips validation (the records already hold the field types): re-validating
    its dump, in Python and through JSON, must give the same result, and dumping must not
    meet a value of an unexpected type (pydantic warns, here raises, on one)."""
    calls = {"flaky": 0}

    def flaky() -> dict[str, Any]:
        calls["flaky"] += 1
        if calls["flaky"] < 2:
            raise RuntimeError("first try fails")
        return {"tries": calls["flaky"], "when": datetime(2026, 1, 2)}

    def undo(note: str) -> None:
        raise OSError(f"cannot undo {note}")

    def boom() -> None:
        raise ValueError("boom")

    tools = {"flaky": flaky, "undo": undo, "boom": boom, "ok": lambda: 1}
    tasks = [
        {"id": "f", "tool": "flaky", "retryPolicy": {"maxAttempts": 2, "initialDelay": 1},
         "rollback": {"tool": "undo", "params": {"note": "${f.result.tries}"}}},
        {"id": "b", "tool": "boom", "dependsOn": ["f"]},
        {"id": "s", "tool": "ok", "dependsOn": ["b"]},
    ]
    result = run(tasks, tools, failureMode="rollback")
    r = result.tasks
    assert (r["f"].attempts, r["f"].rolled_back, r["f"].rollback_error.code) == (2, False,
                                                                                 "OSError")
    assert (r["b"].status, r["s"].status) == ("failed", "skipped")
    python = result.model_dump(warnings="error")
    assert ExecutionResult.model_validate(python) == result
    assert ExecutionResult.model_validate_json(result.to_json()).model_dump(
        mode="json") == result.model_dump(mode="json", warnings="error")
    for entry in r.values():
        assert entry.start_time.utcoffset() == timedelta(0)
        assert entry.start_time <= entry.end_time
    assert result.dag.levels == [["f"], ["b"], ["s"]]
    assert [(e.from_, e.to) for e in result.dag.edges] == [("f", "b"), ("b", "s")]
