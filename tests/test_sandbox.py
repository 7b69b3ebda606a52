"""The sandbox for requests from outside (SPEC §15): root confinement, shell refusal, and
tools only from what the caller provides."""

from __future__ import annotations

import os
import pickle
import sys
import textwrap
from pathlib import Path

import pytest

import oktyv_nb as ok
from oktyv_nb.model.registry import ToolTable, default_registry
from oktyv_nb.model.sandbox import ConfinedTool, Sandbox, confine_path, tools_from_modules
from oktyv_nb.model.tools import BUILTIN_TOOLS


@pytest.fixture
def box(tmp_path: Path) -> tuple[Path, Path]:
    """A root directory and a sibling ``outside`` directory holding a secret file."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret")
    return root, outside


def _run(request: dict, root: object, **kwargs: object) -> ok.ExecutionResult:
    return ok.execute_request(request, root=root, **kwargs)  # type: ignore[arg-type]


def _task(tid: str, tool: str, **params: object) -> dict:
    return {"id": tid, "tool": tool, "params": params}


def _code(result: ok.ExecutionResult, tid: str) -> str | None:
    err = result.tasks[tid].error
    return err.code if err is not None else None


def test_relative_paths_resolve_against_the_root(box: tuple[Path, Path]) -> None:
    root, _ = box
    result = _run({"tasks": [
        _task("w", "file_write", path="sub/a.txt", content="hello"),
        _task("r", "file_read", path="${w.result.path}"),
        _task("c", "file_copy", source="${w.result.path}", dest="sub/b.txt"),
        _task("m", "file_move", source="${c.result.dest}", dest="moved.txt"),
    ]}, root)
    assert result.status == "success"
    assert result.tasks["w"].result == {"path": "sub/a.txt", "bytes": 5}  # relative to root
    assert result.tasks["r"].result == "hello"
    assert result.tasks["m"].result["dest"] == "moved.txt"
    assert (root / "sub" / "a.txt").read_text() == "hello"
    assert (root / "moved.txt").read_text() == "hello"
    assert not (root / "sub" / "b.txt").exists()


def test_dotdot_and_absolute_paths_outside_fail_the_task(box: tuple[Path, Path]) -> None:
    root, outside = box
    result = _run({"tasks": [
        _task("up", "file_write", path="../outside/x.txt", content="no"),
        _task("deep", "file_write", path="sub/../../x.txt", content="no"),
        _task("abs", "file_write", path=str(outside / "y.txt"), content="no"),
        _task("read", "file_read", path=str(outside / "secret.txt")),
        _task("copy_out", "file_copy", source="../outside/secret.txt", dest="stolen.txt"),
        _task("ok", "file_write", path=str(root / "inside.txt"), content="yes"),
    ]}, root)
    assert result.status == "partial"
    for tid in ("up", "deep", "abs", "read", "copy_out"):
        assert result.tasks[tid].status == "failed"
        assert _code(result, tid) == "PATH_OUTSIDE_ROOT", tid
        assert "resolves outside the root" in result.tasks[tid].error.message
    assert result.tasks["ok"].result == {"path": "inside.txt", "bytes": 3}
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert not (root / "stolen.txt").exists()
    assert not (root.parent / "x.txt").exists()
    assert "top secret" not in result.to_json()


def test_symlinks_that_leave_the_root_fail(box: tuple[Path, Path]) -> None:
    root, outside = box
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "secret_link").symlink_to(outside / "secret.txt")
    (root / "here.txt").write_text("inside")
    (root / "inner_link").symlink_to(root / "here.txt")
    result = _run({"tasks": [
        _task("write_through_dir", "file_write", path="escape/new.txt", content="no"),
        _task("read_link", "file_read", path="secret_link"),
        _task("overwrite_link", "file_write", path="secret_link", content="pwned"),
        _task("move_into", "file_move", source="here.txt", dest="escape"),
        _task("inner", "file_read", path="inner_link"),
    ]}, root)
    for tid in ("write_through_dir", "read_link", "overwrite_link", "move_into"):
        assert _code(result, tid) == "PATH_OUTSIDE_ROOT", tid
    assert result.tasks["inner"].result == "inside"  # a link that stays inside is fine
    assert (outside / "secret.txt").read_text() == "top secret"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (root / "here.txt").exists()


def test_copy_into_a_directory_checks_the_file_it_creates(box: tuple[Path, Path]) -> None:
    root, outside = box
    (root / "a.txt").write_text("a")
    (root / "d").mkdir()
    (root / "d" / "a.txt").symlink_to(outside / "target.txt")  # dest/<name> points out
    result = _run({"tasks": [_task("c", "file_copy", source="a.txt", dest="d")]}, root)
    assert _code(result, "c") == "PATH_OUTSIDE_ROOT"
    assert not (outside / "target.txt").exists()


def test_sqlite_database_is_confined_and_cannot_attach(box: tuple[Path, Path]) -> None:
    root, outside = box
    result = _run({"tasks": [
        _task("make", "sqlite", database="data.db", sql="CREATE TABLE t (x)"),
        {**_task("put", "sqlite", database="data.db", sql="INSERT INTO t VALUES (?)",
                 params=[7]), "dependsOn": ["make"]},
        {**_task("get", "sqlite", database="data.db", sql="SELECT x FROM t"),
         "dependsOn": ["put"]},
        _task("mem", "sqlite", database=":memory:", sql="SELECT 1 AS one"),
        _task("out", "sqlite", database=str(outside / "o.db"), sql="SELECT 1"),
        _task("attach", "sqlite", database="data.db",
              sql=f"ATTACH DATABASE '{outside / 'a.db'}' AS a"),
        _task("vacuum", "sqlite", database="data.db", sql=f"VACUUM INTO '{outside / 'v.db'}'"),
    ]}, root)
    assert result.tasks["put"].status == "success"
    assert result.tasks["get"].result == [{"x": 7}]
    assert result.tasks["mem"].result == [{"one": 1}]
    for tid in ("out", "attach", "vacuum"):
        assert _code(result, tid) == "PATH_OUTSIDE_ROOT", tid
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_shell_is_refused_at_validation_unless_allowed(box: tuple[Path, Path]) -> None:
    root, _ = box
    strict = Sandbox(root, allow_shell=False)
    request = {"tasks": [_task("sh", "shell", argv=["touch", "made"])]}
    with pytest.raises(ok.ToolNotAllowedError) as info:
        _run(request, strict)
    assert info.value.code == "TOOL_NOT_ALLOWED"
    assert info.value.task_id == "sh"
    assert isinstance(info.value, ok.OktyvError)
    # under another name, and as a rollback tool, it is the same built-in
    with pytest.raises(ok.ToolNotAllowedError):
        _run({"tasks": [_task("x", "run_it", argv=["true"])]}, strict,
             tools={"run_it": BUILTIN_TOOLS["shell"]})
    rollback = {"tasks": [{**_task("w", "file_write", path="a", content="x"),
                           "rollback": {"tool": "shell", "params": {"argv": ["rm", "a"]}}}]}
    with pytest.raises(ok.ToolNotAllowedError):
        _run(rollback, strict)
    assert not (root / "made").exists()
    # structural errors come first
    cyclic = {"tasks": [{**_task("a", "shell", argv=["x"]), "dependsOn": ["a"]}]}
    with pytest.raises(ok.CircularDependencyError):
        _run(cyclic, strict)


def test_allowed_shell_runs_in_the_root_and_its_cwd_is_confined(
    box: tuple[Path, Path],
) -> None:
    root, outside = box
    (root / "sub").mkdir()
    result = _run({"tasks": [
        _task("pwd", "shell", argv=[sys.executable, "-c", "import os; print(os.getcwd())"]),
        _task("sub", "shell", argv=[sys.executable, "-c", "import os; print(os.getcwd())"],
              cwd="sub"),
        _task("out", "shell", argv=["true"], cwd=str(outside)),
    ]}, root)
    assert result.tasks["pwd"].result["stdout"].strip() == os.path.realpath(root)
    assert result.tasks["sub"].result["stdout"].strip() == os.path.realpath(root / "sub")
    assert _code(result, "out") == "PATH_OUTSIDE_ROOT"


def test_dag_root_confines_callables_and_is_kept(box: tuple[Path, Path]) -> None:
    root, _ = box
    dag = (
        ok.DAG("files", root=root)
        .task("w", ok.tools.file_write, path="a.txt", content="A")
        .task("bad", ok.tools.file_write, path="../b.txt", content="B")
    )
    assert dag.root == Path(os.path.realpath(root))
    run = dag.run(live=False)
    assert run.records["w"].status == "success"
    assert run.records["bad"].error.code == "PATH_OUTSIDE_ROOT"
    assert (root / "a.txt").read_text() == "A"
    assert dag.copy().root == dag.root
    again = ok.DAG.from_request(dag.to_request(), root=root)
    assert again.run(live=False).records["bad"].error.code == "PATH_OUTSIDE_ROOT"
    # without a root nothing is confined
    free = ok.DAG().task("w", ok.tools.file_write, path=str(root / "free.txt"), content="F")
    assert free.root is None
    assert free.run(live=False).status == "success"


def test_own_tools_are_not_confined(box: tuple[Path, Path]) -> None:
    root, outside = box

    def read_anything(path: str) -> str:
        return Path(path).read_text()

    result = _run({"tasks": [_task("r", "mine", path=str(outside / "secret.txt"))]}, root,
                  tools={"mine": read_anything})
    assert result.tasks["r"].result == "top secret"


def test_a_request_cannot_name_code(box: tuple[Path, Path]) -> None:
    root, _ = box
    table = ToolTable(BUILTIN_TOOLS)
    for name in ("os.system", "oktyv_nb.model.tools.shell", "builtins.eval", "__import__"):
        with pytest.raises(ok.ToolNotFoundError):
            ok.execute_request({"tasks": [_task("x", name)]}, table, root=root)


def test_bad_roots(tmp_path: Path) -> None:
    with pytest.raises(ok.InvalidOptionError, match="not an existing directory"):
        Sandbox(tmp_path / "missing")
    (tmp_path / "file").write_text("")
    with pytest.raises(ok.InvalidOptionError):
        ok.DAG(root=tmp_path / "file")
    with pytest.raises(ok.InvalidOptionError):
        Sandbox(42)  # type: ignore[arg-type]


def test_confine_path_rules(box: tuple[Path, Path]) -> None:
    root, outside = box
    real = Path(os.path.realpath(root))
    assert confine_path(real, "a/b.txt", "t", "p") == real / "a" / "b.txt"
    assert confine_path(real, ".", "t", "p") == real
    assert confine_path(real, "a/..", "t", "p") == real
    with pytest.raises(ok.PathOutsideRootError):
        confine_path(real, "..", "t", "p")
    with pytest.raises(ok.PathOutsideRootError):
        confine_path(real, str(outside), "t", "p")
    with pytest.raises(ValueError, match="non-empty"):
        confine_path(real, "", "t", "p")


def test_confined_tools_pickle_and_keep_their_signature(box: tuple[Path, Path]) -> None:
    import inspect

    root, _ = box
    tool = ConfinedTool("file_write", root)
    again = pickle.loads(pickle.dumps(tool))
    assert again == tool
    assert inspect.signature(again) == inspect.signature(ok.tools.file_write)
    assert again(path="p.txt", content="x") == {"path": "p.txt", "bytes": 1}
    with pytest.raises(TypeError):
        again(path="p.txt", nonsense=1)


def test_confinement_holds_on_the_process_backend(box: tuple[Path, Path]) -> None:
    root, _ = box
    result = _run({"tasks": [
        _task("ok", "file_write", path="p.txt", content="x"),
        _task("bad", "file_write", path="../p.txt", content="x"),
    ]}, root, backend="processes")
    assert result.tasks["ok"].status == "success"
    assert _code(result, "bad") == "PATH_OUTSIDE_ROOT"
    assert not (root.parent / "p.txt").exists()


# ---------------------------------------------------------------------------- --tools modules


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(default_registry, "_tools", dict(default_registry._tools))
    for name in [m for m in sys.modules if m.startswith("sbx_")]:
        monkeypatch.delitem(sys.modules, name)
    return tmp_path


def test_tools_from_modules(module_dir: Path) -> None:
    (module_dir / "sbx_table.py").write_text(textwrap.dedent("""
        def double(x: int) -> int:
            return 2 * x
        TOOLS = {"double": double}
    """))
    (module_dir / "sbx_decorated.py").write_text(textwrap.dedent("""
        import oktyv_nb as ok

        @ok.tool
        def greet(name: str) -> str:
            return "hi " + name
    """))
    tools = tools_from_modules(["sbx_table", "sbx_decorated"])
    assert sorted(tools) == ["double", "greet"]
    assert tools["double"](x=2) == 4
    result = ok.execute_request(
        {"tasks": [_task("g", "greet", name="ada")]}, ToolTable(tools, BUILTIN_TOOLS)
    )
    assert result.tasks["g"].result == "hi ada"


def test_tools_modules_errors(module_dir: Path) -> None:
    (module_dir / "sbx_empty.py").write_text("x = 1\n")
    (module_dir / "sbx_broken.py").write_text("raise RuntimeError('boom')\n")
    (module_dir / "sbx_bad_table.py").write_text("TOOLS = {'x': 1}\n")
    (module_dir / "sbx_one.py").write_text("def f(): pass\nTOOLS = {'f': f}\n")
    (module_dir / "sbx_two.py").write_text("def f(): pass\nTOOLS = {'f': f}\n")
    with pytest.raises(ok.InvalidOptionError, match="has no tools"):
        tools_from_modules(["sbx_empty"])
    with pytest.raises(ok.InvalidOptionError, match=r"cannot import .*boom"):
        tools_from_modules(["sbx_broken"])
    with pytest.raises(ok.InvalidOptionError, match="cannot import"):
        tools_from_modules(["sbx_no_such_module"])
    with pytest.raises(ok.InvalidOptionError, match="TOOLS must map"):
        tools_from_modules(["sbx_bad_table"])
    with pytest.raises(ok.InvalidOptionError, match="defined by both"):
        tools_from_modules(["sbx_one", "sbx_two"])
