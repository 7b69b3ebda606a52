"""Code export: the fluent-builder Python source of a DAG (SPEC §12).

:func:`dag_to_code` is a pure function of a :class:`~oktyv_nb.dag.DAG`: executed with the
DAG's tools in scope under their names, the code it returns rebuilds an equal DAG into a
variable ``dag``. :meth:`DAG.to_code` and the widget form's *Python code* button call it.
It needs no ipywidgets.

Times in the code are **seconds**, as in the builder; the DAG's task specs keep
milliseconds.
"""

from __future__ import annotations

import json
import keyword
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from oktyv_nb.dag import TASK_OPTIONS
from oktyv_nb.model.registry import default_registry, resolve_tools
from oktyv_nb.model.tools import BUILTIN_TOOLS
from oktyv_nb.units import ms_to_seconds

if TYPE_CHECKING:
    from oktyv_nb.dag import DAG
    from oktyv_nb.model.schema import TaskSpec

__all__ = ["dag_to_code"]

_LINE = 96  # a call longer than this is split, one argument a line


def dag_to_code(dag: DAG) -> str:
    """Python code that rebuilds ``dag`` with the fluent builder into ``dag``.

    Run it with the tools in scope under their names: built-ins are ``ok.tools.<name>``,
    other tools are referred to by the name they are registered under (a tool of the DAG's
    own whose function has another name is passed as ``tools={"name": function}``).
    """
    tools = _ToolNames(dag)
    tasks = [_call(".map" if spec.map is not None else ".task", _task_args(spec, tools), "    ")
             for spec in dag.specs.values()]
    c = dag.config
    dag_args = [_py(dag.name)] if dag.name is not None else []
    if c.max_concurrent != 10:
        dag_args.append(f"max_concurrent={c.max_concurrent}")
    if c.failure_mode != "continue":
        dag_args.append(f"failure_mode={_py(c.failure_mode)}")
    if c.timeout is not None:
        dag_args.append(f"timeout={c.timeout!r}")
    if c.strategy != "dependencies":
        dag_args.append(f"strategy={_py(c.strategy)}")
    if not c.capture:
        dag_args.append("capture=False")
    if c.pools:
        dag_args.append(f"pools={_py(dict(c.pools))}")
    if c.rates:
        dag_args.append(f"rates={_py(dict(c.rates))}")
    if tools.mapping:
        dag_args.append(
            "tools={" + ", ".join(f"{_py(k)}: {v}" for k, v in tools.mapping.items()) + "}"
        )
    lines = ["import oktyv_nb as ok", "", "dag = (", _call("ok.DAG", dag_args, "    "),
             *tasks, ")"]
    return "\n".join(lines) + "\n"


class _ToolNames:
    """How the code names each tool; collects the DAG's own tools that must be passed as
    ``tools={...}`` because their function has another name (:attr:`mapping`)."""

    def __init__(self, dag: DAG) -> None:
        self.own = dag.tools
        self.table = resolve_tools(dag.tools)
        self.mapping: dict[str, str] = {}

    def expr(self, name: str) -> str:
        try:
            fn = self.table[name]
        except KeyError:
            return _py(name)  # unknown here: the name, as the request has it
        if BUILTIN_TOOLS.get(name) is fn and name not in self.own:
            return f"ok.tools.{name}"
        ident = getattr(fn, "__name__", "")
        simple = ident == name and _is_name(name)
        if name in self.own:
            clash = (name in default_registry and default_registry[name] is not fn) or \
                name in BUILTIN_TOOLS
            if simple and not clash:
                return name
            self.mapping[name] = ident if _is_name(ident) else re.sub(r"\W", "_", name)
            return _py(name)
        if simple and default_registry.name_of(fn) == name:
            return name
        return _py(name)


def _task_args(spec: TaskSpec, tools: _ToolNames) -> list[str]:
    """The arguments of the ``.task(...)`` call that adds ``spec``."""
    args = [_py(spec.id), tools.expr(spec.tool)]
    plain, named_like_options = _kwargs(spec.params, TASK_OPTIONS)
    if named_like_options:  # task()'s positional params dict takes these
        args.append(_py(named_like_options))
    args += plain
    if spec.map is not None:
        m = spec.map
        args.append(f"over={_py(m.over)}")
        args.append(f"param={_py(m.param)}")
        if m.max_concurrent is not None:
            args.append(f"max_concurrent={m.max_concurrent}")
    if spec.depends_on:
        args.append(f"after={_py(list(spec.depends_on))}")
    if spec.priority is not None:
        args.append(f"priority={spec.priority}")
    if spec.timeout is not None:
        args.append(f"timeout={ms_to_seconds(spec.timeout)!r}")
    rp = spec.retry_policy
    if rp is not None:
        if rp.backoff == "exponential" and rp.initial_delay == 1000.0:
            args.append(f"retries={rp.max_attempts - 1}")
        else:
            args.append(
                f"retry=ok.RetryPolicy(max_attempts={rp.max_attempts}, "
                f"backoff={_py(rp.backoff)}, initial_delay={ms_to_seconds(rp.initial_delay)!r})"
            )
    if spec.rollback is not None:
        rb_args, _ = _kwargs(spec.rollback.params, frozenset())
        rb = ", ".join([tools.expr(spec.rollback.tool), *rb_args])
        args.append(f"rollback=ok.Rollback({rb})")
    if spec.vault is not None:
        args.append(f"vault={_py(spec.vault)}")
    if spec.run_if is not None:
        args.append(f"trigger={_py(spec.run_if)}")
    if spec.cache is True:
        args.append("cache=True")
    elif spec.cache is not None and spec.cache is not False:
        args.append(f"cache=ok.Cache(expire={spec.cache.expire!r})"
                    if spec.cache.expire is not None else "cache=ok.Cache()")
    if spec.pool is not None:
        args.append(f"pool={_py(spec.pool)}")
    return args


def _is_name(text: str) -> bool:
    """True when ``text`` can be a Python variable or keyword-argument name."""
    return text.isidentifier() and not keyword.iskeyword(text)


def _py(value: Any) -> str:
    """A Python literal of ``value`` (JSON-like data), strings in double quotes."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_py(k)}: {_py(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_py(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + "".join(f"{_py(v)}, " for v in value).rstrip(" ") + ")"
    return repr(value)


def _kwargs(
    params: Mapping[str, Any], reserved: frozenset[str]
) -> tuple[list[str], dict[str, Any]]:
    """Keyword arguments for ``params``: names that are identifiers pass as ``k=v``, others
    through ``**{...}``; names in ``reserved`` are returned apart (for task()'s positional
    params dict)."""
    plain, odd, later = [], {}, {}
    for k, v in params.items():
        if k in reserved:
            later[k] = v
        elif _is_name(k):
            plain.append(f"{k}={_py(v)}")
        else:
            odd[k] = v
    if odd:
        plain.append(f"**{_py(odd)}")
    return plain, later


def _call(head: str, args: list[str], indent: str) -> str:
    one = f"{head}({', '.join(args)})"
    if len(indent) + len(one) <= _LINE or not args:
        return indent + one
    inner = indent + "    "
    return f"{indent}{head}(\n" + "".join(f"{inner}{a},\n" for a in args) + f"{indent})"
