"""Sample GSE agent-state APIs over an in-memory dict (reference bk-job.md §5).

`agents` maps an agent id (GSE 2.0 id or legacy `"<cloud>:<ip>"`) to its state:
`{"status_code": 2, "bk_cloud_id": 0, "version": "2.0.0", "run_mode": 1, "ip": "10.0.0.1"}`.
v2 `POST /api/v2/cluster/list_agent_state` leaves unknown ids out of `data` (or, with
`unknown_agent_error=True`, fails like older GSE/JOB pairs did). v1
`POST /api/c/compapi/v2/gse/get_agent_status/` answers per `"<cloud>:<ip>"` with `bk_agent_alive`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from bot.devtools.sandbox import GatewayAuth, envelope, gateway_app, read_json

CODE_AGENT_NOT_FOUND = 1010001  # older GSE answer for unknown agent ids (exact code UNCONFIRMED)


def create_gse_app(
    agents: Mapping[str, Mapping[str, Any]],
    *,
    app_code: str,
    app_secret: str,
    tenant_id: str | None = None,
    unknown_agent_error: bool = False,
) -> web.Application:
    app = gateway_app(GatewayAuth(app_code=app_code, app_secret=app_secret, tenant_id=tenant_id))

    def host_key(agent_id: str, state: Mapping[str, Any]) -> str | None:
        if state.get("ip"):
            return f"{int(state.get('bk_cloud_id', 0))}:{state['ip']}"
        cloud, sep, ip = agent_id.partition(":")
        return agent_id if sep and cloud.isdigit() and ip else None

    async def list_agent_state(request: web.Request) -> web.Response:
        body = await read_json(request)
        ids = body.get("agent_id_list")
        if not isinstance(ids, list) or not ids:
            return web.json_response(envelope(None, code=1000001, message="agent_id_list is required"))
        data = []
        for agent_id in ids:
            state = agents.get(str(agent_id))
            if state is None:
                if unknown_agent_error:
                    msg = f"agent not found: {agent_id}"
                    return web.json_response(envelope(None, code=CODE_AGENT_NOT_FOUND, message=msg))
                continue
            data.append(
                {
                    "bk_agent_id": str(agent_id),
                    "bk_cloud_id": int(state.get("bk_cloud_id", 0)),
                    "version": state.get("version", "2.0.0"),
                    "run_mode": state.get("run_mode", 1),
                    "status_code": state.get("status_code"),
                }
            )
        return web.json_response(envelope(data, message="success"))

    async def get_agent_status(request: web.Request) -> web.Response:
        body = await read_json(request)
        hosts = body.get("hosts")
        if not isinstance(hosts, list) or not hosts:
            return web.json_response(envelope(None, code=1306000, message="hosts is required"))
        by_host = {k: s for a, s in agents.items() if (k := host_key(a, s)) is not None}
        data: dict[str, Any] = {}
        for h in hosts:
            if not isinstance(h, dict):
                continue
            key = f"{int(h.get('bk_cloud_id', 0))}:{h.get('ip')}"
            state = by_host.get(key)
            alive = 1 if state is not None and state.get("status_code") == 2 else 0
            data[key] = {
                "ip": h.get("ip"),
                "bk_cloud_id": int(h.get("bk_cloud_id", 0)),
                "bk_agent_alive": alive,
            }
        return web.json_response(envelope(data))

    app.router.add_post("/api/v2/cluster/list_agent_state", list_agent_state)
    app.router.add_post("/api/c/compapi/v2/gse/get_agent_status/", get_agent_status)
    return app
