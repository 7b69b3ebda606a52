"""The execution layer: running a validated graph.

Task records (:mod:`~oktyv_nb.execution.records`), what a run leaves behind
(:mod:`~oktyv_nb.execution.outcome`), the event stream (:mod:`~oktyv_nb.execution.events`),
the engine (:mod:`~oktyv_nb.execution.engine`) and the backends where calls run
(:mod:`~oktyv_nb.execution.backends`). It imports the model layer and nothing above it.
"""
