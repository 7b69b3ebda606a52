"""The engine: runs a validated graph on an asyncio loop (see :mod:`.scheduler`)."""

from oktyv_nb.execution.engine.scheduler import Engine, RunConfig, RunOutcome

__all__ = ["Engine", "RunConfig", "RunOutcome"]
