"""The model layer: what a DAG is, before anything runs.

The request schema (:mod:`~oktyv_nb.model.schema`), ``${task.path}`` references
(:mod:`~oktyv_nb.model.variables`), the validated graph (:mod:`~oktyv_nb.model.graph`), tool
names (:mod:`~oktyv_nb.model.registry`), the built-in tools (:mod:`~oktyv_nb.model.tools`),
their param schemas (:mod:`~oktyv_nb.model.signatures`), the sandbox for requests from
outside (:mod:`~oktyv_nb.model.sandbox`) and secret sets (:mod:`~oktyv_nb.model.vault`).
Nothing here runs a task or draws a picture; it imports only :mod:`oktyv_nb.errors` and
:mod:`oktyv_nb.units` from outside the layer.
"""
