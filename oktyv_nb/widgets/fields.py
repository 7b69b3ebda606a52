"""The parameter fields of the form: a tool's signature becomes input widgets (SPEC §12).

:func:`param_fields` reads a tool's parameters, type hints and defaults and makes one
:class:`ParamField` per parameter: text for ``str`` and paths, numbers typed as text (so that
a ``${task.result...}`` reference fits too), a checkbox for ``bool`` and a dropdown for
``Literal``/``Enum`` (each with a ``${…}`` toggle to take a reference instead), JSON text for
lists, dicts and other complex types. A field turns what is typed back into the parameter's
value (:meth:`ParamField.parse`), raising :class:`FieldError` with the message to show next
to it; an empty field means "use the tool's default".
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import json
import math
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from html import escape
from pathlib import PurePath
from typing import Any, Literal, Union, get_args, get_origin

import ipywidgets as W

from oktyv_nb.model.variables import REFERENCE, has_references
from oktyv_nb.results.display.theme import FAINT, MUTED
from oktyv_nb.widgets.common import ERR_COLOUR, INPUT_WIDTH, LABEL_WIDTH, label, row

__all__ = ["FieldError", "ParamField", "param_fields", "rst_inline_html", "tool_help_html"]

_EMPTY = inspect.Parameter.empty
_MISSING: Any = object()  # a field left empty: the tool's default applies
_INT_RE = re.compile(r"[+-]?\d+")
_ENGINE_PARAMS = frozenset({"credentials"})  # passed by the engine for tasks with a vault


def _summary(doc: str | None) -> str:
    """The first paragraph of a docstring, its lines joined by spaces."""
    if not doc:
        return ""
    lines: list[str] = []
    for line in inspect.cleandoc(doc).splitlines():
        if line.strip():
            lines.append(line.strip())
        elif lines:
            break
    return " ".join(lines)


#: Inline reStructuredText in a docstring: a Sphinx role (``:func:`x```, ``:py:meth:`~a.b```,
#: ``:class:`title <a.B>```), a ````literal```` or a `default-role` text.
_RST_INLINE = re.compile(
    r"(?P<role>:(?:[A-Za-z][\w-]*:)*[A-Za-z][\w-]*:)`(?P<target>[^`]+)`"
    r"|``(?P<literal>.+?)``"
    r"|(?<![\w`])`(?P<plain>[^`\s][^`]*)`(?!`)"
)
_EXPLICIT_TITLE = re.compile(r"^(?P<title>.+?)\s*<(?P<target>[^<>]+)>$", re.DOTALL)


def _role_text(target: str) -> str:
    """What a Sphinx cross-reference shows: an explicit title as given; else the target
    without its ``!``/``.`` markers, only its last component when it starts with ``~``."""
    m = _EXPLICIT_TITLE.match(target.strip())
    if m is not None:
        return m.group("title")
    text = target.strip().lstrip("!")
    if text.startswith("~"):
        return text[1:].rstrip(".").rsplit(".", 1)[-1]
    return text.lstrip(".")


def rst_inline_html(text: str) -> str:
    """``text`` (a line of a docstring) as HTML: Sphinx roles (``:func:``, ``:meth:``,
    ``:class:``, ``:mod:``, ``:attr:``, ``:exc:``, ``:data:``, ``:obj:``, with or without
    a ``py:`` domain...), ````literals```` and `default-role` text become ``<code>``, a
    leading ``~`` keeping the last component (``:meth:`~a.B.run``` shows ``run``); the rest
    is escaped."""
    out: list[str] = []
    pos = 0
    for m in _RST_INLINE.finditer(text):
        out.append(escape(text[pos:m.start()]))
        if m.group("role") is not None:
            code = _role_text(m.group("target"))
        else:
            code = m.group("literal") if m.group("literal") is not None else m.group("plain")
        out.append(f"<code>{escape(code)}</code>")
        pos = m.end()
    out.append(escape(text[pos:]))
    return "".join(out)


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
        width = W.Layout(width=INPUT_WIDTH)
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
                                    layout=W.Layout(width=INPUT_WIDTH, display="none"))
            self.ref_input.add_class(f"oktyv-param-{name}-ref")
            self.ref_toggle = W.ToggleButton(
                description="${…}", tooltip="take a ${task.field} reference instead",
                layout=W.Layout(width="52px", margin="0 0 0 6px"))
            self.ref_toggle.observe(self._toggled, "value")
            extras = [self.ref_input, self.ref_toggle]
        req = (f' <span style="color:{ERR_COLOUR}" title="required">*</span>'
               if self.required else "")
        tip = type_text + (f" — {doc}" if doc else "")
        head = f"<b>{escape(name)}</b>{req}"
        if type_text:
            head += f' <span style="color:{FAINT};font-size:11px">{escape(type_text)}</span>'
        self.row = row(label(head, tip), self.input, *extras, self.message)

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


def param_fields(fn: Callable[..., Any] | None) -> tuple[dict[str, ParamField], bool]:
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


def tool_help_html(name: str | None, fn: Callable[..., Any] | None) -> str:
    """The line under the tool dropdown: ``name(signature)`` and the first paragraph of the
    tool's docstring, its reStructuredText roles and literals shown as code
    (:func:`rst_inline_html`)."""
    if not name:
        return ""
    doc = _summary(getattr(fn, "__doc__", None)) if fn is not None else ""
    sig = ""
    if fn is not None:
        with contextlib.suppress(TypeError, ValueError):
            sig = str(inspect.signature(fn))
    desc = f"<code>{escape(name)}{escape(sig)}</code>"
    if doc:
        desc += f"<br><i>{rst_inline_html(doc)}</i>"
    return (f'<div style="margin:0 0 4px {LABEL_WIDTH};color:{MUTED};font-size:12px">'
            f"{desc}</div>")
