"""The widget form (SPEC §12), driven in-process: set widget values, click buttons, read
what the form shows and what ``form.dag`` became. No kernel, no browser (see tests/browser).
"""

from __future__ import annotations

import asyncio
import enum
import html
import json
import re
from pathlib import Path
from typing import Any, Literal

import ipywidgets as W
import pytest

import oktyv_nb as ok
from oktyv_nb.widgets.form import BuilderForm, ParamField

# ----------------------------------------------------------------------------- tools


def numbers(n: int = 3) -> list[int]:
    """The whole numbers 0 .. n-1."""
    return list(range(n))


def total(values: list[int], scale: float = 1.0) -> float:
    """The sum of values, times scale."""
    return sum(values) * scale


def greet(name: str, punctuation: str = "!") -> str:
    return f"hello {name}{punctuation}"


def boom(message: str = "boom") -> None:
    raise RuntimeError(message)


async def wait(seconds: float = 30.0) -> float:
    await asyncio.sleep(seconds)
    return seconds


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


def kinds(
    text: str,
    count: int,
    ratio: float = 0.5,
    flag: bool = False,
    mode: Literal["fast", "slow"] = "fast",
    colour: Colour = Colour.RED,
    items: list[str] | None = None,
    anything: Any = None,
    maybe: bool | None = None,
    credentials: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {"text": text, "count": count}


def loose(a: int, **more: Any) -> dict[str, Any]:
    return {"a": a, **more}


TOOLS = {"numbers": numbers, "total": total, "greet": greet, "boom": boom, "wait": wait,
         "kinds": kinds, "loose": loose}


@pytest.fixture
def form() -> BuilderForm:
    return ok.builder(tools=TOOLS)


def add(form: BuilderForm, task_id: str, tool: str, deps: tuple[str, ...] = (),
        **fields: str) -> None:
    """Fill the editor for a new task and click Add."""
    form.new_button.click()
    form.tool_input.value = tool
    form.id_input.value = task_id
    for name, value in fields.items():
        form.params[name].input.value = value
    form.deps_input.value = deps
    form.add_button.click()


def text(widget: W.HTML) -> str:
    """The visible text of an HTML message widget."""
    return html.unescape(re.sub(r"<[^>]+>", "", widget.value))


# ----------------------------------------------------------------------------- building


def test_builder_is_exported_lazily_and_is_a_vbox(form: BuilderForm) -> None:
    assert ok.builder is not None
    assert isinstance(form, W.VBox)
    assert isinstance(form.dag, ok.DAG)
    assert len(form.dag) == 0
    assert "oktyv-builder" in form._dom_classes
    assert "Add a task" in text(form.graph_html)


def test_tool_dropdown_lists_given_registered_dag_and_builtin_tools() -> None:
    @ok.tool(name="registered_for_widget_test")
    def registered(x: int = 1) -> int:
        return x

    def own(y: str) -> str:
        return y

    try:
        dag = ok.DAG("d").task("o", own, y="q")
        form = ok.builder(dag, tools={"numbers": numbers})
        values = [v for _, v in form.tool_input.options]
        for name in ("own", "numbers", "registered_for_widget_test", "sleep", "shell",
                     "file_write"):
            assert name in values
        labels = dict((v, lab) for lab, v in form.tool_input.options)
        assert labels["sleep"] == "sleep (built-in)"
        assert labels["numbers"] == "numbers"
        assert dag.tools["numbers"] is numbers  # given tools join the DAG's own
    finally:
        del ok.default_registry["registered_for_widget_test"]


def test_param_fields_follow_signature_types_and_defaults(form: BuilderForm) -> None:
    form.tool_input.value = "kinds"
    p = form.params
    assert list(p) == ["text", "count", "ratio", "flag", "mode", "colour", "items",
                       "anything", "maybe"]  # credentials is the engine's to pass
    assert {n: f.kind for n, f in p.items()} == {
        "text": "str", "count": "int", "ratio": "float", "flag": "bool", "mode": "choice",
        "colour": "choice", "items": "json", "anything": "any", "maybe": "choice",
    }
    assert isinstance(p["text"].input, W.Text)
    assert isinstance(p["flag"].input, W.Checkbox)
    assert isinstance(p["mode"].input, W.Dropdown)
    assert isinstance(p["items"].input, W.Textarea)
    assert [lab for lab, _ in p["mode"].input.options] == ["fast", "slow"]
    assert [lab for lab, _ in p["colour"].input.options] == ["RED", "GREEN"]
    assert p["maybe"].choices == [None, True, False]
    assert p["text"].required and p["count"].required and not p["ratio"].required
    assert p["ratio"].input.placeholder == "default: 0.5"
    assert form.extra_row.layout.display == "none"
    form.tool_input.value = "loose"
    assert list(form.params) == ["a"]
    assert form.extra_row.layout.display is None  # **kwargs: a JSON object of more params


def test_add_tasks_builds_the_same_dag_as_the_fluent_builder(form: BuilderForm) -> None:
    add(form, "first", "numbers", n="4")
    assert "Added task first" in text(form.status_msg)
    add(form, "second", "total", deps=("first",), values="${first.result}", scale="2")
    form.new_button.click()
    form.tool_input.value = "kinds"
    form.id_input.value = "k"
    p = form.params
    p["text"].input.value = "plain text"
    p["count"].input.value = "${first.result.0}"
    p["flag"].input.value = True
    p["mode"].input.value = 1  # "slow"
    p["colour"].input.value = 1  # GREEN -> its value
    p["items"].input.value = '["a", "${second.result}"]'
    p["anything"].input.value = "just words"
    form.priority_input.value = 8
    form.timeout_input.value = "2.5"
    form.retries_input.value = 2
    form.trigger_input.value = "all_done"
    form.vault_input.value = "api"
    form.add_button.click()
    assert "Added task k" in text(form.status_msg), form.status_msg.value
    expected = (
        ok.DAG(tools=TOOLS)
        .task("first", numbers, n=4)
        .task("second", total, values="${first.result}", scale=2, after=["first"])
        .task("k", kinds, text="plain text", count="${first.result.0}", flag=True,
              mode="slow", colour="green", items=["a", "${second.result}"],
              anything="just words", priority=8, timeout=2.5, retries=2,
              trigger="all_done", vault="api")
    )
    assert form.dag == expected
    assert [lab for lab, _ in form.tasks_list.options] == [
        "first  ·  numbers", "second  ·  total", "k  ·  kinds"]
    assert "<svg" in form.graph_html.value
    assert form.dag.levels == [["first"], ["second"], ["k"]]


def test_defaults_are_left_out_and_references_imply_dependencies(form: BuilderForm) -> None:
    add(form, "a", "numbers")  # n left empty: the tool's default applies
    assert form.dag.specs["a"].params == {}
    assert form.dag.levels == [["a"]]  # the DAG's graph is up to date after the first add
    assert ">a<" in form.graph_html.value
    form.new_button.click()
    form.tool_input.value = "total"
    form.id_input.value = "b"
    form.params["values"].input.value = "${a.result}"
    assert "also after (from references): a" in text(form.refs_html)
    form.add_button.click()
    assert form.dag.specs["b"].params == {"values": "${a.result}"}
    assert form.dag.specs["b"].depends_on is None
    assert form.dag.levels == [["a"], ["b"]]


def test_reference_toggle_on_checkbox_and_dropdown_fields(form: BuilderForm) -> None:
    add(form, "n", "numbers", n="1")
    form.new_button.click()
    form.tool_input.value = "kinds"
    form.id_input.value = "k"
    form.params["text"].input.value = "t"
    form.params["count"].input.value = "1"
    flag = form.params["flag"]
    assert flag.ref_toggle is not None and flag.ref_input is not None
    flag.ref_toggle.value = True
    assert flag.input.layout.display == "none" and flag.ref_input.layout.display is None
    form.add_button.click()
    assert "reference" in text(flag.message)  # empty reference
    assert "k" not in form.dag
    flag.ref_input.value = "${n.status}"
    form.add_button.click()
    assert form.dag.specs["k"].params["flag"] == "${n.status}"


# ----------------------------------------------------------------------------- editing


def test_edit_fills_the_fields_and_save_replaces_in_place(form: BuilderForm) -> None:
    add(form, "a", "numbers", n="2")
    add(form, "b", "greet", name="x")
    add(form, "c", "total", deps=("a",), values="${a.result}")
    form.tasks_list.value = "a"
    assert form.add_button.description == "Save task"
    assert form.id_input.value == "a"
    assert form.tool_input.value == "numbers"
    assert form.params["n"].input.value == "2"
    assert form.deps_input.options == ("b", "c")
    form.params["n"].input.value = "5"
    form.timeout_input.value = "1"
    form.add_button.click()
    assert "Saved task a" in text(form.status_msg)
    assert list(form.dag.specs) == ["a", "b", "c"]  # same position
    assert form.dag.specs["a"].params == {"n": 5}
    assert form.dag.specs["a"].timeout == 1000.0
    form.tasks_list.value = "c"
    assert form.deps_input.value == ("a",)
    assert form.params["values"].input.value == "${a.result}"


def test_saving_an_unchanged_task_keeps_the_dag_equal() -> None:
    dag = (
        ok.DAG("lossless", max_concurrent=3, failure_mode="rollback", timeout=9.0,
               tools=TOOLS)
        .task("a", numbers, n=2, priority=1)
        .task("b", kinds, text="t", count="${a.result.0}", flag=False, mode="fast",
              colour="red", items=None, anything="42", maybe=None, after=["a"],
              retry=ok.RetryPolicy(max_attempts=3, backoff="linear", initial_delay=0.25))
        .task("c", loose, a=1, extra_key={"x": [1, 2]}, **{"odd-name": True},
              rollback=ok.Rollback("greet", name="${c.result.a}"), timeout=0.3,
              trigger="all_success", retries=0)
        .task("d", ok.tools.shell, {"timeout": 5.0}, argv=["echo", "${b.status}"], vault="api")
        .task("e", numbers, n="${a.duration}")
    )
    before = dag.copy()
    form = ok.builder(dag)
    for tid in list(dag.specs):
        form.tasks_list.value = tid
        form.add_button.click()
        assert f"Saved task {tid}" in text(form.status_msg), (tid, form.status_msg.value)
    assert form.dag is dag
    assert dag == before


def test_rename_that_breaks_a_dependent_is_refused(form: BuilderForm) -> None:
    add(form, "a", "numbers")
    add(form, "b", "total", deps=("a",), values="${a.result}")
    form.tasks_list.value = "a"
    form.id_input.value = "a2"
    form.add_button.click()
    assert "depends on non-existent task a" in text(form.deps_msg) or \
        "no task a" in text(form.deps_msg), form.deps_msg.value
    assert list(form.dag.specs) == ["a", "b"]


def test_remove_deletes_and_whole_dag_validation_shows_by_deps(form: BuilderForm) -> None:
    add(form, "a", "numbers")
    add(form, "b", "total", deps=("a",), values="[1]")
    form.tasks_list.value = "a"
    form.remove_button.click()
    assert "Removed task a" in text(form.status_msg)
    assert list(form.dag.specs) == ["b"]
    assert "Task b depends on non-existent task a" in text(form.dag_msg)
    assert "no graph" in text(form.graph_html)
    form.run_button.click()
    assert "non-existent task a" in text(form.run_msg)
    assert form.last_run is None
    # adding an unrelated task is still possible while b is broken; adding a fixes b
    add(form, "a", "numbers")
    assert form.dag_msg.value == ""
    assert "<svg" in form.graph_html.value


# ----------------------------------------------------------------------------- validation


def _draft(form: BuilderForm, tool: str, task_id: str = "x") -> None:
    form.new_button.click()
    form.tool_input.value = tool
    form.id_input.value = task_id


def _refused(form: BuilderForm, n: int) -> None:
    form.add_button.click()
    assert len(form.dag) == n, "nothing may be added while the draft is invalid"
    assert "nothing was saved" in text(form.status_msg)


def test_duplicate_and_malformed_ids(form: BuilderForm) -> None:
    add(form, "a", "numbers")
    _draft(form, "numbers", "a")
    assert form.priority_input.label == "default (5)"
    assert form.trigger_input.label == "default (all_success)"
    assert "Duplicate task ID: a" in text(form.id_msg)  # shown while typing
    assert "oktyv-invalid" in form.id_input._dom_classes
    _refused(form, 1)
    form.id_input.value = "has space"
    assert "letters, digits" in text(form.id_msg)
    _refused(form, 1)
    form.id_input.value = ""
    _refused(form, 1)
    assert "required" in text(form.id_msg)
    form.id_input.value = "ok_id"
    assert form.id_msg.value == ""
    assert "oktyv-invalid" not in form.id_input._dom_classes
    form.add_button.click()
    assert len(form.dag) == 2


def test_cycle_is_shown_next_to_the_dependencies(form: BuilderForm) -> None:
    add(form, "a", "numbers")
    add(form, "b", "total", deps=("a",), values="${a.result}")
    form.tasks_list.value = "a"
    form.deps_input.value = ("b",)
    assert "Circular dependency detected: a → b → a" in text(form.deps_msg)
    form.add_button.click()
    assert form.dag.specs["a"].depends_on is None


def test_missing_and_malformed_references(form: BuilderForm) -> None:
    add(form, "a", "numbers")
    _draft(form, "total")
    values = form.params["values"]
    values.input.value = "${nope.result}"
    assert "there is no task 'nope'" in text(values.message)
    _refused(form, 1)
    values.input.value = "${a}"
    assert "needs a task id and a field" in text(values.message)
    _refused(form, 1)
    values.input.value = "${x.result}"
    assert "refers to this task itself" in text(values.message)
    _refused(form, 1)


def test_bad_json_and_bad_numbers(form: BuilderForm) -> None:
    _draft(form, "total")
    values, scale = form.params["values"], form.params["scale"]
    values.input.value = "[1, 2"
    assert "invalid JSON" in text(values.message)
    assert "oktyv-invalid" in values.input._dom_classes
    scale.input.value = "two"
    assert "'two' is not a number" in text(scale.message)
    _refused(form, 0)
    values.input.value = "[1, 2]"
    scale.input.value = "${a.result} x"
    assert "exactly one ${task.field} reference" in text(scale.message)
    scale.input.value = "nan"
    assert "finite" in text(scale.message)
    scale.input.value = "1e1"
    assert values.message.value == "" and scale.message.value == ""
    form.add_button.click()
    assert form.dag.specs["x"].params == {"values": [1, 2], "scale": 10.0}
    _draft(form, "numbers", "y")
    form.params["n"].input.value = "2.5"
    assert "not a whole number" in text(form.params["n"].message)
    form.timeout_input.value = "-1"
    assert "seconds > 0" in text(form.timeout_msg)
    _refused(form, 1)


def test_required_fields_show_only_after_an_attempt(form: BuilderForm) -> None:
    _draft(form, "greet")
    name = form.params["name"]
    assert name.message.value == ""  # untouched: no nagging yet
    _refused(form, 0)
    assert "required" in text(name.message)


def test_any_field_and_extra_params(form: BuilderForm) -> None:
    _draft(form, "kinds")
    form.params["text"].input.value = "t"
    form.params["count"].input.value = "3"
    anything = form.params["anything"]
    anything.input.value = '{"a": 1'
    assert "looks like JSON" in text(anything.message)
    anything.input.value = '"42"'
    form.add_button.click()
    assert form.dag.specs["x"].params["anything"] == "42"
    _draft(form, "loose", "y")
    form.params["a"].input.value = "1"
    form.extra_input.value = "[1]"
    assert "JSON object" in text(form.extra_msg)
    form.extra_input.value = '{"a": 2}'
    assert "already has a field" in text(form.extra_msg)
    form.extra_input.value = '{"b": "${x.result}", "c-d": null}'
    form.add_button.click()
    assert form.dag.specs["y"].params == {"a": 1, "b": "${x.result}", "c-d": None}


def test_unknown_tool_of_an_existing_task_is_shown_by_the_tool() -> None:
    dag = ok.DAG.from_request({"tasks": [{"id": "a", "tool": "not_there"}]})
    form = ok.builder(dag)
    assert "not_there" in text(form.dag_msg)
    form.tasks_list.value = "a"
    assert "unknown tool 'not_there'" in text(form.tool_msg)


def test_no_widget_callback_raises_on_garbage(form: BuilderForm) -> None:
    # every field gets nonsense; messages appear, nothing raises, nothing is added
    _draft(form, "kinds", "???")
    for field in form.params.values():
        if isinstance(field.input, W.Text | W.Textarea):
            field.input.value = "{]"
    form.timeout_input.value = "soon"
    form.run_timeout_input.value = "later"
    _refused(form, 0)
    assert "not a number of seconds" in text(form.settings_msg)


# ----------------------------------------------------------------------------- settings


def test_settings_update_the_dag_config(form: BuilderForm) -> None:
    form.name_input.value = "pipeline"
    form.max_concurrent_input.value = 3
    form.failure_mode_input.value = "stop"
    form.run_timeout_input.value = "12.5"
    c = form.dag.config
    assert (form.dag.name, c.max_concurrent, c.failure_mode, c.timeout) == (
        "pipeline", 3, "stop", 12.5)
    assert "pipeline" in form.title_html.value


# ----------------------------------------------------------------------------- export


def _exec(code: str, **scope: Any) -> ok.DAG:
    ns: dict[str, Any] = dict(scope)
    exec(compile(code, "<form.to_code()>", "exec"), ns)
    return ns["dag"]


def test_to_code_round_trip_of_a_form_built_dag(form: BuilderForm) -> None:
    add(form, "first", "numbers", n="4")
    add(form, "second", "total", deps=("first",), values="${first.result}", scale="2")
    form.name_input.value = "demo"
    form.max_concurrent_input.value = 2
    code = form.to_code()
    assert code.startswith("import oktyv_nb as ok\n")
    assert '.task("first", numbers, n=4)' in code
    rebuilt = _exec(code, **TOOLS)
    assert rebuilt == form.dag
    assert rebuilt.run().status == "success"


def test_to_code_round_trip_of_everything_the_builder_can_say() -> None:
    def plus(a: int, b: int = 1) -> int:
        return a + b

    def greet(name: str, credentials: Any = None, **extra: Any) -> str:  # takes any name
        return f"hello {name}"

    dag = (
        ok.DAG("all", max_concurrent=4, failure_mode="rollback", timeout=3.5,
               strategy="levels", tools={"plus_tool": plus, "greet": greet})
        .task("w", ok.tools.file_write, path="out.json", content={"k": [1, None, True]})
        .task("s", ok.tools.shell, {"timeout": 5.0}, argv=["echo", "${w.result}"],
              after=["w"], priority=9, timeout=0.1, retries=2)
        .task("p", "plus_tool", a=1, retry=ok.RetryPolicy(max_attempts=2, backoff="linear",
                                                          initial_delay=0.3))
        .task("g", greet, name="it's \"quoted\" ünïcode", trigger="all_done", vault="v",
              rollback=ok.Rollback(ok.tools.file_write, path="undo", content="${g.result}"),
              **{"with-dash": 1, "class": 2})
        .task("z", ok.tools.sleep, seconds=0.0, value=[1.5, {"x": None}])
    )
    assert dag.specs["s"].params["timeout"] == 5.0 and dag.specs["s"].timeout == 100.0
    form = ok.builder(dag)
    code = form.to_code()
    assert "ok.tools.file_write" in code and "ok.tools.sleep" in code
    assert '"plus_tool"' in code and 'tools={"plus_tool": plus}' in code
    assert '{"timeout": 5.0}' in code  # the tool's own timeout param, as task()'s dict
    rebuilt = _exec(code, plus=plus, greet=greet)
    assert rebuilt == dag
    assert rebuilt.config.strategy == "levels"
    assert rebuilt.to_request().model_dump() == dag.to_request().model_dump()


def test_export_buttons_fill_the_textarea(form: BuilderForm) -> None:
    add(form, "a", "numbers", n="1")
    assert form.export_area.layout.display == "none"
    form.code_button.click()
    assert form.export_area.value == form.to_code()
    assert form.export_area.layout.display is None
    form.json_button.click()
    assert json.loads(form.export_area.value) == form.to_request()


def test_to_request_round_trip(form: BuilderForm) -> None:
    add(form, "a", "numbers", n="2")
    add(form, "b", "total", deps=("a",), values="${a.result}")
    form.tasks_list.value = "b"
    form.timeout_input.value = "0.25"
    form.retries_input.value = 1
    form.add_button.click()
    req = form.to_request()
    assert json.loads(json.dumps(req)) == req
    assert req["tasks"][1] == {
        "id": "b", "tool": "total", "params": {"values": "${a.result}"},
        "dependsOn": ["a"], "timeout": 250.0,
        "retryPolicy": {"maxAttempts": 2, "backoff": "exponential", "initialDelay": 1000.0},
    }
    assert req["config"] == {"maxConcurrent": 10, "failureMode": "continue"}
    assert ok.DAG.from_request(req, tools=TOOLS) == form.dag


def test_save_and_load_the_json_request(form: BuilderForm, tmp_path: Path) -> None:
    add(form, "a", "numbers", n="2")
    add(form, "b", "total", deps=("a",), values="${a.result}")
    form.max_concurrent_input.value = 4
    path = tmp_path / "req.json"
    form.save_button.click()
    assert "type a file path" in text(form.file_msg)
    form.path_input.value = str(path)
    form.save_button.click()
    assert "saved 2 tasks" in text(form.file_msg)
    assert json.loads(path.read_text()) == form.to_request()

    other = ok.builder(tools=TOOLS)
    original_dag = other.dag
    other.path_input.value = str(path)
    other.load_button.click()
    assert "loaded 2 tasks" in text(other.file_msg)
    assert other.dag is original_dag
    assert other.dag == form.dag
    assert other.max_concurrent_input.value == 4
    assert [v for _, v in other.tasks_list.options] == ["a", "b"]

    for content, message in (
        (None, "cannot read"),
        ("{not json", "is not JSON"),
        ('{"tasks": [{"id": "a b", "tool": "x"}]}', "String should match pattern"),
        ('{"tasks": [{"id": "a", "tool": "x"}, {"id": "a", "tool": "x"}]}',
         "Duplicate task ID: a"),
    ):
        bad = tmp_path / f"bad{len(message)}.json"
        if content is not None:
            bad.write_text(content)
        other.path_input.value = str(bad)
        other.load_button.click()
        assert message in text(other.file_msg), other.file_msg.value
        assert other.dag == form.dag  # a failed load changes nothing


# ----------------------------------------------------------------------------- running


def test_run_button_runs_synchronously_outside_a_kernel(form: BuilderForm) -> None:
    add(form, "first", "numbers", n="4")
    add(form, "second", "total", deps=("first",), values="${first.result}", scale="2")
    form.run_button.click()
    run = form.last_run
    assert run is not None and run is form.dag.last_run
    assert run.status == "success"
    assert run.df.loc["second", "result"] == 12.0
    assert form.progress.value == form.progress.max == 2
    assert form.progress.bar_style == "success"
    assert "2/2" in text(form.counts_label) and "2 succeeded" in text(form.counts_label)
    html = form.result_html.value
    assert '<table class="oktyv-result">' in html
    assert html.count('class="oktyv-status"') == 2 and ">success</td>" in html
    assert "success" in text(form.run_msg)
    assert not form.run_button.disabled and form.stop_button.disabled
    assert "<svg" in form.graph_html.value


def test_failed_task_shows_partial_run(form: BuilderForm) -> None:
    add(form, "ok_task", "numbers")
    add(form, "bad", "boom", message="broken on purpose")
    add(form, "after_bad", "numbers", deps=("bad",))
    form.run_button.click()
    run = form.last_run
    assert run is not None and run.status == "partial"
    df = run.df
    assert list(df["status"].astype(str)) == ["success", "failed", "skipped"]
    assert form.progress.bar_style == "warning"
    assert "broken on purpose" in form.result_html.value
    assert "DEPENDENCY_FAILED" in form.result_html.value
    assert "1 failed" in text(form.counts_label) and "1 skipped" in text(form.counts_label)


def test_empty_dag_does_not_run(form: BuilderForm) -> None:
    form.run_button.click()
    assert "add a task first" in text(form.run_msg)
    assert form.last_run is None


def test_run_on_a_running_loop_is_a_task_and_stop_cancels_it(form: BuilderForm) -> None:
    add(form, "quick", "numbers", n="2")
    add(form, "slow", "wait", seconds="30")
    add(form, "after_slow", "total", deps=("slow",), values="${quick.result}")
    seen: list[str] = []

    async def main() -> None:
        form.run_button.click()
        assert form.run_task is not None and not form.run_task.done()
        assert form.run_button.disabled and not form.stop_button.disabled
        for _ in range(500):  # until the slow task is running
            await asyncio.sleep(0.01)
            if form.dag.last_run is None and "1 running" in text(form.counts_label) and \
                    "1 succeeded" in text(form.counts_label):
                break
        seen.append(text(form.counts_label))
        form.stop_button.click()
        await form.run_task

    asyncio.run(main())
    assert "1 running" in seen[0]
    run = form.last_run
    assert run is not None and run is form.dag.last_run
    assert set(run.records) == {"quick", "slow", "after_slow"}  # every task has its record
    df = run.df
    assert df.loc["quick", "status"] == "success"
    assert df.loc["slow", "status"] == "failed" and df.loc["slow", "error_code"] == "CANCELLED"
    assert df.loc["after_slow", "status"] == "skipped"
    assert run.interrupted
    assert "stopped" in text(form.run_msg)
    assert not form.run_button.disabled and form.stop_button.disabled
    assert float(df.loc["slow", "duration_s"]) < 10  # cancelled, not waited out


def test_stop_before_the_run_starts(form: BuilderForm) -> None:
    add(form, "slow", "wait", seconds="30")

    async def main() -> None:
        form.run_button.click()
        form.stop_button.click()  # before the task had a chance to start
        with pytest.raises(asyncio.CancelledError):
            await form.run_task

    asyncio.run(main())
    assert form.last_run is None
    assert "stopped before it started" in text(form.run_msg)
    assert not form.run_button.disabled and form.stop_button.disabled


def test_graph_preview_without_dot_shows_dot_text(form: BuilderForm,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    add(form, "a", "numbers")
    assert "<svg" not in form.graph_html.value
    assert "digraph" in form.graph_html.value
    assert "apt-get install graphviz" in form.graph_html.value


def test_param_field_load_and_parse_round_trip() -> None:
    cases: list[tuple[ParamField, Any]] = [
        (ParamField("s", "str"), "text with ${a.result} inside"),
        (ParamField("i", "int"), -3),
        (ParamField("i", "int"), "${a.result}"),
        (ParamField("f", "float", default=1.0), 2.5),
        (ParamField("j", "json"), {"k": ["${a.result}", 1]}),
        (ParamField("j", "json"), "${a.result}"),
        (ParamField("j", "json"), "text, not json"),
        (ParamField("x", "any"), "123"),
        (ParamField("x", "any"), [1, "two"]),
        (ParamField("x", "any"), "plain"),
        (ParamField("b", "bool", default=False), True),
        (ParamField("b", "bool", default=False), "${a.status}"),
        (ParamField("c", "choice", choices=[1, "1"], default=1), "1"),
    ]
    for field, value in cases:
        assert field.fits(value), (field.kind, value)
        field.load(value)
        got = field.parse()
        assert got == value and type(got) is type(value), (field.kind, value, got)
        assert field.include(got)


def test_editing_a_task_with_a_non_json_param_shows_its_text(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    dag = ok.DAG().task("w", ok.tools.file_write, path=target, content="x")
    form = ok.builder(dag)
    form.tasks_list.value = "w"
    assert json.loads(form.params["path"].input.value) == str(target)
    form.add_button.click()
    assert dag.specs["w"].params == {"path": str(target), "content": "x"}
    form.run_button.click()
    assert form.last_run is not None and form.last_run.status == "success"
    assert target.read_text() == "x"


# ----------------------------------------------------------------------------- maps, pools


def test_a_mapped_task_in_the_form(form: BuilderForm) -> None:
    add(form, "nums", "numbers", n="4")
    form.new_button.click()
    form.tool_input.value = "greet"
    form.id_input.value = "hello"
    assert [v for _, v in form.map_param_input.options] == ["", "name", "punctuation"]
    form.map_over_input.value = "${nums.result}"
    form.map_param_input.value = "name"
    form.map_max_input.value = 2
    form.params["punctuation"].input.value = "?"
    form.add_button.click()
    spec = form.dag.specs["hello"]
    assert spec.map is not None and spec.map.over == "${nums.result}"
    assert (spec.map.param, spec.map.max_concurrent) == ("name", 2)
    assert spec.params == {"punctuation": "?"}
    assert spec.depends_on is None or "nums" in (spec.depends_on or [])
    assert form.dag.validate().nodes["hello"].deps == ("nums",)
    # editing it shows the map again; saving unchanged keeps the DAG equal
    before = form.dag.to_request()
    form.edit("hello")
    assert form.map_over_input.value == "${nums.result}"
    assert form.map_param_input.value == "name" and form.map_max_input.value == 2
    form.add_button.click()
    assert form.dag.to_request() == before
    # the exports keep it, and the code rebuilds an equal DAG that runs
    code = form.to_code()
    assert '.map("hello", greet' in code and 'over="${nums.result}"' in code
    rebuilt = _exec(code, **TOOLS)
    assert rebuilt == form.dag
    run = rebuilt.run(live=False)
    assert run.result.tasks["hello"].result == [f"hello {i}?" for i in range(4)]
    # the graph draws it as a stack
    assert "hello ×?" in form.dag.graph().source


def test_map_and_pool_errors_show_by_their_fields(form: BuilderForm) -> None:
    add(form, "nums", "numbers", n="2")
    form.new_button.click()
    form.tool_input.value = "greet"
    form.id_input.value = "m"
    form.map_over_input.value = "nums"  # neither a reference nor a JSON list
    form.add_button.click()
    assert "reference like ${list.result} or a JSON list" in text(form.map_msg)
    assert "m" not in form.dag.specs
    form.map_over_input.value = '["a", "b"]'
    form.add_button.click()
    assert "choose the parameter" in text(form.map_msg)
    form.map_param_input.value = "name"
    form.map_over_input.value = "${nope.result}"
    assert "there is no task 'nope'" in text(form.map_msg)
    form.map_over_input.value = '["a", "b"]'
    form.pool_input.value = "api"
    form.add_button.click()
    assert "pool 'api' is not defined" in text(form.pool_msg)
    assert "m" not in form.dag.specs
    form.dag.configure(pools={"api": 1})
    form.pool_input.value = "api "  # re-checked against the DAG's pools
    form.add_button.click()
    assert form.dag.specs["m"].pool == "api"
    assert form.dag.specs["m"].map.over == ["a", "b"]
    assert form.dag.run(live=False).result.tasks["m"].result == ["hello a!", "hello b!"]


def test_pools_and_rates_in_the_settings(form: BuilderForm) -> None:
    form.pools_input.value = "api=3, db=1"
    form.rates_input.value = "api=5/s"
    assert form.dag.config.pools == {"api": 3, "db": 1}
    assert form.dag.config.rates == {"api": "5/s"}
    form.rates_input.value = "api=fast"
    assert "'fast' is not a rate" in text(form.settings_msg)
    assert form.dag.config.rates == {"api": "5/s"}  # unchanged on an error
    form.rates_input.value = "api=10/min"
    form.pools_input.value = "api"
    assert "name=value pairs like api=3" in text(form.settings_msg)
    form.pools_input.value = "api=0"
    assert "pool 'api' must have an int >= 1" in text(form.settings_msg)
    form.pools_input.value = "api=2"
    assert text(form.settings_msg) == ""
    assert json.loads(form.dag.to_json())["config"]["pools"] == {"api": 2}
    assert 'pools={"api": 2}' in form.to_code() and 'rates={"api": "10/min"}' in form.to_code()
    again = ok.builder(form.dag)
    assert again.pools_input.value == "api=2" and again.rates_input.value == "api=10/min"


# ----------------------------------------------------------------------------- what a run shows


_NODE = re.compile(r'<g id="[^"]*" class="node">\s*<title>([^<]*)</title>.*?\sfill="([^"]+)"',
                   re.S)


def _node_fills(svg: str) -> dict[str, str]:
    """Task id -> the fill colour of its node in the form's graph SVG."""
    return {html.unescape(tid): fill for tid, fill in _NODE.findall(svg)
            if not tid.startswith("#")}  # level labels and the legend are not tasks


def test_the_graph_shows_status_colours_while_the_run_goes_on(form: BuilderForm) -> None:
    from oktyv_nb.results.display.theme import STATUS_STYLE

    for tid, seconds in (("a", "0.05"), ("b", "0.1"), ("c", "0.15"), ("d", "30")):
        add(form, tid, "wait", seconds=seconds)
    preview = form.graph_html.value
    seen: dict[str, str] = {}

    async def main() -> None:
        form.run_button.click()
        for _ in range(1000):  # until three tasks are done and the last one runs
            await asyncio.sleep(0.01)
            if "3/4" in text(form.counts_label) and "1 running" in text(form.counts_label):
                break
        await asyncio.sleep(0.3)  # the graph is painted at most every 0.1 s
        seen.update(_node_fills(form.graph_html.value))
        assert form.dag.last_run is None  # the run goes on
        form.stop_button.click()
        await form.run_task

    asyncio.run(main())
    success, running = STATUS_STYLE["success"][0], STATUS_STYLE["running"][0]
    assert seen == {"a": success, "b": success, "c": success, "d": running}, seen
    assert form.runner.graph_frames >= 2  # the first frame (all pending) and later ones
    assert _node_fills(preview) and STATUS_STYLE["success"][0] not in preview
    # the finished run's own graph replaces the live one: d was cancelled
    assert _node_fills(form.graph_html.value)["d"] == STATUS_STYLE["failed"][0]


def test_a_run_without_dot_shows_no_live_graph_and_no_error(
        form: BuilderForm, monkeypatch: pytest.MonkeyPatch) -> None:
    add(form, "a", "numbers")
    monkeypatch.setenv("PATH", "")
    form.run_button.click()
    assert form.last_run is not None and form.last_run.status == "success"
    assert form.runner.graph_frames == 0
    assert "digraph" in form.graph_html.value and "apt-get install graphviz" in \
        form.graph_html.value


def _px(css: str) -> float:
    """The pixels of ``min(NNNpx, 100%)`` or ``NNNpx``."""
    m = re.search(r"([\d.]+)px", css)
    assert m is not None, css
    return float(m.group(1))


def test_the_graph_keeps_its_natural_width_after_a_run(form: BuilderForm) -> None:
    for tid in ("a", "b", "c", "d"):
        add(form, tid, "numbers")
    form.name_input.value = "four tasks"
    form.run_button.click()
    svg = form.graph_html.value
    assert svg.startswith("<svg") and "four tasks" in svg  # the run's graph, titled
    m = re.match(r'<svg width="([\d.]+)pt"', svg)
    assert m is not None, svg[:80]
    natural = float(m.group(1)) * 4 / 3  # CSS pixels
    assert natural > 400  # title and legend make it wide
    # the column is as wide as the SVG, or as the whole row (then the SVG scales to it);
    # it goes below the editor when it does not fit beside it, never squeezed smaller
    row_of_graph, column = next(
        (r, c) for r in form.children if isinstance(r, W.HBox)
        for c in r.children if form.graph_html in getattr(c, "children", ()))
    min_width = column.layout.min_width
    assert min_width.endswith("100%)") and _px(min_width) >= natural - 1, min_width
    assert row_of_graph.layout.flex_flow == "row wrap"


def test_the_export_follows_the_tasks_and_the_settings(form: BuilderForm,
                                                        tmp_path: Path) -> None:
    add(form, "a", "numbers", n="1")
    add(form, "b", "numbers", n="2")
    assert form.export_area.value == ""  # nothing shown before an export was asked for
    form.code_button.click()
    add(form, "c", "total", deps=("a",), values="${a.result}")
    assert form.export_area.value == form.to_code() and '.task("c", total' in \
        form.export_area.value
    form.name_input.value = "renamed"
    assert form.export_area.value == form.to_code() and "renamed" in form.export_area.value
    form.json_button.click()
    form.max_concurrent_input.value = 3
    assert json.loads(form.export_area.value) == form.to_request()
    assert json.loads(form.export_area.value)["config"]["maxConcurrent"] == 3
    form.tasks_list.value = "b"
    form.remove_button.click()
    assert [t["id"] for t in json.loads(form.export_area.value)["tasks"]] == ["a", "c"]
    path = tmp_path / "req.json"
    path.write_text(json.dumps(ok.DAG(tools=TOOLS).task("z", "numbers").to_request()
                               .model_dump(by_alias=True, exclude_none=True, mode="json")))
    form.path_input.value = str(path)
    form.load_button.click()
    assert [t["id"] for t in json.loads(form.export_area.value)["tasks"]] == ["z"]


def test_after_stop_the_bar_shows_what_ended_before_it(form: BuilderForm) -> None:
    add(form, "quick", "numbers", n="2")
    add(form, "slow", "wait", seconds="30")
    add(form, "after_slow", "total", deps=("slow",), values="${quick.result}")

    async def main() -> None:
        form.run_button.click()
        for _ in range(500):
            await asyncio.sleep(0.01)
            if "1 succeeded" in text(form.counts_label) and "1 running" in \
                    text(form.counts_label):
                break
        form.stop_button.click()
        await form.run_task

    asyncio.run(main())
    run = form.last_run
    assert run is not None and run.interrupted
    # slow was cancelled and after_slow skipped by the stop: one task of three ended
    assert (form.progress.value, form.progress.max) == (1, 3)
    counts = text(form.counts_label)
    assert "1/3 finished" in counts and "1 succeeded" in counts and "2 stopped" in counts
    assert "0 failed" in counts and "0 skipped" in counts, counts
    # one line: the counts never wrap and never shrink; the message beside them may
    assert "white-space:nowrap" in form.counts_label.value
    assert form.counts_label.layout.flex == "0 0 auto"
    assert form.run_msg.layout.flex == "1 1 auto" and form.run_msg.layout.min_width == "0"


def test_marking_the_dependencies_keeps_their_size(form: BuilderForm) -> None:
    add(form, "a", "numbers")
    add(form, "b", "numbers", deps=("a",))
    width = form.deps_input.layout.width
    form.tasks_list.value = "a"
    form.deps_input.value = ("b",)  # a cycle
    assert "Circular" in text(form.deps_msg)
    assert "oktyv-invalid" in form.deps_input._dom_classes
    # a flex item of its row: it must not shrink to make room for the message
    assert form.deps_input.layout.width == width
    assert form.deps_input.layout.flex is not None
    assert form.deps_input.layout.flex.split()[1] == "0", form.deps_input.layout.flex


# ----------------------------------------------------------------------------- tool descriptions


def sphinx_doc(seconds: float = 1.0) -> float:
    """Wait with :func:`asyncio.sleep`, as :meth:`~oktyv_nb.dag.DAG.run` would, then
    return ``seconds`` (a :py:class:`float`, see :class:`the DAG <oktyv_nb.dag.DAG>`,
    :mod:`~oktyv_nb.widgets.form`, :exc:`!ValueError`, :attr:`.level` and `x < y`).

    Not shown: the second paragraph.
    """
    return seconds


def test_a_tools_description_renders_its_restructuredtext(form: BuilderForm) -> None:
    form.dag.tools["sphinx_doc"] = sphinx_doc
    form.new_button.click()
    form.tool_input.value = "sphinx_doc"
    doc = form.tool_doc.value
    for code in ("asyncio.sleep", "run", "seconds", "float", "the DAG", "form", "ValueError",
                 "level", "x &lt; y"):
        assert f"<code>{code}</code>" in doc, (code, doc)
    assert "`" not in doc and ":func:" not in doc and ":py:class:" not in doc
    assert "second paragraph" not in doc and "then return" in doc  # the summary, joined

    from oktyv_nb.widgets.fields import rst_inline_html

    assert rst_inline_html("a < b, :data:`~x.Y` and :obj:`z`") == \
        "a &lt; b, <code>Y</code> and <code>z</code>"
    assert rst_inline_html("no markup: 1 * 2") == "no markup: 1 * 2"
