"""The command line: ``oktyv-nb`` (also ``python -m oktyv_nb``), for scripts and CI (SPEC §15).

Commands::

    oktyv-nb run REQUEST.json|- [--tools MODULE] [--root DIR] [--allow-shell]
                 [--csv OUT.csv] [--json OUT.json] [--svg OUT.svg] [--store DB] [--quiet]
    oktyv-nb validate REQUEST.json|- [--tools MODULE] [--root DIR] [--allow-shell]
    oktyv-nb graph REQUEST.json|- -o DAG.svg|DAG.png|DAG.dot [--tools MODULE]
    oktyv-nb schema
    oktyv-nb runs DB [--dag NAME] [-n N] [--show ID]

``run`` shows a progress bar on stderr when stderr is a terminal, then prints a table of
the tasks (id, status, attempts, duration in seconds, error) and the run's statistics.
``--root DIR`` runs the request as the MCP server does: the file tools and ``sqlite`` are
confined to DIR and ``shell`` is refused unless ``--allow-shell``; without ``--root``
nothing is confined. ``--store DB`` journals the run into that run store (SPEC §17), so
``runs DB`` lists it and ``runs DB --show ID`` prints it again, in another process.

Exit status: 0 the run succeeded (or the command did its job); 1 the run was partial or
failed; 2 the request is invalid, a file is missing or unreadable, or the command line is
wrong, with ``oktyv-nb: error: CODE: message`` on stderr and no traceback; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import pandas as pd

    from oktyv_nb.dag import DAG
    from oktyv_nb.live import Frame
    from oktyv_nb.results.run import Run
    from oktyv_nb.store import RunStore

__all__ = ["main"]

PROG = "oktyv-nb"
USAGE = "USAGE"


class UserError(Exception):
    """A mistake of the caller: reported as ``CODE: message`` on stderr, exit status 2."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {USAGE}: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Run, check and draw oktyv-nb JSON requests (DAGs of tool calls).",
        epilog="Exit status: 0 success, 1 a partial or failed run, 2 an invalid request, a "
        "missing or unreadable file or a usage error.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def request_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("request", metavar="REQUEST", help="request JSON file, or - for stdin")

    def tools_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--tools", action="append", default=[], metavar="MODULE",
            help="import MODULE for its tools (TOOLS mapping or @ok.tool functions); "
            "repeatable",
        )

    def sandbox_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--root", metavar="DIR",
            help="confine the file tools and sqlite to DIR and refuse shell (as the MCP "
            "server does)",
        )
        p.add_argument(
            "--allow-shell", action="store_true", help="with --root: allow the shell tool"
        )

    run = sub.add_parser("run", help="run a request, print its tasks and statistics")
    request_arg(run)
    tools_arg(run)
    sandbox_args(run)
    run.add_argument("--csv", metavar="PATH", help="write the run's DataFrame as CSV")
    run.add_argument("--json", metavar="PATH", help="write the JSON result (SPEC §3)")
    run.add_argument("--svg", metavar="PATH", help="write the run's graph as SVG")
    run.add_argument(
        "--store", metavar="DB",
        help="journal the run into this run store (SQLite file; made if missing), and serve "
        "the cache of tasks with \"cache\" from it",
    )
    run.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar, table or statistics"
    )

    validate = sub.add_parser("validate", help="check a request and print its levels")
    request_arg(validate)
    tools_arg(validate)
    sandbox_args(validate)

    graph = sub.add_parser("graph", help="draw a request's DAG (.svg, .png or .dot)")
    request_arg(graph)
    graph.add_argument("-o", "--output", required=True, metavar="OUT", help="file to write")
    tools_arg(graph)

    sub.add_parser("schema", help="print the request's JSON schema")

    runs = sub.add_parser("runs", help="list the runs kept in a run store, newest first")
    runs.add_argument("store", metavar="DB", help="the run store (SQLite file)")
    runs.add_argument("--dag", metavar="NAME", help="only the runs of this DAG")
    runs.add_argument("-n", "--limit", type=int, metavar="N", help="at most N runs")
    runs.add_argument(
        "--show", metavar="ID",
        help="print one stored run's tasks and statistics (an id or a unique prefix)",
    )
    return parser


# ---------------------------------------------------------------------------- requests


def _read_request(source: str) -> tuple[Any, str | None]:
    """The parsed JSON of ``source`` (a path, or ``-`` for stdin) and a name for its DAG."""
    if source == "-":
        text, name, shown = sys.stdin.read(), None, "stdin"
    else:
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError("FILE_NOT_FOUND", f"request file {source!r} does not exist") from None
        except IsADirectoryError:
            raise UserError("FILE_UNREADABLE", f"{source!r} is a directory") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError("FILE_UNREADABLE", f"cannot read {source!r}: {exc}") from None
        name, shown = path.stem or None, source
    try:
        return json.loads(text), name
    except json.JSONDecodeError as exc:
        raise UserError(
            "INVALID_JSON",
            f"{shown} is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
        ) from None


def _load_dag(args: argparse.Namespace, sandboxed: bool) -> DAG:
    """The DAG of the request ``args`` name, with its tools and sandbox, validated."""
    from oktyv_nb.dag import DAG
    from oktyv_nb.model.sandbox import Sandbox, tools_from_modules

    data, name = _read_request(args.request)
    tools = tools_from_modules(args.tools)
    root = getattr(args, "root", None) if sandboxed else None
    sandbox = Sandbox(root, allow_shell=args.allow_shell) if root is not None else None
    dag = DAG.from_request(data, tools, name=_dag_name(name), root=sandbox)
    dag.validate()
    return dag


def _dag_name(name: str | None) -> str | None:
    return name if name and name.isprintable() else None


# ---------------------------------------------------------------------------- output


class _ProgressBar:
    """A one-line progress bar on stderr, fed the live view's frames (a terminal only)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.shown = False

    def __call__(self, frame: Frame) -> None:
        width = shutil.get_terminal_size((80, 20)).columns
        total = frame.total or 1
        cells = 20
        full = round(cells * frame.done / total)
        bar = "█" * full + "░" * (cells - full)
        line = f"{bar} {frame.text()}"[: max(width - 1, 10)]
        self.stream.write(f"\r{line}\x1b[K")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _first_line(text: str, limit: int = 72) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def task_table(run: Run) -> str:
    """The tasks of ``run`` as a plain text table: id, status, attempts, duration (s), error."""
    rows = [("task", "status", "attempts", "duration_s", "error")]
    for tid, rec in run.records.items():
        err = rec.error
        error = f"{err.code}: {_first_line(err.message)}" if err is not None else ""
        rows.append((tid, rec.status, str(rec.attempts), f"{rec.duration:.3f}", error))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].rjust(widths[2]),
                 r[3].rjust(widths[3]), r[4]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _csv_cell(value: Any) -> Any:
    """A cell of the CSV: text on one line as it is, anything else JSON-encoded."""
    from oktyv_nb.model.schema import jsonable

    if value is None or type(value).__name__ == "NAType" or (
        isinstance(value, float) and math.isnan(value)
    ):
        return ""
    if isinstance(value, str):
        return value if "\n" not in value and "\r" not in value else json.dumps(value)
    if isinstance(value, bool | int | float):
        return value
    return json.dumps(jsonable(value), ensure_ascii=False)


def csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` ready for CSV: object cells JSON-encoded, so no cell spans lines."""
    from pandas.api.types import is_object_dtype, is_string_dtype

    out = df.copy()
    for column in out.columns:
        values = out[column]
        if is_object_dtype(values.dtype) or is_string_dtype(values.dtype):
            out[column] = values.astype(object).map(_csv_cell).astype(object)
    return out


def _write_outputs(run: Run, args: argparse.Namespace) -> None:
    try:
        if args.json:
            Path(args.json).write_text(run.result.to_json(indent=2) + "\n", encoding="utf-8")
        if args.csv:
            csv_frame(run.df).to_csv(args.csv, lineterminator="\n")
        if args.svg:
            Path(args.svg).write_text(run.to_svg(), encoding="utf-8")
    except OSError as exc:
        raise UserError("FILE_UNWRITABLE", f"cannot write {exc.filename or ''}: {exc}") from None


# ---------------------------------------------------------------------------- commands


def _open_store(path: str, *, create: bool) -> RunStore:
    from oktyv_nb.store import RunStore

    if not create and not Path(path).is_file():
        raise UserError("FILE_NOT_FOUND", f"no run store at {path!r}")
    try:
        return RunStore(path)
    except OSError as exc:
        raise UserError("FILE_UNWRITABLE", f"cannot open the run store {path!r}: {exc}") from None


def _cmd_run(args: argparse.Namespace) -> int:
    dag = _load_dag(args, sandboxed=True)
    store = _open_store(args.store, create=True) if args.store else None
    bar = _ProgressBar(sys.stderr) if not args.quiet and sys.stderr.isatty() else None
    try:
        run = dag.run(live=bar if bar is not None else False, store=store)
    finally:
        if bar is not None:
            bar.clear()
    if not args.quiet:
        print(task_table(run))
        print()
        print(f"{'status':>16}: {run.status}")
        print(run.stats)
    _write_outputs(run, args)
    if store is not None:
        store.close()
        if not args.quiet:
            print(f"{'stored':>16}: {run.execution_id} in {args.store}")
    return 0 if run.status == "success" else 1


def _cmd_runs(args: argparse.Namespace) -> int:
    store = _open_store(args.store, create=False)
    try:
        if args.show:
            run = store.load(args.show)
            print(f"{'run':>16}: {run.execution_id} ({run.status})")
            print(task_table(run))
            print()
            print(run.stats)
            return 0
        df = store.runs(dag=args.dag, limit=args.limit)
    finally:
        store.close()
    if df.empty:
        print("no runs stored")
        return 0
    shown = df[["dag", "status", "start", "makespan_s", "tasks", "succeeded", "failed",
                "skipped"]].copy()
    shown["start"] = shown["start"].dt.strftime("%Y-%m-%d %H:%M:%S")
    print(shown.to_string(float_format=lambda v: f"{v:.3f}"))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from oktyv_nb.units import plural

    dag = _load_dag(args, sandboxed=True)
    levels = dag.levels
    print(f"valid: {plural(len(dag), 'task')} in {plural(len(levels), 'level')}")
    for k, level in enumerate(levels):
        print(f"level {k}: {', '.join(level)}")
    return 0


def _cmd_graph(args: argparse.Namespace) -> int:
    out = Path(args.output)
    suffix = out.suffix.lower()
    if suffix not in (".svg", ".png", ".dot", ".gv"):
        raise UserError(USAGE, f"-o {args.output!r}: the file must end in .svg, .png or .dot")
    dag = _load_dag(args, sandboxed=False)
    try:
        if suffix in (".dot", ".gv"):
            out.write_text(dag.graph().source, encoding="utf-8")
        else:
            dag.save_graph(out)
    except OSError as exc:
        raise UserError("FILE_UNWRITABLE", f"cannot write {args.output!r}: {exc}") from None
    print(f"wrote {out}")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from oktyv_nb.model.schema import request_json_schema

    print(json.dumps(request_json_schema(), indent=2, ensure_ascii=False))
    return 0


_COMMANDS = {
    "run": _cmd_run, "validate": _cmd_validate, "graph": _cmd_graph, "schema": _cmd_schema,
    "runs": _cmd_runs,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    from oktyv_nb.errors import OktyvException
    from oktyv_nb.model.schema import error_report

    try:
        return _COMMANDS[args.command](args)
    except UserError as exc:
        text = str(exc)
    except (OktyvException, ValueError) as exc:  # invalid request, bad option, no `dot`
        text = error_report(exc)[1]
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    print(f"{PROG}: error: {text}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
