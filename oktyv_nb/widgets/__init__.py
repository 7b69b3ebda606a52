"""The ipywidgets form (SPEC §12): ``ok.builder()``; loaded only when asked for.

:mod:`~oktyv_nb.widgets.form` lays the form out (settings, export, files) and composes its
parts: :mod:`~oktyv_nb.widgets.editor` (task list and editor), :mod:`~oktyv_nb.widgets.draft`
(checking a draft task), :mod:`~oktyv_nb.widgets.fields` (parameter fields from a tool's
signature), :mod:`~oktyv_nb.widgets.runner` (run, stop, progress) and
:mod:`~oktyv_nb.widgets.results` (graph preview and result table HTML);
:mod:`~oktyv_nb.widgets.common` holds what they share. Code export is
:mod:`oktyv_nb.codegen`, which needs no widgets.
"""

from oktyv_nb.widgets.form import BuilderForm, builder

__all__ = ["BuilderForm", "builder"]
