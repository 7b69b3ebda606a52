"""How a run is configured, and what it leaves behind.

:class:`RunConfig` holds the settings of one run (seconds); :class:`RunOutcome` is what the
engine hands to everything that reads a run afterwards (results, pictures, the live view):
the graph, the records and the clock anchors that turn perf-counter seconds into wall-clock
timestamps. Neither knows how a run is scheduled.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from oktyv_nb.errors import InvalidOptionError
from oktyv_nb.execution.limits import parse_rate
from oktyv_nb.execution.records import TaskRecord, ran, utc_datetime
from oktyv_nb.model.graph import Graph
from oktyv_nb.model.schema import ExecutionConfig
from oktyv_nb.model.vault import Redactor
from oktyv_nb.units import check_seconds, is_number, ms_to_seconds

__all__ = ["FAILURE_MODES", "STRATEGIES", "FailureMode", "RunConfig", "RunOutcome", "Strategy"]

FailureMode = Literal["continue", "stop", "rollback"]
Strategy = Literal["dependencies", "levels"]
FAILURE_MODES: tuple[FailureMode, ...] = ("continue", "stop", "rollback")
STRATEGIES: tuple[Strategy, ...] = ("dependencies", "levels")


@dataclass(frozen=True, slots=True)
class RunConfig:
    """How to run: concurrency bound, failure mode, whole-run ``timeout`` (seconds), strategy,
    and whether each call's output is captured.

    The one home of the run settings' rules: the builder, the JSON request and the form all
    end up here, so a bad value gets the same :class:`~oktyv_nb.errors.InvalidOptionError`
    wherever it came from.
    """

    max_concurrent: int = 10
    failure_mode: FailureMode = "continue"
    timeout: float | None = None
    strategy: Strategy = "dependencies"
    #: capture what each call prints and logs into its record (SPEC §18)
    capture: bool = True
    #: pools: name -> slots shared by the tasks that join it (SPEC §20)
    pools: Mapping[str, int] = field(default_factory=dict)
    #: rate limits: name -> ``"N/s"``, ``"N/min"`` or ``"N/h"`` (SPEC §20)
    rates: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        mc = self.max_concurrent
        if isinstance(mc, bool) or not isinstance(mc, int) or mc < 1:
            raise InvalidOptionError(
                f"max_concurrent must be an int >= 1, got {mc!r}", option="max_concurrent"
            )
        if self.failure_mode not in FAILURE_MODES:
            raise InvalidOptionError(
                f"failure_mode must be 'continue', 'stop' or 'rollback', got "
                f"{self.failure_mode!r}",
                option="failure_mode",
            )
        if self.timeout is not None:
            if not is_number(self.timeout):
                raise InvalidOptionError(
                    f"run timeout must be a number of seconds > 0, got {self.timeout!r}",
                    option="timeout",
                )
            object.__setattr__(self, "timeout", check_seconds(self.timeout, "run timeout"))
        if not isinstance(self.capture, bool):
            raise InvalidOptionError(
                f"capture must be True or False, got {self.capture!r}", option="capture"
            )
        object.__setattr__(self, "pools", _pools(self.pools))
        rates = self.rates
        if rates is None:
            rates = {}
        if not isinstance(rates, Mapping):
            raise InvalidOptionError(
                f"rates must be a dict of name -> 'N/s', got {type(rates).__name__}",
                option="rates",
            )
        for name, rate in rates.items():
            parse_rate(name, rate)
        object.__setattr__(self, "rates", dict(rates))
        if self.strategy not in STRATEGIES:
            raise InvalidOptionError(
                f"strategy must be 'dependencies' or 'levels', got {self.strategy!r}",
                option="strategy",
            )


    @classmethod
    def from_request(cls, c: ExecutionConfig, **overrides: Any) -> RunConfig:
        """The run settings (seconds) of a request's ``config`` (milliseconds);
        ``overrides`` that are not None replace them."""
        values: dict[str, Any] = {
            "max_concurrent": c.max_concurrent,
            "failure_mode": c.failure_mode or "continue",
            "timeout": ms_to_seconds(c.timeout) if c.timeout is not None else None,
            "pools": c.pools or {},
            "rates": c.rates or {},
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _pools(pools: Any) -> dict[str, int]:
    if pools is None:
        return {}
    if not isinstance(pools, Mapping):
        raise InvalidOptionError(
            f"pools must be a dict of name -> slots, got {type(pools).__name__}",
            option="pools",
        )
    for name, n in pools.items():
        if not isinstance(name, str) or not name:
            raise InvalidOptionError(f"a pool's name must be a non-empty string, got {name!r}",
                                     option="pools")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidOptionError(
                f"pool {name!r} must have an int >= 1 of slots, got {n!r}", option="pools"
            )
    return dict(pools)


@dataclass(slots=True)
class RunOutcome:
    """What a run leaves behind: the records and its clock anchors.

    ``perf_start``/``perf_end`` are ``time.perf_counter()`` seconds; ``wall_start`` is the
    UTC datetime of ``perf_start``. ``interrupted`` is true for a run that was cancelled or
    interrupted, ``aborted`` for a stored run whose process died before it ended (SPEC §17);
    ``redactor`` knows the run's secrets, so every output can scrub them.
    ``abandoned`` lists the tasks whose async tool (or rollback) ignored cancellation for
    :data:`~oktyv_nb.execution.engine.loop_workers.CANCEL_GRACE` seconds and was let go:
    it may still be running on the loop (each is also reported with a ``RuntimeWarning``).
    """

    execution_id: str
    graph: Graph = field(repr=False)
    config: RunConfig
    records: dict[str, TaskRecord] = field(repr=False)
    perf_start: float
    wall_start: datetime
    perf_end: float | None = None
    backend: str = "asyncio"
    interrupted: bool = False
    redactor: Redactor = field(default_factory=Redactor, repr=False)
    abandoned: list[str] = field(default_factory=list)
    aborted: bool = False
    #: per mapped task that expanded, the elements it mapped over (for rerun_failed)
    map_items: dict[str, list[Any]] = field(default_factory=dict, repr=False)

    def ran(self) -> Iterator[TaskRecord]:
        """The records of what ran, an expanded map's children in its place (SPEC §16)."""
        return ran(self.records.values())

    @property
    def clock_offset(self) -> float:
        """Add to a perf-counter time (seconds) to get Unix seconds."""
        return self.wall_start.timestamp() - self.perf_start

    def wall(self, t: float) -> datetime:
        """The UTC datetime of perf-counter time ``t``, exactly as the JSON result has it
        (the same float, turned into a datetime by the same converter)."""
        return utc_datetime(self.clock_offset + t)
