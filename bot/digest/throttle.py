"""The digest's BkLog rate cap: a token bucket in front of the analyzer's BkLog client.

A digest analyses hundreds of steps; the bucket keeps its BkLog queries under a fixed rate so the
daily run never crowds out the on-call analyses, and counts the queries per run and per step.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.clients.bklog import BkLogClient, SearchResult
from bot.clients.gateway import GatewayError

DEFAULT_BKLOG_QUERIES_PER_S = 20.0


class TokenBucket:
    """At most `rate_per_s` acquisitions per second on average, bursts up to `burst`."""

    def __init__(
        self,
        rate_per_s: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.rate = rate_per_s
        self.capacity = burst if burst is not None else max(1.0, rate_per_s)
        self._clock = clock
        self._tokens = self.capacity
        self._last = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:  # FIFO: waiters are served in order, none starves
            while True:
                now = self._clock()
                self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)


@dataclass
class QueryStats:
    """BkLog queries of one step's analysis (shared with the collector's child tasks)."""

    queries: int = 0
    errors: int = 0


_STEP_STATS: contextvars.ContextVar[QueryStats | None] = contextvars.ContextVar(
    "digest_step_stats", default=None
)


@contextlib.contextmanager
def counting_step() -> Iterator[QueryStats]:
    """BkLog queries made inside (in this task and its children) are counted for one step."""
    stats = QueryStats()
    token = _STEP_STATS.set(stats)
    try:
        yield stats
    finally:
        _STEP_STATS.reset(token)


class ThrottledBkLog(BkLogClient):
    """The analyzer's BkLog client behind a token bucket; counts queries per run and per step."""

    def __init__(self, inner: BkLogClient, bucket: TokenBucket) -> None:
        # Same configuration and transport as `inner` (no second setup to keep in sync).
        vars(self).update(vars(inner))
        self._inner = inner
        self._bucket = bucket
        self.queries = 0
        self.errors = 0

    async def search(
        self,
        query_string: str,
        start: datetime,
        end: datetime,
        *,
        size_cap: int | None = None,
        filters: Sequence[Mapping[str, Any]] = (),
    ) -> SearchResult:
        await self._bucket.acquire()
        stats = _STEP_STATS.get()
        self.queries += 1
        if stats is not None:
            stats.queries += 1
        try:
            return await self._inner.search(query_string, start, end, size_cap=size_cap, filters=filters)
        except GatewayError:
            self.errors += 1
            if stats is not None:
                stats.errors += 1
            raise
