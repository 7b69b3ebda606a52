"""The one palette: every colour the graph, the timeline, the live view and the widgets use.

A task's status has one colour pair everywhere it is shown, ``(fill, stroke)``: the fill is a
light tint for areas (a graph node, a table cell, a timeline bar), the stroke the strong tone
of the same hue for borders, text and legends. An attempt's outcome (what a timeline bar shows)
reuses its status's pair; ``timeout`` and ``cancelled`` have pairs of their own because a
record's status does not distinguish them. The other names are the neutral greys of text,
edges, grids and shading. Colours are CSS hex strings, which Graphviz, matplotlib and HTML all
read.
"""

from __future__ import annotations

__all__ = [
    "ACCENT", "FAINT", "GRID", "INK", "INVALID", "MUTED", "OUTCOME_COLORS", "PLAIN", "SHADE",
    "STATUS_STYLE", "status_colors",
]

#: status -> (fill, stroke). Order = legend order = the order of ``records.STATUSES``.
STATUS_STYLE: dict[str, tuple[str, str]] = {
    "pending": ("#f8f9fa", "#adb5bd"),
    "ready": ("#fff3bf", "#e0a800"),
    "running": ("#a5d8ff", "#1c7ed6"),
    "retrying": ("#ffd8a8", "#e8590c"),
    "success": ("#b2f2bb", "#2f9e44"),
    "failed": ("#ffa8a8", "#c92a2a"),
    "skipped": ("#dee2e6", "#868e96"),
}

#: attempt outcome -> (fill, stroke), for timeline bars and their legend.
OUTCOME_COLORS: dict[str, tuple[str, str]] = {
    "success": STATUS_STYLE["success"],
    "failed": STATUS_STYLE["failed"],
    "timeout": ("#ffc078", "#d9480f"),
    "cancelled": ("#d0bfff", "#5f3dc4"),
}

#: a task before any run: no status yet.
PLAIN = ("#ffffff", "#495057")
INK = "#212529"  # the critical path; headings
MUTED = "#495057"  # secondary text: tool names, summaries, backoff lines
FAINT = "#868e96"  # edges, level labels, skipped marks
GRID = "#dee2e6"  # grid lines and table rules
SHADE = "#f1f3f5"  # alternating bands and table heads
ACCENT = "#1c7ed6"  # reused results, focus
INVALID = "#fff6f6"  # the background of a form input whose value cannot be used


def status_colors(status: str | None) -> tuple[str, str]:
    """The ``(fill, stroke)`` pair of ``status``; :data:`PLAIN` for ``None`` or an unknown name."""
    return STATUS_STYLE.get(status, PLAIN) if status else PLAIN
