"""The widget form in a real browser: Voila serves a notebook that builds ``ok.builder`` with
three small tools; Playwright drives Debian Chromium to add tasks, run and stop the DAG in the
kernel, and reads what the page shows: the graph's colours during a run and its size after
it, the progress bar and counts after a stop, the dependencies' size when marked invalid.

Screenshots go to /tmp (``oktyv-form-*.png``).
"""

from __future__ import annotations

from typing import Any

import pytest

from oktyv_nb.results.display.theme import STATUS_STYLE

pytestmark = pytest.mark.browser

WIDGETS_TIMEOUT = 90_000  # ms: kernel start + notebook execution on a busy machine
STEP_TIMEOUT = 30_000  # ms

#: Task id -> the fill of its node in the form's graph (level labels are not tasks).
NODE_FILLS_JS = """() => {
  const out = {};
  for (const g of document.querySelectorAll('.oktyv-graph svg g.node')) {
    const id = g.querySelector('title')?.textContent ?? '';
    const shape = g.querySelector('path, polygon, ellipse');
    if (!id.startsWith('#') && shape) out[id] = shape.getAttribute('fill');
  }
  return out;
}"""

#: How many lines the text of an element takes on the page: its text's boxes, top to bottom,
#: a box starting below the bottom of the line before it starting a new line.
LINES_JS = """e => {
  const r = document.createRange();
  r.selectNodeContents(e);
  const boxes = [...r.getClientRects()].filter(x => x.width > 0 && x.height > 0)
    .sort((p, q) => p.top - q.top);
  let lines = 0, bottom = -Infinity;
  for (const x of boxes) {
    if (x.top >= bottom - 1) { lines += 1; bottom = x.bottom; }
    else bottom = Math.max(bottom, x.bottom);
  }
  return lines;
}"""


def _rgb(hex_colour: str) -> str:
    """``#c92a2a`` as the browser's computed style writes it: ``rgb(201, 42, 42)``."""
    r, g, b = (int(hex_colour[k:k + 2], 16) for k in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"

def _open(browser: Any, url: str, width: int = 1400) -> Any:
    page = browser.new_page(viewport={"width": width, "height": 1500})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url, timeout=60_000)
    page.locator(".oktyv-builder").wait_for(timeout=WIDGETS_TIMEOUT)
    page.locator(".oktyv-tool select").wait_for(timeout=STEP_TIMEOUT)
    page.js_errors = errors  # type: ignore[attr-defined]
    return page


def _status(page: Any, text: str) -> None:
    page.locator(".oktyv-status-msg", has_text=text).wait_for(timeout=STEP_TIMEOUT)


def _add_task(page: Any, task_id: str, tool: str, params: dict[str, str],
              deps: list[str] | None = None) -> None:
    page.locator(".oktyv-tool select").select_option(label=tool)
    for name in params:  # the fields of the chosen tool come from the kernel
        page.locator(f".oktyv-param-{name} input, .oktyv-param-{name} textarea").first \
            .wait_for(timeout=STEP_TIMEOUT)
    page.locator(".oktyv-id input").fill(task_id)
    for name, value in params.items():
        page.locator(f".oktyv-param-{name} input, .oktyv-param-{name} textarea").first \
            .fill(value)
    if deps:
        page.locator(".oktyv-deps select").select_option(deps)
    page.locator("button.oktyv-add").click()
    _status(page, f"Added task {task_id}")


def _result_rows(page: Any) -> dict[str, dict[str, str]]:
    rows: dict[str, dict[str, str]] = {}
    table = page.locator("table.oktyv-result")
    headers = table.locator("thead th").all_inner_texts()
    for tr in table.locator("tbody tr").all():
        cells = tr.locator("td").all_inner_texts()
        rows[cells[0].strip()] = dict(zip(headers, (c.strip() for c in cells), strict=True))
    return rows


def test_add_two_tasks_run_and_read_the_table(voila_url: str, browser: Any) -> None:
    page = _open(browser, voila_url)
    _add_task(page, "first", "numbers", {"n": "4"})
    # inline validation in the page: a duplicate id shows next to the id field, in red
    page.locator(".oktyv-id input").fill("first")
    msg = page.locator(".oktyv-msg.oktyv-error", has_text="Duplicate task ID: first")
    msg.wait_for(timeout=STEP_TIMEOUT)
    assert _rgb(STATUS_STYLE["failed"][1]) in msg.evaluate("e => getComputedStyle(e).color")
    page.locator(".oktyv-tool select").select_option(label="total")
    values = page.locator(".oktyv-param-values textarea")
    values.wait_for(timeout=STEP_TIMEOUT)
    values.fill("[1, 2")
    page.locator(".oktyv-msg-values", has_text="invalid JSON").wait_for(timeout=STEP_TIMEOUT)
    page.screenshot(path="/tmp/oktyv-form-invalid.png")
    page.locator("button.oktyv-add").click()
    _status(page, "nothing was saved")
    _add_task(page, "second", "total", {"values": "${first.result}", "scale": "2"},
              deps=["first"])
    page.locator(".oktyv-graph svg").wait_for(timeout=STEP_TIMEOUT)
    assert page.locator(".oktyv-graph svg g.node").count() >= 2
    page.locator(".oktyv-tasks select").wait_for(timeout=STEP_TIMEOUT)

    page.locator("button.oktyv-run").click()
    page.locator("table.oktyv-result").wait_for(timeout=STEP_TIMEOUT)
    rows = _result_rows(page)
    assert set(rows) == {"first", "second"}
    assert rows["first"]["status"] == "success"
    assert rows["second"]["status"] == "success"
    assert rows["first"]["result"] == "[0, 1, 2, 3]"
    assert float(rows["second"]["result"]) == 12.0  # (0+1+2+3) * 2
    assert "2/2" in page.locator(".oktyv-counts").inner_text()
    page.locator(".oktyv-export").wait_for(state="hidden", timeout=STEP_TIMEOUT)
    page.locator("button", has_text="Python code").click()
    code = page.locator(".oktyv-export textarea")
    code.wait_for(timeout=STEP_TIMEOUT)
    page.wait_for_function(
        "() => document.querySelector('.oktyv-export textarea').value.includes('.task')")
    text = code.input_value()
    assert '.task("first", numbers, n=4)' in text
    assert '.task("second", total, values="${first.result}", scale=2, after=["first"])' in text
    page.screenshot(path="/tmp/oktyv-form-run.png", full_page=True)
    assert page.js_errors == []  # type: ignore[attr-defined]
    page.close()


def test_stop_cancels_the_run_in_the_kernel(voila_url: str, browser: Any) -> None:
    page = _open(browser, voila_url)
    _add_task(page, "quick", "numbers", {"n": "2"})
    _add_task(page, "slow", "wait", {"seconds": "60"})
    _add_task(page, "after_slow", "total", {"values": "${quick.result}"}, deps=["slow"])
    page.locator("button.oktyv-run").click()
    # the run goes on in the kernel while the page stays live: Stop is clickable
    page.locator(".oktyv-counts", has_text="1 running").wait_for(timeout=STEP_TIMEOUT)
    page.locator("button.oktyv-stop").click()
    page.locator("table.oktyv-result").wait_for(timeout=STEP_TIMEOUT)
    rows = _result_rows(page)
    assert rows["quick"]["status"] == "success"
    assert rows["slow"]["status"] == "failed"
    assert rows["slow"]["error_code"] == "CANCELLED"
    assert rows["after_slow"]["status"] == "skipped"
    graph = page.locator(".oktyv-graph").inner_text()  # the graph shows the run, coloured
    assert "1 success" in graph and "1 failed" in graph and "1 skipped" in graph
    assert "stopped" in page.locator(".oktyv-msg.oktyv-error", has_text="stopped").inner_text()
    # the bar shows the one task of three that ended before the stop, not a full block,
    # and the counts stay on one line beside it
    counts = page.locator(".oktyv-counts")
    assert "1/3 finished" in counts.inner_text() and "2 stopped" in counts.inner_text()
    bar = page.locator(".oktyv-builder .progress-bar")
    fraction = bar.evaluate("e => e.getBoundingClientRect().width"
                            " / e.parentElement.getBoundingClientRect().width")
    assert abs(fraction - 1 / 3) < 0.02, fraction
    assert counts.evaluate(LINES_JS) == 1
    page.screenshot(path="/tmp/oktyv-form-stop.png", full_page=True)
    page.close()


def test_the_graph_is_coloured_live_and_keeps_its_size(voila_url: str, browser: Any) -> None:
    # a page narrower than the form with its graph beside the editor
    page = _open(browser, voila_url, width=1000)
    for tid, seconds in (("a", "0.3"), ("b", "0.5"), ("c", "0.7"), ("d", "6")):
        _add_task(page, tid, "wait", {"seconds": seconds}, deps=["a"] if tid == "d" else None)
    # marked invalid (a cycle), the dependencies keep their size beside the message
    deps = page.locator(".oktyv-deps select")
    page.locator(".oktyv-tasks select").select_option(index=0)  # edit task a
    page.locator(".oktyv-builder", has_text="Edit task a").wait_for(timeout=STEP_TIMEOUT)
    before = deps.bounding_box()
    deps.select_option(["d"])
    page.locator(".oktyv-msg.oktyv-error", has_text="Circular").wait_for(timeout=STEP_TIMEOUT)
    assert "oktyv-invalid" in page.locator(".oktyv-deps").get_attribute("class")
    assert deps.bounding_box() == before
    page.locator("button", has_text="New task").click()
    page.locator(".oktyv-builder", has_text="New task").wait_for(timeout=STEP_TIMEOUT)

    success, running = STATUS_STYLE["success"][0], STATUS_STYLE["running"][0]
    page.locator("button.oktyv-run").click()
    # while d still runs, the form's graph shows a, b and c finished (from the run's events)
    page.wait_for_function(
        f"() => {{ const f = ({NODE_FILLS_JS})(); return ['a', 'b', 'c'].every("
        f"t => f[t] === '{success}') && f.d === '{running}'; }}", timeout=STEP_TIMEOUT)
    assert page.locator("table.oktyv-result").count() == 0  # the run goes on
    assert "1 running" in page.locator(".oktyv-counts").inner_text()
    page.screenshot(path="/tmp/oktyv-form-live.png", full_page=True)

    page.locator("table.oktyv-result").wait_for(timeout=STEP_TIMEOUT)
    assert page.evaluate(NODE_FILLS_JS) == dict.fromkeys("abcd", success)
    # the run's graph, with its title line and legend, keeps its own width or the row's
    svg = page.locator(".oktyv-graph svg")
    natural_pt = float(svg.get_attribute("width").removesuffix("pt"))
    shown = svg.bounding_box()["width"]
    row = page.locator(".oktyv-graph-box").evaluate(
        "e => e.parentElement.getBoundingClientRect().width")
    assert shown >= min(natural_pt * 4 / 3, row) - 2, (shown, natural_pt, row)
    assert shown > 400
    page.screenshot(path="/tmp/oktyv-form-after-run.png", full_page=True)
    assert page.js_errors == []  # type: ignore[attr-defined]
    page.close()
