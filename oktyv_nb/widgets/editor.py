"""The form's task list and the editor of one task.

:class:`TaskEditor` lists the DAG's tasks; picking one fills the editor's fields, *Save task*
replaces it in its position, *Remove task* deletes it, *New task* clears the fields for
*Add task*. Every field is checked as it changes (:func:`~oktyv_nb.widgets.draft.check_draft`)
and its message shows next to it; the DAG changes only through its public methods
(:meth:`DAG.replace_tasks`, :meth:`DAG.remove`) and only with a valid draft.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Mapping
from html import escape
from typing import Any

import ipywidgets as W

from oktyv_nb.dag import DAG
from oktyv_nb.errors import OktyvError
from oktyv_nb.model.registry import ToolTable, default_registry, resolve_tools
from oktyv_nb.model.schema import RetryPolicyModel, TaskSpec
from oktyv_nb.model.tools import BUILTIN_TOOLS
from oktyv_nb.results.display.theme import GRID, MUTED
from oktyv_nb.units import ms_to_seconds
from oktyv_nb.widgets.common import (
    INPUT_WIDTH,
    LABEL_WIDTH,
    guarded,
    label,
    mark,
    message,
    message_area,
    row,
    set_msg,
)
from oktyv_nb.widgets.draft import Draft, check_draft, implied_deps, ordered_with
from oktyv_nb.widgets.fields import ParamField, param_fields, tool_help_html

__all__ = ["TaskEditor"]


class TaskEditor:
    """The task list and the editor of ``dag``'s tasks; ``on_change()`` is called after a
    task was added, saved or removed."""

    #: Its widgets, public attributes of the form too.
    WIDGETS = (
        "tasks_list", "new_button", "remove_button", "editor_title", "id_input", "id_msg",
        "tool_input", "tool_msg", "tool_doc", "params_box", "extra_input", "extra_msg",
        "extra_row", "deps_input", "deps_msg", "refs_html", "dag_msg", "priority_input",
        "timeout_input", "timeout_msg", "retries_input", "retries_msg", "trigger_input",
        "vault_input", "vault_msg", "map_over_input", "map_param_input", "map_max_input",
        "map_msg", "pool_input", "pool_msg", "add_button", "status_msg",
    )

    def __init__(self, dag: DAG, on_change: Callable[[], None]) -> None:
        self.dag = dag
        self._on_change = on_change
        self.params: dict[str, ParamField] = {}
        self._editing: str | None = None  # id of the task being edited, None for a new one
        self._loading = False
        self._submitted = False
        self._touched: set[str] = set()
        self._retry_loaded: tuple[int, RetryPolicyModel | None] | None = None
        self._kept: dict[str, Any] = {}
        self._build()

    # ------------------------------------------------------------------ widgets
    def _build(self) -> None:
        lw = W.Layout(width=INPUT_WIDTH)
        self.tasks_list = W.Select(options=[], rows=6, layout=W.Layout(width="auto"))
        self.tasks_list.add_class("oktyv-tasks")
        self.tasks_list.observe(self._selected, "value")
        self.new_button = W.Button(description="New task", icon="plus",
                                   layout=W.Layout(width="100%", margin="4px 0 0 0"))
        self.remove_button = W.Button(description="Remove task", icon="trash",
                                      button_style="danger",
                                      layout=W.Layout(width="100%", margin="4px 0 0 0"))
        self.new_button.on_click(self._on_new)
        self.remove_button.on_click(self._on_remove)
        self.editor_title = W.HTML()
        self.id_input = W.Text(placeholder="e.g. fetch", layout=lw)
        self.id_input.add_class("oktyv-id")
        self.id_msg = message_area()
        self.tool_input = W.Dropdown(options=[], layout=lw)
        self.tool_input.add_class("oktyv-tool")
        self.tool_msg = message_area()
        self.tool_doc = W.HTML()
        self.params_box = W.VBox()
        self.extra_input = W.Textarea(placeholder='{"name": value, ...}', rows=2, layout=lw)
        self.extra_input.add_class("oktyv-extra")
        self.extra_msg = message_area()
        self.extra_row = row(label("<b>other params</b>", "JSON object of more keyword "
                                   "arguments"), self.extra_input, self.extra_msg)
        # its own width whatever the message beside it says (a flex item would shrink)
        self.deps_input = W.SelectMultiple(options=[], rows=4,
                                           layout=W.Layout(width=INPUT_WIDTH, flex="0 0 auto"))
        self.deps_input.add_class("oktyv-deps")
        self.deps_msg = message_area()
        self.refs_html = W.HTML()
        self.dag_msg = W.HTML()
        self.dag_msg.add_class("oktyv-dag-msg")
        self.priority_input = W.Dropdown(
            options=[("default (5)", 0)] + [(str(i), i) for i in range(1, 11)],
            layout=W.Layout(width="120px"))
        self.priority_input.add_class("oktyv-priority")
        self.timeout_input = W.Text(placeholder="none", layout=W.Layout(width="120px"))
        self.timeout_input.add_class("oktyv-timeout")
        self.timeout_msg = message_area()
        self.retries_input = W.BoundedIntText(min=0, max=100, value=0,
                                              layout=W.Layout(width="120px"))
        self.retries_input.add_class("oktyv-retries")
        self.retries_msg = message_area()
        self.trigger_input = W.Dropdown(
            options=[("default (all_success)", ""), ("all_success", "all_success"),
                     ("all_done", "all_done")], layout=W.Layout(width="180px"))
        self.trigger_input.add_class("oktyv-trigger")
        self.vault_input = W.Text(placeholder="(none)", layout=W.Layout(width="180px"))
        self.vault_input.add_class("oktyv-vault")
        self.vault_msg = message_area()
        self.map_over_input = W.Text(placeholder="not mapped; ${list.result} or [1, 2, 3]",
                                     layout=lw)
        self.map_over_input.add_class("oktyv-map-over")
        self.map_param_input = W.Dropdown(options=[("(parameter)", "")], value="",
                                          layout=W.Layout(width="180px"))
        self.map_param_input.add_class("oktyv-map-param")
        self.map_max_input = W.BoundedIntText(min=0, max=10_000, value=0,
                                              layout=W.Layout(width="120px"))
        self.map_max_input.add_class("oktyv-map-max")
        self.map_msg = message_area()
        self.pool_input = W.Text(placeholder="(none)", layout=W.Layout(width="180px"))
        self.pool_input.add_class("oktyv-pool")
        self.pool_msg = message_area()
        self.add_button = W.Button(description="Add task", button_style="primary",
                                   icon="check", layout=W.Layout(width="auto"))
        self.add_button.add_class("oktyv-add")
        self.add_button.on_click(self._on_submit)
        self.status_msg = message_area()
        self.status_msg.add_class("oktyv-status-msg")
        for name, w in (("id", self.id_input), ("extra", self.extra_input),
                        ("deps", self.deps_input), ("priority", self.priority_input),
                        ("timeout", self.timeout_input), ("retries", self.retries_input),
                        ("trigger", self.trigger_input), ("vault", self.vault_input),
                        ("map", self.map_over_input), ("map", self.map_param_input),
                        ("map", self.map_max_input), ("pool", self.pool_input)):
            w.observe(self._changed_fn(name), "value")
        self.tool_input.observe(self._tool_changed, "value")

    def columns(self, head: Callable[[str], W.Widget]) -> tuple[W.VBox, W.VBox]:
        """The task list's column and the editor's (``head(text)`` makes a heading)."""
        tasks = W.VBox([head("Tasks"), self.tasks_list, self.new_button, self.remove_button],
                       layout=W.Layout(width="190px", min_width="190px", margin="0 12px 0 0"))
        editor = W.VBox([
            self.editor_title,
            row(label("<b>id</b>"), self.id_input, self.id_msg),
            row(label("<b>tool</b>"), self.tool_input, self.tool_msg),
            self.tool_doc,
            self.params_box,
            row(label("<b>depends on</b>", "explicit dependencies; ${refs} add theirs"),
                self.deps_input, self.deps_msg),
            self.refs_html,
            self.dag_msg,
            row(label("<b>priority</b>", "1..10, higher starts first among ready tasks"),
                self.priority_input),
            row(label("<b>timeout</b> (s)", "seconds per attempt"), self.timeout_input,
                self.timeout_msg),
            row(label("<b>retries</b>", "more attempts, exponential backoff from 1 s"),
                self.retries_input, self.retries_msg),
            row(label("<b>trigger</b>", "all_done: run even when a dependency failed"),
                self.trigger_input),
            row(label("<b>vault</b>", "secret set passed as credentials"),
                self.vault_input, self.vault_msg),
            row(label("<b>map over</b>", "one child task per element of this list, known "
                      "at run time (SPEC §16)"), self.map_over_input),
            row(label("<b>each element as</b>", "the tool parameter each child gets its "
                      "element as; at most this many children at once (0: no bound)"),
                self.map_param_input, self.map_max_input, self.map_msg),
            row(label("<b>pool</b>", "a pool or rate of the DAG's pools= / rates="),
                self.pool_input, self.pool_msg),
            row(self.add_button, self.status_msg),
        ], layout=W.Layout(flex="1 1 560px", min_width="560px", border=f"1px solid {GRID}",
                           padding="6px 10px"))
        return tasks, editor

    # ------------------------------------------------------------------ tools
    def tool_table(self) -> ToolTable:
        """The tools the form offers: the DAG's own, ``ok.tool``-registered, built-ins."""
        return resolve_tools(self.dag.tools)

    def _tool_options(self, extra: str | None = None) -> list[tuple[str, str]]:
        options = []
        for name in self.tool_table():
            where = " (built-in)" if name in BUILTIN_TOOLS and name not in self.dag.tools \
                and name not in default_registry else ""
            options.append((name + where, name))
        if extra is not None and extra not in {v for _, v in options}:
            options.append((f"{extra} (unknown)", extra))
        return options

    @guarded("status_msg")
    def _tool_changed(self, change: dict[str, Any]) -> None:
        if self._loading:  # the caller builds the fields itself
            return
        self._build_params(change["new"])
        self._touched.add("tool")
        self.check()

    def _build_params(self, name: str | None, keep: bool = True) -> None:
        old = dict(self.params) if keep else {}
        fn = None
        if name is not None:
            with contextlib.suppress(KeyError):
                fn = self.tool_table()[name]
        fields, var_kw = param_fields(fn)
        for pname, field in fields.items():  # keep what was typed into a same-named field
            prev = old.get(pname)
            if prev is not None and prev.kind == field.kind and not prev.uses_ref:
                if prev.kind in ("bool", "choice"):
                    with contextlib.suppress(Exception):
                        field.input.value = prev.input.value
                else:
                    field.input.value = prev.input.value
            field.observe(self._changed_fn(f"param:{pname}"))
        self.params = fields
        self.tool_doc.value = tool_help_html(name, fn)
        self.extra_input.value = ""
        self.extra_row.layout.display = None if var_kw else "none"
        self._layout_params()
        self._param_options()

    def _layout_params(self) -> None:
        rows: list[W.Widget] = []
        if self.params:
            rows.append(W.HTML(f'<div style="color:{MUTED};margin-left:{LABEL_WIDTH}">'
                               "parameters (empty = the tool's default)</div>"))
            rows.extend(f.row for f in self.params.values())
        rows.append(self.extra_row)
        self.params_box.children = rows

    # ------------------------------------------------------------------ editor state
    def _changed_fn(self, name: str) -> Callable[[dict[str, Any]], None]:
        def changed(_change: dict[str, Any]) -> None:
            if self._loading:
                return
            self._touched.add(name)
            self.check()

        return changed

    def refresh(self) -> None:
        """Show the DAG's tasks in the list (and as the dependencies to choose from)."""
        self._loading = True
        try:
            self.tasks_list.options = [
                (f"{tid}  ·  {spec.tool}", tid) for tid, spec in self.dag.specs.items()
            ]
            self.tasks_list.value = self._editing if self._editing in self.dag.specs else None
            self._refresh_deps()
        finally:
            self._loading = False
        self.remove_button.disabled = self._editing is None

    def _refresh_deps(self, selected: Iterable[str] | None = None) -> None:
        keep = tuple(self.deps_input.value if selected is None else selected)
        others = [tid for tid in self.dag.specs if tid != self._editing]
        self.deps_input.options = others
        self.deps_input.value = tuple(t for t in keep if t in others)

    @guarded("status_msg")
    def _selected(self, change: dict[str, Any]) -> None:
        if self._loading:
            return
        tid = change["new"]
        if tid is None:
            self.new_task()
        else:
            self.edit(tid)

    @guarded("status_msg")
    def _on_new(self, _btn: W.Button | None = None) -> None:
        self.new_task()

    def new_task(self) -> None:
        """Clear the editor for a new task."""
        self._editing = None
        self._loading = True
        try:
            self.tasks_list.value = None
            self._refresh_deps(())
            options = self._tool_options()
            current = self.tool_input.value
            self.tool_input.options = options
            values = [v for _, v in options]
            self.tool_input.value = current if current in values else (values[0] if values
                                                                       else None)
            self._build_params(self.tool_input.value, keep=False)
            self.id_input.value = self._suggest_id()
            self.priority_input.value = 0
            self.timeout_input.value = ""
            self.retries_input.value = 0
            self.trigger_input.value = ""
            self.vault_input.value = ""
            self._load_map(None, None)
        finally:
            self._loading = False
        self._kept = {}
        self._retry_loaded = None
        self._submitted = False
        self._touched = set()
        self.add_button.description = "Add task"
        self.remove_button.disabled = True
        self.editor_title.value = '<b class="oktyv-head">New task</b>'
        self.check()

    def _suggest_id(self) -> str:
        n = len(self.dag.specs) + 1
        while f"task{n}" in self.dag.specs:
            n += 1
        return f"task{n}"

    def edit(self, task_id: str) -> None:
        """Fill the editor with task ``task_id``; *Save task* replaces it."""
        spec = self.dag.specs[task_id]
        self._editing = task_id
        self._loading = True
        try:
            self.tasks_list.value = task_id
            self._refresh_deps(spec.depends_on or ())
            self.tool_input.options = self._tool_options(extra=spec.tool)
            self.tool_input.value = spec.tool
            self._build_params(spec.tool, keep=False)
            self._load_params(spec.params)
            self.id_input.value = spec.id
            self.priority_input.value = spec.priority or 0
            self.timeout_input.value = (repr(ms_to_seconds(spec.timeout))
                                        if spec.timeout is not None else "")
            rp = spec.retry_policy
            retries = rp.max_attempts - 1 if rp is not None else 0
            self.retries_input.value = min(retries, self.retries_input.max)
            self._retry_loaded = (self.retries_input.value, rp)
            self.trigger_input.value = spec.run_if or ""
            self.vault_input.value = spec.vault or ""
            self._load_map(spec.map, spec.pool)
        finally:
            self._loading = False
        self._kept = {"rollback": spec.rollback}
        self._submitted = False
        self._touched = set()
        self.add_button.description = "Save task"
        self.remove_button.disabled = False
        self.editor_title.value = (f'<b class="oktyv-head">Edit task <code>{escape(task_id)}'
                                   "</code></b>")
        if spec.rollback is not None:
            self.editor_title.value += message(
                "info", f"  (its rollback {spec.rollback.tool} is kept as it is)")
        self.check()

    def _param_options(self) -> None:
        """The mapped-parameter choices: the tool's parameters."""
        current = self.map_param_input.value
        names = list(self.params)
        if current and current not in names:
            names.append(current)
        self.map_param_input.options = [("(parameter)", ""), *[(n, n) for n in names]]
        self.map_param_input.value = current if current in names else ""

    def _load_map(self, spec: Any, pool: str | None) -> None:
        """Show a task's map (a MapSpec or None) and pool."""
        if spec is None:
            self.map_over_input.value = ""
            self._param_options()
            self.map_param_input.value = ""
            self.map_max_input.value = 0
        else:
            over = spec.over
            self.map_over_input.value = over if isinstance(over, str) else json.dumps(over)
            self._param_options()
            if spec.param not in [v for _, v in self.map_param_input.options]:
                self.map_param_input.options = [*self.map_param_input.options,
                                                (spec.param, spec.param)]
            self.map_param_input.value = spec.param
            self.map_max_input.value = spec.max_concurrent or 0
        self.pool_input.value = pool or ""

    def _load_params(self, params: Mapping[str, Any]) -> None:
        extra: dict[str, Any] = {}
        for k, v in params.items():
            field = self.params.get(k)
            if field is not None and not field.fits(v):
                # show it as JSON/text so that it reads back unchanged
                field = ParamField(k, "any", default=field.default, type_text="as JSON")
                field.observe(self._changed_fn(f"param:{k}"))
                self.params[k] = field
            if field is None:
                extra[k] = v
            else:
                field.load(v)
        if extra:
            self.extra_input.value = json.dumps(extra)
            self.extra_row.layout.display = None
        self._layout_params()

    # ------------------------------------------------------------------ validation
    def draft(self) -> Draft:
        """What the editor holds now."""
        retries: int | None = self.retries_input.value or None
        retry = None
        loaded = self._retry_loaded
        if loaded is not None and loaded[0] == self.retries_input.value:
            retries, retry = None, loaded[1]  # unchanged: the task's own policy stays
        return Draft(
            task_id=self.id_input.value.strip(), tool=self.tool_input.value,
            fields=self.params, extra=self.extra_input.value.strip(),
            after=tuple(self.deps_input.value), priority=self.priority_input.value or None,
            timeout=self.timeout_input.value.strip(), retries=retries, retry=retry,
            rollback=self._kept.get("rollback"), vault=self.vault_input.value.strip() or None,
            trigger=self.trigger_input.value or None, editing=self._editing,
            map_over=self.map_over_input.value.strip(),
            map_param=self.map_param_input.value or None,
            map_max=self.map_max_input.value or None,
            pool=self.pool_input.value.strip() or None,
        )

    def check(self, submit: bool = False) -> TaskSpec | None:
        """Validate the draft; show each message next to its field. Returns the TaskSpec
        when the draft is valid."""
        if submit:
            self._submitted = True
        spec, errors = check_draft(
            self.dag, self.draft(), lambda key: self._submitted or key in self._touched
        )
        self._show_errors(errors)
        return spec

    def _show_errors(self, errors: Mapping[str, str]) -> None:
        pairs: list[tuple[str, W.HTML, list[W.DOMWidget]]] = [
            ("id", self.id_msg, [self.id_input]),
            ("tool", self.tool_msg, [self.tool_input]),
            ("extra", self.extra_msg, [self.extra_input]),
            ("deps", self.deps_msg, [self.deps_input]),
            ("timeout", self.timeout_msg, [self.timeout_input]),
            ("map", self.map_msg, [self.map_over_input]),
            ("pool", self.pool_msg, [self.pool_input]),
        ]
        for name, field in self.params.items():
            widgets = [field.input] + ([field.ref_input] if field.ref_input else [])
            pairs.append((f"param:{name}", field.message, widgets))
        for key, widget, inputs in pairs:
            text = errors.get(key, "")
            set_msg(widget, "error", text)
            for w in inputs:
                mark(w, bool(text))
        if "status" in errors:
            set_msg(self.status_msg, "error", errors["status"])
        elif self._submitted and errors:
            set_msg(self.status_msg, "error", "fix the marked fields; nothing was saved")
        elif not errors and self.status_msg.value and "oktyv-error" in self.status_msg.value:
            set_msg(self.status_msg, "info", "")
        implied = implied_deps(self.params, tuple(self.deps_input.value))
        self.refs_html.value = (
            f'<div style="margin-left:{LABEL_WIDTH};color:{MUTED};font-size:12px">'
            f"also after (from references): {escape(', '.join(implied))}</div>"
            if implied else ""
        )

    def show_dag_error(self, exc: OktyvError | None) -> None:
        """Show by the dependencies why the whole DAG is invalid (nothing when it is not)."""
        self.dag_msg.value = "" if exc is None else (
            f'<div style="margin-left:{LABEL_WIDTH}">'
            + message("error", f"The DAG is invalid: {exc.message}") + "</div>"
        )

    # ------------------------------------------------------------------ actions
    @guarded("status_msg")
    def _on_submit(self, _btn: W.Button | None = None) -> None:
        spec = self.check(submit=True)
        if spec is None:
            return
        verb = "Added" if self._editing is None else "Saved"
        self.dag.replace_tasks(ordered_with(self.dag, self._editing, spec))
        if self._editing is None:
            self.new_task()
        else:
            self._editing = spec.id
            self.refresh()
            self.edit(spec.id)
        set_msg(self.status_msg, "ok", f"{verb} task {spec.id}")
        self._on_change()

    @guarded("status_msg")
    def _on_remove(self, _btn: W.Button | None = None) -> None:
        tid = self._editing
        if tid is None:
            return
        self.dag.remove(tid)
        self._editing = None
        self.refresh()
        self.new_task()
        set_msg(self.status_msg, "ok", f"Removed task {tid}")
        self._on_change()
