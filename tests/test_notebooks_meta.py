"""The notebooks in notebooks/ are stored executed, and nbval checks most of their cells.

nbval itself (``pytest notebooks --nbval ...``) re-runs them and compares outputs; these tests
guard what nbval cannot see: that every notebook SPEC §13 asks for is there, was executed top
to bottom without errors, keeps the cells whose output is ignored few, and that the sanitizer
config nbval uses is valid.
"""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
EXPECTED = [
    "01_quickstart.ipynb",
    "02_original_examples.ipynb",
    "03_timing_analysis.ipynb",
    "04_teaching.ipynb",
    "05_widget_form.ipynb",
    "06_run_store.ipynb",
    "07_cpu_vs_io.ipynb",
    "08_fan_out.ipynb",
]
IGNORE = "# NBVAL_IGNORE_OUTPUT"
IGNORE_TAG = "nbval-ignore-output"


def load(name: str) -> dict[str, Any]:
    return json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))


def code_cells(nb: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def source(cell: dict[str, Any]) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def ignored(cell: dict[str, Any]) -> bool:
    """Output not compared by nbval: the comment marker or the cell tag."""
    return source(cell).startswith(IGNORE) or IGNORE_TAG in cell["metadata"].get("tags", [])


def test_every_notebook_is_there() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_stored_executed_in_order_without_errors(name: str) -> None:
    nb = load(name)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    counts = [c["execution_count"] for c in code_cells(nb)]
    assert None not in counts, f"{name}: some cells were never executed"
    assert counts == list(range(1, len(counts) + 1)), f"{name}: not run top to bottom once"
    for cell in code_cells(nb):
        for out in cell["outputs"]:
            assert out["output_type"] != "error", f"{name}: stored error in {source(cell)!r}"
            if out["output_type"] == "stream":
                assert out["name"] == "stdout", f"{name}: stderr output {out['text']!r}"


@pytest.mark.parametrize("name", EXPECTED)
def test_most_cells_are_checked(name: str) -> None:
    cells = code_cells(nb := load(name))
    ignored_cells = [c for c in cells if ignored(c)]
    checked_with_output = [c for c in cells if c not in ignored_cells and c["outputs"]]
    # Outputs that vary (durations, timestamps, widgets) are ignored cell by cell, never
    # wholesale: no skips, few ignores, and most cells with output are compared.
    assert not any("NBVAL_SKIP" in source(c) or "nbval-skip" in c["metadata"].get("tags", [])
                   for c in cells)
    assert len(ignored_cells) <= len(cells) // 3, (
        f"{name}: {len(ignored_cells)} of {len(cells)} ignored"
    )
    assert len(checked_with_output) > len(ignored_cells)
    assert any(c["cell_type"] == "markdown" for c in nb["cells"])


@pytest.mark.parametrize("name", EXPECTED)
def test_checked_outputs_hold_no_run_specific_values(name: str) -> None:
    """Checked outputs must not depend on the machine: no temp paths, no memory addresses."""
    for cell in code_cells(load(name)):
        if ignored(cell):
            continue
        for out in cell["outputs"]:
            texts = [out.get("text", "")] + [
                v for k, v in out.get("data", {}).items() if k.startswith("text/")
            ]
            texts = [t if isinstance(t, str) else "".join(t) for t in texts]
            for text in texts:
                assert "/tmp/" not in text and not re.search(r"\bat 0x[0-9a-f]+", text), (
                    f"{name}: run-specific value in the output of {source(cell)[:60]!r}"
                )


def test_sanitize_config_is_valid() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "ci" / "nbval_sanitize.cfg")
    assert cfg.sections()
    for section in cfg.sections():
        pattern = re.compile(cfg[section]["regex"])
        assert "replace" in cfg[section]
        assert not pattern.search("level 0: ['users', 'orders', 'products']"), section
    port = re.compile(cfg["localhost-ports"]["regex"])
    assert port.sub(cfg["localhost-ports"]["replace"], "http://127.0.0.1:40669/api") == (
        "http://127.0.0.1:PORT/api"
    )



@pytest.mark.parametrize("name", ["03_timing_analysis.ipynb", "04_teaching.ipynb",
                                  "07_cpu_vs_io.ipynb"])
def test_exercises_have_collapsed_solutions(name: str) -> None:
    """Each "Exercise" is followed by a solution cell whose source is collapsed in Jupyter."""
    nb = load(name)
    solutions = [c for c in code_cells(nb) if "solution" in c["metadata"].get("tags", [])]
    exercises = [c for c in nb["cells"] if c["cell_type"] == "markdown"
                 and re.search(r"^#+ .*Exercise", source(c), re.M)]
    assert exercises and len(solutions) >= len(exercises), name
    for cell in solutions:
        assert cell["metadata"]["jupyter"]["source_hidden"] is True
        assert source(cell).startswith("# Solution"), source(cell)[:60]
        assert cell["outputs"], "solutions are executed and checked like any cell"
