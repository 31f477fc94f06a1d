from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.clients.gateway import ApiError
from bot.clients.gse import GseClient
from bot.devtools.sandbox import REQUESTS
from bot.devtools.sandbox.gse import create_gse_app
from tests.clients.conftest import APP_CODE, APP_SECRET, CREDS

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
AGENTS: dict[str, dict[str, Any]] = {
    "020000000052540079809816967513755991": {
        "status_code": 2,
        "bk_cloud_id": 0,
        "ip": "10.0.0.1",
        "version": "2.1.0",
    },
    "020000000052540079809816967513755992": {"status_code": 3, "bk_cloud_id": 0, "ip": "10.0.0.2"},
    "0:10.0.0.9": {"status_code": 2, "bk_cloud_id": 0},
}


async def setup(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, version: str, **app_kw: Any
) -> tuple[GseClient, web.Application]:
    app = create_gse_app(AGENTS, app_code=APP_CODE, app_secret=APP_SECRET, **app_kw)
    server = await aiohttp_server(app)
    client = GseClient(
        session,
        base_url=str(server.make_url("")),
        api_version=version,  # type: ignore[arg-type]
        credentials=CREDS,
        tenant_id="default",
        timeout_s=2,
    )
    return client, app


async def test_v2_states(aiohttp_server: ServerFactory, session: aiohttp.ClientSession) -> None:
    c, app = await setup(aiohttp_server, session, "v2")
    alive, lossy, unknown = (
        "020000000052540079809816967513755991",
        "020000000052540079809816967513755992",
        "0200ff",
    )
    states = await c.agent_states([alive, lossy, unknown], hosts=[(0, "10.0.0.9")])
    assert list(states) == [alive, lossy, unknown, "0:10.0.0.9"]
    assert states[alive].alive and states[alive].status_code == 2 and states[alive].status_zh == "运行中"
    assert states[alive].version == "2.1.0"
    assert not states[lossy].alive and states[lossy].found and states[lossy].status_zh == "有损状态"
    assert not states[unknown].found and not states[unknown].alive and states[unknown].status_zh == "未找到"
    assert states["0:10.0.0.9"].alive and states["0:10.0.0.9"].ip == "10.0.0.9"
    req = app[REQUESTS][0]
    assert req.path == "/api/v2/cluster/list_agent_state"
    assert req.body == {"agent_id_list": [alive, lossy, unknown, "0:10.0.0.9"]}
    assert req.auth["bk_app_code"] == APP_CODE and req.headers["X-Bk-Tenant-Id"] == "default"


async def test_v2_unknown_agent_error(aiohttp_server: ServerFactory, session: aiohttp.ClientSession) -> None:
    c, _ = await setup(aiohttp_server, session, "v2", unknown_agent_error=True)
    with pytest.raises(ApiError, match="agent not found"):
        await c.agent_states(["nope"])


async def test_v1_states(aiohttp_server: ServerFactory, session: aiohttp.ClientSession) -> None:
    c, app = await setup(aiohttp_server, session, "v1")
    states = await c.agent_states(["0:10.0.0.2", "0200abc"], hosts=[(0, "10.0.0.1"), (1, "10.0.0.1")])
    assert states["0:10.0.0.1"].alive and states["0:10.0.0.1"].status_zh == "在线"
    assert (
        states["0:10.0.0.2"].found
        and not states["0:10.0.0.2"].alive
        and states["0:10.0.0.2"].status_zh == "离线"
    )
    assert not states["1:10.0.0.1"].alive and states["1:10.0.0.1"].bk_cloud_id == 1
    assert not states["0200abc"].found  # a GSE 2.0 id cannot be asked through v1
    (req,) = app[REQUESTS]
    assert req.path == "/api/c/compapi/v2/gse/get_agent_status/"
    assert req.body["hosts"] == [
        {"ip": "10.0.0.2", "bk_cloud_id": 0},
        {"ip": "10.0.0.1", "bk_cloud_id": 0},
        {"ip": "10.0.0.1", "bk_cloud_id": 1},
    ]


async def test_empty_request_makes_no_call(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    c, app = await setup(aiohttp_server, session, "v2")
    assert await c.agent_states([]) == {}
    assert app[REQUESTS] == []
