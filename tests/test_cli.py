"""The ``oktyv-nb`` command line (SPEC §15): exit codes 0 / 1 / 2, what goes to stdout and
stderr, and never a traceback for a user error. The main cases run it as a subprocess
(``python -m oktyv_nb``); the rest call :func:`oktyv_nb.cli.main` in-process."""

from __future__ import annotations

import csv
import json
import os
import pty
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from oktyv_nb import cli

PROJECT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(PROJECT)}

DIAMOND = {
    "tasks": [
        {"id": "a", "tool": "sleep", "params": {"seconds": 0.05, "value": {"user": "ada"}}},
        {"id": "b", "tool": "sleep", "params": {"seconds": 0.05, "value": "${a.result.user}"}},
        {"id": "c", "tool": "sqlite", "params": {
            "database": ":memory:", "sql": "SELECT upper(?) AS name",
            "params": ["${a.result.user}"]}},
        {"id": "d", "tool": "file_write", "params": {
            "path": "report.json", "content": {"b": "${b.result}", "c": "${c.result}"}}},
    ],
    "config": {"maxConcurrent": 4},
}
PARTIAL = {
    "tasks": [
        {"id": "fine", "tool": "sleep", "params": {"seconds": 0}},
        {"id": "broken", "tool": "file_read", "params": {"path": "no/such/file.txt"}},
        {"id": "after", "tool": "sleep", "params": {"seconds": 0}, "dependsOn": ["broken"]},
    ],
}
CYCLIC = {
    "tasks": [
        {"id": "a", "tool": "sleep", "params": {"seconds": 0}, "dependsOn": ["b"]},
        {"id": "b", "tool": "sleep", "params": {"seconds": 0}, "dependsOn": ["a"]},
    ],
}


def oktyv(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "oktyv_nb", *args], cwd=cwd, env=ENV, input=stdin,
        capture_output=True, text=True, timeout=120,
    )


@pytest.fixture
def work(tmp_path: Path) -> Path:
    for name, request in (("diamond", DIAMOND), ("partial", PARTIAL), ("cyclic", CYCLIC)):
        (tmp_path / f"{name}.json").write_text(json.dumps(request))
    return tmp_path


def test_run_success_prints_the_tasks_and_stats(work: Path) -> None:
    proc = oktyv("run", "diamond.json", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # stderr is not a terminal: no progress bar
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["task", "status", "attempts", "duration_s", "error"]
    assert [line.split()[:3] for line in lines[1:5]] == [
        [t, "success", "1"] for t in "abcd"
    ]
    assert "status: success" in proc.stdout
    assert "critical_path: a → b → d" in proc.stdout
    assert "makespan_s:" in proc.stdout and "speedup:" in proc.stdout
    assert json.loads((work / "report.json").read_text()) == {"b": "ada", "c": [{"name": "ADA"}]}


def test_run_writes_json_csv_and_svg(work: Path) -> None:
    proc = oktyv("run", "diamond.json", "-q", "--json", "result.json", "--csv", "run.csv",
                 "--svg", "run.svg", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # --quiet
    result = json.loads((work / "result.json").read_text())
    assert result["status"] == "success" and set(result["tasks"]) == set("abcd")
    rows = list(csv.DictReader((work / "run.csv").open(newline="")))
    assert [r["task_id"] for r in rows] == list("abcd")
    assert len((work / "run.csv").read_text().splitlines()) == 5  # header + one per task
    assert json.loads(rows[2]["result"]) == [{"name": "ADA"}]
    assert json.loads(rows[3]["depends_on"]) == ["b", "c"]
    unwritable = oktyv("run", "diamond.json", "-q", "--json", "no/dir/r.json", cwd=work)
    assert unwritable.returncode == 2
    assert unwritable.stderr.startswith("oktyv-nb: error: FILE_UNWRITABLE: cannot write")
    assert (work / "run.svg").read_text().lstrip().startswith(("<?xml", "<svg"))


def test_run_partial_exits_1_with_the_errors_in_the_table(work: Path) -> None:
    proc = oktyv("run", "partial.json", cwd=work)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()[1:4]}
    assert rows["fine"].split()[1] == "success"
    assert rows["broken"].split()[1] == "failed"
    assert "FileNotFoundError: file_read: path 'no/such/file.txt' does not exist" in rows["broken"]
    assert "DEPENDENCY_FAILED" in rows["after"] and rows["after"].split()[1] == "skipped"
    assert "status: partial" in proc.stdout


def test_invalid_request_exits_2_with_the_code_on_stderr(work: Path) -> None:
    proc = oktyv("run", "cyclic.json", cwd=work)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (
        "oktyv-nb: error: CIRCULAR_DEPENDENCY: Circular dependency detected: a → b → a\n"
    )


def test_missing_file_and_bad_json_exit_2(work: Path) -> None:
    missing = oktyv("run", "nope.json", cwd=work)
    assert missing.returncode == 2
    assert missing.stderr == (
        "oktyv-nb: error: FILE_NOT_FOUND: request file 'nope.json' does not exist\n"
    )
    (work / "broken.json").write_text('{"tasks": [')
    broken = oktyv("validate", "broken.json", cwd=work)
    assert broken.returncode == 2
    assert broken.stderr.startswith("oktyv-nb: error: INVALID_JSON: broken.json is not JSON")
    for proc in (missing, broken):
        assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_request_from_stdin(work: Path) -> None:
    proc = oktyv("run", "-", cwd=work, stdin=json.dumps(PARTIAL))
    assert proc.returncode == 1
    assert "broken" in proc.stdout


def test_progress_bar_on_a_terminal(work: Path) -> None:
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "oktyv_nb", "run", "diamond.json"], cwd=work, env=ENV,
            stdout=subprocess.PIPE, stderr=follower, text=True, timeout=120,
        )
    finally:
        os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert proc.returncode == 0
    text = seen.decode()
    assert "diamond: 4/4 done (4 success)" in text
    assert text.endswith("\r\x1b[K")  # the bar is cleared before the table
    assert "█" not in proc.stdout


def test_root_confines_and_refuses_shell(work: Path) -> None:
    root = work / "root"
    root.mkdir()
    (work / "escape.json").write_text(json.dumps({"tasks": [
        {"id": "in", "tool": "file_write", "params": {"path": "in.txt", "content": "x"}},
        {"id": "out", "tool": "file_write", "params": {"path": "../out.txt", "content": "x"}},
    ]}))
    proc = oktyv("run", "escape.json", "--root", "root", cwd=work)
    assert proc.returncode == 1
    assert "PATH_OUTSIDE_ROOT" in proc.stdout
    assert (root / "in.txt").exists() and not (work / "out.txt").exists()

    shell = {"tasks": [{"id": "sh", "tool": "shell", "params": {"argv": ["true"]}}]}
    (work / "shell.json").write_text(json.dumps(shell))
    refused = oktyv("run", "shell.json", "--root", "root", cwd=work)
    assert refused.returncode == 2
    assert refused.stderr.startswith("oktyv-nb: error: TOOL_NOT_ALLOWED: Task sh uses tool")
    assert oktyv("run", "shell.json", "--root", "root", "--allow-shell", cwd=work).returncode == 0
    assert oktyv("run", "shell.json", cwd=work).returncode == 0  # no root: not confined


# ---------------------------------------------------------------------------- in-process


def test_validate_prints_the_levels(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", str(work / "diamond.json")]) == 0
    out = capsys.readouterr().out
    assert out == "valid: 4 tasks in 3 levels\nlevel 0: a\nlevel 1: b, c\nlevel 2: d\n"
    assert cli.main(["validate", str(work / "cyclic.json")]) == 2
    assert "CIRCULAR_DEPENDENCY" in capsys.readouterr().err


def test_malformed_request(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (work / "bad.json").write_text(json.dumps({"tasks": [{"id": "", "tool": "sleep"}],
                                               "config": {"failureMode": "panic"}}))
    assert cli.main(["run", str(work / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("oktyv-nb: error: INVALID_REQUEST: 2 validation errors")
    assert "tasks.0.id" in err and "config.failureMode" in err
    (work / "list.json").write_text("[1, 2]")
    assert cli.main(["validate", str(work / "list.json")]) == 2
    assert "INVALID_OPTION: request must be" in capsys.readouterr().err


def test_graph(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dot = work / "dag.dot"
    assert cli.main(["graph", str(work / "diamond.json"), "-o", str(dot)]) == 0
    assert "digraph" in dot.read_text() and "a -> b" in dot.read_text()
    svg = work / "dag.svg"
    assert cli.main(["graph", str(work / "diamond.json"), "-o", str(svg)]) == 0
    assert "<svg" in svg.read_text()
    assert cli.main(["graph", str(work / "diamond.json"), "-o", str(work / "dag.txt")]) == 2
    assert "USAGE: -o" in capsys.readouterr().err


def test_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert set(schema["properties"]) == {"tasks", "config"}
    assert "dependsOn" in schema["$defs"]["TaskSpec"]["properties"]


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    with pytest.raises(SystemExit) as info:
        cli.main(["frobnicate"])
    assert info.value.code == 2
    assert "oktyv-nb: error: USAGE: argument COMMAND: invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli.main(["run"])
    assert info.value.code == 2
    assert "USAGE: the following arguments are required: REQUEST" in capsys.readouterr().err


def test_tools_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture[str]) -> None:
    from oktyv_nb.model.registry import default_registry

    monkeypatch.setattr(default_registry, "_tools", dict(default_registry._tools))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cli_test_tools.py").write_text(textwrap.dedent("""
        def add(a: int, b: int) -> int:
            return a + b
        TOOLS = {"add": add}
    """))
    (tmp_path / "sum.json").write_text(json.dumps({"tasks": [
        {"id": "s", "tool": "add", "params": {"a": 2, "b": 3}}]}))
    monkeypatch.delitem(sys.modules, "cli_test_tools", raising=False)
    assert cli.main(["run", "sum.json"]) == 2
    assert "TOOL_NOT_FOUND" in capsys.readouterr().err
    assert cli.main(["run", "sum.json", "--tools", "cli_test_tools", "--json", "r.json"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["tasks"]["s"]["result"] == 5
    assert cli.main(["run", "sum.json", "--tools", "no_such_module_here"]) == 2
    assert "INVALID_OPTION: cannot import tools module" in capsys.readouterr().err


def test_csv_cells_never_span_lines() -> None:
    import pandas as pd

    df = pd.DataFrame({"text": ["one line", "two\nlines", None], "obj": [{"a": 1}, [1], None]})
    out = cli.csv_frame(df)
    assert out["text"].tolist() == ["one line", '"two\\nlines"', ""]
    assert out["obj"].tolist() == ['{"a": 1}', "[1]", ""]


def test_run_into_a_store_then_list_and_show_it_from_another_process(work: Path) -> None:
    db = work / "runs.sqlite"
    first = oktyv("run", "diamond.json", "--store", str(db), cwd=work)
    assert first.returncode == 0, first.stderr
    stored = [line for line in first.stdout.splitlines() if line.strip().startswith("stored:")]
    assert len(stored) == 1
    run_id = stored[0].split()[1]
    assert oktyv("run", "partial.json", "--store", str(db), cwd=work).returncode == 1
    listed = oktyv("runs", str(db), cwd=work)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert "status" in lines[0] and "makespan_s" in lines[0]
    rows = [line for line in lines[2:] if line.strip()]
    assert len(rows) == 2 and "partial" in rows[0] and run_id in rows[1]  # newest first
    assert "diamond" in rows[1] and "success" in rows[1]
    only = oktyv("runs", str(db), "--dag", "diamond", cwd=work)
    assert len([line for line in only.stdout.splitlines()[2:] if line.strip()]) == 1
    shown = oktyv("runs", str(db), "--show", run_id[:8], cwd=work)
    assert shown.returncode == 0, shown.stderr
    assert f"run: {run_id} (success)" in shown.stdout and "makespan_s" in shown.stdout
    for task in ("a", "b", "c", "d"):
        assert any(line.split()[:2] == [task, "success"] for line in shown.stdout.splitlines())


def test_runs_of_a_missing_store_or_run_exit_2(work: Path) -> None:
    missing = oktyv("runs", str(work / "none.sqlite"), cwd=work)
    assert missing.returncode == 2
    assert missing.stderr.startswith("oktyv-nb: error: FILE_NOT_FOUND")
    db = work / "runs.sqlite"
    assert oktyv("run", "diamond.json", "--store", str(db), "-q", cwd=work).returncode == 0
    unknown = oktyv("runs", str(db), "--show", "ffffffff", cwd=work)
    assert unknown.returncode == 2 and "RUN_NOT_FOUND" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    not_a_store = work / "diamond.json"
    bad = oktyv("runs", str(not_a_store), cwd=work)
    assert bad.returncode == 2 and "NOT_A_STORE" in bad.stderr
