"""AI bot WebSocket long-connection mode against a fake WeCom WebSocket server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from bot.app import keys as K
from bot.channels.wecom.aibot import AibotOptions
from bot.delivery.render import HEADER_PREFIX
from handlers import texts
from handlers.texts import AIBOT_PLACEHOLDER as PLACEHOLDER
from handlers.texts import AIBOT_WELCOME as WELCOME
from tests.channels.aibot.conftest import (
    AnalyzeStub,
    ServerFactory,
    aibot_settings,
    build_app,
    settle,
    ws_client,
)
from tests.support.fakes.wecom_aibot import BOT_ID, SECRET, FakeAibotWsServer, WeComAibotSide

STEP = 20031265400
Start = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def fake_ws(aiohttp_server: ServerFactory) -> AsyncIterator[FakeAibotWsServer]:
    fake = FakeAibotWsServer()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("/")).replace("http://", "ws://")
    yield fake


@pytest.fixture
async def start(
    aiohttp_server: ServerFactory,
    fake_ws: FakeAibotWsServer,
    key_prefix: str,
    options: AibotOptions,
    redis_store_for_run: None,
) -> AsyncIterator[Start]:
    """Factory: one bot instance (WebSocket mode only) on the shared store; returns its app."""
    servers: list[TestServer] = []

    async def make(stub: AnalyzeStub | None = None) -> TestServer:
        settings = aibot_settings(key_prefix, ws_url=fake_ws.url, http=False)
        server = await aiohttp_server(await build_app(settings, stub or AnalyzeStub(), options))
        servers.append(server)
        return server

    yield make
    await settle()


def text(content: str, **kw: Any) -> dict[str, Any]:
    return WeComAibotSide().text(content, **kw)


async def test_subscribe_heartbeat_and_report_as_stream_frames(
    start: Start, fake_ws: FakeAibotWsServer
) -> None:
    await start()
    await fake_ws.wait_for(lambda: fake_ws.subscriptions == 1)
    [subscribe] = fake_ws.sent("aibot_subscribe")
    assert subscribe.body == {"bot_id": BOT_ID, "secret": SECRET}
    assert fake_ws.frames[0].cmd == "aibot_subscribe"  # the first frame after connecting

    req_id = await fake_ws.push_message(text(f"{STEP}"))
    await fake_ws.wait_for(lambda: any(s.get("finish") for s in fake_ws.stream_frames(req_id)))
    frames = fake_ws.stream_frames(req_id)
    assert frames[0]["content"] == PLACEHOLDER and frames[0]["finish"] is False
    assert len({f["id"] for f in frames}) == 1
    final = frames[-1]
    assert final["finish"] is True and final["content"].startswith(f"{HEADER_PREFIX}stepInstanceId={STEP}")
    assert fake_ws.sent("aibot_send_msg") == []
    await fake_ws.wait_for(lambda: fake_ws.pings >= 2, within_s=3)

    # a group question comes back in its stream and asks to @ the bot
    group = {"user": "lisi", "chattype": "group", "chatid": "wrkGroup1"}
    req2 = await fake_ws.push_message(text("@job-doctor 刚才的作业挂了", **group))
    await fake_ws.wait_for(lambda: any(s.get("finish") for s in fake_ws.stream_frames(req2)))
    assert fake_ws.stream_frames(req2)[-1]["content"] == texts.ASK_FOR_ID_MENTION_ONLY

    # enter_chat gets the welcome within the same req_id
    ev = await fake_ws.push_event(WeComAibotSide().event("enter_chat"))
    await fake_ws.wait_for(lambda: any(f.req_id == ev for f in fake_ws.sent("aibot_respond_welcome_msg")))
    [welcome] = [f for f in fake_ws.sent("aibot_respond_welcome_msg") if f.req_id == ev]
    assert welcome.body == {"msgtype": "text", "text": {"content": WELCOME}}


async def test_reconnect_mid_analysis_delivers_report_once(start: Start, fake_ws: FakeAibotWsServer) -> None:
    stub = AnalyzeStub(gate=asyncio.Event())
    await start(stub)
    await fake_ws.wait_for(lambda: fake_ws.subscriptions == 1)
    req_id = await fake_ws.push_message(text(f"{STEP + 1}", user="wangwu"))
    await fake_ws.wait_for(lambda: len(fake_ws.stream_frames(req_id)) >= 1 and bool(stub.calls))

    await fake_ws.drop()
    await fake_ws.wait_for(lambda: fake_ws.subscriptions == 2)
    assert stub.gate is not None
    stub.gate.set()  # the analysis finishes while the original req_id is gone

    header = f"{HEADER_PREFIX}stepInstanceId={STEP + 1}"
    await fake_ws.wait_for(lambda: any(d.startswith(header) for d in fake_ws.delivered()))
    await asyncio.sleep(0.5)
    assert sum(1 for d in fake_ws.delivered() if header in d) == 1
    [late] = fake_ws.sent("aibot_send_msg")
    assert late.conn == 2 and late.body["chatid"] == "wangwu"
    assert stub.calls == [f"step:{STEP + 1}"]


async def test_stalled_connection_is_replaced(start: Start, fake_ws: FakeAibotWsServer) -> None:
    await start()
    await fake_ws.wait_for(lambda: fake_ws.subscriptions == 1)
    fake_ws.stall()  # no more acks: two unanswered pings mean a dead connection
    await fake_ws.wait_for(lambda: fake_ws.subscriptions == 2, within_s=5)
    req_id = await fake_ws.push_message(text(f"{STEP + 2}", user="zhaoliu"))
    await fake_ws.wait_for(lambda: any(s.get("finish") for s in fake_ws.stream_frames(req_id)))
    assert fake_ws.stream_frames(req_id)[-1]["content"].startswith(
        f"{HEADER_PREFIX}stepInstanceId={STEP + 2}"
    )


async def test_one_lease_holder_and_takeover(start: Start, fake_ws: FakeAibotWsServer) -> None:
    server_one = await start()
    await fake_ws.wait_for(lambda: fake_ws.subscriptions == 1)
    first, second = server_one.app, (await start()).app
    await asyncio.sleep(1.0)  # several lease retries of the second instance
    assert fake_ws.subscriptions == 1 and fake_ws.kicked == 0
    assert ws_client(first).holding and not ws_client(second).holding

    # the holder stops (deploy, crash handled by the lease TTL): the other one takes over
    await server_one.close()
    await fake_ws.wait_for(lambda: fake_ws.subscriptions == 2, within_s=5)
    assert ws_client(second).holding and fake_ws.kicked == 0
    req_id = await fake_ws.push_message(text(f"{STEP + 3}", user="sunqi"))
    await fake_ws.wait_for(lambda: any(s.get("finish") for s in fake_ws.stream_frames(req_id)))
    assert fake_ws.stream_frames(req_id)[-1]["content"].startswith(
        f"{HEADER_PREFIX}stepInstanceId={STEP + 3}"
    )


async def test_lost_lease_drops_the_connection(
    start: Start, fake_ws: FakeAibotWsServer, options: AibotOptions
) -> None:
    app = (await start()).app
    await fake_ws.wait_for(lambda: fake_ws.subscriptions == 1)
    store = app[K.SERVICES].store
    await store.delete(store.key("lock", f"aibot-ws:{BOT_ID}"))  # e.g. expired during a long pause
    # the holder notices at its next renewal, disconnects, and (alone) takes the lease again
    await fake_ws.wait_for(lambda: fake_ws.subscriptions == 2, within_s=options.lease_ttl_s * 3)
    assert fake_ws.connections[0].ws.closed
    assert await store.exists(store.key("lock", f"aibot-ws:{BOT_ID}"))
