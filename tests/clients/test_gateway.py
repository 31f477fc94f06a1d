from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.clients.bklog import BkLogClient
from bot.clients.gateway import (
    ApiCredentials,
    ApiError,
    Envelope,
    GatewayAuthError,
    GatewayError,
    GatewayRateLimited,
    UpstreamError,
    auth_headers,
    classify,
    rate_limit_wait,
)
from bot.devtools.sandbox import FAULTS, REQUESTS, Fault
from bot.devtools.sandbox.bklog import create_bklog_app, docs_from_records
from tests.clients.conftest import APP_CODE, APP_SECRET, CREDS

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
SH = ZoneInfo("Asia/Shanghai")
WINDOW = (datetime(2024, 5, 30, 11, 0, tzinfo=SH), datetime(2024, 5, 30, 11, 30, tzinfo=SH))
LOG = "[2024-05-30 11:09:00.240]  INFO [job-execute,aa,bb] 6 --- [t] c.t.X : Start step, stepInstanceId=7\n"


async def setup(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, **kw: Any
) -> tuple[BkLogClient, web.Application]:
    app = create_bklog_app(docs_from_records(LOG), app_code=APP_CODE, app_secret=APP_SECRET, index_set_id=1)
    server = await aiohttp_server(app)
    args: dict[str, Any] = {
        "base_url": str(server.make_url("")),
        "index_set_id": 1,
        "credentials": CREDS,
        "timeout_s": 2,
        "retries": 2,
        "backoff_base_s": 0.01,
    }
    args.update(kw)
    return BkLogClient(session, **args), app


def test_auth_header_is_json_with_tenant() -> None:
    creds = ApiCredentials("app", "secret-123", "bob")
    headers = auth_headers(creds, "tenant-x")
    assert headers["X-Bk-Tenant-Id"] == "tenant-x"
    assert (
        headers["X-Bkapi-Authorization"]
        == '{"bk_app_code":"app","bk_app_secret":"secret-123","bk_username":"bob"}'
    )
    assert "X-Bk-Tenant-Id" not in auth_headers(creds)
    assert "secret-123" not in repr(creds)


def test_classify_codes() -> None:
    def run(status: int, body: str) -> Envelope | GatewayError:
        return classify(service="X", status=status, body=body, headers={})

    assert isinstance(run(200, '{"result": true, "code": 0, "data": [1]}'), Envelope)
    assert isinstance(run(403, '{"result": false, "code": 1640301, "message": "no"}'), GatewayAuthError)
    assert isinstance(
        run(404, '{"result": false, "code": 1640401, "message": "API not found"}'), GatewayAuthError
    )
    assert isinstance(run(401, "Unauthorized"), GatewayAuthError)
    assert isinstance(run(504, '{"result": false, "code": 1650401, "message": "timeout"}'), UpstreamError)
    assert isinstance(run(429, '{"result": false, "code": 1642903, "message": "rl"}'), GatewayRateLimited)
    err = run(200, '{"result": false, "code": 1244006, "message": "作业实例不存在"}')
    assert isinstance(err, ApiError) and err.code == 1244006 and "作业实例不存在" in str(err)
    html = run(200, "<html><body>login</body></html>")
    assert isinstance(html, UpstreamError) and not html.retryable


async def test_wrong_secret_is_typed_and_not_retried(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    c, app = await setup(aiohttp_server, session, credentials=(APP_CODE, "wrong-secret-value", "admin"))
    with pytest.raises(GatewayAuthError) as info:
        await c.search("*", *WINDOW)
    assert info.value.code == 1640001 and info.value.http_status == 400
    assert "bk_app_code or bk_app_secret is incorrect" in str(info.value)
    assert "wrong-secret-value" not in str(info.value) and "wrong-secret-value" not in info.value.zh
    assert len(app[REQUESTS]) == 1


async def test_missing_header_is_rejected(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    c, app = await setup(aiohttp_server, session)
    async with session.post(c.search_url, json={"index_set_id": 1}) as resp:
        body = await resp.json()
    assert resp.status == 400 and body["code"] == 1640001 and body["result"] is False
    assert body["code_name"] == "INVALID_ARGS" and len(app[REQUESTS]) == 1


async def test_retries_500_then_succeeds(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    c, app = await setup(aiohttp_server, session)
    app[FAULTS].server_error(times=2)
    result = await c.search("*", *WINDOW)
    assert result.total == 1 and len(app[REQUESTS]) == 3


async def test_gives_up_after_bounded_retries(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    c, app = await setup(aiohttp_server, session, retries=2)
    app[FAULTS].server_error(times=5, status=502)
    with pytest.raises(UpstreamError) as info:
        await c.search("*", *WINDOW)
    assert info.value.http_status == 502 and len(app[REQUESTS]) == 3


async def test_rate_limit_waits_for_the_gateway_reset_header(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """The gateway's 429 says when its window resets (X-Bkapi-RateLimit-Reset, seconds), never
    Retry-After: the client waits that long instead of burning its retries on its own backoff."""
    c, app = await setup(aiohttp_server, session, retries=1)
    app[FAULTS].rate_limit(times=1, reset_s=1)
    t0 = time.monotonic()
    result = await c.search("*", *WINDOW)
    assert time.monotonic() - t0 >= 1.0
    assert result.total == 1 and len(app[REQUESTS]) == 2


def test_reset_header_wins_and_retry_after_still_understood() -> None:
    assert rate_limit_wait({"X-Bkapi-RateLimit-Reset": "7", "Retry-After": "1"}) == 7.0
    assert rate_limit_wait({"Retry-After": "3"}) == 3.0
    assert rate_limit_wait({"X-Bkapi-RateLimit-Reset": "soon"}) is None
    assert rate_limit_wait({}) is None


async def test_rate_limit_envelope_without_header_retried_then_typed(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    c, app = await setup(aiohttp_server, session, retries=1)
    app[FAULTS].rate_limit(times=3, reset_s=None, code=1642903)
    with pytest.raises(GatewayRateLimited) as info:
        await c.search("*", *WINDOW)
    assert info.value.code == 1642903 and len(app[REQUESTS]) == 2


async def test_html_body_is_upstream_error(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    c, app = await setup(aiohttp_server, session, retries=0)
    app[FAULTS].html(times=1)
    with pytest.raises(UpstreamError, match="HTML"):
        await c.search("*", *WINDOW)
    # a proxy's HTML 502 is transient: with retries left the next attempt succeeds
    c2, app2 = await setup(aiohttp_server, session, retries=1)
    app2[FAULTS].html(times=1)
    assert (await c2.search("*", *WINDOW)).total == 1 and len(app2[REQUESTS]) == 2


async def test_timeout_is_retried_then_upstream_error(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    c, app = await setup(aiohttp_server, session, timeout_s=0.2, retries=1)
    app[FAULTS].delay(1.0, times=1)
    assert (await c.search("*", *WINDOW)).total == 1  # first attempt timed out, second answered
    assert len(app[REQUESTS]) == 2
    app[FAULTS].delay(1.0, times=2)
    with pytest.raises(UpstreamError, match=r"no answer within 0\.2s"):
        await c.search("*", *WINDOW)


async def test_server_message_never_leaks_secret(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    c, app = await setup(aiohttp_server, session)
    app[FAULTS].add(Fault(status=200, code=9999, message=f"bad request, app_secret={APP_SECRET}"))
    with pytest.raises(ApiError) as info:
        await c.search("*", *WINDOW)
    assert APP_SECRET not in str(info.value) and "***" in str(info.value)


def test_credentials_from_settings_section() -> None:
    from pydantic import SecretStr

    from bot.core.settings import Credentials

    creds = ApiCredentials.coerce(Credentials(app_code="a", app_secret=SecretStr("topsecret"), username="u"))
    assert creds == ApiCredentials("a", "topsecret", "u")


async def test_connection_refused_is_upstream_error(session: aiohttp.ClientSession) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = BkLogClient(
        session,
        base_url=f"http://127.0.0.1:{port}",
        index_set_id=1,
        credentials=CREDS,
        timeout_s=1,
        retries=1,
        backoff_base_s=0.01,
    )
    with pytest.raises(UpstreamError, match="connection failed"):
        await c.search("*", *WINDOW)


async def test_start_site_serves_the_sample(session: aiohttp.ClientSession) -> None:
    from bot.devtools.sandbox import start_site

    app = create_bklog_app(docs_from_records(LOG), app_code=APP_CODE, app_secret=APP_SECRET, index_set_id=1)
    runner, base = await start_site(app)
    try:
        c = BkLogClient(session, base_url=base, index_set_id=1, credentials=CREDS, timeout_s=2)
        assert (await c.search('log: "stepInstanceId=7"', *WINDOW)).total == 1
    finally:
        await runner.cleanup()
