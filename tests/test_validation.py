"""SPEC §4: every request is validated before anything runs."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest
from engine_helpers import Tracker, run, task
from pydantic import ValidationError

import oktyv_nb as ok
from oktyv_nb.model.graph import prepare
from oktyv_nb.model.schema import ExecutionRequest, parse_request, parse_request_data, task_data


def noop(**_: Any) -> None:
    return None


TOOLS = {"noop": noop, "fetch_emails": noop, "parse_emails": noop}


def req(*tasks: dict[str, Any], **config: Any) -> dict[str, Any]:
    return {"tasks": list(tasks), "config": config}


def t(id: str, tool: str = "noop", **fields: Any) -> dict[str, Any]:
    return {"id": id, "tool": tool, **fields}


def validate(request: Any) -> Any:
    return prepare(request, TOOLS)[1]


def test_errors_are_value_errors_with_codes() -> None:
    assert issubclass(ok.OktyvError, ValueError)
    for cls, code in [
        (ok.MissingDependencyError, "MISSING_DEPENDENCY"),
        (ok.DuplicateTaskError, "DUPLICATE_TASK"),
        (ok.CircularDependencyError, "CIRCULAR_DEPENDENCY"),
        (ok.ToolNotFoundError, "TOOL_NOT_FOUND"),
        (ok.VariableResolutionError, "VARIABLE_RESOLUTION_ERROR"),
        (ok.VaultNotFoundError, "VAULT_NOT_FOUND"),
    ]:
        assert issubclass(cls, ok.OktyvError)
        assert cls.code == code


# ------------------------------------------------------------------ dependencies


def test_missing_dependency() -> None:
    with pytest.raises(ok.MissingDependencyError) as info:
        validate(req(t("A", dependsOn=["B"])))
    err = info.value
    assert str(err) == "Task A depends on non-existent task B"
    assert err.code == "MISSING_DEPENDENCY"
    assert (err.task_id, err.missing) == ("A", "B")


def test_reference_to_unknown_task() -> None:
    with pytest.raises(ok.MissingDependencyError) as info:
        validate(req(t("A"), t("B", params={"x": "${Z.result}"})))
    assert info.value.code == "MISSING_DEPENDENCY"
    assert "B" in str(info.value) and "Z" in str(info.value)
    assert (info.value.task_id, info.value.missing) == ("B", "Z")


def test_reference_to_unknown_task_in_nested_params() -> None:
    with pytest.raises(ok.MissingDependencyError) as info:
        validate(req(t("A", params={"deep": [{"x": ("text ${nope.status}",)}]})))
    assert info.value.missing == "nope"


def test_rollback_reference_to_unknown_task() -> None:
    with pytest.raises(ok.MissingDependencyError) as info:
        validate(req(t("A", rollback={"tool": "noop", "params": {"x": "${Q.result}"}})))
    assert info.value.missing == "Q" and "rollback" in str(info.value)


def test_duplicate_task() -> None:
    with pytest.raises(ok.DuplicateTaskError) as info:
        validate(req(t("x"), t("y"), t("x")))
    assert str(info.value) == "Duplicate task ID: x"
    assert info.value.code == "DUPLICATE_TASK"


def _assert_cycle(cycle: list[str], deps: dict[str, list[str]]) -> None:
    assert cycle[0] == cycle[-1]
    assert len(set(cycle[:-1])) == len(cycle) - 1
    for a, b in itertools.pairwise(cycle):
        assert a in deps[b], f"{a} is not an immediate dependency of {b} in {cycle}"


def test_cycle_of_three() -> None:
    deps = {"A": ["C"], "B": ["A"], "C": ["B"]}
    with pytest.raises(ok.CircularDependencyError) as info:
        validate(req(*(t(k, dependsOn=v) for k, v in deps.items())))
    err = info.value
    assert err.code == "CIRCULAR_DEPENDENCY"
    assert err.cycle == ["A", "B", "C", "A"]
    assert str(err) == "Circular dependency detected: A → B → C → A"
    _assert_cycle(err.cycle, deps)


def test_cycle_behind_acyclic_tasks_and_via_reference() -> None:
    # root -> X; X, Y, Z form a cycle (Z -> X through a ${} reference); W hangs off it.
    deps = {"root": [], "X": ["root", "Z"], "Y": ["X"], "Z": ["Y"], "W": ["Z"]}
    tasks = [
        t("root"),
        t("X", dependsOn=["root"], params={"v": "${Z.result}"}),
        t("Y", dependsOn=["X"]),
        t("Z", dependsOn=["Y"]),
        t("W", dependsOn=["Z"]),
    ]
    with pytest.raises(ok.CircularDependencyError) as info:
        validate(req(*tasks))
    assert set(info.value.cycle) == {"X", "Y", "Z"}
    _assert_cycle(info.value.cycle, deps)
    assert str(info.value) == "Circular dependency detected: " + " → ".join(info.value.cycle)


@pytest.mark.parametrize("how", ["dependsOn", "reference"])
def test_self_loop(how: str) -> None:
    spec = t("A", dependsOn=["A"]) if how == "dependsOn" else t("A", params={"x": "${A.result}"})
    with pytest.raises(ok.CircularDependencyError) as info:
        validate(req(spec))
    assert info.value.cycle == ["A", "A"]
    assert str(info.value) == "Circular dependency detected: A → A"


# ------------------------------------------------------------------ tools


def test_unknown_tool_names_close_matches() -> None:
    with pytest.raises(ok.ToolNotFoundError) as info:
        validate(req(t("A", tool="fetch_email")))
    err = info.value
    assert err.code == "TOOL_NOT_FOUND"
    assert err.tool == "fetch_email" and err.task_id == "A"
    assert "fetch_emails" in err.suggestions
    assert "'fetch_email'" in str(err) and "'fetch_emails'" in str(err) and "A" in str(err)


def test_unknown_builtin_tool_suggests_builtin() -> None:
    with pytest.raises(ok.ToolNotFoundError) as info:
        prepare(req(t("A", tool="file_raed")))
    assert "file_read" in info.value.suggestions


def test_unknown_tool_without_close_match_says_how_to_register() -> None:
    with pytest.raises(ok.ToolNotFoundError) as info:
        validate(req(t("A", tool="zzzzzzzz")))
    assert info.value.suggestions == []
    assert "ok.tool" in str(info.value)


def test_unknown_rollback_tool() -> None:
    with pytest.raises(ok.ToolNotFoundError) as info:
        validate(req(t("A", rollback={"tool": "undo_it", "params": {}})))
    assert info.value.tool == "undo_it"
    assert "rollback" in str(info.value) and "A" in str(info.value)


def test_validation_happens_before_anything_runs(tracker: Tracker) -> None:
    tasks = [task("ok1"), task("bad", tool="no_such_tool")]
    with pytest.raises(ok.ToolNotFoundError):
        run(tasks, tracker.tools)
    assert tracker.order == []


# ------------------------------------------------------------------ malformed requests


def _field_paths(err: ValidationError) -> list[tuple[Any, ...]]:
    return [e["loc"] for e in err.errors()]


@pytest.mark.parametrize(
    ("request_", "loc"),
    [
        (req(t("A", priority="high")), ("tasks", 0, "priority")),
        (req(t("A", priority=0)), ("tasks", 0, "priority")),
        (req(t("A", priority=11)), ("tasks", 0, "priority")),
        (req(t("A", timeout=-5)), ("tasks", 0, "timeout")),
        (req(t("A", params=[1, 2])), ("tasks", 0, "params")),
        (req(t("A", dependsOn="B")), ("tasks", 0, "dependsOn")),
        (req(t("A", tool=3)), ("tasks", 0, "tool")),
        (req(t("A", tool="")), ("tasks", 0, "tool")),
        (req(t("")), ("tasks", 0, "id")),
        (req(t("a b")), ("tasks", 0, "id")),
        (req(t("a.b")), ("tasks", 0, "id")),
        (req(t("-a")), ("tasks", 0, "id")),
        (req(t("${x}")), ("tasks", 0, "id")),
        (req(t("x" * 129)), ("tasks", 0, "id")),
        (req(t("A", retryPolicy={"maxAttempts": 0})), ("tasks", 0, "retryPolicy", "maxAttempts")),
        (req(t("A", retryPolicy={"maxAttempts": 2, "backoff": "random"})),
         ("tasks", 0, "retryPolicy", "backoff")),
        (req(t("A", retryPolicy={"maxAttempts": 2, "initialDelay": -1})),
         ("tasks", 0, "retryPolicy", "initialDelay")),
        (req(t("A", runIf="sometimes")), ("tasks", 0, "runIf")),
        (req(t("A", rollback={"params": {}})), ("tasks", 0, "rollback", "tool")),
        (req(t("A", colour="red")), ("tasks", 0, "colour")),
        (req(failureMode="explode"), ("config", "failureMode")),
        (req(maxConcurrent=0), ("config", "maxConcurrent")),
        (req(maxConcurrent="many"), ("config", "maxConcurrent")),
        (req(timeout=-1), ("config", "timeout")),
        ({"tasks": "A"}, ("tasks",)),
        ({"tasks": [{"tool": "noop"}]}, ("tasks", 0, "id")),
    ],
)
def test_malformed_request_names_the_field(request_: dict[str, Any], loc: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        parse_request(request_)
    assert loc in _field_paths(info.value), _field_paths(info.value)
    # running a dict validates it as plain dicts, with the very same errors
    with pytest.raises(ValidationError) as data_info:
        parse_request_data(request_)
    assert _errors(data_info.value) == _errors(info.value)
    assert data_info.value.title == info.value.title == "ExecutionRequest"
    with pytest.raises(ValidationError):
        ok.execute_request(json.dumps(request_), TOOLS)


def _errors(err: ValidationError) -> list[tuple[Any, ...]]:
    return [(e["loc"], e["type"], e["msg"]) for e in err.errors()]


@pytest.mark.parametrize("request_", [
    req(),
    req(t("A"), t("B", dependsOn=["A", "A"], priority=2, timeout=1500, runIf="all_done",
                  params={"x": "${A.result}"}), maxConcurrent=3, timeout=9000),
    req(t("A", vault="api", retryPolicy={"maxAttempts": 3, "backoff": "linear"},
          rollback={"tool": "noop", "params": {"why": "undo"}}), enableRollback=True),
    {"tasks": [{"id": "A", "tool": "noop", "depends_on": None, "run_if": "all_success"}],
     "config": {"max_concurrent": 2, "failure_mode": "stop"}},
])
def test_the_data_path_validates_as_the_models_do(request_: dict[str, Any]) -> None:
    model = parse_request(request_)
    data = parse_request_data(request_)
    assert data["config"] == model.config
    assert data["tasks"] == [task_data(spec) for spec in model.tasks]
    assert parse_request_data(json.dumps(request_)) == data
    by_model, by_data = prepare(model, TOOLS)[1], prepare(request_, TOOLS)[1]
    assert by_model.levels == by_data.levels and by_model.edges() == by_data.edges()


def test_id_limits() -> None:
    ok_ids = ["a", "A_1", "_x", "0", "task-2", "x" * 128]
    graph = validate(req(*(t(i) for i in ok_ids)))
    assert list(graph.nodes) == ok_ids


def test_single_segment_reference_is_rejected() -> None:
    with pytest.raises(ok.VariableResolutionError) as info:
        validate(req(t("A"), t("B", params={"x": "${A}"})))
    err = info.value
    assert err.code == "VARIABLE_RESOLUTION_ERROR"
    assert "field" in str(err) and "${A}" in str(err) and "B" in str(err)
    assert err.task_id == "B"


@pytest.mark.parametrize("text", ["${}", "${A.}", "${A..result}", "x ${A} y"])
def test_malformed_references(text: str) -> None:
    with pytest.raises(ok.VariableResolutionError):
        validate(req(t("A"), t("B", params={"x": text})))


def test_enable_rollback_selects_rollback_mode() -> None:
    model = parse_request(req(enableRollback=True))
    assert model.config.failure_mode == "rollback"
    model = parse_request(req(enableRollback=True, failureMode="rollback"))
    assert model.config.failure_mode == "rollback"
    model = parse_request(req(enableRollback=False))
    assert model.config.failure_mode == "continue"
    assert parse_request(req(failureMode="stop")).config.failure_mode == "stop"


@pytest.mark.parametrize("mode", ["continue", "stop"])
def test_enable_rollback_contradiction(mode: str) -> None:
    for parse in (parse_request, parse_request_data):
        with pytest.raises(ValidationError) as info:
            parse(req(enableRollback=True, failureMode=mode))
        assert "enableRollback" in str(info.value) and mode in str(info.value)


@pytest.mark.parametrize("parse", [parse_request, parse_request_data])
def test_vault_task_may_not_pass_its_own_credentials(parse: Callable[..., Any]) -> None:
    with pytest.raises(ValidationError) as info:
        parse(req(t("A", vault="api", params={"credentials": "x"})))
    assert "Task A: params must not contain 'credentials'" in str(info.value)


def test_empty_task_list_succeeds() -> None:
    result = ok.execute_request({"tasks": []})
    assert result.status == "success"
    assert result.tasks == {}
    assert result.summary.model_dump() == {"total": 0, "succeeded": 0, "failed": 0, "skipped": 0}
    assert result.dag.levels == [] and result.dag.edges == []
    assert ok.execute_request({}).status == "success"


# ------------------------------------------------------------------ input forms


CAMEL = {
    "tasks": [
        {"id": "A", "tool": "noop", "params": {"k": 1}, "priority": 7, "timeout": 1500,
         "retryPolicy": {"maxAttempts": 3, "backoff": "linear", "initialDelay": 20},
         "rollback": {"tool": "noop", "params": {"r": "${A.result}"}}, "runIf": "all_success"},
        {"id": "B", "tool": "noop", "dependsOn": ["A"], "runIf": "all_done", "vault": "api"},
    ],
    "config": {"maxConcurrent": 3, "failureMode": "rollback", "timeout": 5000,
               "enableRollback": True},
}
SNAKE = {
    "tasks": [
        {"id": "A", "tool": "noop", "params": {"k": 1}, "priority": 7, "timeout": 1500,
         "retry_policy": {"max_attempts": 3, "backoff": "linear", "initial_delay": 20},
         "rollback": {"tool": "noop", "params": {"r": "${A.result}"}}, "run_if": "all_success"},
        {"id": "B", "tool": "noop", "depends_on": ["A"], "run_if": "all_done", "vault": "api"},
    ],
    "config": {"max_concurrent": 3, "failure_mode": "rollback", "timeout": 5000,
               "enable_rollback": True},
}


@pytest.mark.parametrize(
    "form",
    [CAMEL, SNAKE, json.dumps(CAMEL), json.dumps(SNAKE).encode(),
     ExecutionRequest.model_validate(CAMEL)],
    ids=["camel", "snake", "json-camel", "json-bytes-snake", "model"],
)
def test_request_forms_are_equivalent(form: Any) -> None:
    model = parse_request(form)
    assert model == ExecutionRequest.model_validate(CAMEL)
    graph = validate(form)
    a, b = graph.nodes["A"], graph.nodes["B"]
    assert (a.priority, a.timeout, a.retry.max_attempts, a.retry.backoff) == (7, 1.5, 3, "linear")
    assert a.retry.initial_delay == pytest.approx(0.02)
    assert b.deps == ("A",) and b.trigger == "all_done" and b.vault == "api"
    assert b.priority == 5  # unset counts as 5


def test_request_dump_is_camel_case_and_round_trips() -> None:
    model = parse_request(SNAKE)
    dumped = model.model_dump(by_alias=True, mode="json", exclude_none=True)
    assert dumped["config"] == {**CAMEL["config"], "timeout": 5000.0}
    assert dumped["tasks"][0] == {**CAMEL["tasks"][0], "timeout": 1500.0, "retryPolicy": {
        "maxAttempts": 3, "backoff": "linear", "initialDelay": 20.0}}
    assert dumped["tasks"][1] == {**CAMEL["tasks"][1], "params": {}}
    assert parse_request(dumped) == model
    assert parse_request(json.dumps(dumped)) == model


def test_bad_request_type() -> None:
    with pytest.raises(TypeError, match="ExecutionRequest, a dict or JSON text"):
        parse_request(42)  # type: ignore[arg-type]


def test_implied_dependency_is_added_once() -> None:
    graph = validate(req(t("A"), t("B", dependsOn=["A"], params={"x": "${A.result}",
                                                                 "y": ["${A.status}"]})))
    assert graph.nodes["B"].deps == ("A",)
    assert graph.edges() == [("A", "B")]
    assert graph.levels == [["A"], ["B"]]


# ----------------------------------------------------------------- params against signatures
def work(name: str, n: int = 1) -> str:
    return name * n


def test_a_misspelt_param_fails_when_the_task_is_added() -> None:
    with pytest.raises(ok.InvalidParamsError) as info:
        ok.DAG().task("a", work, nmae="x")
    err = info.value
    assert isinstance(err, ok.OktyvError) and err.code == "INVALID_PARAMS"
    assert err.task_id == "a" and err.unknown == ["nmae"] and err.missing == ["name"]
    assert str(err) == (
        "Task a: tool 'work' has no parameter 'nmae' (did you mean 'name'?); tool 'work' "
        "needs 'name', not given; it takes n, name"
    )


def test_a_tool_named_is_checked_when_the_graph_is_built() -> None:
    dag = ok.DAG(tools={"work": work}).task("a", "work", name="x", count=2)
    with pytest.raises(ok.InvalidParamsError, match="Task a: tool 'work' has no parameter 'count'"):
        dag.validate()


def test_a_request_with_bad_params_is_invalid_params() -> None:
    bad = req(t("a", "work", params={"name": "x"}), t("b", "work", params={"nme": "y"}))
    with pytest.raises(ok.InvalidParamsError) as info:
        ok.execute_request(bad, tools={"work": work})
    assert info.value.task_id == "b" and info.value.suggestions == {"nme": ["name"]}
    # the rollback's params are checked against the rollback tool too
    rb = req(t("a", "work", params={"name": "x"},
               rollback={"tool": "work", "params": {"nam": "x"}}))
    with pytest.raises(ok.InvalidParamsError, match="Task a: tool 'work' has no parameter 'nam'"):
        ok.execute_request(rb, tools={"work": work})


def test_structural_errors_come_before_param_errors() -> None:
    cyclic = req(t("a", "work", params={"zzz": 1}, dependsOn=["b"]),
                 t("b", "work", params={"name": "x"}, dependsOn=["a"]))
    with pytest.raises(ok.CircularDependencyError):
        ok.execute_request(cyclic, tools={"work": work})


def test_kwargs_tools_and_vault_credentials_take_their_names() -> None:
    def anything(**kw: Any) -> int:
        return len(kw)

    def needs_secret(credentials: dict[str, str], url: str) -> str:
        return url

    dag = (ok.DAG().task("a", anything, whatever=1, other=2)
           .task("s", needs_secret, url="u", vault="api"))
    run = dag.run(live=False, vault={"api": {"k": "v"}})
    assert run.records["a"].result == 2 and run.records["s"].result == "u"
    with pytest.raises(ok.InvalidParamsError, match="needs 'credentials', not given"):
        ok.DAG().task("s", needs_secret, url="u")  # no vault: nothing gives credentials
