"""The Gantt chart of a run: bars per attempt, colours, retries, skips, critical path."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.figure import Figure

import oktyv_nb as ok
from oktyv_nb.results.display.timeline import OUTCOME_COLORS, timeline


async def asleep(seconds: float = 0.0, value: Any = None) -> Any:
    await asyncio.sleep(seconds)
    return value


def tsleep(seconds: float = 0.0) -> float:
    time.sleep(seconds)
    return seconds


def boom() -> None:
    time.sleep(0.05)
    raise ValueError("bad row")


@pytest.fixture(scope="module")
def run() -> ok.Run:
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        time.sleep(0.05)
        if calls["n"] < 3:
            raise ConnectionError("try again")
        return "ok"

    dag = (
        ok.DAG("etl", max_concurrent=3)
        .task("extract", asleep, seconds=0.3)
        .task("fetch", flaky, retry=ok.RetryPolicy(3, "exponential", 0.1))
        .task("hang", asleep, seconds=5, timeout=0.2)
        .task("transform", tsleep, seconds=0.2, after="extract")
        .task("validate", boom, after="extract")
        .task("report", asleep, after=["validate", "transform"])
        .task("load", asleep, seconds=0.1, after=["transform", "fetch"])
    )
    return dag.run(live=False)


def _bars(fig: Figure) -> dict[str, list[tuple[float, float, float]]]:
    """gid -> [(y, x0, x1)] of the attempt bars."""
    out: dict[str, list[tuple[float, float, float]]] = {}
    for coll in fig.axes[0].collections:
        gid = coll.get_gid() or ""
        if isinstance(coll, PolyCollection) and gid.startswith("attempts:"):
            for path in coll.get_paths():
                v = path.vertices
                out.setdefault(gid, []).append(
                    (round(float(v[:, 1].min() + v[:, 1].max()) / 2, 6), float(v[:, 0].min()),
                     float(v[:, 0].max())))
    return out


def _row_of(fig: Figure, label: str) -> int:
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    return labels.index(label)


def test_one_bar_per_attempt_coloured_by_outcome(run: ok.Run) -> None:
    fig = run.timeline()
    assert isinstance(fig, Figure)
    bars = _bars(fig)
    total = sum(len(v) for v in bars.values())
    assert total == sum(len(r.spans) for r in run.records.values()) == 8
    by_outcome: dict[str, int] = {}
    for gid, items in bars.items():
        by_outcome[gid.split(":")[1]] = by_outcome.get(gid.split(":")[1], 0) + len(items)
    assert by_outcome == {"success": 4, "failed": 3, "timeout": 1}
    for coll in fig.axes[0].collections:
        gid = coll.get_gid() or ""
        if gid.startswith("attempts:"):
            fill = OUTCOME_COLORS[gid.split(":")[1]][0]
            assert np.allclose(coll.get_facecolor()[0], matplotlib.colors.to_rgba(fill))


def test_bars_sit_at_their_times_from_run_start(run: ok.Run) -> None:
    fig = run.timeline()
    t0 = run.outcome.perf_start
    row = _row_of(fig, "fetch")
    spans = run.records["fetch"].spans
    fetch_bars = sorted(
        (x0, x1) for items in _bars(fig).values() for y, x0, x1 in items if y == row)
    assert len(fetch_bars) == 3
    for (x0, x1), s in zip(fetch_bars, spans, strict=True):
        assert x0 == pytest.approx(s.start - t0) and x1 == pytest.approx(s.end - t0)
    ax = fig.axes[0]
    assert ax.get_xlim()[0] == 0.0
    assert ax.get_xlim()[1] >= max(r.end for r in run.records.values()) - t0
    assert ax.get_xlabel() == "seconds since run start"


def test_retries_show_numbers_and_backoff_gaps(run: ok.Run) -> None:
    fig = run.timeline()
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert {"#1", "#2", "#3"} <= set(texts)
    gaps = [ln for ln in ax.lines if ln.get_gid() == "backoff"]
    assert len(gaps) == 2
    row = _row_of(fig, "fetch")
    spans = run.records["fetch"].spans
    t0 = run.outcome.perf_start
    for ln, (s1, s2) in zip(gaps, itertools.pairwise(spans), strict=True):
        xs, ys = ln.get_data()
        assert list(ys) == [row, row]
        assert xs[0] == pytest.approx(s1.end - t0) and xs[1] == pytest.approx(s2.start - t0)
        assert xs[1] - xs[0] >= 0.1 - 0.01  # the backoff delay
    assert any(t.startswith("backoff") for t in texts)


def test_skipped_tasks_are_marked(run: ok.Run) -> None:
    fig = run.timeline()
    ax = fig.axes[0]
    marks = [c for c in ax.collections if isinstance(c, PathCollection)
             and c.get_gid() == "skipped"]
    assert len(marks) == 1
    (x, y), = marks[0].get_offsets()
    assert y == _row_of(fig, "report")
    rec = run.records["report"]
    assert x == pytest.approx(rec.end - run.outcome.perf_start)
    assert any("skipped" in t.get_text() and "validate" in t.get_text() for t in ax.texts)
    label = ax.get_yticklabels()[_row_of(fig, "report")]
    assert label.get_fontstyle() == "italic"


def test_critical_path_is_outlined(run: ok.Run) -> None:
    fig = run.timeline()
    path = run.stats.critical_path
    assert path
    crit = [c for c in fig.axes[0].collections if (c.get_gid() or "").endswith(":critical")]
    assert crit
    assert all(c.get_hatch() == "///" for c in crit)
    assert all(c.get_linewidth()[0] > 2 for c in crit)
    rows = {_row_of(fig, tid) for tid in path}
    crit_rows = {round(y) for items in (_bars(fig)[c.get_gid()] for c in crit)
                 for y, _, _ in items}
    assert crit_rows == rows
    plain = run.timeline(show_critical=False)
    assert not any((c.get_gid() or "").endswith(":critical") for c in plain.axes[0].collections)


@pytest.mark.parametrize("group_by", ["worker", "level"])
def test_grouped_lanes_never_overlap(run: ok.Run, group_by: str) -> None:
    fig = run.timeline(group_by=group_by)
    bars = [b for items in _bars(fig).values() for b in items]
    assert len(bars) == 8
    by_row: dict[float, list[tuple[float, float]]] = {}
    for y, x0, x1 in bars:
        by_row.setdefault(y, []).append((x0, x1))
    for spans in by_row.values():
        spans.sort()
        for (_a0, a1), (b0, _b1) in itertools.pairwise(spans):
            assert b0 >= a1 - 1e-9
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    if group_by == "worker":
        assert "event-loop" in labels
        assert any(lab.startswith("oktyv") for lab in labels)
        texts = {t.get_text() for t in fig.axes[0].texts}
        assert "fetch #2" in texts  # the task and its attempt number on the bar
    else:
        assert [lab for lab in labels if lab] == ["level 0", "level 1", "level 2"]


def test_draws_into_given_axes_and_leaves_pyplot_alone(run: ok.Run, tmp_path: Path) -> None:
    before = plt.get_fignums()
    fig = timeline(run)  # a Run or its outcome
    assert plt.get_fignums() == before  # no pyplot figure was made
    fig.savefig(tmp_path / "t.png")
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    png = fig._repr_png_()  # what Jupyter shows
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    plt.close(fig)  # close-safe although pyplot never knew it

    mine = Figure()
    ax = mine.add_subplot()
    assert timeline(run.outcome, ax=ax, title="mine") is mine
    assert ax.get_title(loc="left") == "mine"
    assert run.timeline().axes[0].get_title(loc="left") == "etl"  # the DAG's name


def test_bad_group_by() -> None:
    run = ok.DAG().task("a", asleep).run(live=False)
    with pytest.raises(ValueError, match="group_by"):
        run.timeline(group_by="colour")  # type: ignore[arg-type]


def test_empty_interrupted_and_reused_runs() -> None:
    empty = ok.DAG().run(live=False).timeline()
    assert _bars(empty) == {}
    assert [t.get_text() for t in empty.axes[0].texts] == ["no tasks"]

    dag = ok.DAG().task("a", asleep, seconds=0.05).task("b", asleep, seconds=5, after="a")

    async def main() -> None:
        task = asyncio.create_task(dag.arun(live=False))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    partial = dag.last_run
    assert partial is not None and partial.interrupted
    fig = partial.timeline()
    assert any(gid.startswith("attempts:cancelled") for gid in _bars(fig))
    assert "interrupted" in fig.axes[0].get_title(loc="right")

    again = partial.rerun_failed(live=False, max_concurrent=2)
    fig = again.timeline()
    reused = [c for c in fig.axes[0].collections if c.get_gid() == "reused"]
    assert len(reused) == 1 and again.reused == ["a"]


def test_many_tasks() -> None:
    async def noop() -> None:
        return None

    dag = ok.DAG(max_concurrent=32)
    for i in range(2000):
        dag.task(f"t{i}", noop, after=f"t{i - 50}" if i >= 50 else None)
    run = dag.run(live=False)
    t0 = time.perf_counter()
    fig = run.timeline()
    fig.canvas.draw()
    assert time.perf_counter() - t0 < 30  # loose: it completes, in reasonable time
    assert sum(len(v) for v in _bars(fig).values()) == 2000
    assert fig.get_figheight() <= 30


def test_ready_to_start_waits_are_drawn_before_the_first_bar() -> None:
    # one slot: b is ready at 0 but waits for a (0.2 s); c waits for a then b
    dag = (ok.DAG("queue", max_concurrent=1)
           .task("a", asleep, seconds=0.2, priority=9)
           .task("b", asleep, seconds=0.1, priority=5)
           .task("c", asleep, seconds=0.05, priority=1))
    run = dag.run(live=False)
    fig = run.timeline()
    ax = fig.axes[0]
    (waits,) = [c for c in ax.collections if c.get_gid() == "wait"]
    segs = {round(float(s[0, 1])): (float(s[0, 0]), float(s[1, 0])) for s in waits.get_segments()}
    df = run.df
    for tid in ("b", "c"):
        ready, start = segs[_row_of(fig, tid)]
        assert ready == pytest.approx(df.start_s[tid] - df.wait_s[tid], abs=1e-6)
        assert start == pytest.approx(df.start_s[tid], abs=1e-6)
    assert _row_of(fig, "a") not in segs  # a never waited
    assert "ready, waiting to start" in [t.get_text() for t in ax.get_legend().get_texts()]
    plain = run.timeline(show_wait=False)
    assert not any(c.get_gid() == "wait" for c in plain.axes[0].collections)


def test_xmax_puts_several_runs_on_one_time_axis() -> None:
    short = ok.DAG("short").task("a", asleep, seconds=0.05).run(live=False)
    long = ok.DAG("long").task("a", asleep, seconds=0.25).run(live=False)
    assert short.timeline().axes[0].get_xlim()[1] < 0.1  # fitted to its own run by default
    fig = Figure()
    axes = fig.subplots(2, sharex=True)
    end = max(short.stats.makespan_s, long.stats.makespan_s) * 1.05
    long.timeline(ax=axes[0], xmax=end)
    short.timeline(ax=axes[1], xmax=end)  # drawn last, yet the axis keeps the longer span
    assert axes[0].get_xlim() == axes[1].get_xlim() == pytest.approx((0.0, end))
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="xmax"):
            short.timeline(xmax=bad)


def test_highlight_outlines_a_chosen_chain_instead_of_the_critical_path() -> None:
    dag = ok.DAG("levels", max_concurrent=2)
    dag.task("a0", asleep, seconds=0.15).task("b0", asleep, seconds=0.02)
    dag.task("a1", asleep, seconds=0.02, after="a0").task("b1", asleep, seconds=0.15, after="b0")
    run = dag.run(live=False, strategy="levels")
    binding = ["a0", "b1"]  # the slow task of each level, with the barrier between them
    fig = run.timeline(highlight=binding)
    crit = [c for c in fig.axes[0].collections if (c.get_gid() or "").endswith(":critical")]
    rows = {round(y) for c in crit for y, *_ in _bars(fig)[c.get_gid()]}
    assert rows == {_row_of(fig, "a0"), _row_of(fig, "b1")}
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "highlighted" in legend and "critical path" not in legend
    with pytest.raises(ValueError, match="nope"):
        run.timeline(highlight=["a0", "nope"])
