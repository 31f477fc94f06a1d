"""The console over real HTTP and WebSocket, through the real inbox, router, worker and delivery."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import WSServerHandshakeError
from aiohttp.test_utils import TestClient

from bot.app import keys as K
from bot.channels.console.web import recent_entry
from bot.core.models import AnalysisJob
from bot.core.settings import Settings
from bot.core.store import open_store
from bot.delivery.reports import StoredReport
from tests.channels.console.helpers import (
    REPORT_HEADER,
    STEP_ID,
    Page,
    console_app,
    console_settings,
    is_bot,
    is_echo,
    stub_analyze,
)
from tests.conftest import REDIS_URL, require_redis

ClientFactory = Callable[..., Any]


@pytest.fixture(params=["embedded", "redis"])
async def flow_settings(request: pytest.FixtureRequest, key_prefix: str) -> AsyncIterator[Settings]:
    """The conversation tests run on the embedded store and on the real Redis."""
    if request.param == "embedded":
        yield console_settings(redis_key_prefix=key_prefix)
        return
    require_redis()
    yield console_settings(redis_url=REDIS_URL, redis_key_prefix=key_prefix)
    store = open_store(REDIS_URL, prefix=key_prefix)
    keys = [k async for k in store.redis.scan_iter(match=key_prefix + "*", count=500)]
    if keys:
        await store.redis.delete(*keys)
    await store.close()


async def open_page(client: TestClient[Any, Any], user: str, mode: str = "group", **query: str) -> Page:
    ws = await client.ws_connect("/console/ws", params={"mode": mode, "user": user, **query})
    page = Page(ws, user=user, mode=mode)
    history = await page.wait_for(lambda f: f["type"] == "history")
    assert history["chat"] == ("console-group" if mode == "group" else f"console-private:{user}")
    return page


def cid() -> str:
    return uuid.uuid4().hex


async def test_group_asks_for_id_then_reports_on_plain_reply(
    aiohttp_client: ClientFactory, flow_settings: Settings
) -> None:
    client = await aiohttp_client(await console_app(flow_settings))
    asker = await open_page(client, "张三")
    colleague = await open_page(client, "李四")

    first = cid()
    await asker.say("@job-doctor 帮我看看这个任务为什么失败", first)
    echo = await colleague.wait_for(is_echo(first))
    assert echo["from"] == "张三" and echo["chat"] == "console-group"
    assert echo["text"] == "@job-doctor 帮我看看这个任务为什么失败"
    question = await asker.wait_for(is_bot("question"))
    assert question["markdown"].startswith("@张三 ")
    assert "请提供失败步骤的 stepInstanceId" in question["markdown"]
    await colleague.wait_for(is_bot("question"))  # everyone in the group sees the bot's answer

    second = cid()
    await asker.say(STEP_ID, second)  # no @: the follow-up the bot asked this sender for
    report = await asker.wait_for(is_bot("report"))
    assert report["markdown"].startswith("@张三 " + REPORT_HEADER)
    assert REPORT_HEADER in report["text"]
    for heading in ("问题概述", "根因分析", "解决方案"):
        assert heading in report["markdown"]
    await colleague.wait_for(is_bot("report"))

    # A page that (re)connects gets the whole conversation, in order.
    late = await open_page(client, "王五")
    history = late.frames[0]["messages"]
    kinds = [(m["from"], m["kind"]) for m in history if m["kind"] != "progress"]
    assert kinds == [("张三", "user"), ("bot", "question"), ("张三", "user"), ("bot", "report")]
    assert [m["seq"] for m in history] == sorted(m["seq"] for m in history)
    assert history[2]["client_id"] == second


async def test_group_chatter_without_mention_is_ignored(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(await console_app(console_settings()))
    page = await open_page(client, "赵六")
    msg = cid()
    await page.say("大家中午吃什么", msg)
    await page.wait_for(is_echo(msg))
    await page.drain(1.0)
    assert page.bot() == []


async def test_resend_with_same_client_id_gets_one_answer(
    aiohttp_client: ClientFactory, flow_settings: Settings
) -> None:
    client = await aiohttp_client(await console_app(flow_settings))
    page = await open_page(client, "张三")
    other_tab = await open_page(client, "张三")
    same = cid()
    # The same page message arrives twice at once (two tabs / a resend racing the original):
    # one of them is refused by the channel's history or by the inbox fingerprint.
    await asyncio.gather(
        page.say("@job-doctor 帮我看看这个任务为什么失败", same),
        other_tab.say("@job-doctor 帮我看看这个任务为什么失败", same),
    )
    await page.wait_for(is_bot("question"))
    # ... and once more after the answer, as a reconnecting page would.
    await page.say("@job-doctor 帮我看看这个任务为什么失败", same)
    ack = await page.wait_for(lambda f: f["type"] == "ack" and not f["accepted"])
    assert ack["reason"] == "duplicate"
    await page.drain(1.0)
    assert len(page.bot("question")) == 1
    assert len([f for f in page.frames if is_echo(same)(f)]) == 1

    # The same text typed again is a new message (new client id) and gets its own answer.
    await page.say("@job-doctor 帮我看看这个任务为什么失败", cid())
    await page.drain(1.0)
    assert len(page.bot()) == 2


async def test_private_chat_needs_no_mention(aiohttp_client: ClientFactory, flow_settings: Settings) -> None:
    client = await aiohttp_client(await console_app(flow_settings))
    group = await open_page(client, "旁观者")
    private = await open_page(client, "王五", mode="private")
    await private.say("帮我看看这个任务为什么失败", cid())
    question = await private.wait_for(is_bot("question"))
    assert question["chat"] == "console-private:王五"
    assert not question["markdown"].startswith("@")  # no mention in a private chat
    assert "stepInstanceId" in question["markdown"]
    await private.say(f"{STEP_ID}", cid())
    report = await private.wait_for(is_bot("report"))
    assert report["markdown"].startswith(REPORT_HEADER)
    await group.drain(0.3)
    assert [f for f in group.frames if f["type"] == "message"] == []  # private stays private


async def test_join_switches_chat_and_replays_it(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(await console_app(console_settings()))
    page = await open_page(client, "王五", mode="private")
    await page.say("帮助", cid())
    await page.wait_for(is_bot("answer"))
    page.frames.clear()
    await page.ws.send_json({"type": "join", "mode": "group", "user": "王五"})
    group = await page.wait_for(lambda f: f["type"] == "history" and f["chat"] == "console-group")
    assert group["messages"] == []
    page.frames.clear()
    await page.ws.send_json({"type": "join", "mode": "private", "user": "王五"})
    back = await page.wait_for(lambda f: f["type"] == "history" and f["chat"] == "console-private:王五")
    assert [m["from"] for m in back["messages"]] == ["王五", "bot"]
    assert "job-doctor" in back["messages"][1]["markdown"]


async def test_bad_frames_get_a_clear_answer(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(await console_app(console_settings()))
    page = await open_page(client, "张三")
    await page.ws.send_str("not json")
    err = await page.wait_for(lambda f: f["type"] == "error")
    assert "无法解析" in err["text"]
    await page.ws.send_str("[" * 5000)  # nested too deeply for the decoder: same answer, socket kept
    errors = await page.wait_for(lambda f: f["type"] == "error" and f is not err)
    assert "无法解析" in errors["text"]
    await page.say("x" * 5000, "long-1")
    ack = await page.wait_for(lambda f: f["type"] == "ack" and f["client_id"] == "long-1")
    assert ack == {**ack, "accepted": False, "reason": "too_long"}
    await page.say("   ", "blank-1")
    ack = await page.wait_for(lambda f: f["type"] == "ack" and f["client_id"] == "blank-1")
    assert ack["reason"] == "empty"
    await page.ws.send_json({"type": "ping"})
    await page.wait_for(lambda f: f["type"] == "pong")


async def test_reply_sent_while_nobody_is_connected_is_delivered_on_connect(
    aiohttp_client: ClientFactory,
) -> None:
    client = await aiohttp_client(await console_app(console_settings()))
    page = await open_page(client, "张三")
    await page.say(f"@job-doctor {STEP_ID}", cid())
    await page.wait_for(lambda f: f["type"] == "ack" and f["accepted"])
    await page.ws.close()  # the tab closes before the report is ready
    console = client.app[K.SERVICES].console
    assert console is not None
    channel = console.hub
    async with asyncio.timeout(10):
        while not any(m["kind"] == "report" for m in channel.messages("console-group")):
            await asyncio.sleep(0.05)
    again = await open_page(client, "张三")
    replay = again.frames[0]["messages"]
    assert any(m["kind"] == "report" and REPORT_HEADER in m["markdown"] for m in replay)


async def test_recent_api_lists_the_analysis(aiohttp_client: ClientFactory, flow_settings: Settings) -> None:
    client = await aiohttp_client(await console_app(flow_settings))
    resp = await client.get("/console/api/recent")
    assert resp.status == 200 and (await resp.json())["items"] == []
    page = await open_page(client, "张三")
    await page.say(f"@job-doctor 看下 {STEP_ID}", cid())
    await page.wait_for(is_bot("report"))
    body = await (await client.get("/console/api/recent", params={"limit": "5"})).json()
    [item] = body["items"]
    assert item["step_instance_id"] == int(STEP_ID)
    assert item["request_key"] == f"step:{STEP_ID}"
    assert item["request_ids"] == ["0123456789abcdef0123456789abcdef"]
    assert (item["stage"], item["stage_zh"]) == ("execution", "执行")
    assert item["fault_side"] == "user" and item["fault_side_zh"].startswith("用户")
    assert (item["source"], item["confidence"], item["signature"]) == ("rules", 0.8, "script_nonzero_exit")
    assert item["status"] == "diagnosed"
    assert item["log_span_s"] == pytest.approx(2.25)  # the run's first to last line
    assert item["span"] == {
        "start": "2024-05-30 11:08:58.050",
        "end": "2024-05-30 11:09:00.300",
        "seconds": 2.25,
    }
    assert item["window"] == {"start": "2024-05-27T11:39:30+08:00", "end": "2024-05-30T11:39:30+08:00"}
    assert [(t["phase_zh"], t["status"]) for t in item["timeline"]] == [("下发", "ok"), ("执行", "fail")]
    assert item["timeline"][0]["events"] == []
    [event] = item["timeline"][1]["events"]
    assert event["time"] == "2024-05-30 11:09:00.240" and event["text"].startswith("104 脚本返回码非零：")
    assert item["links"] == [f"https://job.example.com/biz/2/execute/step/{STEP_ID}"]  # http(s) only
    assert item["finished_at"][:4].isdigit() and "T" in item["finished_at"]
    assert (await client.get("/console/api/recent", params={"limit": "x"})).status == 400


async def test_samples_api(aiohttp_client: ClientFactory) -> None:
    app = await console_app(console_settings())
    client = await aiohttp_client(app)
    assert await (await client.get("/console/api/samples")).json() == {"samples": []}
    app2 = await console_app(
        console_settings(), samples=[STEP_ID, {"id": "20031265376", "label": "下发失败"}]
    )
    client2 = await aiohttp_client(app2)
    body = await (await client2.get("/console/api/samples")).json()
    assert body["samples"] == [
        {"id": STEP_ID, "label": STEP_ID},
        {"id": "20031265376", "label": "下发失败"},
    ]


async def test_page_and_assets_are_served_with_a_strict_policy(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(await console_app(console_settings()))
    resp = await client.get("/console")
    assert resp.status == 200 and resp.content_type == "text/html"
    html = await resp.text()
    assert "console/static/app.js" in html and "最近的分析" in html
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    js = await client.get("/console/static/app.js")
    assert js.status == 200 and js.content_type == "text/javascript"
    assert not re.search(r"\.(inner|outer)HTML\b|insertAdjacentHTML|document\.write", await js.text())
    assert (await client.get("/console/static/style.css")).status == 200
    assert (await client.get("/console/static/../routes.py")).status == 404
    assert (await client.get("/console/static/index.html")).status == 404


# ------------------------------------------------------------------------------------ access


async def test_token_required_on_a_non_loopback_host(aiohttp_client: ClientFactory) -> None:
    token = "console-s3cret-token"
    settings = console_settings(http={"host": "0.0.0.0"}, console={"token": token})
    client = await aiohttp_client(await console_app(settings))
    for path in ("/console", "/console/api/recent", "/console/api/samples", "/console/static/app.js"):
        resp = await client.get(path)
        assert resp.status == 401, path
        assert token not in await resp.text()
    assert (await client.get("/console/api/recent", params={"token": "wrong"})).status == 401
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/console/api/recent", headers=bearer)).status == 200
    assert (await client.get("/console/api/samples", headers={"Authorization": "Bearer nope"})).status == 401

    with pytest.raises(WSServerHandshakeError) as refused:
        await client.ws_connect("/console/ws")
    assert refused.value.status == 401

    # Opening the page with the token lets its script and stylesheet load (cookie).
    page = await client.get("/console", params={"token": token})
    assert page.status == 200
    assert (await client.get("/console/static/app.js")).status == 200

    tab = await open_page(client, "张三", token=token)
    await tab.say("@job-doctor 帮我看看这个任务为什么失败", cid())
    await tab.wait_for(is_bot("question"))


async def test_non_loopback_without_token_turns_the_console_off_under_serve(
    aiohttp_client: ClientFactory,
) -> None:
    app = await console_app(console_settings(http={"host": "0.0.0.0"}))
    client = await aiohttp_client(app)
    assert (await client.get("/console")).status == 404
    assert (await client.get("/console/api/recent")).status == 404
    assert "console" not in app[K.SERVICES].channels.names
    assert (await client.get("/healthz")).status == 200


async def test_unset_host_means_public_under_serve(aiohttp_client: ClientFactory) -> None:
    settings = console_settings(http={"host": None})
    client = await aiohttp_client(await console_app(settings))
    assert (await client.get("/console")).status == 404  # 0.0.0.0 by default, no token: off


async def test_demo_on_a_public_host_makes_up_a_token(aiohttp_client: ClientFactory) -> None:
    app = await console_app(console_settings(http={"host": "0.0.0.0"}), mode="demo")
    client = await aiohttp_client(app)
    assert (await client.get("/console")).status == 401
    console = app[K.SERVICES].console
    token = console.token if console else None
    assert token is not None and len(token) >= 20
    assert (await client.get("/console", params={"token": token})).status == 200


async def test_demo_defaults_to_loopback(aiohttp_client: ClientFactory) -> None:
    app = await console_app(console_settings(http={"host": None}), mode="demo")
    client = await aiohttp_client(app)
    assert (await client.get("/console")).status == 200
    console = app[K.SERVICES].console
    assert console is not None and console.token is None


async def test_loopback_console_refuses_foreign_host_and_origin(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(await console_app(console_settings()))
    # A DNS-rebound name pointing at 127.0.0.1 is not "this machine's page".
    assert (await client.get("/console", headers={"Host": "evil.example:8080"})).status == 403
    assert (await client.get("/console", headers={"Host": "localhost:8080"})).status == 200
    with pytest.raises(WSServerHandshakeError) as refused:
        await client.ws_connect("/console/ws", headers={"Origin": "http://evil.example"})
    assert refused.value.status == 403
    origin = f"http://{client.host}:{client.port}"
    ws = await client.ws_connect("/console/ws", headers={"Origin": origin})
    await ws.close()


async def test_recent_entry_of_a_report_stored_before_the_span_was_kept() -> None:
    report = await stub_analyze(AnalysisJob(request_key=f"step:{STEP_ID}", step_instance_id=int(STEP_ID)))
    old = report.model_copy(update={"span": None, "window": None})
    item = recent_entry(StoredReport(request_key=f"step:{STEP_ID}", report=old, finished_at=0.0))
    assert item["span"] is None and item["window"] is None
    assert item["log_span_s"] == pytest.approx(2.14)  # first to last timeline time, as before


async def test_a_new_display_name_is_not_a_new_sender_for_rate_limits(aiohttp_client: ClientFactory) -> None:
    """Console users used to beat the rate limit by typing another name: limits count per session."""
    client = await aiohttp_client(await console_app(console_settings(chat={"user_rate_per_min": 2})))
    page = await open_page(client, "甲", mode="private")
    for i, name in enumerate(("甲", "乙", "丙", "丁")):
        page.user = name
        await page.say(f"状态码 31{i} 是什么意思", cid())
        await asyncio.sleep(0.3)  # handled in order
    await page.wait_for(lambda f: is_bot("notice")(f) and "太频繁" in f["markdown"])
    answers = [f for f in page.frames if is_bot("answer")(f)]
    assert len(answers) == 2


async def test_detail_is_markdown_with_log_lines_in_fences_not_the_plain_text(
    aiohttp_client: ClientFactory, flow_settings: Settings
) -> None:
    """`详情` used to send the plain text as markdown too: a log line's markup went out live."""
    client = await aiohttp_client(await console_app(flow_settings))
    page = await open_page(client, "张三", mode="private")
    await page.say(STEP_ID, cid())
    first = await page.wait_for(is_bot("report"))
    await page.say(f"详情 {STEP_ID}", cid())
    detail = await page.wait_for(lambda f: is_bot("report")(f) and f is not first)
    line = "Script exit code=1, stderr=<script>window.__pwned=1</script> **not bold**"
    assert line in detail["text"]  # plain text: the line as logged
    md = detail["markdown"]
    assert md != detail["text"] and md.startswith(REPORT_HEADER)
    fenced = re.findall(r"(?ms)^(`{3,})[^\n]*\n(.*?)\n\1$", md)
    assert any(line in body for _, body in fenced)  # inside a code fence, inert
    assert "(<b>not bold</b>)" not in md  # the cause's markup defused as in every report
