from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from bot.app import keys as K
from bot.app.services import AppOptions
from bot.app.web import create_app
from bot.core.settings import Settings
from tests.conftest import REDIS_URL, require_redis

ClientFactory = Callable[..., Any]


async def test_healthz_and_metrics(aiohttp_client: ClientFactory, settings: Settings) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(await create_app(settings))
    resp = await client.get("/healthz")
    assert resp.status == 200 and (await resp.json())["status"] == "ok"
    client.app[K.SERVICES].metrics.messages_received.labels("worktool").inc()
    text = await (await client.get("/metrics")).text()
    assert 'job_doctor_messages_received_total{channel="worktool"} 1.0' in text
    for name in (
        "job_doctor_analysis_seconds",
        "job_doctor_llm_tokens_total",
        "job_doctor_send_failures_total",
    ):
        assert name in text


async def test_readyz_ok_on_embedded_store(aiohttp_client: ClientFactory, settings: Settings) -> None:
    client = await aiohttp_client(await create_app(settings))
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200
    assert body["status"] == "ok"
    assert body["checks"]["redis"]["ok"] is True
    assert isinstance(body["checks"]["redis"]["latency_ms"], float)


async def test_readyz_real_redis(aiohttp_client: ClientFactory) -> None:
    require_redis()
    client = await aiohttp_client(await create_app(Settings(redis_url=REDIS_URL)))
    body = await (await client.get("/readyz")).json()
    assert body["checks"]["redis"] == {**body["checks"]["redis"], "ok": True}
    # the topology's kind and state, never its address (PONG, the latency and hosts: `check` only)
    assert body["checks"]["redis"]["detail"] == "ok: single server"


async def test_readyz_down_when_redis_unreachable(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(await create_app(Settings(redis_url="redis://127.0.0.1:1/0")))
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 503
    assert body["status"] == "down"
    assert body["checks"]["redis"]["ok"] is False
    # the reason, not the exception text (which names the host and port)
    assert body["checks"]["redis"]["detail"] == "unreachable"
    assert "127.0.0.1" not in await resp.text()


async def _fake_gateway(aiohttp_server: ClientFactory, *, code: int) -> str:
    async def esquery(request: web.Request) -> web.Response:
        return web.json_response(
            {"result": code == 0, "code": code, "message": "app no permission", "data": None}
        )

    app = web.Application()
    app.router.add_post("/esquery_search/", esquery)
    server = await aiohttp_server(app)
    return str(server.make_url(""))


async def test_readyz_degraded_on_optional_dependency(
    aiohttp_client: ClientFactory, aiohttp_server: ClientFactory
) -> None:
    base = await _fake_gateway(aiohttp_server, code=1640301)
    settings = Settings(bklog={"base_url": base, "index_set_id": 5})
    client = await aiohttp_client(await create_app(settings))
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200
    assert body["status"] == "degraded"
    assert body["checks"]["bklog"]["ok"] is False
    assert body["checks"]["bklog"]["detail"] == "gateway error 1640301"

    ok_base = await _fake_gateway(aiohttp_server, code=0)
    client2 = await aiohttp_client(await create_app(Settings(bklog={"base_url": ok_base, "index_set_id": 5})))
    body2 = await (await client2.get("/readyz")).json()
    assert body2["status"] == "ok" and body2["checks"]["bklog"]["ok"] is True


async def test_readyz_shows_no_address_model_or_index_set(
    aiohttp_client: ClientFactory, aiohttp_server: ClientFactory
) -> None:
    """/readyz is unauthenticated: it showed exception text with host:port, the model and the index set."""
    ok_base = await _fake_gateway(aiohttp_server, code=0)
    settings = Settings(
        redis_url="redis://:pw-0123456789@127.0.0.1:1/0",
        bklog={"base_url": ok_base, "index_set_id": 777123},
        bkjob={"base_url": "http://10.255.255.1:9/"},
        llm={
            "api_key": "sk-test-0123456789abcdef",
            "base_url": "http://127.0.0.1:1/v1",
            "model": "secret-model-x",
        },
    )
    client = await aiohttp_client(await create_app(settings, options=AppOptions(probe_timeout_s=0.5)))
    resp = await client.get("/readyz")
    text = await resp.text()
    for leak in ("127.0.0.1", "10.255.255.1", ":1", "777123", "secret-model-x", "pw-0123456789", "Error"):
        assert leak not in text, leak
    checks = (await resp.json())["checks"]
    details = {name: c["detail"] for name, c in checks.items()}
    assert details.pop("bkjob") in ("timeout", "unreachable", "HTTP 404")  # what the network does
    assert details == {"redis": "unreachable", "bklog": "ok", "llm": "unreachable"}


async def test_background_tasks_drained_on_cleanup(settings: Settings) -> None:
    app = await create_app(
        settings.model_copy(update={"http": settings.http.model_copy(update={"shutdown_grace_s": 0.2})})
    )
    runner = web.AppRunner(app)
    await runner.setup()
    finished: list[str] = []

    async def quick() -> None:
        await asyncio.sleep(0.05)
        finished.append("quick")

    async def stuck() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            finished.append("stuck-cancelled")

    app[K.SERVICES].tasks.spawn(quick(), name="quick")
    app[K.SERVICES].tasks.spawn(stuck(), name="stuck")
    await runner.cleanup()
    assert finished == ["quick", "stuck-cancelled"]
    assert app[K.SERVICES].tasks.active == 0


async def test_group_scopes_without_bkjob_say_at_start_that_they_are_not_enforced(
    aiohttp_client: ClientFactory,
) -> None:
    with capture_logs() as logs:
        await aiohttp_client(await create_app(Settings(chat={"group_scopes": {"运维群": "biz:2"}})))
    assert [e for e in logs if e["event"] == "group_scopes_not_enforced"]
    with capture_logs() as logs:
        await aiohttp_client(await create_app(Settings()))
    assert not [e for e in logs if e["event"] == "group_scopes_not_enforced"]
