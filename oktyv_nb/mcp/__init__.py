"""oktyv-nb as an MCP server for AI agents: ``python -m oktyv_nb.mcp`` (SPEC §15).

Needs the optional extra ``oktyv_nb[mcp]`` (the official ``mcp`` SDK, 2.x). See
:mod:`oktyv_nb.mcp.server` for the tools and :mod:`oktyv_nb.mcp.__main__` for the command
line. Importing :mod:`oktyv_nb` never imports this package.
"""
