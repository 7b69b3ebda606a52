"""``python -m oktyv_nb.mcp`` / ``oktyv-nb-mcp``: serve oktyv-nb over MCP on stdio.

Options: ``--tools MODULE`` (repeatable) adds the tools of a module (its ``TOOLS`` mapping
or its ``@ok.tool`` functions); ``--root DIR`` (default: the working directory) is the
directory the file tools and ``sqlite`` are confined to; ``--allow-shell`` lets requests
run programs with the ``shell`` tool. A bad option exits with status 2 and the error's
code and message on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oktyv-nb-mcp",
        description="Serve oktyv-nb's parallel_execute, validate_request and describe_tools "
        "over MCP (stdio).",
    )
    parser.add_argument(
        "--tools", action="append", default=[], metavar="MODULE",
        help="import MODULE and offer its tools (TOOLS mapping or @ok.tool functions); "
        "repeatable",
    )
    parser.add_argument(
        "--root", default=None, metavar="DIR",
        help="directory the file tools and sqlite are confined to (default: the working "
        "directory)",
    )
    parser.add_argument(
        "--allow-shell", action="store_true",
        help="let requests run programs with the shell tool (refused by default)",
    )
    return parser


def _drop_writable_paths(root: Path) -> None:
    """Take the root itself off ``sys.path`` (``python -m`` puts the working directory, the
    default root, first), so that a ``.py`` file a request writes there is never imported by
    a later ``import``. Directories below the root stay: code the server runs does not
    belong inside the root."""
    keep = []
    for entry in sys.path:
        try:
            real = Path(os.path.realpath(entry or os.getcwd()))
        except (OSError, ValueError):
            keep.append(entry)
            continue
        if real != root:
            keep.append(entry)
    sys.path[:] = keep


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from oktyv_nb.errors import OktyvException
    from oktyv_nb.model.sandbox import Sandbox, tools_from_modules

    try:  # checked before the SDK loads, so a bad option fails at once
        sandbox = Sandbox(
            os.getcwd() if args.root is None else args.root, allow_shell=args.allow_shell
        )
        tools = tools_from_modules(args.tools)
    except OktyvException as exc:
        print(f"oktyv-nb-mcp: error: {exc.code}: {exc}", file=sys.stderr)
        return 2
    try:
        from oktyv_nb.mcp.server import OktyvMCPServer
    except ImportError as exc:
        print(
            f"oktyv-nb-mcp: error: the MCP SDK is missing ({exc}); install it with "
            "pip install 'oktyv_nb[mcp]'",
            file=sys.stderr,
        )
        return 2
    server = OktyvMCPServer(tools, root=sandbox)
    assert sandbox.root is not None
    if sandbox.root == Path(sandbox.root.anchor):
        print(
            f"oktyv-nb-mcp: warning: the root is {sandbox.root}, so file paths are not "
            "confined; pass --root DIR (clients often start servers in /)",
            file=sys.stderr,
        )
    _drop_writable_paths(sandbox.root)
    import anyio

    try:
        anyio.run(server.run_stdio)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
