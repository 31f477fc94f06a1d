"""Shared pieces of the AI bot channel tests: the app with both modes, the analysis test stub,
and helpers that talk to the app the way WeCom does (over real HTTP / WebSocket)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.app import keys as K
from bot.app.services import AppOptions
from bot.app.web import create_app
from bot.channels.wecom.aibot import AibotOptions
from bot.channels.wecom.http_mode import PATH
from bot.channels.wecom.ws_mode import AibotWsClient
from bot.core.models import AnalysisJob, DiagnosisReport, Evidence
from bot.core.settings import Settings
from bot.core.store import open_store
from tests.conftest import REDIS_URL, require_redis
from tests.support.fakes.wecom_aibot import AES_KEY, BOT_ID, SECRET, TOKEN, FakeResponseUrl, WeComAibotSide

ServerFactory = Callable[..., Awaitable[TestServer]]
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@dataclass
class AnalyzeStub:
    """Test stub for the analysis pipeline: a small report for the job's step id, no BkLog."""

    delay_s: float = 0.0
    gate: asyncio.Event | None = None  # when set, every analysis waits for it
    calls: list[str] = field(default_factory=list)

    async def __call__(self, job: AnalysisJob) -> DiagnosisReport:
        self.calls.append(job.request_key)
        if self.gate is not None:
            await self.gate.wait()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return DiagnosisReport(
            step_instance_id=job.step_instance_id,
            summary="测试桩：脚本执行返回非零退出码。",
            stage="execution",
            fault_side="user",
            root_cause="脚本 exit 1",
            evidence=[Evidence(level="ERROR", text="Task execute failed, exitCode=1")],
            confidence=0.6,
        )


def aibot_settings(prefix: str, *, ws_url: str = "", http: bool = True) -> Settings:
    aibot: dict[str, Any] = {}
    if http:
        aibot.update(token=TOKEN, encoding_aes_key=AES_KEY)
    if ws_url:
        aibot.update(bot_id=BOT_ID, secret=SECRET, ws_url=ws_url)
    return Settings(
        redis_url=REDIS_URL,
        redis_key_prefix=prefix,
        http={"shutdown_grace_s": 1.0},
        chat={"progress_after_s": 0.3},
        worker={"claim_idle_s": 5.0},
        wecom_aibot=aibot,
    )


async def build_app(settings: Settings, stub: AnalyzeStub, options: AibotOptions) -> web.Application:
    return await create_app(settings, options=AppOptions(analyze=stub, aibot=options))


def ws_client(app: web.Application) -> AibotWsClient:
    """The app's WebSocket client (the endpoint that holds the lease)."""
    return next(e for e in app[K.SERVICES].endpoints if isinstance(e, AibotWsClient))


@pytest.fixture
async def redis_store_for_run(key_prefix: str) -> AsyncIterator[None]:
    """App tests run on the real Redis (own key prefix, removed afterwards).

    Not on the embedded store: cancelling the engine's blocking XREADGROUP on fakeredis 2.40 spins
    instead of stopping, so an app with `setup_runtime` on the embedded store does not shut down.
    """
    require_redis()
    yield
    store = open_store(REDIS_URL, prefix=key_prefix)
    try:
        keys = [k async for k in store.redis.scan_iter(match=key_prefix + "*", count=500)]
        if keys:
            await store.redis.delete(*keys)
    finally:
        await store.close()


@pytest.fixture
async def response_url(aiohttp_server: ServerFactory) -> FakeResponseUrl:
    fake = FakeResponseUrl()
    server = await aiohttp_server(fake.app())
    fake.base = str(server.make_url("")).rstrip("/")
    return fake


@pytest.fixture
def side() -> WeComAibotSide:
    return WeComAibotSide()


class AibotCaller:
    """Posts callbacks like WeCom and opens the passive replies."""

    def __init__(self, client: TestClient[Any, Any], side: WeComAibotSide) -> None:
        self.client = client
        self.side = side

    async def post(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        params, body = self.side.callback(payload)
        resp = await self.client.post(
            PATH, params=params, data=body, headers={"Content-Type": "application/json"}
        )
        text = await resp.text()
        if resp.status != 200 or not text:
            return resp.status, None
        return resp.status, self.side.open_reply(text, nonce=params["nonce"])

    async def stream(self, payload: dict[str, Any]) -> dict[str, Any]:
        status, reply = await self.post(payload)
        assert status == 200 and reply is not None and reply["msgtype"] == "stream", (status, reply)
        stream: dict[str, Any] = reply["stream"]
        return stream

    async def refresh_until_finished(
        self, stream_id: str, *, within_s: float = 10.0, **who: Any
    ) -> dict[str, Any]:
        """Ask for the stream like WeCom does (a refresh callback every 100 ms) until it finishes."""
        async with asyncio.timeout(within_s):
            while True:
                stream = await self.stream(self.side.refresh(stream_id, **who))
                assert stream["id"] == stream_id
                assert len(stream["content"].encode()) <= 20480
                if stream["finish"]:
                    return stream
                await asyncio.sleep(0.1)


@pytest.fixture
def options() -> AibotOptions:
    return AibotOptions(
        ping_interval_s=0.2,
        ack_timeout_s=1.0,
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
        lease_ttl_s=1.5,
        lease_retry_s=0.2,
        relay_poll_s=0.05,
        connect_timeout_s=2.0,
    )


async def settle(seconds: float = 0.6) -> None:
    """Let the engine's delayed work (progress notes after `progress_after_s`) run before the app
    stops: the engine gives such tasks their grace period only after the store is closed."""
    await asyncio.sleep(seconds)


async def get_metrics(
    session_or_client: TestClient[Any, Any] | aiohttp.ClientSession, url: str = "/metrics"
) -> str:
    resp = await session_or_client.get(url)
    return await resp.text()
