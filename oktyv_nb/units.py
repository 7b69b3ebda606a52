"""Units: the one home of seconds ⇄ milliseconds, of how a duration is shown and of how a
count of things is written (``1 task``, ``3 tasks``).

The JSON format keeps **milliseconds** (as the original Oktyv design did); the Python
builder, the engine, the DataFrame and the statistics use **seconds** (floats), like
:mod:`time` and :mod:`asyncio`. Every conversion between the two goes through
:func:`seconds_to_ms` and :func:`ms_to_seconds`, which round-trip exactly.
"""

from __future__ import annotations

import math
from typing import Any

from oktyv_nb.errors import InvalidOptionError

__all__ = [
    "check_seconds", "format_seconds", "is_number", "ms_to_seconds", "plural", "seconds_to_ms",
]


def seconds_to_ms(seconds: float) -> float:
    """``seconds`` in milliseconds, as the shortest decimal that converts back exactly
    (``1.1`` s gives ``1100.0`` ms, not ``1100.0000000000002``)."""
    ms = seconds * 1000.0
    for digits in range(10):
        r = round(ms, digits)
        if r / 1000.0 == seconds:
            return r
    return ms


def ms_to_seconds(ms: float) -> float:
    """``ms`` milliseconds in seconds (``ms / 1000``; :func:`seconds_to_ms` inverts it)."""
    return ms / 1000.0


def is_number(value: Any) -> bool:
    """True for an int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_seconds(
    value: Any, what: str, *, task_id: str | None = None, allow_zero: bool = False
) -> float:
    """``value`` as a finite number of seconds > 0 (>= 0 with ``allow_zero``), or an
    :class:`~oktyv_nb.errors.InvalidOptionError` naming ``what`` (and the task)."""
    ok = is_number(value) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        name = what.rsplit(" ", 1)[-1]
        err = InvalidOptionError(
            f"{what} must be a finite number of seconds {bound} (e.g. {name}=5.0), "
            f"got {value!r}",
            option=name,
        )
        raise err.in_task(task_id) if task_id is not None else err
    return float(value)


def format_seconds(s: float) -> str:
    """A short human duration: ``850 µs``, ``12.3 ms``, ``1.24 s``, ``2 min 05 s``."""
    if s != s or s < 0:  # NaN or negative: nothing sensible to show
        return "—"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1.0:
        return f"{s * 1e3:.3g} ms"
    if s < 60.0:
        return f"{s:.3g} s"
    m, sec = divmod(round(s), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def plural(n: int, noun: str, plural_form: str | None = None) -> str:
    """``n`` and ``noun`` as text, the noun in the plural unless ``n`` is 1: ``1 task``,
    ``0 tasks``, ``3 levels``; ``plural_form`` for an irregular noun (``child``,
    ``children``). Every text made from a count goes through here."""
    return f"{n} {noun if n == 1 else (plural_form or noun + 's')}"
