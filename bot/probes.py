"""Reachability probes for every configured dependency (used by /readyz and `job-doctor check`).

A probe returns a short detail when the dependency answers as expected and raises with a
one-line reason otherwise. Probes never include credentials in what they return.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from bot.health import Health, Probe
from bot.settings import Credentials, Settings
from bot.store import Store


class ProbeFailed(Exception):
    pass


def gateway_headers(creds: Credentials, tenant_id: str = "") -> dict[str, str]:
    auth = {
        "bk_app_code": creds.app_code,
        "bk_app_secret": creds.app_secret.get_secret_value() if creds.app_secret else "",
        "bk_username": creds.username,
    }
    headers = {"X-Bkapi-Authorization": json.dumps(auth), "Content-Type": "application/json"}
    if tenant_id:
        headers["X-Bk-Tenant-Id"] = tenant_id
    return headers


async def _json(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body = await resp.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        raise ProbeFailed(f"HTTP {resp.status}, body is not JSON") from None
    if not isinstance(body, dict):
        raise ProbeFailed(f"HTTP {resp.status}, unexpected JSON")
    return body


def _gateway_verdict(body: dict[str, Any], status: int) -> None:
    code = body.get("code")
    if isinstance(code, int) and 1600000 <= code < 1700000:
        raise ProbeFailed(f"gateway error {code}: {str(body.get('message', ''))[:120]}")
    if status >= 500:
        raise ProbeFailed(f"HTTP {status}")


def redis_probe(store: Store) -> Probe:
    async def probe() -> str:
        ms = await store.ping()
        return f"embedded store ({ms:.1f} ms)" if store.embedded else f"PONG ({ms:.1f} ms)"

    return probe


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
        headers = gateway_headers(settings.credentials_for(cfg), settings.bk.tenant_id)
        async with session.post(url, json=body, headers=headers) as resp:
            data = await _json(resp)
            _gateway_verdict(data, resp.status)
            if data.get("result") is False or data.get("code") not in (0, None, "0"):
                raise ProbeFailed(f"BkLog error {data.get('code')}: {str(data.get('message', ''))[:120]}")
        return f"index set {cfg.index_set_id} searchable"

    return probe


def bkjob_probe(settings: Settings, session: aiohttp.ClientSession) -> Probe:
    cfg = settings.bkjob

    async def probe() -> str:
        # An instance that cannot exist: any BK-JOB answer proves reachability and gateway auth.
        url = str(cfg.base_url).rstrip("/") + "/api/v3/get_job_instance_status"
        params = {"bk_scope_type": "biz", "bk_scope_id": "0", "job_instance_id": "0"}
        headers = gateway_headers(settings.credentials_for(cfg), settings.bk.tenant_id)
        async with session.get(url, params=params, headers=headers) as resp:
            data = await _json(resp)
            _gateway_verdict(data, resp.status)
        return "API gateway answers"

    return probe


def gse_probe(settings: Settings, session: aiohttp.ClientSession) -> Probe:
    cfg = settings.gse

    async def probe() -> str:
        base = str(cfg.base_url).rstrip("/")
        headers = gateway_headers(settings.credentials_for(cfg), settings.bk.tenant_id)
        body: dict[str, Any]
        if cfg.api_version == "v2":
            url, body = base + "/api/v2/cluster/list_agent_state", {"agent_id_list": []}
        else:
            url, body = (
                base + "/api/c/compapi/v2/gse/get_agent_status/",
                {"bk_supplier_account": "0", "hosts": []},
            )
        async with session.post(url, json=body, headers=headers) as resp:
            data = await _json(resp)
            _gateway_verdict(data, resp.status)
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
