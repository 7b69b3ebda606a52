"""SPEC §6/§11 live view: frames counted and throttled on real runs, trailing and final
frames, back-off when showing frames is costly, text mode, interrupts, frame pictures, the
missing-``dot`` path, loosely measured overhead, and the notebook display in a real kernel."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
import warnings
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import cancel_arun_after

import oktyv_nb as ok
from oktyv_nb.execution.events import EventKind
from oktyv_nb.execution.records import TaskRecord
from oktyv_nb.live import Frame, LiveView
from oktyv_nb.results.display import GRAPH_LIMIT
from oktyv_nb.results.display.render import STATUS_STYLE, svg_html
from oktyv_nb.units import format_seconds

HAVE_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAVE_DOT, reason="Graphviz `dot` is not installed")
perf = time.perf_counter


async def asleep(seconds: float = 0.0, fail: bool = False) -> None:
    await asyncio.sleep(seconds)
    if fail:
        raise ValueError("failed on purpose")


def tsleep(seconds: float = 0.0) -> None:
    time.sleep(seconds)


async def anoop() -> None:
    return None


def chain_dag(n: int, tool: Any, width: int = 10, name: str = "chains", **params: Any) -> ok.DAG:
    """``n`` tasks in ``width`` chains: task i depends on task i - width."""
    d = ok.DAG(name, max_concurrent=width)
    for i in range(n):
        d.task(f"t{i}", tool, after=[f"t{i - width}"] if i >= width else None, **params)
    return d


class Recorder:
    """A display callable keeping every frame, and when it came."""

    def __init__(self, cost: float = 0.0) -> None:
        self.frames: list[Frame] = []
        self.cost = cost

    def __call__(self, frame: Frame) -> None:
        self.frames.append(frame)
        if self.cost:
            time.sleep(self.cost)


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, kind: EventKind, rec: TaskRecord | None, t: float) -> None:
        self.n += 1


def live_run(dag: ok.DAG, view: LiveView, **kwargs: Any) -> tuple[ok.Run, int]:
    """Run ``dag`` with ``view`` subscribed as dag.arun does, close it; return the run and
    the number of events."""
    count = Counter()
    run = dag.run(live=False, on_event=[count, view], **kwargs)
    view.close(run)
    return run, count.n


# ------------------------------------------------------------------ throttling
def test_frames_are_few_throttled_and_end_with_the_final_states() -> None:
    dag = chain_dag(200, asleep, seconds=0.01)
    rec = Recorder()
    view = LiveView(dag.validate(), title="chains", display=rec, min_interval=0.03)
    run, events = live_run(dag, view)
    makespan = run.stats.makespan_s
    frames = rec.frames
    assert events >= 3 * 200 and len(frames) == view.frames
    assert 3 <= len(frames) <= makespan / 0.03 + 3  # a frame at most every min_interval
    assert len(frames) * 20 < events
    live = [f for f in frames if not f.final]
    for a, b in pairwise(live):
        assert b.elapsed - a.elapsed >= 0.03 - 1e-9
    assert [f.done for f in frames] == sorted(f.done for f in frames)  # progress only grows
    assert any(0 < f.done < 200 for f in live)  # frames showed the run in progress
    final = frames[-1]
    assert final.final and sum(f.final for f in frames) == 1
    assert final.states == {tid: r.status for tid, r in run.records.items()}
    assert final.counts["success"] == 200 and final.done == 200
    assert final.outcome is run.outcome
    assert "200/200 done (200 success)" in final.text()
    assert view.display_s < 0.05 * makespan + 0.005


def test_the_view_takes_only_run_events_and_reads_records_on_a_timer() -> None:
    class Counting(LiveView):
        def on_event(self, kind: EventKind, rec: Any, t: float) -> None:
            self.calls.append(kind)
            super().on_event(kind, rec, t)

        __call__ = on_event

    dag = chain_dag(100, asleep, seconds=0.01)
    rec = Recorder()
    view = Counting(dag.validate(), display=rec, min_interval=0.02)
    view.calls = []
    run = dag.run(live=False, on_event=view)
    view.close(run)
    assert view.calls == ["run_started", "run_finished"]  # 300 task events never reach it
    live = [f for f in rec.frames if not f.final]
    assert len(live) >= 3 and any(0 < f.done < 100 for f in live)
    assert all(a.states != b.states for a, b in pairwise(live[1:]))  # only on a change
    assert rec.frames[-1].done == 100


def test_a_trailing_frame_shows_the_last_change() -> None:
    # Everything before the long task happens within a millisecond; without a trailing
    # frame the view would show "long" running only once it had finished.
    d = ok.DAG("trail", max_concurrent=2)
    d.task("quick", asleep)
    d.task("long", asleep, seconds=0.6, after=["quick"])
    rec = Recorder()
    view = LiveView(d.validate(), display=rec, min_interval=0.1)
    live_run(d, view)
    running = [f for f in rec.frames if f.states.get("long") == "running"]
    assert running and running[0].elapsed < 0.45
    assert len(rec.frames) <= 4  # first, trailing, when long finished (maybe), final


def test_costly_display_backs_off_to_its_budget() -> None:
    dag = chain_dag(60, asleep, width=2, seconds=0.02)  # ~0.6 s, 180+ events
    rec = Recorder(cost=0.01)
    view = LiveView(dag.validate(), display=rec, min_interval=0.0, budget=0.1)
    run, _ = live_run(dag, view)
    makespan = run.stats.makespan_s
    # each frame costs >= 10 ms, so frames come at most every 100 ms
    assert len(rec.frames) <= makespan / 0.1 + 3
    assert view.display_s <= 0.1 * makespan + 0.03
    cheap = LiveView(dag.validate(), display=Recorder(), min_interval=0.0, budget=0.1)
    live_run(dag, cheap)
    assert cheap.frames > 2 * len(rec.frames)  # the same settings, a cheap display


def test_overhead_is_small() -> None:
    """Loose bounds (the machine is shared); the report has careful figures. Runs are
    interleaved so that noise hits each variant alike; the best of each is compared."""

    def makespan(run: ok.Run) -> float:
        return run.outcome.perf_end - run.outcome.perf_start

    def measure(dag: ok.DAG, reps: int) -> dict[str, float]:
        best = {"plain": float("inf"), "null": float("inf"), "live": float("inf")}
        shown = 0.0
        for _ in range(reps):
            best["plain"] = min(best["plain"], makespan(dag.run(live=False)))
            run = dag.run(live=False, on_event=lambda kind, rec, t: None)  # the engine's event cost
            best["null"] = min(best["null"], makespan(run))
            view = LiveView(dag.validate(), display=Recorder())
            run = dag.run(live=False, on_event=view.on_event)
            view.close(run)
            best["live"] = min(best["live"], makespan(run))
            shown = max(shown, view.display_s)
        best["shown"] = shown
        return best

    m = measure(chain_dag(1000, anoop, width=10), 7)
    print("1000 no-op tasks, ms: " + ", ".join(f"{k} {v * 1e3:.2f}" for k, v in m.items()))
    assert m["shown"] < 0.005  # frames made in the loop's thread
    assert m["live"] < 1.5 * m["null"] + 0.003  # the view's own share
    assert m["live"] < 2.0 * m["plain"] + 0.005  # with the engine's events
    m = measure(chain_dag(200, tsleep, width=10, seconds=0.01), 2)
    print("200 tasks of 10 ms, ms: " + ", ".join(f"{k} {v * 1e3:.2f}" for k, v in m.items()))
    assert m["shown"] < 0.05 * m["plain"]
    assert m["live"] < 1.15 * m["plain"]


# ------------------------------------------------------------------ modes
def test_outside_a_notebook_without_display_it_does_nothing() -> None:
    dag = chain_dag(20, anoop)
    view = LiveView(dag.validate())
    assert not view.active
    run, events = live_run(dag, view)
    assert events > 0 and view.frames == 0 and view.closed
    assert run.status == "success"
    assert "inactive" in repr(view)


def test_text_mode_prints_progress_lines(capsys: pytest.CaptureFixture[str]) -> None:
    d = ok.DAG("text", max_concurrent=2)
    d.task("a", asleep, seconds=0.05)
    d.task("b", asleep, fail=True)
    d.task("c", asleep, after=["b"])
    view = LiveView(d.validate(), title="text", display=print, min_interval=0.02)
    live_run(d, view)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == view.frames >= 2
    assert lines[0].startswith("text: 0/3 done")
    assert lines[-1].startswith("text: 3/3 done (1 success, 1 failed, 1 skipped)")


def test_close_without_a_run_after_an_interrupt() -> None:
    dag = chain_dag(40, asleep, width=4, seconds=0.05)
    rec = Recorder()
    view = LiveView(dag.validate(), display=rec, min_interval=0.02)

    async def main() -> None:
        task = asyncio.ensure_future(dag.arun(live=False, on_event=view.on_event))
        await asyncio.sleep(0.12)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    view.close()
    view.close()  # idempotent
    partial = dag.last_run
    assert partial is not None and partial.interrupted
    final = rec.frames[-1]
    assert final.final and final.outcome is None
    seen = {t: r.status for t, r in partial.records.items() if r.status != "pending"}
    assert final.states == seen
    c = final.counts
    assert c["success"] >= 4 and c["failed"] >= 1 and c["skipped"] >= 20
    assert c["running"] == 0 and c["ready"] == 0


def test_a_failing_display_never_breaks_the_run() -> None:
    def bad(frame: Frame) -> None:
        raise RuntimeError("display broke")

    dag = chain_dag(10, anoop)
    view = LiveView(dag.validate(), display=bad)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = dag.run(live=False, on_event=view)
        view.close(run)
    assert run.status == "success"
    assert any("display broke" in str(w.message) for w in caught)

    def bad_later(frame: Frame) -> None:  # fails in the trailing frame (a loop callback)
        if frame.index > 0:
            raise RuntimeError("display broke later")

    d = ok.DAG("later")
    d.task("quick", asleep)
    d.task("long", asleep, seconds=0.3, after=["quick"])
    view = LiveView(d.validate(), display=bad_later, min_interval=0.05)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = d.run(live=False, on_event=view.on_event)
        view.close(run)
    assert run.status == "success" and view.frames == 1
    assert any("display broke later" in str(w.message) for w in caught)


def test_arguments_are_checked() -> None:
    graph = chain_dag(2, anoop).validate()
    with pytest.raises(ValueError, match="min_interval"):
        LiveView(graph, display=print, min_interval=-1)
    with pytest.raises(ValueError, match="budget"):
        LiveView(graph, display=print, budget=0)
    with pytest.raises(TypeError, match="callable"):
        LiveView(graph, display="yes")  # type: ignore[arg-type]


# ------------------------------------------------------------------ pictures of frames
@needs_dot
def test_frame_pictures_mid_run_and_final() -> None:
    d = ok.DAG("pics", max_concurrent=2)
    d.task("a", asleep, seconds=0.02)
    d.task("b", asleep, fail=True)
    d.task("c", asleep, after=["a"], seconds=0.3)
    d.task("d", asleep, after=["b"])
    rec = Recorder()
    view = LiveView(d.validate(), title="pics", display=rec, min_interval=0.05)
    run, _ = live_run(d, view)
    mid = next(f for f in rec.frames if f.states.get("c") == "running")
    svg = mid.svg()
    assert svg.count(f'fill="{STATUS_STYLE["running"][0]}"') >= 1
    assert svg.count(f'fill="{STATUS_STYLE["failed"][0]}"') >= 1
    assert view.layout_s > 0
    page = mid.html()
    assert "<?xml" not in page and "<svg" in page and "pics: " in page
    root = page[page.index("<svg"):page.index(">", page.index("<svg"))]
    assert "max-width:100%" in root and "height:auto" in root  # scaled to the cell
    assert f'background:{STATUS_STYLE["failed"][1]}' in page  # progress bar segment
    final = rec.frames[-1]
    fsvg = final.svg()  # drawn afresh: durations and critical path
    assert " ms" in fsvg and 'stroke-width="3"' in fsvg
    assert fsvg.count(f'fill="{STATUS_STYLE["skipped"][0]}"') >= 1
    bundle = final._repr_mimebundle_()
    assert bundle["text/plain"] == final.text() and "<svg" in bundle["text/html"]
    assert run.records["d"].status == "skipped"


@needs_dot
def test_big_graphs_are_drawn_only_when_the_run_affords_it() -> None:
    # More than GRAPH_LIMIT tasks in ~0.3 s: laying the graph out would cost more than the
    # run; the final frame says so instead of making the caller wait (as the Run display
    # draws no graph that big), and frame.svg() still draws it.
    n = GRAPH_LIMIT + 20
    dag = chain_dag(n, asleep, seconds=0.01)
    rec = Recorder()
    view = LiveView(dag.validate(), display=rec)
    run, _ = live_run(dag, view)
    final = rec.frames[-1]
    assert run.stats.makespan_s < 1.0
    page = final.html()
    assert "<svg" not in page and "run.graph()" in page and f"{n}/{n} done" in page
    assert f"The graph of {n} tasks" in page
    assert final.svg().count('class="node"') >= n
    # 150 tasks over ~0.75 s: live frames show the graph once affordable; the final one is
    # the full picture, drawn afresh
    dag = chain_dag(150, asleep, seconds=0.05)
    rec = Recorder()
    view = LiveView(dag.validate(), display=rec, min_interval=0.05)
    live_run(dag, view)
    assert "<svg" not in rec.frames[0].html()  # at the start it was not affordable yet
    late = [f for f in rec.frames if not f.final and f.elapsed > 0.5]
    assert late and "<svg" in late[-1].html()
    shown = rec.frames[-1].html()  # what the display shows
    assert shown.count(f'fill="{STATUS_STYLE["success"][0]}"') == 150 + 1  # + legend
    assert "makespan" in shown and "critical path" in shown


@needs_dot
def test_the_final_frame_is_drawn_afresh_when_the_run_affords_it() -> None:
    dag = chain_dag(12, asleep, width=3, seconds=0.01)
    view = LiveView(dag.validate(), display=Recorder())
    run, _ = live_run(dag, view)
    out = run.outcome
    # no live layout yet: a small graph is drawn afresh whatever the run's length
    assert view._how(Frame(view, {}, 0.001, 0, final=True, outcome=out)) == "fresh"
    Frame(view, {}, 1.0, 1).svg()  # lay it out, as a live frame would
    assert view.layout_s > 0
    long_enough = view.layout_s / view.budget + 0.01
    assert view._how(Frame(view, {}, long_enough, 2, final=True, outcome=out)) == "fresh"
    # the final frame of a finished run is the full picture, however short the run
    assert view._how(Frame(view, {}, long_enough / 4, 3, final=True, outcome=out)) == "fresh"
    assert view._how(Frame(view, {}, long_enough, 4, final=True)) == "recolour"  # no run
    page = Frame(view, {}, long_enough, 5, final=True, outcome=out).html()
    assert "makespan" in page and "critical path" in page


def test_frames_without_dot_show_the_hint(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    dag = chain_dag(6, asleep, width=2, seconds=0.02)
    rec = Recorder()
    view = LiveView(dag.validate(), display=rec, min_interval=0.01)
    run, _ = live_run(dag, view)
    assert run.status == "success"
    page = rec.frames[-1].html()
    assert "Graph not shown" in page and ok.GraphvizNotFound().install_command in page
    assert "6/6 done" in page
    with pytest.raises(ok.GraphvizNotFound):
        rec.frames[-1].svg()


class Showing(Recorder):
    """A display callable that makes each frame's HTML, as the notebook display does (so
    live frames lay the graph out once that is affordable)."""

    def __call__(self, frame: Frame) -> None:
        super().__call__(frame)
        frame.html()


@needs_dot
@pytest.mark.parametrize("min_interval", [0.0, 0.02, 10.0])
def test_the_final_frame_is_the_full_picture_whatever_the_runs_length(
    min_interval: float,
) -> None:
    # ~0.1 s: far too short for a layout within the budget; live frames laid the graph out
    # (except with the longest throttle); the final frame must be run.graph() all the same.
    d = ok.DAG("short", max_concurrent=3)
    for i in range(9):
        d.task(f"t{i}", asleep, seconds=0.03, fail=(i == 4),
               after=[f"t{i - 3}"] if i >= 3 else None)
    view = LiveView(d.validate(), title="short", display=Showing(), min_interval=min_interval)
    run, _ = live_run(d, view)
    if min_interval < 1:
        assert view.layout_s > 0  # a live layout was made: recolouring it was the shortcut
        assert run.stats.makespan_s * view.budget < view.layout_s
    final = view._sink.frames[-1]  # type: ignore[union-attr]
    page = final.html()
    assert svg_html(run.to_svg()) in page  # the very picture run.graph() draws
    assert "makespan" in page and "critical path" in page and "ValueError" in page
    assert re.search(r"\d+(\.\d+)? ms", page)  # durations


def test_the_elapsed_time_keeps_counting_during_a_retry_backoff() -> None:
    # "flaky" fails at once and waits 2 s before its second attempt: no status changes
    # meanwhile, yet the progress line's time must go on (a frame at least every second).
    d = ok.DAG("backoff")
    d.task("flaky", Flaky(), retry=ok.RetryPolicy(max_attempts=2, initial_delay=2.0))
    rec = Recorder()
    view = LiveView(d.validate(), display=rec, min_interval=0.05)
    run, _ = live_run(d, view)
    assert run.records["flaky"].status == "success" and run.records["flaky"].attempts == 2
    waiting = [f for f in rec.frames if f.states.get("flaky") == "retrying"]
    assert len(waiting) >= 2
    times = [f.elapsed for f in waiting]
    assert all(b - a <= 1.0 + 0.3 for a, b in pairwise(times))  # the time kept counting
    assert times[-1] - times[0] >= 1.0
    texts = [f.text() for f in waiting]
    assert len(set(texts)) == len(texts)  # each shows a later time


def test_the_final_line_shows_the_runs_makespan_as_the_graph_does() -> None:
    # Interrupted while "flaky" waits out a 5 s backoff: what ran took a few ms, the run
    # was stopped ~0.4 s in; the live line and the graph both give the makespan.
    d = ok.DAG("cut", max_concurrent=2)
    d.task("flaky", Flaky(), retry=ok.RetryPolicy(max_attempts=2, initial_delay=5.0))
    d.task("after", asleep, after="flaky")
    rec = Recorder()
    view = LiveView(d.validate(), title="cut", display=rec, min_interval=0.05)
    partial = cancel_arun_after(d, 0.4, on_event=view)
    assert partial.interrupted
    view.close(partial)
    final = rec.frames[-1]
    span = partial.stats.makespan_s
    assert span < 0.2 and final.elapsed == span
    shown = f"makespan {format_seconds(span)}"
    assert shown in final.text() and "interrupted" in final.text()
    assert shown in partial.graph().summary
    # a finished run too: the final line's time is its makespan
    d2 = chain_dag(6, asleep, width=2, seconds=0.02)
    rec2 = Recorder()
    done, _ = live_run(d2, LiveView(d2.validate(), display=rec2))
    assert rec2.frames[-1].elapsed == done.stats.makespan_s
    assert f"makespan {format_seconds(done.stats.makespan_s)}" in rec2.frames[-1].text()


class Flaky:
    """Fails its first call at once, then succeeds."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> int:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("temporary")
        return 1


# ------------------------------------------------------------------ the sweep's progress
def sweep_dag() -> ok.DAG:
    d = ok.DAG("amdahl", max_concurrent=1)
    for i in range(4):
        d.task(f"t{i}", asleep, seconds=0.15)
    return d


def test_a_sweep_shows_which_setting_runs_of_how_many(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines: list[str] = []
    df = sweep_dag().sweep([1, 2], progress=lines.append)
    assert list(df["max_concurrent"]) == [1, 2]
    assert lines[0] == "amdahl sweep: run 1/2 · max_concurrent=1"
    assert "amdahl sweep: run 2/2 · max_concurrent=2" in lines
    # each run's own progress, from its live view's frames (the same event stream)
    first = [x for x in lines if x.startswith("amdahl sweep: run 1/2 · max_concurrent=1 · ")]
    assert any(" done" in x and " running" in x for x in first), first
    assert any("4/4 done (4 success) · makespan" in x for x in first), first
    assert lines[-1] == "amdahl sweep done: 2 runs (max_concurrent 1, 2)"
    assert capsys.readouterr().out == ""  # a callable: nothing printed
    # in a script: nothing unless asked; asked, a line per run and one at the end
    sweep_dag().sweep([2], repeat=2)
    assert capsys.readouterr().out == ""
    sweep_dag().sweep([2], repeat=2, progress=True)
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["amdahl sweep: run 1/2 · max_concurrent=2 (repeat 1/2)",
                       "amdahl sweep: run 2/2 · max_concurrent=2 (repeat 2/2)"]
    assert out[2:] == ["amdahl sweep done: 2 runs (max_concurrent 2)"]


def test_asweep_shows_progress_too_and_says_when_it_stopped() -> None:
    lines: list[str] = []
    asyncio.run(sweep_dag().asweep([2, 4], progress=lines.append))
    assert "amdahl sweep: run 2/2 · max_concurrent=4" in lines
    assert lines[-1] == "amdahl sweep done: 2 runs (max_concurrent 2, 4)"
    lines.clear()
    with pytest.raises(ValueError, match="failure_mode"):
        sweep_dag().sweep([1, 2], progress=lines.append, failure_mode="sometimes")
    assert lines[-1] == "amdahl sweep stopped after 0 of 2 runs (max_concurrent 1, 2)"


# ------------------------------------------------------------------ in a real kernel
@pytest.mark.kernel
@needs_dot
def test_notebook_shows_one_output_updated_in_place(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cells = [
        """
import asyncio, oktyv_nb as ok
from oktyv_nb.live import LiveView
async def work(seconds=0.0, fail=False):
    await asyncio.sleep(seconds)
    if fail:
        raise ValueError("no")
dag = ok.DAG("nb-live", max_concurrent=3)
for i in range(9):
    dag.task(f"t{i}", work, seconds=0.15, fail=(i == 4), after=[f"t{i-3}"] if i >= 3 else None)
""",
        "run = dag.run()\nprint(run.status)",
        """
view = LiveView(dag.validate(), title="explicit", min_interval=0.05)
run2 = dag.run(live=False, on_event=view.on_event)
view.close(run2)
print(view.frames, view.updates, view._notebook.error)
""",
        "table = dag.sweep([2, 3])\nprint(len(table))",
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    out = nb.cells[1].outputs
    displays = [o for o in out if o["output_type"] == "display_data"]
    assert len(displays) == 1  # ONE output, updated in place
    html_text = displays[0]["data"]["text/html"]
    assert "nb-live: 9/9 done (7 success, 1 failed, 1 skipped)" in html_text
    assert "<svg" in html_text  # the final states, coloured (7 success + the legend's)
    assert html_text.count(f'fill="{STATUS_STYLE["success"][0]}"') == 7 + 1
    assert "· makespan " in html_text and "critical path" in html_text  # the full picture
    assert "max-width:100%" in html_text
    assert any(o.get("text", "").strip() == "partial" for o in out if o["output_type"] == "stream")
    frames, updates, error = nb.cells[2].outputs[-1]["text"].split()
    assert error == "None"
    assert 3 <= int(updates) <= int(frames)
    shown = [o for o in nb.cells[2].outputs if o["output_type"] == "display_data"]
    assert len(shown) == 1 and "explicit: 9/9 done" in shown[0]["data"]["text/html"]
    # the sweep: one line rewritten in place (carriage returns), ending with what ran
    outs = nb.cells[3].outputs
    assert {(o["output_type"], o.get("name")) for o in outs} == {("stream", "stdout")}
    text = "".join(o["text"] for o in outs)
    versions = text.split("\n")[0].split("\r")[1:]
    assert versions[0] == "nb-live sweep: run 1/2 · max_concurrent=2"
    assert "nb-live sweep: run 2/2 · max_concurrent=3" in versions
    assert any(v.startswith("nb-live sweep: run 1/2 · max_concurrent=2 · ") and " done" in v
               for v in versions), versions  # the run's own progress line
    assert versions[-1] == "nb-live sweep done: 2 runs (max_concurrent 2, 3)"
    assert text.endswith("nb-live sweep done: 2 runs (max_concurrent 2, 3)\n2\n")
