"""The run store: runs that outlive the kernel, and the result cache (SPEC §17).

:class:`RunStore` keeps runs in an SQLite file (the standard library's ``sqlite3``, WAL
mode): :mod:`.journal` writes a run as it goes, as a subscriber of the engine's event stream,
on a writer thread; :mod:`.runstore` reads runs back as :class:`~oktyv_nb.results.run.Run`
objects and serves the result cache the engine looks up (:mod:`oktyv_nb.execution.cache`);
:mod:`.codec` turns values and records into rows and back; :mod:`.db` is the file, its
schema and version.

Layering: this package sits between :mod:`oktyv_nb.results` and the front ends. It imports
from errors, model, execution and results (a loaded run is a ``Run``); the front ends
(:mod:`oktyv_nb.dag`, :mod:`oktyv_nb.api`) import it; nothing below imports it. The engine
knows only the two seams it offers: an event subscriber and a ``get(key, expire)`` cache.
Importing it loads ``sqlite3``, ``json`` and ``threading``; pandas loads only for
:meth:`RunStore.runs`, cloudpickle only when a value must be pickled.
"""

from oktyv_nb.store.runstore import RunStore

__all__ = ["RunStore"]
