"""SPEC §11 rendering: DOT structure after a real run (levels as ranks, edges, colours by
status, bold critical path, skip cause, retries), escaping, secrets, SVG/PNG with the real
``dot``, the missing-``dot`` path, and a 500-task timing check."""

from __future__ import annotations

import asyncio
import html
import re
import shutil
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import graphviz
import pytest

import oktyv_nb as ok
from oktyv_nb.errors import GraphvizNotFound
from oktyv_nb.model.graph import build_graph
from oktyv_nb.model.registry import resolve_tools
from oktyv_nb.model.schema import ExecutionRequest, TaskSpec
from oktyv_nb.results.display import render
from oktyv_nb.results.display.render import STATUS_STYLE, SvgTemplate, build_digraph

HAVE_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAVE_DOT, reason="Graphviz `dot` is not installed")

FILL = {st: fill for st, (fill, _) in STATUS_STYLE.items()}


# ------------------------------------------------------------------ a small DOT reader
_TOKEN = re.compile(r'\s*(->|\[|\]|=|\{|\}|"(?:[^"\\]|\\.)*"|[^\s\[\]={}"]+)')


def _tokens(line: str) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(line):
        if line[i].isspace():
            i += 1
            continue
        if line[i] == "<":  # HTML-like value: balanced angle brackets
            depth, j = 0, i
            while True:
                depth += {"<": 1, ">": -1}.get(line[j], 0)
                j += 1
                if depth == 0:
                    break
            out.append(line[i:j])
            i = j
            continue
        m = _TOKEN.match(line, i)
        assert m, f"cannot read DOT at {line[i:i + 30]!r}"
        out.append(m.group(1))
        i = m.end()
    return out


def _unquote(tok: str) -> str:
    if tok.startswith('"') and tok.endswith('"'):
        return tok[1:-1].replace('\\"', '"')
    return tok


def _attrs(tokens: list[str]) -> dict[str, str]:
    if "[" not in tokens:
        return {}
    body = tokens[tokens.index("[") + 1: tokens.index("]", tokens.index("["))]
    return {_unquote(body[k]): _unquote(body[k + 2]) for k in range(0, len(body), 3)}


class Dot:
    """Nodes (name -> attrs), edges ((a, b) -> attrs) and rank=same groups of a DOT source."""

    def __init__(self, source: str) -> None:
        self.nodes: dict[str, dict[str, str]] = {}
        self.edges: dict[tuple[str, str], dict[str, str]] = {}
        self.ranks: list[list[str]] = []
        self.graph_attrs: dict[str, str] = {}
        group: list[str] | None = None
        for line in source.splitlines()[1:]:
            toks = _tokens(line)
            if not toks or toks[0] in ("}", "node", "edge"):
                if toks[:1] == ["}"] and group is not None:
                    self.ranks.append(group)
                    group = None
                continue
            if toks[0] == "subgraph":
                group = []
                continue
            if toks == ["rank", "=", "same"]:
                continue
            if len(toks) > 2 and toks[1] == "->":
                self.edges[(_unquote(toks[0]), _unquote(toks[2]))] = _attrs(toks)
            elif len(toks) > 1 and toks[1] == "=":
                for k in range(0, len(toks), 3):
                    self.graph_attrs[toks[k]] = _unquote(toks[k + 2])
            else:
                name = _unquote(toks[0])
                self.nodes[name] = _attrs(toks)
                if group is not None and not name.startswith("#"):
                    group.append(name)

    def task_edges(self) -> set[tuple[str, str]]:
        return {e for e in self.edges if not e[0].startswith("#")}


# ------------------------------------------------------------------ the DAG under test
def work(seconds: float = 0.0, **_: Any) -> dict[str, bool]:
    time.sleep(seconds)
    return {"ok": True}


def broken(**_: Any) -> None:
    raise ValueError("bad row 17")


class Flaky:
    """Fails its first call, then succeeds."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, **_: Any) -> int:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("temporary")
        time.sleep(0.02)
        return 1


LEVELS = [
    ["fetch-users", "fetch-orders", "fetch-items"],
    ["clean-users", "clean-orders"],
    ["join", "orders-report", "audit"],
    ["totals", "export_csv"],
    ["notify", "archive"],
]
EDGES = {
    ("fetch-users", "clean-users"), ("fetch-orders", "clean-orders"),
    ("clean-users", "join"), ("fetch-items", "join"), ("clean-orders", "orders-report"),
    ("orders-report", "totals"), ("join", "totals"), ("join", "export_csv"),
    ("totals", "notify"), ("clean-users", "audit"), ("export_csv", "archive"),
    ("audit", "archive"),
}
CRITICAL = ["fetch-users", "clean-users", "join", "export_csv", "archive"]


def etl_dag() -> ok.DAG:
    """12 tasks: one failure (clean-orders), one retry (fetch-items), two skips."""
    d = ok.DAG("etl-demo", max_concurrent=3)
    d.task("fetch-users", work, seconds=0.15)
    d.task("fetch-orders", work, seconds=0.05)
    d.task("fetch-items", Flaky(), retry=ok.RetryPolicy(max_attempts=3, initial_delay=0.02))
    d.task("clean-users", work, seconds=0.03, after=["fetch-users"])
    d.task("clean-orders", broken, after=["fetch-orders"])
    d.task("join", work, seconds=0.04, after=["clean-users", "fetch-items"])
    d.task("orders-report", work, after=["clean-orders"])
    d.task("totals", work, after=["orders-report", "join"])
    d.task("export_csv", work, seconds=0.06, after=["join"])
    d.task("notify", work, after=["totals"], trigger="all_done")
    d.task("audit", work, seconds=0.01, after=["clean-users"])
    d.task("archive", work, seconds=0.03, after=["export_csv", "audit"])
    return d


@pytest.fixture(scope="module")
def etl_run() -> ok.Run:
    return etl_dag().run(live=False)


# ------------------------------------------------------------------ structure after a run
def test_the_run_under_test_has_a_failure_a_retry_and_skips(etl_run: ok.Run) -> None:
    recs = etl_run.records
    assert recs["clean-orders"].status == "failed"
    assert recs["fetch-items"].attempts == 2 and recs["fetch-items"].status == "success"
    assert {t for t, r in recs.items() if r.status == "skipped"} == {"orders-report", "totals"}
    assert etl_run.stats.critical_path == CRITICAL


def test_levels_are_ranks_and_edges_run_dependency_to_dependent(etl_run: ok.Run) -> None:
    dot = Dot(etl_run.graph().source)
    assert dot.ranks == LEVELS
    assert 'rank=same' in etl_run.graph().source
    assert dot.task_edges() == EDGES
    for k in range(len(LEVELS)):  # a label per level, in order
        assert dot.nodes[f"#level{k}"]["label"] == f"level {k}"
    assert [e for e in dot.edges if e[0].startswith("#")] == [
        (f"#level{k}", f"#level{k + 1}") for k in range(len(LEVELS) - 1)
    ]


def test_fill_colour_follows_status(etl_run: ok.Run) -> None:
    dot = Dot(etl_run.graph().source)
    for tid, rec in etl_run.records.items():
        assert dot.nodes[tid]["fillcolor"] == FILL[rec.status], tid
    assert dot.nodes["clean-orders"]["fillcolor"] == FILL["failed"]
    assert dot.nodes["totals"]["fillcolor"] == FILL["skipped"]
    assert "dashed" in dot.nodes["totals"]["style"]
    assert dot.nodes["join"]["fillcolor"] == FILL["success"]


def test_critical_path_is_bold(etl_run: ok.Run) -> None:
    dot = Dot(etl_run.graph().source)
    bold_nodes = [t for t in dot.nodes if dot.nodes[t].get("penwidth") == "3"]
    assert sorted(bold_nodes) == sorted(CRITICAL)
    bold_edges = {e for e, a in dot.edges.items() if a.get("style") == "bold"}
    assert bold_edges == set(pairwise(CRITICAL))
    assert "critical path" in dot.graph_attrs["label"]
    off = Dot(etl_run.graph(show_critical=False).source)
    assert not [t for t in off.nodes if off.nodes[t].get("penwidth") == "3"]


def test_skip_cause_is_a_dashed_red_edge(etl_run: ok.Run) -> None:
    dot = Dot(etl_run.graph().source)
    red = {e for e, a in dot.edges.items() if a.get("color") == "#c92a2a"}
    # orders-report skipped because clean-orders failed; totals because orders-report skipped
    assert red == {("clean-orders", "orders-report"), ("orders-report", "totals")}
    for e in red:
        assert dot.edges[e]["style"] == "dashed"
        assert ">skip<" in dot.edges[e]["label"] and "xlabel" not in dot.edges[e]
    assert dot.edges[("join", "totals")].get("color") != "#c92a2a"  # not the cause
    assert "skip cause" in dot.graph_attrs["label"]


def test_labels_show_id_tool_duration_attempts_and_error_code(etl_run: ok.Run) -> None:
    dot = Dot(etl_run.graph().source)
    label = dot.nodes["fetch-users"]["label"]
    assert "<b>fetch-users</b>" in label and ">work<" in label
    assert re.search(r"\d+(\.\d+)? ms", label)  # ~150 ms
    items = dot.nodes["fetch-items"]
    assert "2 attempts" in items["label"] and items["peripheries"] == "2"
    assert "peripheries" not in dot.nodes["join"]
    assert "<b>ValueError</b>" in dot.nodes["clean-orders"]["label"]
    # messages never reach labels, only tooltips (code and first line)
    assert all("bad row 17" not in n["label"] for n in dot.nodes.values())
    assert "ValueError: bad row 17" in dot.nodes["clean-orders"]["tooltip"]
    assert "skipped" in dot.nodes["totals"]["label"]
    legend = dot.graph_attrs["label"]
    for status in STATUS_STYLE:
        assert f">{status}<" in legend
    assert "etl-demo" in legend and "9 success, 1 failed, 2 skipped" in legend


def test_before_a_run_the_graph_is_plain(etl_run: ok.Run) -> None:
    dag = etl_run.dag
    assert dag is not None
    dot = Dot(dag.graph().source)
    assert dot.ranks == LEVELS and dot.task_edges() == EDGES
    assert {a["fillcolor"] for t, a in dot.nodes.items() if not t.startswith("#")} == {"#ffffff"}
    assert "pending" not in dot.graph_attrs["label"]  # no legend without statuses
    assert "ms" not in dot.nodes["join"]["label"]


def test_states_colour_a_live_frame(etl_run: ok.Run) -> None:
    graph = etl_run.outcome.graph
    states = {"fetch-users": "success", "fetch-items": "retrying", "clean-users": "running",
              "fetch-orders": "ready"}
    dot = Dot(build_digraph(graph, states=states, attempts={"fetch-items": 1}).source)
    for tid in graph.nodes:
        assert dot.nodes[tid]["fillcolor"] == FILL[states.get(tid, "pending")], tid
    assert "attempt 1/3" in dot.nodes["fetch-items"]["label"]
    assert "running" in dot.nodes["clean-users"]["label"]
    # states override a finished run's records
    dot2 = Dot(build_digraph(graph, etl_run.outcome, states={"join": "running"}).source)
    assert dot2.nodes["join"]["fillcolor"] == FILL["running"]
    assert dot2.nodes["archive"]["fillcolor"] == FILL["success"]


def test_direction_and_options(etl_run: ok.Run) -> None:
    assert Dot(etl_run.graph().source).graph_attrs["rankdir"] == "TB"
    assert Dot(etl_run.graph(direction="LR").source).graph_attrs["rankdir"] == "LR"
    assert Dot(etl_run.graph(direction="lr").source).graph_attrs["rankdir"] == "LR"
    with pytest.raises(ValueError, match="direction"):
        etl_run.graph(direction="sideways")
    no_legend = Dot(etl_run.graph(legend=False).source).graph_attrs["label"]
    assert "retrying" not in no_legend and "etl-demo" in no_legend
    compact = Dot(etl_run.graph(compact=True).source)
    assert compact.nodes["join"]["label"] == "join"  # plain label, id only
    assert "label" not in compact.edges[("clean-orders", "orders-report")]


def many_tasks_dag(n: int, name: str = "big") -> ok.DAG:
    """``n`` no-op tasks, each depending on up to 3 of the 40 tasks before it."""
    d = ok.DAG(name, max_concurrent=16)
    for i in range(n):
        deps = [f"t-{j:04d}" for j in (i - 1 - (i % 5), i - 7 - (i % 11), i - 23) if 0 <= j < i]
        d.task(f"t-{i:04d}", work, after=sorted(set(deps)) or None)
    return d


def test_big_graphs_get_compact_labels_automatically() -> None:
    small, big = many_tasks_dag(100), many_tasks_dag(101)
    assert Dot(small.graph().source).nodes["t-0005"]["label"].startswith("<")
    assert Dot(big.graph().source).nodes["t-0005"]["label"] == "t-0005"
    assert Dot(big.graph(compact=False).source).nodes["t-0005"]["label"].startswith("<")


# ------------------------------------------------------------------ escaping and secrets
def test_keyword_ids_and_arbitrary_tool_names_are_escaped() -> None:
    tools = {"<script>alert(1)</script>": work, 'say "hi" & <b>': work, "back\\slash\\": work}
    d = ok.DAG("esc <&> \"t\" \\", tools=tools)  # the name ends in a backslash
    d.task("node", "<script>alert(1)</script>")
    d.task("graph", 'say "hi" & <b>', after=["node"])
    d.task("1-edge", "back\\slash\\", after=["graph"])
    d.task("strict", work, after=["node", "1-edge"])
    run = d.run(live=False)
    dot = Dot(run.graph().source)
    assert "<script>" not in dot.nodes["node"]["label"]
    assert "&lt;script&gt;" in dot.nodes["node"]["label"]
    assert "say &quot;hi&quot; &amp; &lt;b&gt;" in dot.nodes["graph"]["label"]
    assert "<script>" in dot.nodes["node"]["tooltip"]  # a quoted string: shown literally
    assert dot.task_edges() == {("node", "graph"), ("graph", "1-edge"), ("node", "strict"),
                                ("1-edge", "strict")}
    if HAVE_DOT:
        svg = render.to_svg(run.graph())
        assert svg.count('class="node"') == 4 + 4  # tasks + one label per level
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in svg and "<script>" not in svg
        assert "back\\slash\\" in svg
        render.to_svg(run.graph(compact=True))


def test_ids_dot_cannot_carry_get_internal_names() -> None:
    # Validation only admits [A-Za-z0-9_-] ids; a graph built around it must still render.
    ids = ['a"b', "x\\", "<b>bold</b>", "#1", "#level0", "a:b", "ok"]
    specs = [TaskSpec.model_construct(id=t, tool="f", params={}, depends_on=None) for t in ids]
    specs[-1] = TaskSpec.model_construct(id="ok", tool="f", params={}, depends_on=ids[:-1])
    for s in specs:
        for field in ("priority", "timeout", "vault", "retry_policy", "rollback", "run_if"):
            setattr(s, field, None)
    graph = build_graph(ExecutionRequest.model_construct(tasks=specs), resolve_tools({"f": work}))
    digraph = build_digraph(graph, states=dict.fromkeys(ids, "success"))
    dot = Dot(digraph.source)
    names = [n for n in dot.nodes if not n.startswith("#level")]
    assert len(names) == len(set(names)) == len(ids)
    assert "ok" in names and "#level0" in dot.nodes and dot.nodes["#level0"]["label"] == "level 0"
    if HAVE_DOT:
        svg = render.to_svg(digraph)
        assert svg.count('class="node"') == len(ids) + len(graph.levels)  # no stray nodes
        for shown in ("a&quot;b", "&lt;b&gt;bold&lt;/b&gt;", "x\\", "#1", "a:b"):
            assert shown in svg, shown


def test_secrets_never_reach_the_picture(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cr3t-T0KEN-42"

    def call_api(token: str, credentials: dict[str, str]) -> dict[str, str]:
        return {"echo": token, "key": credentials["key"]}

    def leak(credentials: dict[str, str]) -> None:
        raise RuntimeError(f"auth failed with {credentials['key']}")

    d = ok.DAG("secrets")
    d.task("call", call_api, token=secret, vault="api")
    d.task("leak", leak, vault="api")
    d.task("after", work, after=["leak"])
    run = d.run(live=False, vault={"api": {"key": secret}})
    assert run.records["call"].status == "success" and run.records["leak"].status == "failed"
    for options in ({}, {"compact": True}, {"direction": "LR"}):
        assert secret not in run.graph(**options).source
        assert secret not in d.graph(**options).source
    if HAVE_DOT:
        assert secret not in run.to_svg()


# ------------------------------------------------------------------ output with the real dot
@needs_dot
def test_to_svg_and_save_graph(etl_run: ok.Run, tmp_path: Path) -> None:
    svg = render.to_svg(etl_run.graph())
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert svg.count('class="node"') == 12 + len(LEVELS)
    assert "fetch&#45;users" in svg or "fetch-users" in svg
    out = render.save_graph(etl_run.graph(), tmp_path / "a" / "b" / "run.svg")
    assert out == tmp_path / "a" / "b" / "run.svg" and "<svg" in out.read_text()
    png = render.save_graph(etl_run.graph(), str(tmp_path / "run.PNG"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert isinstance(png, Path)
    with pytest.raises(ValueError, match=r"\.svg or \.png"):
        render.save_graph(etl_run.graph(), tmp_path / "run.pdf")
    # the DAG and Run methods go through the same functions
    assert etl_run.dag is not None
    assert etl_run.dag.save_graph(tmp_path / "dag.png").stat().st_size > 1000
    assert "<svg" in etl_run.to_svg(direction="LR")
    assert list(render.mimebundle(etl_run.graph())) == ["text/html"]


@needs_dot
def test_svg_template_recolours_without_dot(etl_run: ok.Run, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    graph = etl_run.outcome.graph
    template = SvgTemplate(graph, title="etl-demo")
    assert template.layout_s > 0
    monkeypatch.setenv("PATH", str(tmp_path))  # recolouring must not need dot
    states = {"fetch-users": "success", "clean-users": "running", "clean-orders": "failed",
              "orders-report": "skipped"}
    svg = template.recolour(states)
    fills = dict(re.findall(
        r'<g id="oktyv[^"]*" class="node">\s*<title>([^<]*)</title>.*?fill="([^"]+)"', svg,
        flags=re.S))
    assert len(fills) == 12
    for tid in graph.nodes:
        assert fills[tid.replace("-", "&#45;")] == FILL[states.get(tid, "pending")], tid
    assert svg.count('stroke-dasharray="5,2"') >= 1  # skipped: dashed border
    assert template.recolour({}).count(f'fill="{FILL["pending"]}"') >= 12


def without_dot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "no-dot-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("dot") is None


def test_missing_dot_raises_graphviz_not_found_with_install_command(
    etl_run: ok.Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    without_dot(monkeypatch, tmp_path)
    digraph = etl_run.graph()
    assert "rank=same" in digraph.source  # .source never needs dot
    with pytest.raises(GraphvizNotFound) as info:
        render.to_svg(digraph)
    err = info.value
    assert isinstance(err, RuntimeError) and isinstance(err.__cause__, graphviz.ExecutableNotFound)
    assert err.install_command and err.install_command in str(err)
    assert "graphviz" in err.install_command
    with pytest.raises(ok.GraphvizNotFound):
        render.save_graph(digraph, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(ok.GraphvizNotFound):
        etl_run.to_svg()
    with pytest.raises(ok.GraphvizNotFound):
        SvgTemplate(etl_run.outcome.graph)


def test_missing_dot_notebook_bundle_shows_source_and_hint(
    etl_run: ok.Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    without_dot(monkeypatch, tmp_path)
    bundle = render.mimebundle(etl_run.graph())
    assert "image/svg+xml" not in bundle
    hint = GraphvizNotFound().install_command
    assert "digraph" in bundle["text/plain"] and hint in bundle["text/plain"]
    html_text = bundle["text/html"]
    assert hint in html_text and "Traceback" not in html_text
    assert "rank=same" in html_text and "<table" not in html_text  # DOT text is escaped
    assert etl_run.dag is not None
    dag_bundle = etl_run.dag._repr_mimebundle_()
    assert hint in dag_bundle["text/html"] and "text/plain" in dag_bundle
    # `run.graph()` as a cell's last line: IPython asks the Digraph itself
    digraph = etl_run.graph()
    assert isinstance(digraph, graphviz.Digraph)
    own = digraph._repr_mimebundle_()
    assert hint in own["text/html"] and "rank=same" in own["text/plain"]
    from IPython.core.formatters import DisplayFormatter

    data, _ = DisplayFormatter().format(digraph)
    assert hint in data["text/html"]


@needs_dot
def test_the_digraph_displays_itself_as_svg(etl_run: ok.Run) -> None:
    assert list(etl_run.graph()._repr_mimebundle_()) == ["text/html"]
    png = etl_run.graph()._repr_mimebundle_(include=["image/png"])
    assert png["image/png"][:4] == b"\x89PNG"


def _root_svg(html_text: str) -> str:
    """The opening tag of the (one) root ``<svg>`` in ``html_text``."""
    assert html_text.count("<svg") == 1 and "<?xml" not in html_text
    start = html_text.index("<svg")
    return html_text[start:html_text.index(">", start) + 1]


@needs_dot
def test_every_graph_display_fits_the_cell_width() -> None:
    """A level of 10 tasks is wider than a notebook cell: the DAG's display, the run's and
    ``run.graph()``'s (and, in test_live, the live view's) are HTML holding the SVG scaled
    down to the cell (max-width 100%, proportions kept by its viewBox), never an
    ``image/svg+xml`` output, which JupyterLab shows as an unscaled <img>."""
    from IPython.core.formatters import DisplayFormatter

    dag = ok.DAG("wide", max_concurrent=10)
    dag.task("source", work)
    for i in range(10):
        dag.task(f"worker-number-{i:02d}", work, after="source")
    run = dag.run(live=False)
    width_pt = float(re.search(r'width="([\d.]+)pt"', run.to_svg()).group(1))
    assert width_pt > 900  # far wider than a cell (about 700-900 px)
    formatter = DisplayFormatter()
    shown = {
        "dag": formatter.format(dag)[0],
        "run": formatter.format(run)[0],
        "run.graph()": formatter.format(run.graph())[0],
        "dag.graph()": formatter.format(dag.graph())[0],
    }
    for what, data in shown.items():
        assert "image/svg+xml" not in data, what
        root = _root_svg(data["text/html"])
        assert "max-width:100%" in root and "height:auto" in root and "viewBox=" in root, what
    assert shown["run.graph()"]["text/plain"].startswith("<graph wide: 11 tasks, 2 levels")
    # the one helper: an SVG with a style of its own keeps it after the scaling
    styled = render.svg_html('<?xml version="1.0"?>\n<svg width="9pt" style="color:red">'
                             "<g/></svg>")
    assert styled == '<svg width="9pt" style="max-width:100%;height:auto;color:red"><g/></svg>'


async def _sleep(seconds: float = 0.0) -> None:
    await asyncio.sleep(seconds)


def _texts(svg: str) -> list[tuple[float, float, float, str]]:
    """(x, y, font size, text) of every <text> element of ``svg``."""
    return [(float(x), float(y), float(size), html.unescape(text)) for x, y, size, text in
            re.findall(r'<text[^>]* x="([-\d.]+)" y="([-\d.]+)"[^>]* font-size="([\d.]+)"'
                       r"[^>]*>([^<]*)</text>", svg)]


def _points(svg_part: str) -> list[tuple[float, float]]:
    """Every coordinate pair of the paths and polygons in ``svg_part``."""
    coords = " ".join(re.findall(r' (?:d|points)="([^"]+)"', svg_part))
    return [(float(x), float(y)) for x, y in re.findall(r"(-?[\d.]+),(-?[\d.]+)", coords)]


@needs_dot
def test_marks_and_error_codes_keep_clear_of_edges_and_durations() -> None:
    d = ok.DAG("clear", max_concurrent=2)
    d.task("slow", _sleep, seconds=2.0, timeout=0.05)
    d.task("next", _sleep, after="slow")
    d.task("last", _sleep, after="next")
    run = d.run(live=False)
    assert run.records["slow"].error.code == "TASK_TIMEOUT"
    svg = run.to_svg()
    # the skip mark of each skip-cause edge: beside the edge and its arrowhead, not on them
    edges = [part.split('<g id="node')[0] for part in svg.split('<g id="edge')[1:]]
    marked = [e for e in edges if ">skip</text>" in e]
    assert len(marked) == 2
    for edge in marked:
        ((x, y, size, _),) = [t for t in _texts(edge) if t[3] == "skip"]
        start = x if 'text-anchor="start"' in edge else x - size  # "skip" is ~2 em wide
        near = [px for px, py in _points(edge) if y - 1.5 * size <= py <= y + 0.5 * size]
        assert near and all(px < start - 1 for px in near), (start, near)
    # "TASK_TIMEOUT" and the duration are on lines of their own
    node = svg.split("<title>slow</title>")[1].split('class="node"')[0]
    texts = _texts(node)
    code = [t for t in texts if "TASK_TIMEOUT" in t[3]]
    took = [t for t in texts if re.fullmatch(r"\d+(\.\d+)? ms", t[3].strip())]
    assert code and took, texts
    assert took[0][1] - code[0][1] >= 0.8 * took[0][2]  # the next line down
    label = Dot(run.graph().source).nodes["slow"]["label"]
    assert re.search(r"TASK_TIMEOUT</b></font><br/><font[^>]*>\d", label), label


def test_text_made_from_a_count_agrees_with_the_count() -> None:
    from oktyv_nb.units import plural

    assert [plural(n, "task") for n in (0, 1, 2)] == ["0 tasks", "1 task", "2 tasks"]
    assert plural(1, "child", "children") == "1 child"
    assert plural(3, "child", "children") == "3 children"
    one = ok.DAG("one").task("only", work)
    dot = Dot(one.graph().source)
    assert dot.nodes["#level0"]["tooltip"] == "level 0: 1 task"
    assert "1 task, 1 level" in dot.graph_attrs["label"]
    two = Dot(etl_dag().graph().source)
    assert two.nodes["#level1"]["tooltip"] == "level 1: 2 tasks"
    mapped = ok.DAG("m").map("each", work, over=[1], param="seconds")
    assert "mapped over 1 item as seconds" in Dot(mapped.graph().source).nodes["each"]["tooltip"]


# ------------------------------------------------------------------ scale
@needs_dot
def test_500_tasks_render_in_a_few_seconds() -> None:
    dag = many_tasks_dag(500, "five-hundred")
    run = dag.run(live=False)
    assert run.result.summary.succeeded == 500
    t0 = time.perf_counter()
    digraph = run.graph()
    built = time.perf_counter() - t0
    svg = render.to_svg(digraph)
    total = time.perf_counter() - t0
    print(f"500 tasks: DOT built in {built:.3f} s, SVG in {total:.3f} s, {len(svg) // 1024} KB")
    assert svg.count('class="node"') == 500 + len(dag.levels)
    assert Dot(digraph.source).nodes["t-0001"]["label"] == "t-0001"  # compact
    assert built < 2.0  # generous: about 0.03 s here
    assert total < 20.0  # generous: about 1 s here


def test_format_seconds() -> None:
    fs = render.format_seconds
    assert fs(0.0004) == "400 µs"
    assert fs(0.0123) == "12.3 ms"
    assert fs(0.5) == "500 ms"
    assert fs(1.234) == "1.23 s"
    assert fs(125) == "2 min 05 s"
    assert fs(3 * 3600 + 60) == "3 h 01 min"
    assert fs(float("nan")) == "—"


def test_a_graph_reads_as_its_summary_in_text() -> None:
    dag = ok.DAG(name="pipe").task("a", "sleep", seconds=0.01).task(
        "b", "sleep", seconds=0.01, after="a")
    assert repr(dag.graph()) == "<graph pipe: 2 tasks, 2 levels>"
    text = repr(dag.run(live=False).graph())
    assert text.startswith("<graph pipe: 2 tasks, 2 levels — 2 success; makespan ")
    assert text.endswith("(a → b)>") and "critical path" in text
    assert "0x" not in text


# --------------------------------------------------------------------------- DOT emission


_QUOTE_CASES = [
    "a", "a b", "node", "Node", "EDGE", "1.5", "-1.5", ".5", "15", "1-5", "<b>x</b>",
    graphviz.nohtml("<b>x</b>"), 'say "hi"', 'back\\\\"q', "", "x\n", "é", "#level0",
    graphviz.escape("a\\b"), "t1 · tool noop · level 0", "#e9ecef", "rounded,filled",
]


@pytest.mark.parametrize("text", _QUOTE_CASES)
def test_dot_quoting_matches_graphviz(text: str) -> None:
    from oktyv_nb.results.display.render import _quote, _quote_common

    assert _quote(text) == graphviz.quoting.quote(text)
    assert _quote_common(text) == graphviz.quoting.quote(text)


def test_node_and_edge_lines_match_graphviz() -> None:
    from oktyv_nb.results.display.render import _attr_list

    attrs = {"tooltip": graphviz.escape('a "b" \\ c'), "fillcolor": "#fff", "color": "red",
             "label": "<<b>x</b>>", "style": "", "peripheries": "2"}
    g = graphviz.Digraph()
    g.node(graphviz.nohtml("n 1"), **attrs)
    g.edge("a", "b", **{k: v for k, v in attrs.items() if k != "label"})
    g.edge("a", "b")
    assert g.body == [
        f'\t"n 1"{_attr_list(attrs)}\n',
        f"\ta -> b{_attr_list({k: v for k, v in attrs.items() if k != 'label'})}\n",
        "\ta -> b\n",
    ]
    assert _attr_list({}) == ""


def test_a_failed_nodes_tooltip_has_its_error_code_and_first_line() -> None:
    def bad() -> None:
        raise ValueError("the disk is full\nmore detail here")

    run = ok.DAG().task("t", bad).task("u", lambda: 1, after="t").run(live=False)
    src = run.graph().source
    line = next(ln for ln in src.splitlines() if ln.strip().startswith("t ["))
    assert "ValueError: the disk is full" in line and "more detail" not in line
    skipped = next(ln for ln in src.splitlines() if ln.strip().startswith("u ["))
    assert "DEPENDENCY_FAILED: Skipped: dependency t failed" in skipped
