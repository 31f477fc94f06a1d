"""Dependency checks behind /readyz and `job-doctor check`.

Each configured dependency registers a probe. Results are cached briefly so that a load
balancer polling /readyz does not turn into load on BkLog or the model endpoint.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Probe = Callable[[], Awaitable[str]]  # returns a short detail on success, raises on failure
Status = Literal["ok", "degraded", "down"]


@dataclass
class CheckResult:
    name: str
    ok: bool
    latency_ms: float
    detail: str
    required: bool

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "latency_ms": round(self.latency_ms, 2), "detail": self.detail}


@dataclass
class _Check:
    name: str
    probe: Probe
    required: bool


@dataclass
class Health:
    probe_timeout_s: float = 3.0
    cache_s: float = 5.0
    _checks: dict[str, _Check] = field(default_factory=dict)
    _cache: tuple[float, list[CheckResult]] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def add(self, name: str, probe: Probe, *, required: bool = False) -> None:
        self._checks[name] = _Check(name, probe, required)
        self._cache = None

    @property
    def names(self) -> list[str]:
        return list(self._checks)

    async def _run_one(self, check: _Check) -> CheckResult:
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.probe_timeout_s):
                detail = await check.probe()
            ok = True
        except TimeoutError:
            ok, detail = False, f"no answer within {self.probe_timeout_s:g}s"
        except Exception as exc:  # a probe failure is data, never a crash of /readyz
            ok, detail = False, describe_error(exc)
        return CheckResult(check.name, ok, (time.perf_counter() - start) * 1000, detail, check.required)

    async def run(self, *, fresh: bool = False) -> list[CheckResult]:
        async with self._lock:
            now = time.monotonic()
            if not fresh and self._cache and now - self._cache[0] < self.cache_s:
                return self._cache[1]
            results = list(await asyncio.gather(*(self._run_one(c) for c in self._checks.values())))
            self._cache = (time.monotonic(), results)
            return results

    @staticmethod
    def status_of(results: list[CheckResult]) -> Status:
        if any(not r.ok and r.required for r in results):
            return "down"
        if any(not r.ok for r in results):
            return "degraded"
        return "ok"


def describe_error(exc: BaseException) -> str:
    """A one-line, secret-free description of a failure for /readyz and `check`."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return f"{name}: {text[:400]}" if text else name
