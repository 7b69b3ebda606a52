"""Pictures of a DAG and its runs: one palette (:mod:`.theme`), the Graphviz graph
(:mod:`.render`) and the matplotlib timeline (:mod:`.timeline`)."""
