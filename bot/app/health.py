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

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Detail:
    """A probe's success in two forms: `text` for `check` and the logs, `public` for /readyz."""

    text: str
    public: str


# returns a short detail on success (a plain string: /readyz shows only "ok"), raises on failure
Probe = Callable[[], Awaitable[str | Detail]]
Status = Literal["ok", "degraded", "down"]


@dataclass
class CheckResult:
    name: str
    ok: bool
    latency_ms: float
    detail: str  # for `check` and the logs: may name hosts, ports, the model, the index set
    required: bool
    reason: str = ""  # for /readyz (unauthenticated): "ok" or a short reason without addresses

    def as_json(self) -> dict[str, Any]:
        """The public form (/readyz): no exception text, no address, no configuration value."""
        public = self.reason or ("ok" if self.ok else "failed")
        return {"ok": self.ok, "latency_ms": round(self.latency_ms, 2), "detail": public}


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
                got = await check.probe()
            ok = True
            detail, reason = (got.text, f"ok: {got.public}") if isinstance(got, Detail) else (got, "ok")
        except TimeoutError:
            ok, detail, reason = False, f"no answer within {self.probe_timeout_s:g}s", "timeout"
        except Exception as exc:  # a probe failure is data, never a crash of /readyz
            ok, detail, reason = False, describe_error(exc), public_reason(exc)
        if not ok:
            log.warning("dependency_check_failed", check=check.name, detail=detail)
        latency = (time.perf_counter() - start) * 1000
        return CheckResult(check.name, ok, latency, detail, check.required, reason)

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


def public_reason(exc: BaseException) -> str:
    """A few words on why a check failed, safe for an unauthenticated caller: a probe's own fixed
    `reason`, or the kind of failure; never the exception's text (it names hosts and ports)."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionError | OSError) or "Connection" in type(exc).__name__:
        return "unreachable"
    return "error"


def describe_error(exc: BaseException) -> str:
    """A one-line, secret-free description of a failure for /readyz and `check`."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return f"{name}: {text[:400]}" if text else name
