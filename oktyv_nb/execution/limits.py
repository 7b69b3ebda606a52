"""Limits that span tasks: pools, rate limits and a map's own bound (SPEC §16, §20).

A :class:`Limit` is a number of slots (a pool's ``N``, a map's ``max_concurrent``) and, for a
rated pool, a token bucket (``N`` tokens a period, burst ``N``). A task of a limit starts only
when every limit it is in :meth:`~Limit.admits` it; a task a limit turns away waits in that
limit's own heap, holding no run slot, until :meth:`~Limit.release` (a slot freed) or the
bucket's refill hands it back to the scheduler's ready heap.

Rates are written ``"N/s"``, ``"N/min"`` or ``"N/h"``; :func:`parse_rate` is their one home.
Times are ``time.perf_counter()`` seconds.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from oktyv_nb.errors import InvalidRateError, UnknownPoolError

if TYPE_CHECKING:
    from oktyv_nb.model.graph import Graph, TaskNode

__all__ = ["Limit", "check_pools", "parse_rate"]

_PERIODS = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*/\s*(s|sec|min|m|h)\s*")


def parse_rate(name: str, rate: Any) -> tuple[float, float]:
    """``(tokens, period_s)`` of a rate ``"N/s"``, ``"N/min"`` or ``"N/h"`` (N > 0);
    raises :class:`~oktyv_nb.errors.InvalidRateError` naming the pool otherwise."""
    m = _RATE.fullmatch(rate) if isinstance(rate, str) else None
    if m is None:
        raise InvalidRateError(name, rate)
    n = float(m.group(1))
    if not 0 < n < math.inf:
        raise InvalidRateError(name, rate)
    return n, _PERIODS[m.group(2)]


def check_pools(graph: Graph, pools: Mapping[str, int], rates: Mapping[str, Any]) -> None:
    """Every task's pool is defined in ``pools`` or ``rates``; raises
    :class:`~oktyv_nb.errors.UnknownPoolError` naming the first task that is not."""
    known = set(pools) | set(rates)
    for node in graph.nodes.values():
        if node.pool is not None and node.pool not in known:
            raise UnknownPoolError(node.id, node.pool, sorted(known))


class Limit:
    """Slots and tokens shared by the tasks of one pool (or one map's children).

    ``cap`` slots (None: unbounded), ``used`` of them held by running attempts. With a rate,
    ``tokens`` (at most ``burst``) refill at ``per_s`` a second; every start, retries
    included, takes one. ``waiting`` is a heap of the tasks turned away, keyed as the
    scheduler's ready heap.
    """

    __slots__ = ("burst", "cap", "name", "per_s", "stamp", "timer", "tokens", "used", "waiting")

    def __init__(
        self, name: str, cap: int | None = None, rate: tuple[float, float] | None = None
    ) -> None:
        self.name = name
        self.cap = cap
        self.used = 0
        self.waiting: list[tuple[int, int, int, TaskNode]] = []
        self.timer: Any = None  # the loop timer that hands tasks back once tokens refill
        if rate is None:
            self.burst = self.per_s = self.tokens = 0.0
        else:
            n, period = rate
            self.burst = n
            self.per_s = n / period
            self.tokens = n
        self.stamp: float | None = None  # when ``tokens`` was last brought up to date

    @property
    def rated(self) -> bool:
        return self.per_s > 0

    def _refill(self, now: float) -> None:
        if self.stamp is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.per_s)
        self.stamp = now

    def admits(self, now: float) -> bool:
        """True when a task of this limit may start now (a free slot, and a token)."""
        if self.cap is not None and self.used >= self.cap:
            return False
        if self.per_s:
            self._refill(now)
            return self.tokens >= 1.0 - 1e-9
        return True

    def take(self) -> None:
        """A task of this limit starts: it holds a slot (and used a token)."""
        self.used += 1
        if self.per_s:
            self.tokens -= 1.0

    def give_back(self) -> None:
        """An attempt of this limit ended: its slot is free."""
        self.used -= 1

    def hold(self, entry: tuple[int, int, int, TaskNode]) -> None:
        """Keep a ready task back until this limit admits it."""
        heapq.heappush(self.waiting, entry)

    def next_token_in(self) -> float:
        """Seconds until the bucket holds a whole token (0 when it does)."""
        return max(0.0, (1.0 - self.tokens) / self.per_s) if self.per_s else 0.0

    def __repr__(self) -> str:
        return f"<Limit {self.name} used={self.used}/{self.cap} waiting={len(self.waiting)}>"
