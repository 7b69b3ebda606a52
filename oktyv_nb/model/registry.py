"""The tool registry: names mapped to callables.

A *tool* is any Python callable, sync or async, called with its resolved params as keyword
arguments. ``ok.tool`` registers into the process-wide :data:`default_registry`; a
:class:`ToolRegistry` of your own can be passed to a run. Built-in tools (SPEC §10) are
always found by name.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any, overload

from oktyv_nb.errors import InvalidOptionError, ToolNotFoundError

__all__ = ["ToolRegistry", "default_registry", "resolve_tools", "tool"]

Tool = Callable[..., Any]


class ToolRegistry(MutableMapping[str, Tool]):
    """A mapping of tool names to callables, usable as a decorator factory.

    >>> reg = ToolRegistry()
    >>> @reg.register
    ... def double(x: int) -> int:
    ...     return 2 * x
    >>> reg["double"](x=2)
    4
    """

    def __init__(self, tools: Mapping[str, Tool] | None = None) -> None:
        self._tools: dict[str, Tool] = {}
        _check_tools(tools)
        for name, fn in (tools or {}).items():
            self[name] = fn

    @overload
    def register(self, fn: Tool, /, *, name: str | None = None) -> Tool: ...
    @overload
    def register(
        self, fn: None = None, /, *, name: str | None = None
    ) -> Callable[[Tool], Tool]: ...

    def register(self, fn: Tool | None = None, /, *, name: str | None = None) -> Any:
        """Register ``fn`` under ``name`` (default: its ``__name__``); usable as a decorator."""

        def add(f: Tool) -> Tool:
            self[name or getattr(f, "__name__", None) or repr(f)] = f
            return f

        return add if fn is None else add(fn)

    def __setitem__(self, name: str, fn: Tool) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidOptionError(
                f"a tool name must be a non-empty string, got {name!r}", option="tools"
            )
        if not callable(fn):
            raise InvalidOptionError(
                f"tool {name!r} must be callable, got {type(fn).__name__}", option="tools"
            )
        self._tools[name] = fn

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def __delitem__(self, name: str) -> None:
        del self._tools[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tools)

    def __len__(self) -> int:
        return len(self._tools)

    def name_of(self, fn: Tool) -> str | None:
        """The name ``fn`` is registered under, or None."""
        for name, f in self._tools.items():
            if f is fn:
                return name
        return None

    def __repr__(self) -> str:
        return f"ToolRegistry({sorted(self._tools)})"


def _check_tools(tools: Any) -> None:
    if tools is not None and not isinstance(tools, Mapping):
        raise InvalidOptionError(
            f"tools must be a mapping of name -> callable or a ToolRegistry, got "
            f"{type(tools).__name__}",
            option="tools",
        )


default_registry = ToolRegistry()


def tool(fn: Tool | None = None, /, *, name: str | None = None) -> Any:
    """Register a tool in the default registry: ``@ok.tool`` or ``@ok.tool(name="x")``."""
    return default_registry.register(fn, name=name)


class ToolTable(Mapping[str, Tool]):
    """Lookup in layers: the run's tools, then the default registry, then the built-ins."""

    def __init__(self, *layers: Mapping[str, Tool]) -> None:
        self._layers = layers

    def __getitem__(self, name: str) -> Tool:
        for layer in self._layers:
            fn = layer.get(name)
            if fn is not None:
                return fn
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for layer in self._layers:
            for name in layer:
                if name not in seen:
                    seen.add(name)
                    yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def lookup(self, name: str, task_id: str | None = None) -> Tool:
        """The callable for ``name``, or ToolNotFoundError naming the close matches."""
        try:
            return self[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self), n=3, cutoff=0.6)
            raise ToolNotFoundError(name, task_id=task_id, suggestions=close) from None


def resolve_tools(tools: Mapping[str, Tool] | None = None) -> ToolTable:
    """The lookup table of a run given its own ``tools`` (a mapping or a ToolRegistry):
    those, then the default registry, then the built-ins. A :class:`ToolTable` is the
    table itself (the MCP server's holds the built-ins and its ``--tools`` modules only)."""
    from oktyv_nb.model.tools import BUILTIN_TOOLS

    if isinstance(tools, ToolTable):
        return tools
    _check_tools(tools)
    return ToolTable(tools or {}, default_registry, BUILTIN_TOOLS)
