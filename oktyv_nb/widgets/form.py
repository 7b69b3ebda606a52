"""The widget form: ``ok.builder(dag=None, tools=None)`` builds and edits a DAG (SPEC §12).

:class:`BuilderForm` is an ``ipywidgets.VBox``. It edits an ordinary :class:`~oktyv_nb.dag.DAG`
(``form.dag``) in place, through the DAG's public methods only. This module lays the form out
and holds its run settings and exports; its parts live beside it:

* :mod:`~oktyv_nb.widgets.editor`: the task list and the editor of one task (pick a task to
  fill the fields, *Save task* replaces it in its position, *Remove task* deletes it, *New
  task* clears the fields for *Add task*), checked as you type by
  :mod:`~oktyv_nb.widgets.draft`, with the parameter fields of
  :mod:`~oktyv_nb.widgets.fields`;
* :mod:`~oktyv_nb.widgets.runner`: *Run* / *Stop*, progress, the graph's live colours
  during a run (from the run's events) and the result table;
* :mod:`~oktyv_nb.widgets.results`: the HTML of the graph preview (an SVG from Graphviz
  ``dot``; without ``dot`` its DOT text and the install hint) and of the result table.

The graph keeps its natural size when it fits beside the editor; otherwise it moves below it
and takes the cell's width, scaled down only to fit that width.

*Python code* / *JSON request* show :meth:`BuilderForm.to_code` (:mod:`oktyv_nb.codegen`) and
:meth:`BuilderForm.to_request`, kept up to date as the tasks and settings change; *Save
JSON* / *Load JSON* write and read the request file. Times in the form are **seconds**
(timeouts); the JSON request keeps milliseconds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from oktyv_nb.dag import DAG
from oktyv_nb.errors import InvalidOptionError, InvalidRateError
from oktyv_nb.model.registry import ToolTable
from oktyv_nb.results.display.theme import FAINT
from oktyv_nb.units import plural
from oktyv_nb.widgets.common import STYLE, guarded, mark, message_area, row, set_msg
from oktyv_nb.widgets.draft import dag_error
from oktyv_nb.widgets.editor import TaskEditor
from oktyv_nb.widgets.fields import ParamField
from oktyv_nb.widgets.results import graph_html, svg_width_px
from oktyv_nb.widgets.runner import RunPanel

if TYPE_CHECKING:
    from oktyv_nb.results.run import Run

__all__ = ["BuilderForm", "ParamField", "builder"]

#: The least width of the graph's column when it shows no SVG (a message, DOT text).
_GRAPH_MIN_WIDTH = "280px"


class BuilderForm(W.VBox):
    """An ipywidgets form that builds and edits ``form.dag`` (an ordinary :class:`DAG`).

    Widgets are public attributes so that code (and tests) can drive the form: set
    ``form.id_input.value``, ``form.tool_input.value``, ``form.params[name].input.value``,
    ``form.deps_input.value``... then ``form.add_button.click()``. The editor's widgets
    (:attr:`TaskEditor.WIDGETS`) and the run panel's (:attr:`RunPanel.WIDGETS`) are
    attributes of the form too; ``form.editor`` and ``form.runner`` are the parts.
    """

    def __init__(self, dag: DAG | None = None, tools: Mapping[str, Callable[..., Any]] | None
                 = None) -> None:
        if dag is None:
            dag = DAG(tools=tools)
        elif tools:
            for name, fn in tools.items():
                if name not in dag.tools:
                    dag.tools[name] = fn
        self.dag: DAG = dag
        self._loading = False
        self._export_kind: str | None = None  # what the export box shows: "code", "json"
        self.editor = TaskEditor(dag, on_change=self._dag_changed)
        self.runner = RunPanel(dag, show_run=self._preview, refresh=self._dag_changed,
                               show_graph=self._show_graph)
        for part in (self.editor, self.runner):
            for name in part.WIDGETS:
                setattr(self, name, getattr(part, name))
        self._build()
        super().__init__(children=self._layout())
        self.add_class("oktyv-builder")
        self._load_settings()
        self.editor.refresh()
        self.editor.new_task()
        self._dag_changed()

    # ------------------------------------------------------------------ the parts' state
    @property
    def params(self) -> dict[str, ParamField]:
        """The parameter fields of the tool being edited, by parameter name."""
        return self.editor.params

    @property
    def last_run(self) -> Run | None:
        """The run the *Run* button started last."""
        return self.runner.last_run

    @last_run.setter
    def last_run(self, run: Run | None) -> None:
        self.runner.last_run = run

    @property
    def run_task(self) -> asyncio.Future[Any] | None:
        """The asyncio task of a run started on the kernel's loop (await it to wait)."""
        return self.runner.run_task

    @run_task.setter
    def run_task(self, task: asyncio.Future[Any] | None) -> None:
        self.runner.run_task = task

    def edit(self, task_id: str) -> None:
        """Fill the editor with task ``task_id``; *Save task* replaces it."""
        self.editor.edit(task_id)

    def tool_table(self) -> ToolTable:
        """The tools the form offers: the DAG's own, ``ok.tool``-registered, built-ins."""
        return self.editor.tool_table()

    # ------------------------------------------------------------------ widgets
    def _build(self) -> None:
        self.style_html = W.HTML(STYLE)
        self.title_html = W.HTML()
        # run settings
        self.name_input = W.Text(placeholder="(optional)", layout=W.Layout(width="160px"))
        self.max_concurrent_input = W.BoundedIntText(min=1, max=100_000, value=10,
                                                     layout=W.Layout(width="80px"))
        self.failure_mode_input = W.Dropdown(options=["continue", "stop", "rollback"],
                                             layout=W.Layout(width="110px"))
        self.run_timeout_input = W.Text(placeholder="none", layout=W.Layout(width="80px"))
        self.pools_input = W.Text(placeholder="none, e.g. api=3, db=1",
                                  layout=W.Layout(width="200px"))
        self.rates_input = W.Text(placeholder="none, e.g. api=5/s",
                                  layout=W.Layout(width="200px"))
        self.settings_msg = message_area()
        for w in (self.name_input, self.max_concurrent_input, self.failure_mode_input,
                  self.run_timeout_input, self.pools_input, self.rates_input):
            w.observe(self._settings_changed, "value")
        # graph: its column is at least as wide as the SVG (or the whole row, then the SVG
        # scales to that width); when that does not fit beside the editor it goes below
        self.graph_html = W.HTML(layout=W.Layout(width="100%", overflow="auto"))
        self.graph_html.add_class("oktyv-graph")
        self.graph_box = W.VBox(layout=W.Layout(flex="1 1 320px", min_width=_GRAPH_MIN_WIDTH,
                                                margin="0 0 0 12px"))
        self.graph_box.add_class("oktyv-graph-box")
        # export
        self.code_button = _button("Python code", "code", self._on_export)
        self.json_button = _button("JSON request", "file-code-o", self._on_export)
        self.export_area = W.Textarea(rows=12, layout=W.Layout(width="100%", display="none"))
        self.export_area.add_class("oktyv-export")
        self.path_input = W.Text(placeholder="request.json", layout=W.Layout(width="240px"))
        self.save_button = _button("Save JSON", "save", self._on_save)
        self.load_button = _button("Load JSON", "folder-open", self._on_load)
        self.file_msg = message_area()

    def _layout(self) -> list[W.Widget]:
        def head(text: str) -> W.HTML:
            h = W.HTML(f"<b>{text}</b>")
            h.add_class("oktyv-head")
            return h

        settings = row(
            W.HTML("DAG name&nbsp;"), self.name_input,
            W.HTML("&nbsp;&nbsp;max concurrent&nbsp;"), self.max_concurrent_input,
            W.HTML("&nbsp;&nbsp;on failure&nbsp;"), self.failure_mode_input,
            W.HTML("&nbsp;&nbsp;run timeout (s)&nbsp;"), self.run_timeout_input,
            self.settings_msg,
        )
        limits = row(
            W.HTML("pools&nbsp;"), self.pools_input,
            W.HTML("&nbsp;&nbsp;rates&nbsp;"), self.rates_input,
        )
        tasks, editor = self.editor.columns(head)
        self.graph_box.children = [head("Graph"), self.graph_html]
        export = row(self.code_button, self.json_button, W.HTML("&nbsp;&nbsp;file&nbsp;"),
                     self.path_input, self.save_button, self.load_button, self.file_msg)
        return [
            self.style_html, self.title_html, settings, limits,
            W.HBox([tasks, editor, self.graph_box],
                   layout=W.Layout(align_items="flex-start", flex_flow="row wrap",
                                   margin="6px 0")),
            head("Run"), self.runner.controls(), self.runner.result_html,
            head("Export"), export, self.export_area,
        ]

    def _refresh_title(self) -> None:
        n = len(self.dag)
        name = escape(self.dag.name) if self.dag.name else "DAG builder"
        self.title_html.value = (
            f'<h3 style="margin:4px 0">{name} <span style="color:{FAINT};font-size:13px;'
            f'font-weight:normal">{plural(n, "task")}</span></h3>'
        )

    def _dag_changed(self) -> None:
        """Refresh the task list, title, whole-DAG message, graph preview and export."""
        self.editor.refresh()
        self._refresh_title()
        self.runner.run_button.disabled = self.runner.running
        self.editor.show_dag_error(dag_error(self.dag))
        self._preview()
        self._refresh_export()

    def _preview(self, run: Run | None = None) -> None:
        """Show the DAG's graph, coloured by ``run`` when given."""
        self._show_graph(graph_html(self.dag, run))

    def _show_graph(self, html: str) -> None:
        """Show ``html`` (an SVG, or a message) as the graph, its column at least as wide as
        the SVG asks for, or as the whole row when it asks for more."""
        width = svg_width_px(html) if html.lstrip().startswith("<svg") else None
        self.graph_box.layout.min_width = (
            _GRAPH_MIN_WIDTH if width is None else f"min({width:.0f}px, 100%)")
        self.graph_html.value = html

    # ------------------------------------------------------------------ settings
    def _load_settings(self) -> None:
        c = self.dag.config
        self._loading = True
        try:
            self.name_input.value = self.dag.name or ""
            self.max_concurrent_input.value = min(c.max_concurrent, self.max_concurrent_input.max)
            self.failure_mode_input.value = c.failure_mode
            self.run_timeout_input.value = repr(c.timeout) if c.timeout is not None else ""
            self.pools_input.value = ", ".join(f"{k}={v}" for k, v in c.pools.items())
            self.rates_input.value = ", ".join(f"{k}={v}" for k, v in c.rates.items())
        finally:
            self._loading = False

    @guarded("settings_msg")
    def _settings_changed(self, _change: dict[str, Any]) -> None:
        if self._loading:
            return
        text = self.run_timeout_input.value.strip()
        try:
            pools = _pairs(self.pools_input.value, "pools", int)
            rates = _pairs(self.rates_input.value, "rates", str)
        except InvalidOptionError as exc:
            set_msg(self.settings_msg, "error", exc.message)
            mark(self.pools_input, exc.option == "pools")
            mark(self.rates_input, exc.option == "rates")
            return
        try:
            self.dag.configure(  # checked by the DAG, as its constructor checks them
                name=self.name_input.value.strip() or None,
                max_concurrent=self.max_concurrent_input.value,
                failure_mode=self.failure_mode_input.value,
                timeout=float(text) if text else None,
                pools=pools, rates=rates,
            )
        except ValueError as exc:  # not a number, or a setting the DAG refuses
            rate = isinstance(exc, InvalidRateError)
            if rate or getattr(exc, "option", None) == "pools":
                set_msg(self.settings_msg, "error", exc.message)  # type: ignore[attr-defined]
                mark(self.rates_input, rate)
                mark(self.pools_input, not rate)
                return
            timeout_error = not isinstance(exc, InvalidOptionError) or exc.option == "timeout"
            set_msg(self.settings_msg, "error",
                    f"run timeout {text!r} is not a number of seconds > 0" if timeout_error
                    else exc.message)
            mark(self.run_timeout_input, timeout_error)
            return
        mark(self.run_timeout_input, False)
        mark(self.pools_input, False)
        mark(self.rates_input, False)
        set_msg(self.settings_msg, "error", "")
        self._refresh_title()
        self._dag_changed()  # a task's pool may be defined, or no longer

    # ------------------------------------------------------------------ export
    def to_request(self) -> dict[str, Any]:
        """The DAG as a JSON request (SPEC §3): a camelCase dict, times in ms."""
        return self.dag.to_request().model_dump(by_alias=True, exclude_none=True, mode="json")

    def to_code(self) -> str:
        """Python code that rebuilds this DAG with the fluent builder into ``dag``
        (:meth:`DAG.to_code`).

        Run it with the tools in scope under their names: built-ins are ``ok.tools.<name>``,
        other tools are referred to by the name they are registered under.
        """
        return self.dag.to_code()

    @guarded("file_msg")
    def _on_export(self, btn: W.Button) -> None:
        self._export_kind = "code" if btn is self.code_button else "json"
        self._refresh_export()

    @guarded("file_msg")
    def _refresh_export(self) -> None:
        """Show the export asked for last (nothing before one was), as the DAG is now."""
        if self._export_kind == "code":
            self._show_export(self.to_code())
        elif self._export_kind == "json":
            self._show_export(json.dumps(self.to_request(), indent=2))

    def _show_export(self, text: str) -> None:
        self.export_area.value = text
        self.export_area.rows = min(max(text.count("\n") + 1, 4), 30)
        self.export_area.layout.display = None

    def _path(self) -> Path | None:
        text = self.path_input.value.strip()
        if not text:
            set_msg(self.file_msg, "error", "type a file path, e.g. request.json")
            mark(self.path_input, True)
            return None
        mark(self.path_input, False)
        return Path(text).expanduser()

    @guarded("file_msg")
    def _on_save(self, _btn: W.Button | None = None) -> None:
        path = self._path()
        if path is None:
            return
        try:
            path.write_text(json.dumps(self.to_request(), indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            set_msg(self.file_msg, "error", f"cannot write {path}: {exc.strerror or exc}")
            return
        set_msg(self.file_msg, "ok", f"saved {len(self.dag)} tasks to {path}")

    @guarded("file_msg")
    def _on_load(self, _btn: W.Button | None = None) -> None:
        path = self._path()
        if path is None:
            return
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            self.load_request(data)
        except OSError as exc:
            set_msg(self.file_msg, "error", f"cannot read {path}: {exc.strerror or exc}")
        except json.JSONDecodeError as exc:
            set_msg(self.file_msg, "error", f"{path} is not JSON: {exc.msg} (line "
                    f"{exc.lineno}, column {exc.colno})")
        except ValueError as exc:  # pydantic ValidationError, OktyvError
            first = str(exc).splitlines()
            set_msg(self.file_msg, "error", f"{path}: " + " ".join(first[:3]))
        else:
            set_msg(self.file_msg, "ok", f"loaded {len(self.dag)} tasks from {path}")

    def load_request(self, request: Any) -> None:
        """Replace the DAG's tasks and settings with those of ``request`` (a JSON request
        dict, JSON text or model); ``form.dag`` stays the same object."""
        new = DAG.from_request(request, tools=self.dag.tools)
        c = new.config
        self.dag.replace_tasks(new.specs.values())
        self.dag.configure(max_concurrent=c.max_concurrent, failure_mode=c.failure_mode,
                           timeout=c.timeout)
        self._load_settings()
        self.editor.new_task()
        self._dag_changed()


def _button(description: str, icon: str, on_click: Callable[[W.Button], None]) -> W.Button:
    button = W.Button(description=description, icon=icon, layout=W.Layout(width="auto"))
    button.on_click(on_click)
    return button


def builder(dag: DAG | None = None, tools: Mapping[str, Callable[..., Any]] | None = None
            ) -> BuilderForm:
    """An ipywidgets form that builds ``dag`` (a new :class:`DAG` when None).

    ``tools`` (name -> callable) are offered next to the ``ok.tool``-registered and built-in
    tools, and added to the DAG's own tools. ``form.dag`` is the DAG, ``form.last_run`` the
    run started by the *Run* button, ``form.to_code()`` / ``form.to_request()`` export it.
    """
    return BuilderForm(dag, tools)


def _pairs(text: str, option: str, kind: type) -> dict[str, Any]:
    """``"api=3, db=1"`` as ``{"api": 3, "db": 1}`` (``kind`` int) or ``"api=5/s"`` as
    ``{"api": "5/s"}``; an :class:`InvalidOptionError` naming ``option`` otherwise."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = (x.strip() for x in part.partition("="))
        if not sep or not name or not value:
            example = "api=3" if kind is int else "api=5/s"
            raise InvalidOptionError(f"{option}: write name=value pairs like {example}, "
                                     f"got {part!r}", option=option)
        if kind is int:
            try:
                out[name] = int(value)
            except ValueError:
                raise InvalidOptionError(f"pool {name!r} must have an int >= 1 of slots, "
                                         f"got {value!r}", option=option) from None
        else:
            out[name] = value
    return out
