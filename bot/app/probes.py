"""Reachability probes for every configured dependency (used by /readyz and `job-doctor check`).

A probe returns a short detail when the dependency answers as expected and raises with a
one-line reason otherwise. The BlueKing probes are the clients' own `probe()` (one call, no
retries), so a probe judges exactly what an analysis will meet. Probes never include credentials
in what they return.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp

from bot.app.health import Detail, Health, Probe
from bot.clients.bkjob import BkJobClient
from bot.clients.bklog import BkLogClient
from bot.clients.gateway import GatewayError
from bot.clients.gse import GseClient
from bot.core.settings import Settings
from bot.core.store import Store


class ProbeFailed(Exception):
    """The message is the detail (`check`, logs); `reason` is what /readyz may show."""

    def __init__(self, detail: str, *, reason: str = "failed") -> None:
        super().__init__(detail)
        self.reason = reason


async def _json(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body = await resp.json(content_type=None)
    except (ValueError, RecursionError, aiohttp.ContentTypeError):
        raise ProbeFailed(f"HTTP {resp.status}, body is not JSON", reason="unexpected answer") from None
    if not isinstance(body, dict):
        raise ProbeFailed(f"HTTP {resp.status}, unexpected JSON", reason="unexpected answer")
    return body


def _failed(err: GatewayError) -> ProbeFailed:
    code = f"error {err.code}" if err.code is not None else f"HTTP {err.http_status}"
    if err.code is not None:
        reason = f"gateway error {err.code}"
    elif err.http_status:
        reason = f"HTTP {err.http_status}"
    else:
        reason = "unreachable"
    return ProbeFailed(f"{code}: {err.message}", reason=reason)


def redis_probe(store: Store) -> Probe:
    # The topology and a real write, not just a PING: a Sentinel setup without a master or a cluster
    # with a failing node is down even while some server still answers PING.
    async def probe() -> Detail:
        state = await store.health_state()
        return Detail(state.detail, state.public)

    return probe


def bklog_probe(client: BkLogClient) -> Probe:
    async def probe() -> str:
        try:
            await client.probe(datetime.now(UTC))
        except GatewayError as err:
            raise _failed(err) from None
        return f"index set {client.index_set_id} searchable"

    return probe


def bkjob_probe(client: BkJobClient) -> Probe:
    async def probe() -> str:
        try:
            return await client.probe()
        except GatewayError as err:
            raise _failed(err) from None

    return probe


def gse_probe(client: GseClient) -> Probe:
    async def probe() -> str:
        try:
            return await client.probe()
        except GatewayError as err:
            raise _failed(err) from None

    return probe


def llm_probe(settings: Settings, session: aiohttp.ClientSession) -> Probe:
    cfg = settings.llm

    async def probe() -> str:
        base = str(cfg.base_url or "https://api.openai.com/v1").rstrip("/")
        key = cfg.api_key.get_secret_value() if cfg.api_key else ""
        async with session.get(base + "/models", headers={"Authorization": f"Bearer {key}"}) as resp:
            if resp.status in (401, 403):
                raise ProbeFailed(f"HTTP {resp.status}: API key rejected", reason="API key rejected")
            if resp.status == 429:
                return "rate limited (HTTP 429), reachable"
            if resp.status >= 500:
                raise ProbeFailed(f"HTTP {resp.status}", reason=f"HTTP {resp.status}")
        return f"model endpoint answers (model {cfg.model})"

    return probe


def worktool_probe(settings: Settings, session: aiohttp.ClientSession) -> Probe:
    cfg = settings.worktool

    async def probe() -> str:
        url = str(cfg.base_url).rstrip("/") + "/robot/robotInfo/online"
        async with session.get(url, params={"robotId": cfg.robot_id}) as resp:
            data = await _json(resp)
            if resp.status >= 400:
                raise ProbeFailed(f"HTTP {resp.status}", reason=f"HTTP {resp.status}")
            if data.get("data") is False:
                raise ProbeFailed("robot is offline (check the WorkTool phone)", reason="robot offline")
        return "robot online"

    return probe


def register_probes(
    health: Health,
    settings: Settings,
    store: Store,
    session: aiohttp.ClientSession,
    *,
    bklog: BkLogClient | None,
    bkjob: BkJobClient | None,
    gse: GseClient | None,
) -> None:
    """Register a probe for the store and for every dependency that is configured."""
    health.add("redis", redis_probe(store), required=True)
    if bklog is not None:
        health.add("bklog", bklog_probe(bklog))
    if bkjob is not None:
        health.add("bkjob", bkjob_probe(bkjob))
    if gse is not None:
        health.add("gse", gse_probe(gse))
    if settings.llm.enabled:
        health.add("llm", llm_probe(settings, session))
    if settings.worktool.enabled:
        health.add("worktool", worktool_probe(settings, session))
