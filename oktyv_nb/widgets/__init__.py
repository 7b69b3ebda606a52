"""The ipywidgets form (SPEC §12): ``ok.builder()``; loaded only when asked for."""

from oktyv_nb.widgets.form import BuilderForm, builder

__all__ = ["BuilderForm", "builder"]
