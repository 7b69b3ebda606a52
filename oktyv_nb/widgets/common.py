"""What the form's parts share: its style sheet, message HTML, the label-and-input row, and
the guard that keeps a widget callback's error out of the notebook's output.

Colours come from :mod:`oktyv_nb.results.display.theme`, the one palette.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from html import escape
from typing import Any

import ipywidgets as W

from oktyv_nb.results.display.theme import GRID, INK, INVALID, MUTED, SHADE, STATUS_STYLE

__all__ = [
    "ERR_COLOUR", "INFO_COLOUR", "INPUT_WIDTH", "LABEL_WIDTH", "OK_COLOUR", "STYLE", "guarded",
    "label", "mark", "message", "message_area", "row", "set_msg",
]

ERR_COLOUR = STATUS_STYLE["failed"][1]
OK_COLOUR = STATUS_STYLE["success"][1]
INFO_COLOUR = MUTED
LABEL_WIDTH = "150px"
INPUT_WIDTH = "300px"

#: The form's CSS (its root widget has the class ``oktyv-builder``).
STYLE = ("""<style>
.oktyv-builder { font-size: 13px; }
.oktyv-builder .oktyv-head { margin: 2px 0 4px 0; color: @INK; }
.oktyv-builder .oktyv-invalid input, .oktyv-builder .oktyv-invalid textarea,
.oktyv-builder .oktyv-invalid select, .oktyv-builder input.oktyv-invalid {
  border-color: @ERR !important; background: @INVALID !important; }
.oktyv-builder .oktyv-graph svg { max-width: 100%; height: auto; }
.oktyv-builder .oktyv-export textarea { font-family: monospace; font-size: 12px; }
.oktyv-builder table.oktyv-result { border-collapse: collapse; font-size: 12px; }
.oktyv-builder table.oktyv-result th, .oktyv-builder table.oktyv-result td {
  border-bottom: 1px solid @GRID; padding: 3px 8px; text-align: left;
  vertical-align: top; }
.oktyv-builder table.oktyv-result th { background: @SHADE; }
</style>""".replace("@INK", INK).replace("@ERR", ERR_COLOUR).replace("@INVALID", INVALID)
         .replace("@GRID", GRID).replace("@SHADE", SHADE))


def message(kind: str, text: str) -> str:
    """HTML of a message next to a field: ``error``, ``ok`` or ``info``."""
    if not text:
        return ""
    colour, sign = {
        "error": (ERR_COLOUR, "⚠ "), "ok": (OK_COLOUR, "✔ "), "info": (INFO_COLOUR, ""),
    }[kind]
    return (
        f'<span class="oktyv-msg oktyv-{kind}" style="color:{colour};line-height:1.3">'
        f"{sign}{escape(text)}</span>"
    )


def set_msg(widget: W.HTML, kind: str, text: str) -> None:
    """Show ``text`` as a ``kind`` message in ``widget`` (an empty text clears it)."""
    value = message(kind, text)
    if widget.value != value:
        widget.value = value


def mark(widget: W.DOMWidget, invalid: bool) -> None:
    """Mark an input as holding a value that cannot be used (red border), or clear it."""
    has = "oktyv-invalid" in widget._dom_classes
    if invalid and not has:
        widget.add_class("oktyv-invalid")
    elif not invalid and has:
        widget.remove_class("oktyv-invalid")


def label(text: str, tip: str = "") -> W.HTML:
    """The fixed-width label (HTML ``text``, hover ``tip``) at the start of a row."""
    title = f' title="{escape(tip)}"' if tip else ""
    return W.HTML(f"<span{title}>{text}</span>", layout=W.Layout(width=LABEL_WIDTH,
                                                                 min_width=LABEL_WIDTH))


def row(*children: W.Widget) -> W.HBox:
    """Widgets side by side, centred on one line."""
    return W.HBox(list(children), layout=W.Layout(align_items="center", margin="1px 0"))


def message_area() -> W.HTML:
    """An empty message widget, to sit right of its input."""
    return W.HTML(layout=W.Layout(margin="0 0 0 8px"))


def guarded(where: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Show an unexpected error of a widget callback in the message widget ``self.<where>``
    instead of as a traceback in the notebook's output area."""

    def wrap(fn: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(fn)
        def guarded_call(self: Any, *args: Any) -> None:
            try:
                fn(self, *args)
            except Exception as exc:
                set_msg(getattr(self, where), "error", f"{type(exc).__name__}: {exc}")

        return guarded_call

    return wrap
