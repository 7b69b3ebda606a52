"""The results layer: reading a finished (or interrupted) run.

The JSON result (:mod:`~oktyv_nb.results.result`, no pandas), statistics
(:mod:`~oktyv_nb.results.stats`, no pandas), DataFrames (:mod:`~oktyv_nb.results.frame`,
pandas), pictures (:mod:`~oktyv_nb.results.display`) and the :class:`~oktyv_nb.results.run.Run`
facade over them. It reads the execution layer's records and never reaches back into a
running engine.
"""
