"""Pictures of a DAG and its runs: one palette (:mod:`.theme`), the Graphviz graph
(:mod:`.render`) and the matplotlib timeline (:mod:`.timeline`)."""

#: DAGs with more tasks than this show their outline, not the drawn graph, in a notebook.
GRAPH_LIMIT = 300
