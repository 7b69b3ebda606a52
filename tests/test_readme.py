"""The README's samples work as written.

Every ```python block of README.md is executed (in a temporary working directory); the
```json request is validated with :func:`oktyv_nb.api.prepare` and then run for real against
the demo API on localhost; the API table and the error table name things that exist.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import oktyv_nb as ok
from oktyv_nb.demo import DATA, demo_api
from oktyv_nb.model.graph import prepare
from oktyv_nb.model.schema import parse_request

README = Path(__file__).resolve().parent.parent / "README.md"
TEXT = README.read_text(encoding="utf-8")


def blocks(lang: str) -> list[str]:
    """The fenced code blocks of README.md in language ``lang``, in order."""
    return re.findall(rf"^```{lang}\n(.*?)^```", TEXT, flags=re.S | re.M)


PYTHON = blocks("python")
JSON = blocks("json")


def test_readme_has_samples() -> None:
    assert PYTHON, "README.md has no ```python block"
    assert len(JSON) == 1, "README.md should have exactly one ```json request block"


@pytest.mark.parametrize("index", range(len(PYTHON)), ids=lambda i: f"python-block-{i}")
def test_python_block_runs(
    index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    exec(compile(PYTHON[index], f"README.md python block {index}", "exec"), namespace)
    capsys.readouterr()
    # Whatever a sample builds must be valid, and whatever it runs must have succeeded.
    for value in namespace.values():
        if isinstance(value, ok.DAG):
            value.validate()
        if isinstance(value, ok.Run):
            assert value.status == "success", value.df[["status", "error_code", "error_message"]]


def test_quickstart_block_writes_its_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture) -> None:
    """The five-line sample's last task writes the two sums, referenced by ``${...}``."""
    sample = next(b for b in PYTHON if "quickstart" in b)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    exec(compile(sample, "README.md quickstart", "exec"), namespace)
    out = capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == {"a": 3, "b": 6}
    run = namespace["run"]
    assert run.dag.levels == [["a", "b"], ["sum_a", "sum_b"], ["report"]]
    assert str(run.stats.critical_path) in out


def test_json_request_validates() -> None:
    request = json.loads(JSON[0])
    config, graph = prepare(request)
    model = parse_request(request)
    assert [t.id for t in model.tasks] == list(graph.nodes) == ["fetch", "save"]
    # The ${fetch...} reference makes save depend on fetch; the units stay milliseconds.
    assert graph.levels == [["fetch"], ["save"]]
    assert list(graph.edges()) == [("fetch", "save")]
    fetch = model.tasks[0]
    assert fetch.timeout == 5000
    assert fetch.retry_policy is not None and fetch.retry_policy.max_attempts == 3
    assert model.config == config
    assert config.max_concurrent == 10 and config.timeout == 60000


def test_json_request_runs_against_a_local_api(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The sample request, pointed at the demo API's real port, fetches and saves users."""
    monkeypatch.chdir(tmp_path)
    with demo_api() as base:
        text = JSON[0].replace("http://127.0.0.1:8000/api", base)
        assert text != JSON[0], "the README request no longer uses http://127.0.0.1:8000/api"
        result = ok.execute_request(text)
    assert result.status == "success", result.model_dump(mode="json")
    assert result.summary.succeeded == 2
    assert result.tasks["fetch"].result["json"] == DATA["users"]
    assert json.loads((tmp_path / "users.json").read_text()) == DATA["users"]
    dumped = result.model_dump(by_alias=True, mode="json")
    assert {"executionId", "status", "startTime", "endTime", "duration", "tasks", "summary",
            "dag"} <= set(dumped)


def _api_rows() -> list[str]:
    section = TEXT.split("## The API in brief", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


def test_api_table_names_exist() -> None:
    """Every call in the API table exists on the module, the DAG or the Run."""
    owners = {"ok": ok, "dag": ok.DAG, "run": ok.Run, "": ok.DAG}
    seen = 0
    for row in _api_rows():
        first_cell = row.split("|")[1]
        for call in re.findall(r"`([^`]+)`", first_cell):
            call = call.removeprefix("await ")
            m = re.match(r"(?:(ok|dag|run)\.|\.)([A-Za-z_]+)(?:\.([A-Za-z_]+))?", call)
            assert m, f"cannot read the API table entry {call!r}"
            owner, name, attr = m.groups()
            obj = getattr(owners[owner or ""], name)
            if attr:
                obj = getattr(obj, attr)
            seen += 1
    assert seen >= 15


def test_api_table_lists_real_dataframe_columns() -> None:
    row = next(r for r in _api_rows() if r.startswith("| `run.df`"))
    listed = [c.strip() for code in re.findall(r"`([^`]+)`", row.split("|")[2])
              for c in code.split(",")]
    run = ok.DAG().task("a", "sleep", seconds=0).run(live=False)
    assert len(listed) >= 10 and set(listed) <= set(run.df.columns) | {run.df.index.name}


def test_error_table_matches_the_exceptions() -> None:
    section = TEXT.split("## Bad input", 1)[1].split("\n## ", 1)[0]
    pairs = re.findall(r"\| `(\w+)`(?: \(`\.\w+`\))? \| `([A-Z_]+)` \|", section)
    assert len(pairs) >= 6
    for name, code in pairs:
        exc = getattr(ok, name)
        assert issubclass(exc, ok.OktyvError)
        assert exc.code == code, f"{name}.code is {exc.code!r}, README says {code!r}"
