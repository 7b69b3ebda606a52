"""SPEC §6/§11 live view: frames counted and throttled on real runs, trailing and final
frames, back-off when showing frames is costly, text mode, interrupts, frame pictures, the
missing-``dot`` path, loosely measured overhead, and the notebook display in a real kernel."""

from __future__ import annotations

import asyncio
import shutil
import time
import warnings
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

import oktyv_nb as ok
from oktyv_nb.execution.events import EventKind
from oktyv_nb.execution.records import TaskRecord
from oktyv_nb.live import Frame, LiveView
from oktyv_nb.results.display.render import STATUS_STYLE

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
    # 200 tasks in ~0.2 s: laying the graph out would cost more than the run; the final
    # frame says so instead of making the caller wait, and frame.svg() still draws it.
    dag = chain_dag(200, asleep, seconds=0.01)
    rec = Recorder()
    view = LiveView(dag.validate(), display=rec)
    run, _ = live_run(dag, view)
    final = rec.frames[-1]
    assert run.stats.makespan_s < 1.0
    page = final.html()
    assert "<svg" not in page and "run.graph()" in page and "200/200 done" in page
    assert final.svg().count('class="node"') >= 200
    # 150 tasks over ~0.75 s: live frames show the graph; the final one recolours it
    dag = chain_dag(150, asleep, seconds=0.05)
    rec = Recorder()
    view = LiveView(dag.validate(), display=rec, min_interval=0.05)
    live_run(dag, view)
    assert "<svg" not in rec.frames[0].html()  # at the start it was not affordable yet
    late = [f for f in rec.frames if not f.final and f.elapsed > 0.5]
    assert late and "<svg" in late[-1].html()
    shown = rec.frames[-1].html()  # what the display shows: the live layout, recoloured
    assert shown.count(f'fill="{STATUS_STYLE["success"][0]}"') == 150 + 1  # + legend
    assert "makespan" not in shown
    assert "makespan" in rec.frames[-1].svg()  # asked for: drawn afresh


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
    assert view._how(Frame(view, {}, long_enough / 4, 3, final=True, outcome=out)) == "recolour"
    assert view._how(Frame(view, {}, long_enough, 4, final=True)) == "recolour"  # interrupted
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
    assert any(o.get("text", "").strip() == "partial" for o in out if o["output_type"] == "stream")
    frames, updates, error = nb.cells[2].outputs[-1]["text"].split()
    assert error == "None"
    assert 3 <= int(updates) <= int(frames)
    shown = [o for o in nb.cells[2].outputs if o["output_type"] == "display_data"]
    assert len(shown) == 1 and "explicit: 9/9 done" in shown[0]["data"]["text/html"]
