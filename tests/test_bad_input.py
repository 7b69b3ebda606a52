"""docs/bad-input.md is true: each row's call raises exactly the exception, code and message
the row shows (one test per row)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from bad_input_cases import describe

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-input.md"
ROW = re.compile(r"^\| (?P<case>[^|]+) \| `(?P<call>[^`]+)` \| `(?P<exc>\w+)` \| "
                 r"(?:`(?P<code>\w+)`)? \| (?P<message>.+) \|$")


def rows() -> list[tuple[str, str, str, str, str]]:
    found = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = ROW.match(line)
        if m:
            found.append((m["case"], m["call"], m["exc"], m["code"] or "", m["message"]))
    return found


def test_the_catalogue_covers_requests_and_the_builder() -> None:
    text = DOC.read_text(encoding="utf-8")
    table_rows = [line for line in text.splitlines()
                  if line.startswith("| ") and not line.startswith("| case")]
    assert len(rows()) == len(table_rows) >= 40  # every table row is one the test reads
    assert "ok.execute_request(" in text and "ok.DAG(" in text


@pytest.mark.parametrize(("case", "call", "exc", "code", "message"), rows(),
                         ids=[r[0] for r in rows()])
def test_row(case: str, call: str, exc: str, code: str, message: str) -> None:
    assert describe(call) == (exc, code, message)


def test_every_error_is_a_value_error() -> None:
    from bad_input_cases import env

    for _, call, *_ in rows():
        with pytest.raises(ValueError):
            eval(call, env())  # the doc's own rows
