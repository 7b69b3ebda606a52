"""The sandbox for requests that come from outside: what they may run and touch (SPEC §15).

A request is data: it names tools, it never carries code. What a sandboxed run may call is
a :class:`~oktyv_nb.model.registry.ToolTable` chosen by whoever starts it (the MCP server and
the CLI: the built-ins plus the tools of the modules named with ``--tools``, see
:func:`tools_from_modules`); a name that is not in it is ``TOOL_NOT_FOUND``, and nothing is
ever imported because a request names it.

:class:`Sandbox` adds two rules on top, applied when a graph is built (:meth:`Sandbox.guard`):

* with a ``root`` directory, the built-in file tools (``file_write``, ``file_read``,
  ``file_copy``, ``file_move``) and ``sqlite``'s ``database`` are confined to it: relative
  paths resolve against the root; a path that resolves outside it (``..``, an absolute path
  elsewhere, a symlink pointing out) fails **that task** with ``PATH_OUTSIDE_ROOT`` before
  the file is opened. ``sqlite`` cannot ``ATTACH`` (or ``VACUUM INTO``) another file there.
  ``shell`` (when allowed) runs in the root unless its ``cwd`` names a directory inside it.
  Results name files relative to the root, so they do not show where the root is;
* with ``allow_shell=False``, a task (or rollback) calling ``shell`` is refused at
  validation with ``TOOL_NOT_ALLOWED``.

The built-ins are recognised by identity, whatever name they are registered under; tools
of your own are your code and are not confined. The checks resolve paths when the tool
runs: they keep requests inside the root, not another process racing to swap symlinks in
it. ``shell`` can do anything its program can, root or not: that is why the server refuses
it unless started with ``--allow-shell``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sqlite3
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from oktyv_nb.errors import InvalidOptionError, PathOutsideRootError, ToolNotAllowedError
from oktyv_nb.model import tools as builtin
from oktyv_nb.model.registry import ToolTable, default_registry

__all__ = [
    "CONFINED_TOOLS", "ConfinedTool", "Sandbox", "as_sandbox", "confine_path",
    "tools_from_modules",
]

Tool = Callable[..., Any]

#: The built-in tools a root confines, by name (``shell`` only has its ``cwd`` confined).
CONFINED_TOOLS = ("file_write", "file_read", "file_copy", "file_move", "sqlite", "shell")
_BY_IDENTITY = {id(builtin.BUILTIN_TOOLS[name]): name for name in CONFINED_TOOLS}


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(path))


def confine_path(root: Path, value: Any, tool: str, param: str) -> Path:
    """``value`` (a path param of ``tool``) as a path inside ``root`` (a resolved directory).

    A relative path resolves against ``root``. Raises :class:`PathOutsideRootError` when the
    path, once ``..`` and every symlink are resolved, is outside ``root``. The path returned
    has its directories resolved and keeps its last component, so the tool still acts on a
    symlink inside the root (moving the link, writing through it) as it would elsewhere.
    """
    path = builtin._check_path(tool, param, value)
    candidate = path if path.is_absolute() else root / path
    if not _inside(_real(candidate), root):
        raise PathOutsideRootError(
            f"{tool}: {param} {os.fspath(value)!r} resolves outside the root directory; "
            "paths must stay inside it (relative paths resolve against the root)"
        )
    name = candidate.name
    if name in ("", ".", ".."):
        return _real(candidate)
    return _real(candidate.parent) / name


def _inside(real: Path, root: Path) -> bool:
    return real == root or real.is_relative_to(root)


class ConfinedTool:
    """A built-in tool confined to a root directory (see the module's docstring).

    Called like the built-in (same signature, which :func:`inspect.signature` shows through
    ``__wrapped__``); picklable, so it runs on the process and Dask backends too.
    """

    __slots__ = ("name", "root")

    def __init__(self, name: str, root: str | os.PathLike[str]) -> None:
        if name not in CONFINED_TOOLS:
            raise ValueError(f"no confined form of tool {name!r}; there are {CONFINED_TOOLS}")
        self.name = name
        self.root = _real(root)

    @property
    def __wrapped__(self) -> Tool:
        return builtin.BUILTIN_TOOLS[self.name]

    @property
    def __name__(self) -> str:
        return self.name

    def __reduce__(self) -> tuple[Any, ...]:
        return (ConfinedTool, (self.name, str(self.root)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConfinedTool):
            return NotImplemented
        return (self.name, self.root) == (other.name, other.root)

    def __hash__(self) -> int:
        return hash((self.name, self.root))

    def __repr__(self) -> str:
        return f"<ConfinedTool {self.name} root={str(self.root)!r}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        fn = self.__wrapped__
        bound = inspect.signature(fn).bind(*args, **kwargs)  # TypeError as the tool gives
        params = bound.arguments
        name, root = self.name, self.root
        if name in ("file_write", "file_read"):
            params["path"] = confine_path(root, params["path"], name, "path")
        elif name in ("file_copy", "file_move"):
            source = confine_path(root, params["source"], name, "source")
            dest = confine_path(root, params["dest"], name, "dest")
            if dest.is_dir():  # the tool writes dest/<source name>: that must stay inside too
                confine_path(root, dest / source.name, name, "dest")
            params["source"], params["dest"] = source, dest
        elif name == "shell":
            cwd = params.get("cwd")
            params["cwd"] = root if cwd is None else confine_path(root, cwd, name, "cwd")
        else:  # sqlite
            return self._sqlite(params)
        return self._relative(fn(**params))

    def _sqlite(self, params: dict[str, Any]) -> Any:
        database = params["database"]
        if database != ":memory:":
            database = confine_path(self.root, database, "sqlite", "database")
        denied: list[str] = []

        def authorize(action: int, arg1: Any, *_: Any) -> int:
            if action == sqlite3.SQLITE_ATTACH:
                denied.append(str(arg1))
                return sqlite3.SQLITE_DENY
            return sqlite3.SQLITE_OK

        def configure(conn: sqlite3.Connection) -> None:
            conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
            conn.set_authorizer(authorize)

        try:
            return builtin.run_sql(
                database, params["sql"], params.get("params"), configure=configure
            )
        except sqlite3.DatabaseError:
            if denied:
                raise PathOutsideRootError(
                    "sqlite: ATTACH and VACUUM INTO are refused under a root directory: they "
                    "open database files other than `database`"
                ) from None
            raise

    def _relative(self, result: Any) -> Any:
        """The tool's result with the files it names relative to the root."""
        if isinstance(result, dict):
            for key in ("path", "source", "dest"):
                value = result.get(key)
                if isinstance(value, str) and os.path.isabs(value):
                    real = _real(value)
                    if _inside(real, self.root):
                        result[key] = real.relative_to(self.root).as_posix() or "."
        return result


class Sandbox:
    """What a run may call and touch: ``root`` confines the built-in file tools and
    ``sqlite`` to a directory (None: no confinement); ``allow_shell=False`` refuses
    ``shell`` at validation (``TOOL_NOT_ALLOWED``). See the module's docstring."""

    __slots__ = ("_confined", "allow_shell", "root")

    def __init__(self, root: str | os.PathLike[str] | None = None, *, allow_shell: bool = True):
        self.root: Path | None = None
        if root is not None:
            if isinstance(root, bytes) or not isinstance(root, str | os.PathLike):
                raise InvalidOptionError(
                    f"root must be a directory path (str or pathlib.Path), got "
                    f"{type(root).__name__}", option="root",
                )
            real = _real(root)
            if not real.is_dir():
                raise InvalidOptionError(
                    f"root {os.fspath(root)!r} is not an existing directory; create it first",
                    option="root",
                )
            self.root = real
        self.allow_shell = bool(allow_shell)
        self._confined: dict[str, ConfinedTool] = {}

    def __repr__(self) -> str:
        root = str(self.root) if self.root is not None else None
        return f"Sandbox(root={root!r}, allow_shell={self.allow_shell})"

    def guard(self, table: ToolTable) -> ToolTable:
        """``table`` with this sandbox's rules applied to every lookup."""
        return GuardedTable(table, self)

    def admit(self, fn: Tool, name: str, task_id: str | None = None) -> Tool:
        """The callable a task calling ``fn`` (registered as ``name``) runs under this
        sandbox: ``fn`` itself, or its confined form; raises ToolNotAllowedError."""
        which = _BY_IDENTITY.get(id(fn))
        if which is None or builtin.BUILTIN_TOOLS[which] is not fn:
            return fn
        if which == "shell" and not self.allow_shell:
            who = f"Task {task_id} uses" if task_id else "A task uses"
            alias = "" if name == "shell" else " (the built-in shell)"
            raise ToolNotAllowedError(
                f"{who} tool {name!r}{alias}, which is not allowed here: requests may not run "
                "programs unless shell is allowed (--allow-shell)",
                task_id=task_id, tool=name,
            )
        if self.root is None:
            return fn
        confined = self._confined.get(which)
        if confined is None:
            confined = self._confined[which] = ConfinedTool(which, self.root)
        return confined


def as_sandbox(root: str | os.PathLike[str] | Sandbox | None) -> Sandbox | None:
    """The sandbox a ``root=`` option asks for: None, the Sandbox given, or one confining
    to the directory given (``shell`` stays allowed there, its ``cwd`` confined)."""
    if root is None or isinstance(root, Sandbox):
        return root
    return Sandbox(root)


class GuardedTable(ToolTable):
    """A tool table whose :meth:`lookup` applies a :class:`Sandbox` (what graphs use)."""

    def __init__(self, table: ToolTable, sandbox: Sandbox) -> None:
        super().__init__(table)
        self.sandbox = sandbox

    def lookup(self, name: str, task_id: str | None = None) -> Tool:
        return self.sandbox.admit(super().lookup(name, task_id), name, task_id)


def tools_from_modules(names: Iterable[str]) -> dict[str, Tool]:
    """Import the modules ``names`` (dotted module names) and collect their tools.

    A module's tools are its ``TOOLS`` mapping (name -> callable) and the callables it
    registers with ``ok.tool`` (decorated functions defined in it). The working directory
    is searched too, so ``--tools mytools`` finds ``./mytools.py``. Raises
    :class:`~oktyv_nb.errors.InvalidOptionError` (option ``tools``) when a module cannot be
    imported, holds no tools, or two modules give one name to different callables.
    """
    found: dict[str, Tool] = {}
    origin: dict[str, str] = {}
    for module_name in names:
        for tool_name, fn in _module_tools(module_name).items():
            if tool_name in found and found[tool_name] is not fn:
                raise InvalidOptionError(
                    f"tool {tool_name!r} is defined by both module {origin[tool_name]} and "
                    f"module {module_name}; rename one", option="tools",
                )
            found[tool_name] = fn
            origin[tool_name] = module_name
    return found


def _module_tools(module_name: str) -> dict[str, Tool]:
    if not isinstance(module_name, str) or not module_name.strip():
        raise InvalidOptionError(
            f"a tools module must be a module name, got {module_name!r}", option="tools"
        )
    before = dict(default_registry.items())
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise InvalidOptionError(
            f"cannot import tools module {module_name!r}: {type(exc).__name__}: {exc}",
            option="tools",
        ) from exc
    finally:
        if added:
            sys.path.remove(cwd)
    tools: dict[str, Tool] = {}
    table = getattr(module, "TOOLS", None)
    if table is not None:
        if not isinstance(table, Mapping) or not all(
            isinstance(k, str) and k and callable(v) for k, v in table.items()
        ):
            raise InvalidOptionError(
                f"tools module {module_name!r}: TOOLS must map tool names to callables",
                option="tools",
            )
        tools.update(table)
    for name, fn in default_registry.items():
        defined_here = getattr(inspect.unwrap(fn), "__module__", None) == module.__name__
        if before.get(name) is not fn or defined_here:
            tools.setdefault(name, fn)
    if not tools:
        raise InvalidOptionError(
            f"tools module {module_name!r} has no tools: give it a TOOLS = {{name: callable}} "
            "mapping or decorate its functions with @ok.tool", option="tools",
        )
    return tools
