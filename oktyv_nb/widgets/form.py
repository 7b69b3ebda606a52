"""The widget form: ``ok.builder(dag=None, tools=None)`` builds and edits a DAG (SPEC §12).

:class:`BuilderForm` is an ``ipywidgets.VBox``. It edits an ordinary :class:`~oktyv_nb.dag.DAG`
(``form.dag``) in place: pick a task in the list to fill the fields, *Save task* replaces it in
its position, *Remove task* deletes it, *New task* clears the fields for *Add task*.

* Parameter fields come from the tool's signature, type hints and defaults: text for ``str``
  and paths, numbers typed as text (so that a ``${task.result...}`` reference fits too), a
  checkbox for ``bool`` and a dropdown for ``Literal``/``Enum`` (each with a ``${…}`` toggle
  to take a reference instead), JSON text for lists, dicts and other complex types. An empty
  field means "use the tool's default".
* Every field validates as you type; each message shows next to its field, and nothing is
  added to the DAG until the whole draft is valid (a duplicate id, a cycle, a reference to a
  missing task, bad JSON or a bad number). Validation of the whole DAG shows by the
  dependencies.
* The levelled graph is previewed as the DAG changes (an SVG from Graphviz ``dot``; without
  ``dot`` its DOT text and the install hint).
* *Run* runs the DAG in the kernel: on the kernel's running loop as an asyncio task (so *Stop*
  can cancel it; every task still gets its record), or synchronously where no loop runs (a
  script, a test). Progress comes from the engine's event stream; the result table follows.
  ``form.last_run`` holds the run.
* *Python code* / *JSON request* show :meth:`BuilderForm.to_code` and
  :meth:`BuilderForm.to_request`; *Save JSON* / *Load JSON* write and read the request file.

Times in the form are **seconds** (timeouts); the JSON request keeps milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import functools
import inspect
import json
import keyword
import math
import os
import re
import time
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from html import escape
from pathlib import Path, PurePath
from typing import Any, Literal, Union, get_args, get_origin

import ipywidgets as W

from oktyv_nb.dag import DAG
from oktyv_nb.errors import (
    CircularDependencyError,
    DuplicateTaskError,
    GraphvizNotFound,
    MissingDependencyError,
    OktyvError,
    ToolNotFoundError,
)
from oktyv_nb.execution.events import EventKind
from oktyv_nb.model.registry import ToolTable, default_registry, resolve_tools
from oktyv_nb.model.schema import TASK_ID_MAX, TASK_ID_PATTERN, RetryPolicyModel, TaskSpec
from oktyv_nb.model.tools import BUILTIN_TOOLS
from oktyv_nb.model.variables import REFERENCE, find_references, has_references
from oktyv_nb.results.display.theme import (
    FAINT,
    GRID,
    INK,
    MUTED,
    SHADE,
    STATUS_STYLE,
    status_colors,
)

if typing.TYPE_CHECKING:
    from oktyv_nb.execution.records import TaskRecord
    from oktyv_nb.results.run import Run

__all__ = ["BuilderForm", "ParamField", "builder"]

_EMPTY = inspect.Parameter.empty
_MISSING: Any = object()  # a field left empty: the tool's default applies
_ID_RE = re.compile(TASK_ID_PATTERN)
_INT_RE = re.compile(r"[+-]?\d+")
# DAG.task() options: a tool parameter of one of these names goes in task()'s positional
# params dict, since as a keyword it would set the option.
_TASK_KEYWORDS = frozenset(
    {"after", "priority", "timeout", "retries", "retry", "rollback", "vault", "trigger"}
)
_ENGINE_PARAMS = frozenset({"credentials"})  # passed by the engine for tasks with a vault

_ERR_COLOUR = STATUS_STYLE["failed"][1]
_OK_COLOUR = STATUS_STYLE["success"][1]
_INFO_COLOUR = MUTED
_LABEL_WIDTH = "150px"
_PAINT_INTERVAL = 0.1  # seconds between progress updates during a run
_INPUT_WIDTH = "300px"

_STYLE = ("""<style>
.oktyv-builder { font-size: 13px; }
.oktyv-builder .oktyv-head { margin: 2px 0 4px 0; color: @INK; }
.oktyv-builder .oktyv-invalid input, .oktyv-builder .oktyv-invalid textarea,
.oktyv-builder .oktyv-invalid select, .oktyv-builder input.oktyv-invalid {
  border-color: @ERR !important; background: #fff6f6 !important; }
.oktyv-builder .oktyv-graph svg { max-width: 100%; height: auto; }
.oktyv-builder .oktyv-export textarea { font-family: monospace; font-size: 12px; }
.oktyv-builder table.oktyv-result { border-collapse: collapse; font-size: 12px; }
.oktyv-builder table.oktyv-result th, .oktyv-builder table.oktyv-result td {
  border-bottom: 1px solid @GRID; padding: 3px 8px; text-align: left;
  vertical-align: top; }
.oktyv-builder table.oktyv-result th { background: @SHADE; }
</style>""".replace("@INK", INK).replace("@ERR", _ERR_COLOUR)
          .replace("@GRID", GRID).replace("@SHADE", SHADE))


# ----------------------------------------------------------------------------- small helpers


def _message(kind: str, text: str) -> str:
    """HTML of a message next to a field: ``error``, ``ok`` or ``info``."""
    if not text:
        return ""
    colour, mark = {
        "error": (_ERR_COLOUR, "⚠ "), "ok": (_OK_COLOUR, "✔ "), "info": (_INFO_COLOUR, ""),
    }[kind]
    return (
        f'<span class="oktyv-msg oktyv-{kind}" style="color:{colour};line-height:1.3">'
        f"{mark}{escape(text)}</span>"
    )


def _set_msg(widget: W.HTML, kind: str, text: str) -> None:
    value = _message(kind, text)
    if widget.value != value:
        widget.value = value


def _mark(widget: W.DOMWidget, invalid: bool) -> None:
    has = "oktyv-invalid" in widget._dom_classes
    if invalid and not has:
        widget.add_class("oktyv-invalid")
    elif not invalid and has:
        widget.remove_class("oktyv-invalid")


def _label(text: str, tip: str = "") -> W.HTML:
    title = f' title="{escape(tip)}"' if tip else ""
    return W.HTML(f"<span{title}>{text}</span>", layout=W.Layout(width=_LABEL_WIDTH,
                                                                 min_width=_LABEL_WIDTH))


def _row(*children: W.Widget) -> W.HBox:
    return W.HBox(list(children), layout=W.Layout(align_items="center", margin="1px 0"))


def _first_line(doc: str | None) -> str:
    if not doc:
        return ""
    for line in inspect.cleandoc(doc).splitlines():
        if line.strip():
            return line.strip()
    return ""


def _type_text(ann: Any) -> str:
    if ann is _EMPTY:
        return ""
    if isinstance(ann, type) and get_origin(ann) is None:
        return ann.__name__
    text = inspect.formatannotation(ann).replace("typing.", "").replace("collections.abc.", "")
    return text if len(text) <= 40 else text[:39] + "…"


def _is_jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _parses_as_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _is_whole_ref(text: str) -> bool:
    return REFERENCE.fullmatch(text.strip()) is not None


# ----------------------------------------------------------------------------- parameter kinds


def _kind_of(ann: Any, default: Any) -> tuple[str, list[Any], list[str]]:
    """Field kind for a parameter: ``str``, ``int``, ``float``, ``bool``, ``choice`` (with
    values and labels), ``json`` (complex types) or ``any`` (JSON, else text)."""
    if isinstance(ann, str):  # an annotation that could not be resolved
        ann = {"str": str, "int": int, "float": float, "bool": bool}.get(ann, _EMPTY)
    if ann is _EMPTY or ann is Any or ann is object:
        if isinstance(default, bool):
            return "bool", [], []
        for t, k in ((int, "int"), (float, "float"), (str, "str")):
            if isinstance(default, t):
                return k, [], []
        return "any", [], []
    origin, args = get_origin(ann), get_args(ann)
    if origin is typing.Annotated:
        return _kind_of(args[0], default)
    if origin is Union or origin is types.UnionType:
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            return _kind_of(members[0], default)
        kinds = {_kind_of(m, _EMPTY)[0] for m in members}
        if kinds == {"str"}:
            return "str", [], []
        if kinds <= {"int", "float"}:
            return ("float" if "float" in kinds else "int"), [], []
        if kinds == {"json"}:
            return "json", [], []
        return "any", [], []
    if origin is Literal:
        return "choice", list(args), [str(a) for a in args]
    if isinstance(ann, type) and origin is None:
        if issubclass(ann, enum.Enum):
            members = list(ann)
            return "choice", [m.value for m in members], [m.name for m in members]
        if issubclass(ann, bool):
            return "bool", [], []
        if issubclass(ann, int):
            return "int", [], []
        if issubclass(ann, float):
            return "float", [], []
        if issubclass(ann, (str, PurePath, os.PathLike)):
            return "str", [], []
        if issubclass(ann, (Mapping, Iterable)):
            return "json", [], []
        return "any", [], []
    if origin is os.PathLike:
        return "str", [], []
    if isinstance(origin, type) and issubclass(origin, (Mapping, Iterable)):
        return "json", [], []
    return "any", [], []


_PLACEHOLDERS = {
    "str": "text",
    "int": "whole number or ${task.result}",
    "float": "number or ${task.result}",
    "json": 'JSON, e.g. ["a", 1] or {"k": "${task.result}"}',
    "any": "JSON or text",
}


class FieldError(ValueError):
    """A field's value cannot be used; the message is shown next to the field."""


class ParamField:
    """One tool parameter in the form: its input widget, an optional reference toggle and
    the message shown next to it.

    ``kind`` is ``str``, ``int``, ``float``, ``bool``, ``choice``, ``json`` or ``any``; an
    empty text field means the tool's default (an error when the parameter is required).
    """

    def __init__(
        self,
        name: str,
        kind: str,
        *,
        default: Any = _EMPTY,
        choices: list[Any] | None = None,
        labels: list[str] | None = None,
        type_text: str = "",
        doc: str = "",
    ) -> None:
        self.name = name
        self.default = default
        self.required = default is _EMPTY
        if kind == "bool" and not self.required and not isinstance(default, bool):
            kind, choices, labels = "choice", [True, False], ["True", "False"]
        self.kind = kind
        self.choices = list(choices or [])
        labels = list(labels or [str(c) for c in self.choices])
        if kind == "choice" and not self.required and default not in self.choices:
            self.choices.insert(0, default)
            labels.insert(0, f"{default!r} (default)")
        self.explicit = False  # the value came from an existing task: keep it even if default
        self.touched = False
        self.message = W.HTML(layout=W.Layout(margin="0 0 0 8px"))
        self.message.add_class(f"oktyv-msg-{name}")
        width = W.Layout(width=_INPUT_WIDTH)
        self.ref_input: W.Text | None = None
        self.ref_toggle: W.ToggleButton | None = None
        if kind == "bool":
            self.input: W.ValueWidget = W.Checkbox(value=bool(default) if not self.required
                                                   else False, indent=False,
                                                   layout=W.Layout(width="auto"))
        elif kind == "choice":
            self.input = W.Dropdown(options=[(lab, i) for i, lab in enumerate(labels)],
                                    value=self._index(default) if not self.required else 0,
                                    layout=width)
        elif kind == "json":
            self.input = W.Textarea(placeholder=_PLACEHOLDERS["json"], rows=2, layout=width)
        else:
            ph = _PLACEHOLDERS[kind]
            if not self.required:
                ph = f"default: {default!r}"
            self.input = W.Text(placeholder=ph, layout=width)
        self.input.add_class(f"oktyv-param-{name}")
        extras: list[W.Widget] = []
        if kind in ("bool", "choice"):
            self.ref_input = W.Text(placeholder="${task.result}",
                                    layout=W.Layout(width=_INPUT_WIDTH, display="none"))
            self.ref_input.add_class(f"oktyv-param-{name}-ref")
            self.ref_toggle = W.ToggleButton(
                description="${…}", tooltip="take a ${task.field} reference instead",
                layout=W.Layout(width="52px", margin="0 0 0 6px"))
            self.ref_toggle.observe(self._toggled, "value")
            extras = [self.ref_input, self.ref_toggle]
        req = (f' <span style="color:{_ERR_COLOUR}" title="required">*</span>'
               if self.required else "")
        tip = type_text + (f" — {doc}" if doc else "")
        head = f"<b>{escape(name)}</b>{req}"
        if type_text:
            head += f' <span style="color:{FAINT};font-size:11px">{escape(type_text)}</span>'
        self.row = _row(_label(head, tip), self.input, *extras, self.message)

    # -- values
    def _index(self, value: Any) -> int:
        for i, c in enumerate(self.choices):
            if c == value and type(c) is type(value):
                return i
        for i, c in enumerate(self.choices):
            if c == value:
                return i
        raise ValueError(value)

    def _toggled(self, change: dict[str, Any]) -> None:
        assert self.ref_input is not None
        on = bool(change["new"])
        self.ref_input.layout.display = None if on else "none"
        self.input.layout.display = "none" if on else None

    @property
    def uses_ref(self) -> bool:
        return self.ref_toggle is not None and bool(self.ref_toggle.value)

    def fits(self, value: Any) -> bool:
        """True when ``value`` can be shown and read back unchanged by this field."""
        if isinstance(value, str) and has_references(value):
            return self.kind not in ("int", "float", "bool", "choice") or _is_whole_ref(value)
        if self.kind == "str":
            return isinstance(value, str)
        if self.kind == "int":
            return isinstance(value, int) and not isinstance(value, bool)
        if self.kind == "float":
            return (isinstance(value, (int, float)) and not isinstance(value, bool)
                    and math.isfinite(value))
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "choice":
            try:
                self._index(value)
            except ValueError:
                return False
            return True
        return _is_jsonable(value)

    def load(self, value: Any) -> None:
        """Show ``value`` (from an existing task); it is kept on save."""
        self.explicit = True
        if self.ref_toggle is not None:
            is_ref = isinstance(value, str) and _is_whole_ref(value)
            self.ref_toggle.value = is_ref
            if is_ref:
                assert self.ref_input is not None
                self.ref_input.value = value
                return
        if self.kind == "bool":
            self.input.value = bool(value)
        elif self.kind == "choice":
            self.input.value = self._index(value)
        elif self.kind == "str" or (isinstance(value, str) and _is_whole_ref(value)):
            self.input.value = value
        elif self.kind in ("int", "float"):
            self.input.value = repr(value)
        elif self.kind == "any" and isinstance(value, str) and not _parses_as_json(value):
            self.input.value = value
        else:  # objects JSON cannot hold (a Path...) show as their text
            self.input.value = json.dumps(value, default=str)

    def parse(self) -> Any:
        """The parameter's value, or ``_MISSING`` for an empty field; raises FieldError."""
        if self.uses_ref:
            assert self.ref_input is not None
            text = self.ref_input.value.strip()
            if not text:
                raise FieldError("type a ${task.field} reference, or switch ${…} off")
            if not _is_whole_ref(text):
                raise FieldError(f"{text!r} is not one ${{task.field}} reference")
            return text
        if self.kind == "bool":
            return bool(self.input.value)
        if self.kind == "choice":
            return self.choices[self.input.value]
        raw: str = self.input.value
        text = raw.strip()
        if not text:
            if self.required:
                raise FieldError("required")
            return _MISSING
        if self.kind == "str":
            return raw
        if self.kind in ("int", "float"):
            if "${" in text:
                if not _is_whole_ref(text):
                    raise FieldError(
                        "a number field takes a number or exactly one ${task.field} reference"
                    )
                return text
            if _INT_RE.fullmatch(text):
                return int(text)
            if self.kind == "int":
                raise FieldError(f"{text!r} is not a whole number")
            try:
                number = float(text)
            except ValueError:
                raise FieldError(f"{text!r} is not a number") from None
            if not math.isfinite(number):
                raise FieldError(f"{text!r} is not a finite number")
            return number
        if self.kind == "json":
            if _is_whole_ref(text):
                return text
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise FieldError(
                    f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
                ) from None
        # "any": JSON when it parses, else the text itself
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            if text[0] in "[{":
                raise FieldError(
                    f"looks like JSON but is invalid: {exc.msg} (line {exc.lineno}, "
                    f"column {exc.colno}); quote it to pass text"
                ) from None
            return raw

    def include(self, value: Any) -> bool:
        """Whether the parsed ``value`` goes into the task's params."""
        if value is _MISSING:
            return False
        if self.kind in ("bool", "choice") and not self.uses_ref:
            return self.required or self.explicit or value != self.default
        return True

    def observe(self, fn: Callable[[dict[str, Any]], None]) -> None:
        self.input.observe(fn, "value")
        if self.ref_input is not None and self.ref_toggle is not None:
            self.ref_input.observe(fn, "value")
            self.ref_toggle.observe(fn, "value")


def _param_fields(fn: Callable[..., Any] | None) -> tuple[dict[str, ParamField], bool]:
    """Fields for the parameters of ``fn``, and whether it takes other keyword arguments."""
    if fn is None:
        return {}, True
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return {}, True
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    fields: dict[str, ParamField] = {}
    var_kw = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
            continue
        if p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY) or p.name in _ENGINE_PARAMS:
            continue
        ann = hints.get(p.name, p.annotation)
        default = p.default.value if isinstance(p.default, enum.Enum) else p.default
        kind, choices, labels = _kind_of(ann, default)
        fields[p.name] = ParamField(p.name, kind, default=default, choices=choices,
                                    labels=labels, type_text=_type_text(ann))
    return fields, var_kw


# ----------------------------------------------------------------------------- code export


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


def _seconds(ms: float) -> float:
    """``ms`` in seconds, chosen so that ``seconds * 1000.0 == ms`` when possible."""
    s = ms / 1000.0
    cand = s
    for _ in range(4):
        if cand * 1000.0 == ms:
            return cand
        cand = math.nextafter(cand, math.inf if cand * 1000.0 < ms else -math.inf)
    return s


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
        elif k.isidentifier() and not keyword.iskeyword(k):
            plain.append(f"{k}={_py(v)}")
        else:
            odd[k] = v
    if odd:
        plain.append(f"**{_py(odd)}")
    return plain, later


def _call(head: str, args: list[str], indent: str) -> str:
    one = f"{head}({', '.join(args)})"
    if len(indent) + len(one) <= 96 or not args:
        return indent + one
    inner = indent + "    "
    return f"{indent}{head}(\n" + "".join(f"{inner}{a},\n" for a in args) + f"{indent})"


# ----------------------------------------------------------------------------- the form


def _guarded(where: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Show an unexpected error of a widget callback in the message widget ``where`` instead
    of as a traceback in the notebook's output area."""

    def wrap(fn: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(fn)
        def guarded(self: BuilderForm, *args: Any) -> None:
            try:
                fn(self, *args)
            except Exception as exc:
                _set_msg(getattr(self, where), "error", f"{type(exc).__name__}: {exc}")

        return guarded

    return wrap


class BuilderForm(W.VBox):
    """An ipywidgets form that builds and edits ``form.dag`` (an ordinary :class:`DAG`).

    Widgets are public attributes so that code (and tests) can drive the form: set
    ``form.id_input.value``, ``form.tool_input.value``, ``form.params[name].input.value``,
    ``form.deps_input.value``... then ``form.add_button.click()``.
    """

    def __init__(self, dag: DAG | None = None, tools: Mapping[str, Callable[..., Any]] | None
                 = None) -> None:
        if dag is None:
            dag = DAG(tools=tools)
        elif tools:
            for name, fn in tools.items():
                if name not in dag.tools:
                    dag.tools[name] = fn
        self.dag: DAG = dag
        self.last_run: Run | None = None
        self.run_task: asyncio.Future[Any] | None = None
        self.params: dict[str, ParamField] = {}
        self._editing: str | None = None  # id of the task being edited, None for a new one
        self._loading = False
        self._submitted = False
        self._touched: set[str] = set()
        self._retry_loaded: tuple[int, RetryPolicyModel | None] | None = None
        self._kept: dict[str, Any] = {}
        self._run_counts: dict[str, int] = {}
        self._running_ids: set[str] = set()
        self._last_paint = 0.0
        self._paint_timer: asyncio.TimerHandle | None = None
        self._build()
        super().__init__(children=self._layout())
        self.add_class("oktyv-builder")
        self._load_settings()
        self._refresh_tasks()
        self._new_task()
        self._dag_changed()

    # ------------------------------------------------------------------ widgets
    def _build(self) -> None:
        lw = W.Layout(width=_INPUT_WIDTH)
        msg = lambda: W.HTML(layout=W.Layout(margin="0 0 0 8px"))  # noqa: E731
        self.style_html = W.HTML(_STYLE)
        self.title_html = W.HTML()
        # run settings
        self.name_input = W.Text(placeholder="(optional)", layout=W.Layout(width="160px"))
        self.max_concurrent_input = W.BoundedIntText(min=1, max=100_000, value=10,
                                                     layout=W.Layout(width="80px"))
        self.failure_mode_input = W.Dropdown(options=["continue", "stop", "rollback"],
                                             layout=W.Layout(width="110px"))
        self.run_timeout_input = W.Text(placeholder="none", layout=W.Layout(width="80px"))
        self.settings_msg = msg()
        for w in (self.name_input, self.max_concurrent_input, self.failure_mode_input,
                  self.run_timeout_input):
            w.observe(self._settings_changed, "value")
        # task list
        self.tasks_list = W.Select(options=[], rows=6, layout=W.Layout(width="auto"))
        self.tasks_list.add_class("oktyv-tasks")
        self.tasks_list.observe(self._selected, "value")
        self.new_button = W.Button(description="New task", icon="plus",
                                   layout=W.Layout(width="100%", margin="4px 0 0 0"))
        self.remove_button = W.Button(description="Remove task", icon="trash",
                                      button_style="danger",
                                      layout=W.Layout(width="100%", margin="4px 0 0 0"))
        self.new_button.on_click(self._on_new)
        self.remove_button.on_click(self._on_remove)
        # editor
        self.editor_title = W.HTML()
        self.id_input = W.Text(placeholder="e.g. fetch", layout=lw)
        self.id_input.add_class("oktyv-id")
        self.id_msg = msg()
        self.tool_input = W.Dropdown(options=[], layout=lw)
        self.tool_input.add_class("oktyv-tool")
        self.tool_msg = msg()
        self.tool_doc = W.HTML()
        self.params_box = W.VBox()
        self.extra_input = W.Textarea(placeholder='{"name": value, ...}', rows=2, layout=lw)
        self.extra_input.add_class("oktyv-extra")
        self.extra_msg = msg()
        self.extra_row = _row(_label("<b>other params</b>", "JSON object of more keyword "
                                     "arguments"), self.extra_input, self.extra_msg)
        self.deps_input = W.SelectMultiple(options=[], rows=4, layout=lw)
        self.deps_input.add_class("oktyv-deps")
        self.deps_msg = msg()
        self.refs_html = W.HTML()
        self.dag_msg = W.HTML()
        self.dag_msg.add_class("oktyv-dag-msg")
        self.priority_input = W.Dropdown(
            options=[("default (5)", 0)] + [(str(i), i) for i in range(1, 11)],
            layout=W.Layout(width="120px"))
        self.priority_input.add_class("oktyv-priority")
        self.timeout_input = W.Text(placeholder="none", layout=W.Layout(width="120px"))
        self.timeout_input.add_class("oktyv-timeout")
        self.timeout_msg = msg()
        self.retries_input = W.BoundedIntText(min=0, max=100, value=0,
                                              layout=W.Layout(width="120px"))
        self.retries_input.add_class("oktyv-retries")
        self.retries_msg = msg()
        self.trigger_input = W.Dropdown(
            options=[("default (all_success)", ""), ("all_success", "all_success"),
                     ("all_done", "all_done")], layout=W.Layout(width="180px"))
        self.trigger_input.add_class("oktyv-trigger")
        self.vault_input = W.Text(placeholder="(none)", layout=W.Layout(width="180px"))
        self.vault_input.add_class("oktyv-vault")
        self.vault_msg = msg()
        self.add_button = W.Button(description="Add task", button_style="primary",
                                   icon="check", layout=W.Layout(width="auto"))
        self.add_button.add_class("oktyv-add")
        self.add_button.on_click(self._on_submit)
        self.status_msg = msg()
        self.status_msg.add_class("oktyv-status-msg")
        for name, w in (("id", self.id_input), ("extra", self.extra_input),
                        ("deps", self.deps_input), ("priority", self.priority_input),
                        ("timeout", self.timeout_input), ("retries", self.retries_input),
                        ("trigger", self.trigger_input), ("vault", self.vault_input)):
            w.observe(self._changed_fn(name), "value")
        self.tool_input.observe(self._tool_changed, "value")
        # graph
        self.graph_html = W.HTML(layout=W.Layout(width="100%", overflow="auto"))
        self.graph_html.add_class("oktyv-graph")
        # run
        self.run_button = W.Button(description="Run", icon="play", button_style="success",
                                   layout=W.Layout(width="90px"))
        self.stop_button = W.Button(description="Stop", icon="stop", button_style="warning",
                                    disabled=True, layout=W.Layout(width="90px"))
        self.run_button.add_class("oktyv-run")
        self.stop_button.add_class("oktyv-stop")
        self.run_button.on_click(self._on_run)
        self.stop_button.on_click(self._on_stop)
        self.progress = W.IntProgress(value=0, min=0, max=1, layout=W.Layout(width="240px"))
        self.counts_label = W.HTML(layout=W.Layout(margin="0 0 0 8px"))
        self.counts_label.add_class("oktyv-counts")
        self.run_msg = msg()
        self.result_html = W.HTML(layout=W.Layout(width="100%", overflow="auto"))
        self.result_html.add_class("oktyv-result-area")
        # export
        self.code_button = W.Button(description="Python code", icon="code",
                                    layout=W.Layout(width="auto"))
        self.json_button = W.Button(description="JSON request", icon="file-code-o",
                                    layout=W.Layout(width="auto"))
        self.code_button.on_click(self._on_export)
        self.json_button.on_click(self._on_export)
        self.export_area = W.Textarea(rows=12, layout=W.Layout(width="100%", display="none"))
        self.export_area.add_class("oktyv-export")
        self.path_input = W.Text(placeholder="request.json", layout=W.Layout(width="240px"))
        self.save_button = W.Button(description="Save JSON", icon="save",
                                    layout=W.Layout(width="auto"))
        self.load_button = W.Button(description="Load JSON", icon="folder-open",
                                    layout=W.Layout(width="auto"))
        self.save_button.on_click(self._on_save)
        self.load_button.on_click(self._on_load)
        self.file_msg = msg()

    def _layout(self) -> list[W.Widget]:
        def head(text: str) -> W.HTML:
            h = W.HTML(f"<b>{text}</b>")
            h.add_class("oktyv-head")
            return h

        settings = _row(
            W.HTML("DAG name&nbsp;"), self.name_input,
            W.HTML("&nbsp;&nbsp;max concurrent&nbsp;"), self.max_concurrent_input,
            W.HTML("&nbsp;&nbsp;on failure&nbsp;"), self.failure_mode_input,
            W.HTML("&nbsp;&nbsp;run timeout (s)&nbsp;"), self.run_timeout_input,
            self.settings_msg,
        )
        tasks = W.VBox([head("Tasks"), self.tasks_list, self.new_button, self.remove_button],
                       layout=W.Layout(width="190px", min_width="190px", margin="0 12px 0 0"))
        editor = W.VBox([
            self.editor_title,
            _row(_label("<b>id</b>"), self.id_input, self.id_msg),
            _row(_label("<b>tool</b>"), self.tool_input, self.tool_msg),
            self.tool_doc,
            self.params_box,
            _row(_label("<b>depends on</b>", "explicit dependencies; ${refs} add theirs"),
                 self.deps_input, self.deps_msg),
            self.refs_html,
            self.dag_msg,
            _row(_label("<b>priority</b>", "1..10, higher starts first among ready tasks"),
                 self.priority_input),
            _row(_label("<b>timeout</b> (s)", "seconds per attempt"), self.timeout_input,
                 self.timeout_msg),
            _row(_label("<b>retries</b>", "more attempts, exponential backoff from 1 s"),
                 self.retries_input, self.retries_msg),
            _row(_label("<b>trigger</b>", "all_done: run even when a dependency failed"),
                 self.trigger_input),
            _row(_label("<b>vault</b>", "secret set passed as credentials"),
                 self.vault_input, self.vault_msg),
            _row(self.add_button, self.status_msg),
        ], layout=W.Layout(flex="1 1 auto", min_width="560px", border=f"1px solid {GRID}",
                           padding="6px 10px"))
        graph = W.VBox([head("Graph"), self.graph_html],
                       layout=W.Layout(flex="1 1 320px", min_width="280px", margin="0 0 0 12px"))
        run = _row(self.run_button, self.stop_button, self.progress, self.counts_label,
                   self.run_msg)
        export = _row(self.code_button, self.json_button, W.HTML("&nbsp;&nbsp;file&nbsp;"),
                      self.path_input, self.save_button, self.load_button, self.file_msg)
        return [
            self.style_html, self.title_html, settings,
            W.HBox([tasks, editor, graph], layout=W.Layout(align_items="flex-start",
                                                           margin="6px 0")),
            head("Run"), run, self.result_html,
            head("Export"), export, self.export_area,
        ]

    # ------------------------------------------------------------------ tools
    def tool_table(self) -> ToolTable:
        """The tools the form offers: the DAG's own, ``ok.tool``-registered, built-ins."""
        return resolve_tools(self.dag.tools)

    def _tool_options(self, extra: str | None = None) -> list[tuple[str, str]]:
        options = []
        for name in self.tool_table():
            where = " (built-in)" if name in BUILTIN_TOOLS and name not in self.dag.tools \
                and name not in default_registry else ""
            options.append((name + where, name))
        if extra is not None and extra not in {v for _, v in options}:
            options.append((f"{extra} (unknown)", extra))
        return options

    @_guarded("status_msg")
    def _tool_changed(self, change: dict[str, Any]) -> None:
        if self._loading:  # the caller builds the fields itself
            return
        self._build_params(change["new"])
        self._touched.add("tool")
        self._check()

    def _build_params(self, name: str | None, keep: bool = True) -> None:
        old = {k: f for k, f in self.params.items()} if keep else {}
        fn = None
        if name is not None:
            with contextlib.suppress(KeyError):
                fn = self.tool_table()[name]
        fields, var_kw = _param_fields(fn)
        for pname, field in fields.items():  # keep what was typed into a same-named field
            prev = old.get(pname)
            if prev is not None and prev.kind == field.kind and not prev.uses_ref:
                if prev.kind in ("bool", "choice"):
                    with contextlib.suppress(Exception):
                        field.input.value = prev.input.value
                else:
                    field.input.value = prev.input.value
            field.observe(self._changed_fn(f"param:{pname}"))
        self.params = fields
        doc = _first_line(getattr(fn, "__doc__", None)) if fn is not None else ""
        doc = doc.replace("``", "")
        sig = ""
        if fn is not None:
            with contextlib.suppress(TypeError, ValueError):
                sig = str(inspect.signature(fn))
        desc = f"<code>{escape(name or '')}{escape(sig)}</code>" if name else ""
        if doc:
            desc += f"<br><i>{escape(doc)}</i>"
        self.tool_doc.value = (
            f'<div style="margin:0 0 4px {_LABEL_WIDTH};color:{MUTED};font-size:12px">'
            f"{desc}</div>" if desc else ""
        )
        self.extra_input.value = ""
        self.extra_row.layout.display = None if var_kw else "none"
        self._layout_params()

    def _layout_params(self) -> None:
        rows: list[W.Widget] = []
        if self.params:
            rows.append(W.HTML(f'<div style="color:{MUTED};margin-left:{_LABEL_WIDTH}">'
                               "parameters (empty = the tool's default)</div>"))
            rows.extend(f.row for f in self.params.values())
        rows.append(self.extra_row)
        self.params_box.children = rows

    # ------------------------------------------------------------------ editor state
    def _changed_fn(self, name: str) -> Callable[[dict[str, Any]], None]:
        def changed(_change: dict[str, Any]) -> None:
            if self._loading:
                return
            self._touched.add(name)
            self._check()

        return changed

    def _refresh_tasks(self) -> None:
        self._loading = True
        try:
            self.tasks_list.options = [
                (f"{tid}  ·  {spec.tool}", tid) for tid, spec in self.dag.specs.items()
            ]
            self.tasks_list.value = self._editing if self._editing in self.dag.specs else None
            self._refresh_deps()
        finally:
            self._loading = False
        self.remove_button.disabled = self._editing is None
        n = len(self.dag.specs)
        name = escape(self.dag.name) if self.dag.name else "DAG builder"
        self.title_html.value = (
            f'<h3 style="margin:4px 0">{name} <span style="color:{FAINT};font-size:13px;'
            f'font-weight:normal">{n} task{"s" if n != 1 else ""}</span></h3>'
        )

    def _refresh_deps(self, selected: Iterable[str] | None = None) -> None:
        keep = tuple(self.deps_input.value if selected is None else selected)
        others = [tid for tid in self.dag.specs if tid != self._editing]
        self.deps_input.options = others
        self.deps_input.value = tuple(t for t in keep if t in others)

    @_guarded("status_msg")
    def _selected(self, change: dict[str, Any]) -> None:
        if self._loading:
            return
        tid = change["new"]
        if tid is None:
            self._new_task()
        else:
            self.edit(tid)

    @_guarded("status_msg")
    def _on_new(self, _btn: W.Button | None = None) -> None:
        self._new_task()

    def _new_task(self) -> None:
        """Clear the editor for a new task."""
        self._editing = None
        self._loading = True
        try:
            self.tasks_list.value = None
            self._refresh_deps(())
            options = self._tool_options()
            current = self.tool_input.value
            self.tool_input.options = options
            values = [v for _, v in options]
            self.tool_input.value = current if current in values else (values[0] if values
                                                                       else None)
            self._build_params(self.tool_input.value, keep=False)
            self.id_input.value = self._suggest_id()
            self.priority_input.value = 0
            self.timeout_input.value = ""
            self.retries_input.value = 0
            self.trigger_input.value = ""
            self.vault_input.value = ""
        finally:
            self._loading = False
        self._kept = {}
        self._retry_loaded = None
        self._submitted = False
        self._touched = set()
        self.add_button.description = "Add task"
        self.remove_button.disabled = True
        self.editor_title.value = '<b class="oktyv-head">New task</b>'
        self._check()

    def _suggest_id(self) -> str:
        n = len(self.dag.specs) + 1
        while f"task{n}" in self.dag.specs:
            n += 1
        return f"task{n}"

    def edit(self, task_id: str) -> None:
        """Fill the editor with task ``task_id``; *Save task* replaces it."""
        spec = self.dag.specs[task_id]
        self._editing = task_id
        self._loading = True
        try:
            self.tasks_list.value = task_id
            self._refresh_deps(spec.depends_on or ())
            self.tool_input.options = self._tool_options(extra=spec.tool)
            self.tool_input.value = spec.tool
            self._build_params(spec.tool, keep=False)
            self._load_params(spec.params)
            self.id_input.value = spec.id
            self.priority_input.value = spec.priority or 0
            self.timeout_input.value = (repr(_seconds(spec.timeout)) if spec.timeout is not None
                                        else "")
            rp = spec.retry_policy
            retries = rp.max_attempts - 1 if rp is not None else 0
            self.retries_input.value = min(retries, self.retries_input.max)
            self._retry_loaded = (self.retries_input.value, rp)
            self.trigger_input.value = spec.run_if or ""
            self.vault_input.value = spec.vault or ""
        finally:
            self._loading = False
        self._kept = {"rollback": spec.rollback}
        self._submitted = False
        self._touched = set()
        self.add_button.description = "Save task"
        self.remove_button.disabled = False
        self.editor_title.value = (f'<b class="oktyv-head">Edit task <code>{escape(task_id)}'
                                   "</code></b>")
        if spec.rollback is not None:
            self.editor_title.value += _message(
                "info", f"  (its rollback {spec.rollback.tool} is kept as it is)")
        self._check()

    def _load_params(self, params: Mapping[str, Any]) -> None:
        extra: dict[str, Any] = {}
        for k, v in params.items():
            field = self.params.get(k)
            if field is not None and not field.fits(v):
                # show it as JSON/text so that it reads back unchanged
                field = ParamField(k, "any", default=field.default, type_text="as JSON")
                field.observe(self._changed_fn(f"param:{k}"))
                self.params[k] = field
            if field is None:
                extra[k] = v
            else:
                field.load(v)
        if extra:
            self.extra_input.value = json.dumps(extra)
            self.extra_row.layout.display = None
        self._layout_params()

    # ------------------------------------------------------------------ validation
    def _check(self, submit: bool = False) -> TaskSpec | None:
        """Validate the draft; show each message next to its field. Returns the TaskSpec
        when the draft is valid."""
        if submit:
            self._submitted = True
        show_required = lambda key: self._submitted or key in self._touched  # noqa: E731
        errors: dict[str, str] = {}
        ids_after = [t for t in self.dag.specs if t != self._editing]
        # id
        tid = self.id_input.value.strip()
        if not tid:
            errors["id"] = "required: a task id" if show_required("id") else ""
        elif len(tid) > TASK_ID_MAX:
            errors["id"] = f"at most {TASK_ID_MAX} characters"
        elif not _ID_RE.fullmatch(tid):
            errors["id"] = "use letters, digits, _ and - (not first), e.g. fetch_2"
        elif tid in ids_after:
            errors["id"] = f"Duplicate task ID: {tid} (choose another id)"
        known = {*ids_after, tid} if tid else set(ids_after)
        # tool
        tool = self.tool_input.value
        if tool is None:
            errors["tool"] = "choose a tool (register one with ok.tool or pass tools=)"
        elif tool not in self.tool_table():
            errors["tool"] = (f"unknown tool {tool!r}: register it with ok.tool or pass "
                              "tools={name: callable}")
        # params
        params: dict[str, Any] = {}
        for name, field in self.params.items():
            key = f"param:{name}"
            try:
                value = field.parse()
                self._check_refs(value, tid, known)
            except FieldError as exc:
                if str(exc) != "required" or show_required(key):
                    errors[key] = str(exc)
                else:
                    errors[key] = ""  # blocks the submit without a message yet
                continue
            except OktyvError as exc:
                errors[key] = exc.message
                continue
            if field.include(value):
                params[name] = value
        extra_text = self.extra_input.value.strip()
        if extra_text:
            try:
                extra = json.loads(extra_text)
                if not isinstance(extra, dict):
                    raise FieldError("other params must be a JSON object {\"name\": value}")
                clash = sorted(set(extra) & set(self.params))
                if clash:
                    raise FieldError(f"{', '.join(clash)} already has a field above")
                self._check_refs(extra, tid, known)
                params.update(extra)
            except json.JSONDecodeError as exc:
                errors["extra"] = (f"invalid JSON: {exc.msg} (line {exc.lineno}, column "
                                   f"{exc.colno})")
            except (FieldError, OktyvError) as exc:
                errors["extra"] = str(exc)
        # timeout (seconds), retries
        timeout: float | None = None
        t_text = self.timeout_input.value.strip()
        if t_text:
            try:
                timeout = float(t_text)
                if not math.isfinite(timeout) or timeout <= 0:
                    raise ValueError
            except ValueError:
                errors["timeout"] = f"{t_text!r} is not a number of seconds > 0"
        spec = None
        if not errors:
            try:
                spec = self._make_spec(tid, tool, params, timeout)
            except ValueError as exc:  # pydantic's ValidationError too
                errors["status"] = str(exc).splitlines()[0]
        if spec is not None:
            whole = self._trial(spec)
            if whole is not None:
                errors[whole[0]] = whole[1]
                spec = None
        self._show_errors(errors)
        return spec

    def _check_refs(self, value: Any, tid: str, known: set[str]) -> None:
        if not has_references(value):
            return
        for ref in find_references(value):  # VariableResolutionError for ${A}
            if tid and ref.task_id == tid:
                raise FieldError(f"${{{ref.text}}} refers to this task itself (a cycle)")
            if ref.task_id not in known:
                others = ", ".join(sorted(known - {tid})) or "none yet"
                raise FieldError(
                    f"${{{ref.text}}}: there is no task {ref.task_id!r} (tasks: {others})")

    def _make_spec(self, tid: str, tool: str, params: dict[str, Any],
                   timeout: float | None) -> TaskSpec:
        scratch = DAG(tools=self.dag.tools)
        plain = {k: v for k, v in params.items() if k not in _TASK_KEYWORDS}
        retries: int | None = self.retries_input.value or None
        kept_policy = None
        if self._retry_loaded is not None and self._retry_loaded[0] == self.retries_input.value:
            kept_policy = self._retry_loaded[1]
            retries = None
        scratch.task(
            tid, tool, {k: v for k, v in params.items() if k in _TASK_KEYWORDS},
            after=list(self.deps_input.value) or None,
            priority=self.priority_input.value or None, timeout=timeout, retries=retries,
            vault=self.vault_input.value.strip() or None,
            trigger=self.trigger_input.value or None,
            **plain,
        )
        spec = scratch.specs[tid]
        if kept_policy is not None:
            spec.retry_policy = kept_policy.model_copy()
        if self._kept.get("rollback") is not None:
            spec.rollback = self._kept["rollback"].model_copy(deep=True)
        return spec

    def _ordered_with(self, spec: TaskSpec) -> list[TaskSpec]:
        if self._editing is None:
            return [*self.dag.specs.values(), spec]
        return [spec if s.id == self._editing else s for s in self.dag.specs.values()]

    def _trial(self, spec: TaskSpec) -> tuple[str, str] | None:
        """Validate the DAG as it would be with ``spec``; (field, message) on error."""
        trial = DAG(tools=self.dag.tools)
        for s in self._ordered_with(spec):
            trial.specs[s.id] = s
        try:
            trial.validate()
        except OktyvError as exc:
            current = self._dag_error()
            if current is not None and str(current) == str(exc):
                return None  # the DAG was already invalid; this draft neither caused it
            if isinstance(exc, DuplicateTaskError):
                return "id", exc.message
            if isinstance(exc, ToolNotFoundError) and exc.task_id == spec.id:
                return "tool", exc.message
            if isinstance(exc, CircularDependencyError):
                return "deps", exc.message + " (remove one of these dependencies)"
            if isinstance(exc, MissingDependencyError) and exc.task_id != spec.id:
                return "deps", (f"{exc.message} (saving would break task {exc.task_id}; "
                                "edit it first)")
            return "deps", exc.message
        return None

    def _dag_error(self) -> OktyvError | None:
        try:
            self.dag.validate()
        except OktyvError as exc:
            return exc
        return None

    def _show_errors(self, errors: Mapping[str, str]) -> None:
        pairs: list[tuple[str, W.HTML, list[W.DOMWidget]]] = [
            ("id", self.id_msg, [self.id_input]),
            ("tool", self.tool_msg, [self.tool_input]),
            ("extra", self.extra_msg, [self.extra_input]),
            ("deps", self.deps_msg, [self.deps_input]),
            ("timeout", self.timeout_msg, [self.timeout_input]),
        ]
        for name, field in self.params.items():
            widgets = [field.input] + ([field.ref_input] if field.ref_input else [])
            pairs.append((f"param:{name}", field.message, widgets))
        for key, widget, inputs in pairs:
            text = errors.get(key, "")
            _set_msg(widget, "error", text)
            for w in inputs:
                _mark(w, bool(text))
        if "status" in errors:
            _set_msg(self.status_msg, "error", errors["status"])
        elif self._submitted and errors:
            _set_msg(self.status_msg, "error", "fix the marked fields; nothing was saved")
        elif not errors and self.status_msg.value and "oktyv-error" in self.status_msg.value:
            _set_msg(self.status_msg, "info", "")
        implied = self._implied_deps()
        self.refs_html.value = (
            f'<div style="margin-left:{_LABEL_WIDTH};color:{MUTED};font-size:12px">'
            f"also after (from references): {escape(', '.join(implied))}</div>"
            if implied else ""
        )

    def _implied_deps(self) -> list[str]:
        out: list[str] = []
        for field in self.params.values():
            with contextlib.suppress(FieldError, OktyvError):
                value = field.parse()
                if has_references(value):
                    for ref in find_references(value):
                        if ref.task_id not in out and ref.task_id not in self.deps_input.value:
                            out.append(ref.task_id)
        return out

    # ------------------------------------------------------------------ actions
    @_guarded("status_msg")
    def _on_submit(self, _btn: W.Button | None = None) -> None:
        spec = self._check(submit=True)
        if spec is None:
            return
        verb = "Added" if self._editing is None else "Saved"
        self._replace_all(self._ordered_with(spec))
        if self._editing is None:
            self._new_task()
        else:
            self._editing = spec.id
            self._refresh_tasks()
            self.edit(spec.id)
        _set_msg(self.status_msg, "ok", f"{verb} task {spec.id}")
        self._dag_changed()

    def _replace_all(self, specs: list[TaskSpec]) -> None:
        """Make the DAG's tasks ``specs``, in this order."""
        for tid in list(self.dag.specs):
            self.dag.remove(tid)
        for s in specs:
            self.dag.specs[s.id] = s
        if specs:
            # remove() is how the builder drops its cached graph: take the last task out and
            # put it back, so that the next validate() sees the new tasks
            last = specs[-1]
            self.dag.remove(last.id)
            self.dag.specs[last.id] = last

    @_guarded("status_msg")
    def _on_remove(self, _btn: W.Button | None = None) -> None:
        tid = self._editing
        if tid is None:
            return
        self.dag.remove(tid)
        self._editing = None
        self._refresh_tasks()
        self._new_task()
        _set_msg(self.status_msg, "ok", f"Removed task {tid}")
        self._dag_changed()

    def _dag_changed(self) -> None:
        """Refresh the task list, whole-DAG message and graph preview."""
        self._refresh_tasks()
        exc = self._dag_error()
        self.run_button.disabled = self._is_running()
        if exc is None:
            self.dag_msg.value = ""
        else:
            self.dag_msg.value = (
                f'<div style="margin-left:{_LABEL_WIDTH}">'
                + _message("error", f"The DAG is invalid: {exc.message}") + "</div>"
            )
        self._preview()

    def _preview(self, run: Run | None = None) -> None:
        exc = self._dag_error() if run is None else None
        if exc is not None:
            self.graph_html.value = _message("error", f"no graph: {exc.message}")
            return
        if not self.dag.specs and run is None:
            self.graph_html.value = _message("info", "Add a task to see the levelled graph.")
            return
        try:
            digraph = run.graph() if run is not None else self.dag.graph()
        except Exception as exc:
            self.graph_html.value = _message("error", f"no graph: {exc}")
            return
        try:
            from oktyv_nb.results.display.render import to_svg

            svg = to_svg(digraph)
            self.graph_html.value = svg[svg.find("<svg"):] if "<svg" in svg else svg
        except GraphvizNotFound as exc:
            self.graph_html.value = (
                _message("info", str(exc))
                + f'<pre style="font-size:11px">{escape(digraph.source)}</pre>'
            )

    # ------------------------------------------------------------------ settings
    def _load_settings(self) -> None:
        c = self.dag.config
        self._loading = True
        try:
            self.name_input.value = self.dag.name or ""
            self.max_concurrent_input.value = min(c.max_concurrent, self.max_concurrent_input.max)
            self.failure_mode_input.value = c.failure_mode
            self.run_timeout_input.value = repr(c.timeout) if c.timeout is not None else ""
        finally:
            self._loading = False

    @_guarded("settings_msg")
    def _settings_changed(self, _change: dict[str, Any]) -> None:
        if self._loading:
            return
        text = self.run_timeout_input.value.strip()
        timeout = None
        if text:
            try:
                timeout = float(text)
                if not math.isfinite(timeout) or timeout <= 0:
                    raise ValueError
            except ValueError:
                _set_msg(self.settings_msg, "error",
                         f"run timeout {text!r} is not a number of seconds > 0")
                _mark(self.run_timeout_input, True)
                return
        _mark(self.run_timeout_input, False)
        _set_msg(self.settings_msg, "error", "")
        self.dag.name = self.name_input.value.strip() or None
        self.dag.config = dataclasses.replace(
            self.dag.config, max_concurrent=self.max_concurrent_input.value,
            failure_mode=self.failure_mode_input.value, timeout=timeout)
        self._refresh_tasks()

    # ------------------------------------------------------------------ running
    def _is_running(self) -> bool:
        return self.run_task is not None and not self.run_task.done()

    @_guarded("run_msg")
    def _on_run(self, _btn: W.Button | None = None) -> None:
        if self._is_running():
            return
        try:
            graph = self.dag.validate()
        except OktyvError as exc:
            _set_msg(self.run_msg, "error", exc.message)
            return
        if not graph.nodes:
            _set_msg(self.run_msg, "error", "nothing to run: add a task first")
            return
        _set_msg(self.run_msg, "info", "running…")
        self.progress.max = len(graph.nodes)
        self.progress.value = 0
        self.progress.bar_style = "info"
        self._run_counts = {"success": 0, "failed": 0, "skipped": 0}
        self._running_ids = set()
        self._paint_counts(force=True)
        self.result_html.value = ""
        before = self.dag.last_run
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._set_running(True)
            try:
                run = self.dag.run(on_event=self._on_event, live=False)
            except BaseException as exc:  # KeyboardInterrupt: record what there is, re-raise
                self._finish(self._run_of(before), error=exc)
                if not isinstance(exc, Exception):
                    raise
                return
            self._finish(run)
            return
        self._set_running(True)
        self.run_task = asyncio.ensure_future(self._arun(before))
        self.run_task.add_done_callback(lambda t: self._done(t, before))

    def _run_of(self, before: Run | None) -> Run | None:
        run = self.dag.last_run
        return run if run is not before else None

    async def _arun(self, before: Run | None) -> Run | None:
        try:
            run = await self.dag.arun(on_event=self._on_event, live=False)
        except asyncio.CancelledError:
            self._finish(self._run_of(before), stopped=True)
            return self.last_run
        except Exception as exc:
            self._finish(self._run_of(before), error=exc)
            return None
        self._finish(run)
        return run

    def _done(self, task: asyncio.Future[Any], before: Run | None) -> None:
        if task.cancelled():  # stopped before the run started
            self._finish(self._run_of(before), stopped=True)
        elif task.exception() is not None:  # KeyboardInterrupt, SystemExit
            self._finish(self._run_of(before), error=task.exception())

    @_guarded("run_msg")
    def _on_stop(self, _btn: W.Button | None = None) -> None:
        if self._is_running():
            assert self.run_task is not None
            self.run_task.cancel()
            _set_msg(self.run_msg, "info", "stopping…")

    def _set_running(self, running: bool) -> None:
        self.run_button.disabled = running
        self.stop_button.disabled = not running

    def _on_event(self, kind: EventKind, rec: TaskRecord | None, t: float) -> None:
        if rec is not None:
            if kind == "task_started":
                self._running_ids.add(rec.task_id)
            elif kind == "task_retrying":
                self._running_ids.discard(rec.task_id)
            elif kind == "task_finished":
                self._running_ids.discard(rec.task_id)
                self._run_counts[rec.status] = self._run_counts.get(rec.status, 0) + 1
        self._paint_counts(force=kind == "run_finished")

    def _paint_counts(self, force: bool = False) -> None:
        now = time.perf_counter()
        done = sum(self._run_counts.values())
        wait = _PAINT_INTERVAL - (now - self._last_paint)
        if not force and wait > 0 and done < self.progress.max:
            # throttled: at most ~10 updates a second, and the last state always shows
            if self._paint_timer is None:
                with contextlib.suppress(RuntimeError):
                    self._paint_timer = asyncio.get_running_loop().call_later(
                        wait, self._paint_counts, True)
            return
        if self._paint_timer is not None:
            self._paint_timer.cancel()
            self._paint_timer = None
        self._last_paint = now
        self.progress.value = min(done, self.progress.max)
        c = self._run_counts
        self.counts_label.value = (
            f"<b>{done}/{self.progress.max}</b> finished: "
            f'<span style="color:{_OK_COLOUR}">{c.get("success", 0)} succeeded</span>, '
            f'<span style="color:{_ERR_COLOUR}">{c.get("failed", 0)} failed</span>, '
            f'{c.get("skipped", 0)} skipped; {len(self._running_ids)} running'
        )

    def _finish(self, run: Run | None, *, stopped: bool = False,
                error: BaseException | None = None) -> None:
        self._set_running(False)
        self.last_run = run
        if run is None:
            self.progress.bar_style = "danger"
            text = "stopped before it started" if stopped else f"run failed: {error}"
            _set_msg(self.run_msg, "error", text)
            self._dag_changed()
            return
        summary = run.result.summary
        self._run_counts = {"success": summary.succeeded, "failed": summary.failed,
                            "skipped": summary.skipped}
        self._running_ids = set()
        self._paint_counts(force=True)
        self.progress.bar_style = {"success": "success", "partial": "warning"}.get(
            run.status, "danger")
        if stopped or run.interrupted:
            _set_msg(self.run_msg, "error", "stopped: running tasks were cancelled, the rest "
                     "skipped (see form.last_run)")
        else:
            _set_msg(self.run_msg, "ok" if run.status == "success" else "error",
                     f"{run.status} in {run.stats.makespan_s:.3f} s")
        self._preview(run)  # first: the table appearing means the whole result is shown
        self.result_html.value = _result_html(run)
        self.run_button.disabled = False

    # ------------------------------------------------------------------ export
    def to_request(self) -> dict[str, Any]:
        """The DAG as a JSON request (SPEC §3): a camelCase dict, times in ms."""
        return self.dag.to_request().model_dump(by_alias=True, exclude_none=True, mode="json")

    def to_code(self) -> str:
        """Python code that rebuilds this DAG with the fluent builder into ``dag``.

        Run it with the tools in scope under their names: built-ins are ``ok.tools.<name>``,
        other tools are referred to by the name they are registered under.
        """
        table = self.tool_table()
        mapping: dict[str, str] = {}

        def tool_expr(name: str) -> str:
            try:
                fn = table[name]
            except KeyError:
                return _py(name)  # unknown here: the name, as the request has it
            if BUILTIN_TOOLS.get(name) is fn and name not in self.dag.tools:
                return f"ok.tools.{name}"
            ident = getattr(fn, "__name__", "")
            simple = (ident == name and name.isidentifier() and not keyword.iskeyword(name))
            if name in self.dag.tools:
                clash = (name in default_registry and default_registry[name] is not fn) or \
                    name in BUILTIN_TOOLS
                if simple and not clash:
                    return name
                var = ident if ident.isidentifier() and not keyword.iskeyword(ident) else \
                    re.sub(r"\W", "_", name)
                mapping[name] = var
                return _py(name)
            if simple and default_registry.name_of(fn) == name:
                return name
            return _py(name)

        c = self.dag.config
        tasks: list[str] = []
        for spec in self.dag.specs.values():
            args = [_py(spec.id), tool_expr(spec.tool)]
            plain, named_like_options = _kwargs(spec.params, _TASK_KEYWORDS)
            if named_like_options:  # task()'s positional params dict takes these
                args.append(_py(named_like_options))
            args += plain
            if spec.depends_on:
                args.append(f"after={_py(list(spec.depends_on))}")
            if spec.priority is not None:
                args.append(f"priority={spec.priority}")
            if spec.timeout is not None:
                args.append(f"timeout={_seconds(spec.timeout)!r}")
            rp = spec.retry_policy
            if rp is not None:
                if rp.backoff == "exponential" and rp.initial_delay == 1000.0:
                    args.append(f"retries={rp.max_attempts - 1}")
                else:
                    args.append(
                        f"retry=ok.RetryPolicy(max_attempts={rp.max_attempts}, "
                        f"backoff={_py(rp.backoff)}, initial_delay={_seconds(rp.initial_delay)!r})")
            if spec.rollback is not None:
                rb_args, _ = _kwargs(spec.rollback.params, frozenset())
                rb = ", ".join([tool_expr(spec.rollback.tool), *rb_args])
                args.append(f"rollback=ok.Rollback({rb})")
            if spec.vault is not None:
                args.append(f"vault={_py(spec.vault)}")
            if spec.run_if is not None:
                args.append(f"trigger={_py(spec.run_if)}")
            tasks.append(_call(".task", args, "    "))
        dag_args = [_py(self.dag.name)] if self.dag.name is not None else []
        if c.max_concurrent != 10:
            dag_args.append(f"max_concurrent={c.max_concurrent}")
        if c.failure_mode != "continue":
            dag_args.append(f"failure_mode={_py(c.failure_mode)}")
        if c.timeout is not None:
            dag_args.append(f"timeout={c.timeout!r}")
        if c.strategy != "dependencies":
            dag_args.append(f"strategy={_py(c.strategy)}")
        if mapping:
            dag_args.append("tools={" + ", ".join(f"{_py(k)}: {v}" for k, v in mapping.items())
                            + "}")
        lines = ["import oktyv_nb as ok", "", "dag = (", _call("ok.DAG", dag_args, "    "),
                 *tasks, ")"]
        return "\n".join(lines) + "\n"

    @_guarded("file_msg")
    def _on_export(self, btn: W.Button) -> None:
        if btn is self.code_button:
            self._show_export(self.to_code())
        else:
            self._show_export(json.dumps(self.to_request(), indent=2))

    def _show_export(self, text: str) -> None:
        self.export_area.value = text
        self.export_area.rows = min(max(text.count("\n") + 1, 4), 30)
        self.export_area.layout.display = None

    def _path(self) -> Path | None:
        text = self.path_input.value.strip()
        if not text:
            _set_msg(self.file_msg, "error", "type a file path, e.g. request.json")
            _mark(self.path_input, True)
            return None
        _mark(self.path_input, False)
        return Path(text).expanduser()

    @_guarded("file_msg")
    def _on_save(self, _btn: W.Button | None = None) -> None:
        path = self._path()
        if path is None:
            return
        try:
            path.write_text(json.dumps(self.to_request(), indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            _set_msg(self.file_msg, "error", f"cannot write {path}: {exc.strerror or exc}")
            return
        _set_msg(self.file_msg, "ok", f"saved {len(self.dag.specs)} tasks to {path}")

    @_guarded("file_msg")
    def _on_load(self, _btn: W.Button | None = None) -> None:
        path = self._path()
        if path is None:
            return
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            self.load_request(data)
        except OSError as exc:
            _set_msg(self.file_msg, "error", f"cannot read {path}: {exc.strerror or exc}")
        except json.JSONDecodeError as exc:
            _set_msg(self.file_msg, "error", f"{path} is not JSON: {exc.msg} (line "
                     f"{exc.lineno}, column {exc.colno})")
        except ValueError as exc:  # pydantic ValidationError, OktyvError
            first = str(exc).splitlines()
            _set_msg(self.file_msg, "error", f"{path}: " + " ".join(first[:3]))
        else:
            _set_msg(self.file_msg, "ok", f"loaded {len(self.dag.specs)} tasks from {path}")

    def load_request(self, request: Any) -> None:
        """Replace the DAG's tasks and settings with those of ``request`` (a JSON request
        dict, JSON text or model); ``form.dag`` stays the same object."""
        new = DAG.from_request(request, tools=self.dag.tools)
        self._replace_all(list(new.specs.values()))
        self.dag.config = dataclasses.replace(
            new.config, strategy=self.dag.config.strategy)
        self._load_settings()
        self._editing = None
        self._new_task()
        self._dag_changed()


def _cell(value: Any, limit: int = 120) -> str:
    import pandas as pd

    if value is None or (not isinstance(value, (list, dict, tuple)) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if hasattr(value, "isoformat") and hasattr(value, "tzinfo"):
        return value.strftime("%H:%M:%S.%f")[:-3]
    try:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _result_html(run: Run) -> str:
    """The run's summary line and its DataFrame as a table, statuses coloured."""
    df = run.df
    cols = [c for c in ("tool", "level", "status", "attempts", "duration_s", "wait_s",
                        "result", "error_code", "error_message") if c in df.columns]
    head = "".join(f"<th>{escape(c)}</th>" for c in ["task_id", *cols])
    body = []
    for tid, row in df[cols].iterrows():
        cells = [f'<td class="oktyv-task-id"><b>{escape(str(tid))}</b></td>']
        for c in cols:
            value = row[c]
            if c == "status":
                bg, fg = status_colors(str(value))
                cells.append(f'<td class="oktyv-status" style="background:{bg};color:{fg}">'
                             f"{escape(str(value))}</td>")
            else:
                cells.append(f'<td class="oktyv-col-{c}">{escape(_cell(value))}</td>')
        body.append(f'<tr data-task="{escape(str(tid))}">{"".join(cells)}</tr>')
    s = run.result.summary
    st = run.stats
    summary = (
        f'<div class="oktyv-summary" style="margin:4px 0"><b>Run {escape(run.status)}</b>: '
        f"{s.succeeded} succeeded, {s.failed} failed, {s.skipped} skipped of {s.total}; "
        f"makespan {st.makespan_s:.3f} s, speedup {st.speedup:.2f}×</div>"
    )
    return (f'{summary}<table class="oktyv-result"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def builder(dag: DAG | None = None, tools: Mapping[str, Callable[..., Any]] | None = None
            ) -> BuilderForm:
    """An ipywidgets form that builds ``dag`` (a new :class:`DAG` when None).

    ``tools`` (name -> callable) are offered next to the ``ok.tool``-registered and built-in
    tools, and added to the DAG's own tools. ``form.dag`` is the DAG, ``form.last_run`` the
    run started by the *Run* button, ``form.to_code()`` / ``form.to_request()`` export it.
    """
    return BuilderForm(dag, tools)
