"""AI bot HTTP callback mode over real HTTP: verification, rejection, streams, response_url."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bot.channels.wecom.aibot import AibotOptions
from bot.channels.wecom.http_mode import PATH
from bot.delivery.render import HEADER_PREFIX
from bot.devtools.redislab import SingleRedis
from handlers import texts
from handlers.texts import AIBOT_PLACEHOLDER as PLACEHOLDER
from handlers.texts import AIBOT_STILL_WORKING as STILL_WORKING
from handlers.texts import AIBOT_WELCOME as WELCOME
from handlers.texts import UNSUPPORTED_TYPE as UNSUPPORTED
from tests.channels.aibot.conftest import (
    AibotCaller,
    AnalyzeStub,
    ClientFactory,
    aibot_settings,
    build_app,
    get_metrics,
    settle,
)
from tests.conftest import require_redis_server
from tests.support.fakes.wecom_aibot import FakeResponseUrl, WeComAibotSide

STEP = 20031265375


Start = Callable[..., Awaitable[tuple[AibotCaller, AnalyzeStub, TestClient[Any, Any]]]]


@pytest.fixture
async def start(
    aiohttp_client: ClientFactory, side: WeComAibotSide, key_prefix: str, redis_store_for_run: None
) -> AsyncIterator[Start]:
    """Factory for the app under test (HTTP mode on, WebSocket mode off) behind a real server."""

    async def make(
        *, stub: AnalyzeStub | None = None, options: AibotOptions | None = None
    ) -> tuple[AibotCaller, AnalyzeStub, TestClient[Any, Any]]:
        stub = stub or AnalyzeStub()
        app = await build_app(aibot_settings(key_prefix), stub, options or AibotOptions())
        client = await aiohttp_client(app)
        return AibotCaller(client, side), stub, client

    yield make
    await settle()


@pytest.fixture
async def caller(start: Start) -> AibotCaller:
    wecom, _stub, _client = await start()
    return wecom


async def test_url_verification(caller: AibotCaller, side: WeComAibotSide) -> None:
    resp = await caller.client.get(PATH, params=side.verify_query("echo-1234567890"))
    assert resp.status == 200
    assert await resp.text() == "echo-1234567890"

    bad = side.verify_query("echo-1234567890")
    bad["msg_signature"] = "0" * 40
    resp = await caller.client.get(PATH, params=bad)
    assert resp.status == 403
    assert await resp.text() == ""


async def test_bad_callbacks_are_rejected_without_processing(
    caller: AibotCaller, side: WeComAibotSide, response_url: FakeResponseUrl
) -> None:
    client = caller.client
    payload = side.text(f"@job-doctor {STEP}", response_url=response_url.url())

    # tampered ciphertext: the signature no longer matches
    params, body = side.callback(payload)
    env = json.loads(body)
    env["encrypt"] = ("A" if env["encrypt"][0] != "A" else "B") + env["encrypt"][1:]
    resp = await client.post(PATH, params=params, data=json.dumps(env))
    assert resp.status == 403 and await resp.text() == ""

    # correctly signed but not WeCom ciphertext (e.g. another bot's key)
    junk = base64.b64encode(b"\x00" * 64).decode()
    ts, nonce = str(int(time.time())), "n0nce1"
    signed = {"msg_signature": side.signature(ts, nonce, junk), "timestamp": ts, "nonce": nonce}
    resp = await client.post(PATH, params=signed, data=json.dumps({"encrypt": junk}))
    assert resp.status == 400

    # replayed: the very same request a second time
    params, body = side.callback(side.text("状态", user="lisi"))
    first = await client.post(PATH, params=params, data=body)
    assert first.status == 200
    again = await client.post(PATH, params=params, data=body)
    assert again.status == 403

    # stale: signed ten minutes ago
    params, body = side.callback(payload, timestamp=int(time.time()) - 600)
    resp = await client.post(PATH, params=params, data=body)
    assert resp.status == 403

    # oversized and malformed bodies
    resp = await client.post(PATH, params=params, data=b"{" + b" " * 70_000 + b"}")
    assert resp.status == 413
    resp = await client.post(PATH, params=side.callback(payload)[0], data=b"not json")
    assert resp.status == 400
    resp = await client.post(PATH, params=side.callback(payload)[0], data=b"[" * 5000)  # was a 500
    assert resp.status == 400
    resp = await client.post(
        PATH, params=side.callback(payload)[0], data=b'{"encrypt": ' + b"9" * 5000 + b"}"
    )
    assert resp.status == 400
    resp = await client.post(PATH, data=body)
    assert resp.status == 400

    metrics = await get_metrics(client)
    for reason in ("signature", "undecryptable", "replay", "stale", "too_large", "not_json"):
        assert f'job_doctor_messages_rejected_total{{channel="wecom_aibot",reason="{reason}"}}' in metrics
    # still serving: the genuine message gets its stream and its report
    stream = await caller.stream(payload)
    done = await caller.refresh_until_finished(stream["id"])
    assert done["content"].startswith(f"{HEADER_PREFIX}stepInstanceId={STEP}")
    assert response_url.posts == []


async def test_single_chat_question_then_report(
    start: Start, side: WeComAibotSide, response_url: FakeResponseUrl
) -> None:
    wecom, stub, _client = await start()

    first = await wecom.stream(
        side.text("@job-doctor 帮我看看这个任务为什么失败", response_url=response_url.url())
    )
    assert first == {"id": first["id"], "finish": False, "content": PLACEHOLDER}
    question = await wecom.refresh_until_finished(first["id"])
    assert question["content"] == texts.ASK_FOR_ID_PRIVATE

    second = await wecom.stream(side.text(f"这个 {STEP}", response_url=response_url.url()))
    assert second["id"] != first["id"] and second["finish"] is False
    report = await wecom.refresh_until_finished(second["id"])
    assert report["content"].startswith(f"{HEADER_PREFIX}stepInstanceId={STEP}")
    assert "Task execute failed, exitCode=1" in report["content"]
    assert stub.calls == [f"step:{STEP}"]
    assert response_url.posts == []  # everything went into the streams


async def test_group_mention_flow(
    caller: AibotCaller, side: WeComAibotSide, response_url: FakeResponseUrl
) -> None:
    group: dict[str, Any] = {"user": "wangwu", "chattype": "group", "chatid": "wrkSFfCgAAtest"}
    first = await caller.stream(
        side.text("@job-doctor 刚才的作业挂了", response_url=response_url.url(), **group)
    )
    question = await caller.refresh_until_finished(first["id"], **group)
    assert "请 @我 并附上 stepInstanceId" in question["content"]

    second = await caller.stream(
        side.text(f"@job-doctor {STEP + 1}", response_url=response_url.url(), **group)
    )
    report = await caller.refresh_until_finished(second["id"], **group)
    assert report["content"].startswith(f"{HEADER_PREFIX}stepInstanceId={STEP + 1}")
    assert not report["content"].startswith("@")  # WeCom quotes the asker; no mention text


async def test_same_msgid_twice_is_one_analysis_and_one_reply(
    start: Start, side: WeComAibotSide, response_url: FakeResponseUrl
) -> None:
    stub = AnalyzeStub(delay_s=0.2)
    wecom, _stub, client = await start(stub=stub)
    payload = side.text(f"{STEP + 2}", user="zhaoliu", response_url=response_url.url())
    first = await wecom.stream(payload)
    again = await wecom.stream(payload)  # WeCom retries: same msgid, new timestamp/nonce
    assert again["id"] == first["id"]
    report = await wecom.refresh_until_finished(first["id"])
    await asyncio.sleep(0.5)
    assert stub.calls == [f"step:{STEP + 2}"]
    assert report["content"].count(HEADER_PREFIX) == 1
    assert response_url.posts == []
    assert 'job_doctor_duplicates_total{channel="wecom_aibot"} 1.0' in await get_metrics(client)


async def test_late_reply_goes_to_response_url_exactly_once(
    start: Start, side: WeComAibotSide, response_url: FakeResponseUrl
) -> None:
    stub = AnalyzeStub(delay_s=1.2)
    wecom, _stub, _client = await start(stub=stub, options=AibotOptions(stream_window_s=0.6))
    first = await wecom.stream(side.text(f"{STEP + 3}", user="sunqi", response_url=response_url.url()))
    await asyncio.sleep(0.45)  # the progress note arrives within the window
    progress = await wecom.stream(side.refresh(first["id"], user="sunqi"))
    assert progress["finish"] is False and progress["content"].startswith("收到，正在分析")
    closed = await wecom.refresh_until_finished(first["id"], user="sunqi")  # past the window
    assert STILL_WORKING in closed["content"] and HEADER_PREFIX not in closed["content"]

    async with asyncio.timeout(5):
        while not response_url.posts:
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    assert len(response_url.posts) == 1
    assert response_url.posts[0].content.startswith(f"{HEADER_PREFIX}stepInstanceId={STEP + 3}")
    assert response_url.refused == []
    # the closed stream does not pick up the late report
    after = await wecom.stream(side.refresh(first["id"], user="sunqi"))
    assert after["finish"] is True and HEADER_PREFIX not in after["content"]


async def test_mixed_events_and_other_types(
    caller: AibotCaller, side: WeComAibotSide, response_url: FakeResponseUrl
) -> None:
    status, reply = await caller.post(side.event("enter_chat"))
    assert status == 200 and reply == {"msgtype": "text", "text": {"content": WELCOME}}

    for ignored in (side.event("feedback_event"), {**side.text("x"), "msgtype": "location"}):
        status, reply = await caller.post(ignored)
        assert status == 200 and reply is None  # empty body

    image = await caller.stream(side.image())
    assert image["finish"] is True and image["content"] == UNSUPPORTED

    mixed = await caller.stream(
        side.mixed(["帮我看看这个步骤", f"{STEP + 4}"], response_url=response_url.url())
    )
    report = await caller.refresh_until_finished(mixed["id"])
    assert report["content"].startswith(f"{HEADER_PREFIX}stepInstanceId={STEP + 4}")

    unknown = await caller.stream(side.refresh("no-such-stream"))
    assert unknown["finish"] is True


async def test_a_store_outage_answers_503_and_counts_it(
    aiohttp_client: ClientFactory, side: WeComAibotSide, key_prefix: str, tmp_path: Path
) -> None:
    """WeCom calls again after a 503: nothing is acknowledged unstored, and /metrics shows it."""
    require_redis_server()
    redis = SingleRedis(tmp_path).start()
    try:
        settings = aibot_settings(key_prefix).model_copy(update={"redis_url": redis.url})
        client = await aiohttp_client(await build_app(settings, AnalyzeStub(), AibotOptions()))
        caller = AibotCaller(client, side)
        redis.server.kill()
        for text in (f"@job-doctor {STEP}", "状态码 310 是什么意思"):
            params, body = side.callback(side.text(text))
            resp = await client.post(PATH, params=params, data=body)
            assert resp.status == 503 and await resp.text() == ""
        metrics = await get_metrics(caller.client)
        refused = 'job_doctor_messages_rejected_total{channel="wecom_aibot",reason="store_unavailable"} 2.0'
        assert refused in metrics
    finally:
        redis.close()
