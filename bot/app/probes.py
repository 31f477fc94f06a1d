"""Reachability probes for every configured dependency (used by /readyz and `job-doctor check`).

A probe returns a short detail when the dependency answers as expected and raises with a
one-line reason otherwise. Probes never include credentials in what they return.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from bot.app.health import Health, Probe
from bot.clients.gateway import ApiCredentials, ApiError, Envelope, auth_headers, classify
from bot.core.settings import Credentials, Settings
from bot.core.store import Store


class ProbeFailed(Exception):
    pass


async def _gateway_call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    service: str,
    creds: Credentials,
    tenant_id: str,
    **request: Any,
) -> Envelope | ApiError:
    """One gateway request, judged by the clients' own envelope rules.

    Returns the envelope, or the API-level error (the dependency answered and authenticated us);
    raises ProbeFailed for auth/permission errors, rate limits, 5xx and non-JSON answers.
    """
    headers = auth_headers(ApiCredentials.coerce(creds), tenant_id)
    async with session.request(method, url, headers=headers, **request) as resp:
        body = await resp.text(errors="replace")
        outcome = classify(service=service, status=resp.status, body=body, headers=resp.headers)
    if isinstance(outcome, Envelope | ApiError):
        return outcome
    if outcome.code is not None:
        raise ProbeFailed(f"gateway error {outcome.code}: {outcome.message[:120]}")
    raise ProbeFailed(outcome.message[:160])


async def _json(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body = await resp.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        raise ProbeFailed(f"HTTP {resp.status}, body is not JSON") from None
    if not isinstance(body, dict):
        raise ProbeFailed(f"HTTP {resp.status}, unexpected JSON")
    return body


def redis_probe(store: Store) -> Probe:
    # The topology and a real write, not just a PING: a Sentinel setup without a master or a cluster
    # with a failing node is down even while some server still answers PING.
    return store.health


def bklog_probe(settings: Settings, session: aiohttp.ClientSession) -> Probe:
    cfg = settings.bklog

    async def probe() -> str:
        body = {
            "index_set_id": cfg.index_set_id,
            "time_range": "5m",
            "time_zone": cfg.time_zone,
            "query_string": "*",
            "start": 0,
            "size": 1,
        }
        url = str(cfg.base_url).rstrip("/") + "/esquery_search/"
        got = await _gateway_call(
            session,
            "POST",
            url,
            service="BkLog",
            creds=settings.credentials_for(cfg),
            tenant_id=settings.bk.tenant_id,
            json=body,
        )
        if isinstance(got, ApiError):
            raise ProbeFailed(f"BkLog error {got.code}: {got.message[:120]}")
        return f"index set {cfg.index_set_id} searchable"

    return probe


def bkjob_probe(settings: Settings, session: aiohttp.ClientSession) -> Probe:
    cfg = settings.bkjob

    async def probe() -> str:
        # An instance that cannot exist: any BK-JOB answer proves reachability and gateway auth.
        url = str(cfg.base_url).rstrip("/") + "/api/v3/get_job_instance_status"
        params = {"bk_scope_type": "biz", "bk_scope_id": "0", "job_instance_id": "0"}
        await _gateway_call(
            session,
            "GET",
            url,
            service="BK-JOB",
            creds=settings.credentials_for(cfg),
            tenant_id=settings.bk.tenant_id,
            params=params,
        )
        return "API gateway answers"

    return probe


def gse_probe(settings: Settings, session: aiohttp.ClientSession) -> Probe:
    cfg = settings.gse

    async def probe() -> str:
        base = str(cfg.base_url).rstrip("/")
        body: dict[str, Any]
        if cfg.api_version == "v2":
            url, body = base + "/api/v2/cluster/list_agent_state", {"agent_id_list": []}
        else:
            url, body = (
                base + "/api/c/compapi/v2/gse/get_agent_status/",
                {"bk_supplier_account": "0", "hosts": []},
            )
        await _gateway_call(
            session,
            "POST",
            url,
            service="GSE",
            creds=settings.credentials_for(cfg),
            tenant_id=settings.bk.tenant_id,
            json=body,
        )
        return f"GSE {cfg.api_version} answers"

    return probe


def llm_probe(settings: Settings, session: aiohttp.ClientSession) -> Probe:
    cfg = settings.llm

    async def probe() -> str:
        base = str(cfg.base_url or "https://api.openai.com/v1").rstrip("/")
        key = cfg.api_key.get_secret_value() if cfg.api_key else ""
        async with session.get(base + "/models", headers={"Authorization": f"Bearer {key}"}) as resp:
            if resp.status in (401, 403):
                raise ProbeFailed(f"HTTP {resp.status}: API key rejected")
            if resp.status == 429:
                return "rate limited (HTTP 429), reachable"
            if resp.status >= 500:
                raise ProbeFailed(f"HTTP {resp.status}")
        return f"model endpoint answers (model {cfg.model})"

    return probe


def worktool_probe(settings: Settings, session: aiohttp.ClientSession) -> Probe:
    cfg = settings.worktool

    async def probe() -> str:
        url = str(cfg.base_url).rstrip("/") + "/robot/robotInfo/online"
        async with session.get(url, params={"robotId": cfg.robot_id}) as resp:
            data = await _json(resp)
            if resp.status >= 400:
                raise ProbeFailed(f"HTTP {resp.status}")
            if data.get("data") is False:
                raise ProbeFailed("robot is offline (check the WorkTool phone)")
        return "robot online"

    return probe


def register_probes(health: Health, settings: Settings, store: Store, session: aiohttp.ClientSession) -> None:
    """Register a probe for the store and for every dependency that is configured."""
    health.add("redis", redis_probe(store), required=True)
    if settings.bklog.base_url is not None:
        health.add("bklog", bklog_probe(settings, session))
    if settings.bkjob.base_url is not None:
        health.add("bkjob", bkjob_probe(settings, session))
    if settings.gse.base_url is not None:
        health.add("gse", gse_probe(settings, session))
    if settings.llm.enabled:
        health.add("llm", llm_probe(settings, session))
    if settings.worktool.enabled:
        health.add("worktool", worktool_probe(settings, session))
