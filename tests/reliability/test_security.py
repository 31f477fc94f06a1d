"""Security: callback authentication, replay, allowlists, rate and size limits (in-process app, wired
exactly as `serve` wires it, over real HTTP against the fakes and our own redis-server)."""

from __future__ import annotations

import asyncio
import hmac
import io
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.app.web import create_app
from bot.core.settings import load_settings
from handlers.texts import RATE_LIMITED
from tests.reliability.conftest import MakeWorld
from tests.reliability.procs import RedisServer, parse_metrics
from tests.reliability.world import GROUP, TOKEN, World, bot_env, callback_body, post_callback, scenario
from tests.support.fakes.wecom_aibot import AES_KEY, WeComAibotSide
from tests.support.fakes.wecom_aibot import TOKEN as AIBOT_TOKEN

STEP = scenario("script_exit_code_1").expected.step_instance_id
QUESTION = "状态码 310 是什么意思"

StartApp = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def start_app(monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer) -> AsyncIterator[StartApp]:
    """The `serve` application in this process, configured through the same environment variables."""
    clients: list[TestClient[Any, Any]] = []

    async def start(world: World, extra: dict[str, str] | None = None) -> TestClient[Any, Any]:
        env = bot_env(world, redis_url=redis_server.url, prefix="jdsec:", extra=extra)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = load_settings()
        client: TestClient[Any, Any] = TestClient(TestServer(await create_app(settings)))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


class DigestSpy:
    """Wraps `hmac.compare_digest` (and still answers with it): which values were compared."""

    def __init__(self) -> None:
        self.real = hmac.compare_digest
        self.calls: list[tuple[Any, Any]] = []

    def __call__(self, a: Any, b: Any) -> bool:
        self.calls.append((a, b))
        return self.real(a, b)

    def compared(self, value: str) -> bool:
        raw = value.encode()
        return any(raw in (a, b) or value in (a, b) for a, b in self.calls)


async def accepted(client: TestClient[Any, Any], channel: str = "worktool") -> float:
    """Messages the channel made durable (the consumer acknowledges and removes them at once)."""
    return (await metrics(client)).get(("job_doctor_messages_received_total", f'channel="{channel}"'), 0.0)


async def metrics(client: TestClient[Any, Any]) -> dict[tuple[str, str], float]:
    resp = await client.get("/metrics")
    return parse_metrics(await resp.text())


async def test_worktool_token_is_compared_in_constant_time_and_wrong_ones_are_refused(
    make_world: MakeWorld, start_app: StartApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = await make_world()
    client = await start_app(world)
    spy = DigestSpy()
    monkeypatch.setattr(hmac, "compare_digest", spy)
    body = json.dumps(callback_body(QUESTION), ensure_ascii=False).encode()
    same_length = TOKEN[:-1] + ("x" if TOKEN[-1] != "x" else "y")
    wrong = {
        "same length": same_length,
        "shorter": TOKEN[:-3],
        "longer": TOKEN + "0",
        "prefix only": TOKEN[:4],
        "empty": "",
    }
    for token in wrong.values():
        resp = await client.post(
            "/worktool/callback",
            params={"token": token},
            data=body,
            headers={"Content-Type": "application/json"},
        )
        assert resp.status == 403, token
        assert "参数接收成功" not in await resp.text()
    resp = await client.post("/worktool/callback", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 403  # no token at all
    # The token is read from the query only, never from the body.
    resp = await client.post(
        "/worktool/callback",
        data=json.dumps({**callback_body(QUESTION), "token": TOKEN}, ensure_ascii=False).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 403

    for name in ("same length", "shorter", "longer", "prefix only"):
        assert spy.compared(wrong[name]), f"{name}: not compared with hmac.compare_digest"
    assert await accepted(client) == 0  # nothing processed
    assert world.messages() == []

    resp = await client.post(
        "/worktool/callback", params={"token": TOKEN}, data=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 200 and (await resp.json())["code"] == 0
    assert spy.compared(TOKEN)
    assert await accepted(client) == 1
    m = await metrics(client)
    assert m[("job_doctor_messages_rejected_total", 'channel="worktool",reason="token"')] == 7


async def test_wecom_signatures_are_checked_in_constant_time_and_replays_refused(
    make_world: MakeWorld, start_app: StartApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = await make_world()
    client = await start_app(
        world,
        {"JOB_DOCTOR_WECOM_AIBOT__TOKEN": AIBOT_TOKEN, "JOB_DOCTOR_WECOM_AIBOT__ENCODING_AES_KEY": AES_KEY},
    )
    spy = DigestSpy()
    monkeypatch.setattr(hmac, "compare_digest", spy)
    wecom = WeComAibotSide()

    async def post(params: dict[str, str], body: bytes) -> int:
        resp = await client.post("/wecom/aibot", params=params, data=body)
        await resp.read()
        return resp.status

    params, body = wecom.callback(wecom.text(QUESTION))
    assert await post(params, body) == 200
    assert await accepted(client, "wecom_aibot") == 1
    # The same request again (a replay), byte for byte: refused.
    assert await post(params, body) == 403
    # A fresh message whose signature is wrong: same length (one hex digit changed), and other lengths.
    params, body = wecom.callback(wecom.text(QUESTION))
    sig = params["msg_signature"]
    flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    for bad in (flipped, sig[:-2], sig + "a", ""):
        assert await post({**params, "msg_signature": bad}, body) in (400, 403), bad
    for bad in (flipped, sig[:-2], sig + "a"):
        assert spy.compared(bad), f"signature {bad!r} not compared with hmac.compare_digest"
    # Correctly signed but old (a captured request replayed later): refused.
    params, body = wecom.callback(wecom.text(QUESTION), timestamp=int(time.time()) - 3600)
    assert await post(params, body) == 403
    # The same message id with a new nonce and signature is a WeCom retry: answered, queued once.
    msg = wecom.text(QUESTION)
    for _ in range(2):
        params, body = wecom.callback(msg)
        assert await post(params, body) == 200
    assert await accepted(client, "wecom_aibot") == 2  # the first message and the retried one, each once
    m = await metrics(client)
    assert m[("job_doctor_messages_rejected_total", 'channel="wecom_aibot",reason="replay"')] == 1
    assert m[("job_doctor_messages_rejected_total", 'channel="wecom_aibot",reason="stale"')] == 1


async def test_allowlists_silence_other_groups_and_refuse_other_users(
    make_world: MakeWorld, start_app: StartApp, session: aiohttp.ClientSession
) -> None:
    world = await make_world()
    client = await start_app(
        world,
        {
            "JOB_DOCTOR_CHAT__ALLOWED_GROUPS": json.dumps([GROUP], ensure_ascii=False),
            "JOB_DOCTOR_CHAT__ALLOWED_USERS": json.dumps(["张三"], ensure_ascii=False),
        },
    )
    url = str(client.make_url("")).rstrip("/")
    for body in (
        callback_body(f"帮忙看下 {STEP}", group="闲聊群"),
        callback_body(f"帮忙看下 {STEP}", sender="李四"),
        callback_body(f"帮忙看下 {STEP}", sender="李四", group=None),
    ):
        status, _text = await post_callback(session, url, body)
        assert status == 200
    await world.wait_for(lambda m: len(m) >= 2, timeout=10)
    await asyncio.sleep(0.8)
    refusal = "抱歉，你不在 job-doctor 的使用名单中，请联系管理员开通。"
    assert sorted(world.messages()) == sorted([(GROUP, refusal, ("李四",)), ("李四", refusal, ())])
    assert world.step_searches(STEP) == 0  # nothing analysed for them
    status, _text = await post_callback(session, url, callback_body(f"帮忙看下 {STEP}"))
    assert status == 200
    (report,) = await world.wait_reports(1)
    assert report[0] == GROUP and report[2] == ("张三",)


def _seconds_left_in_minute() -> float:
    return 60.0 - time.time() % 60.0


async def test_rate_limits_per_user_and_per_group(
    make_world: MakeWorld, start_app: StartApp, session: aiohttp.ClientSession
) -> None:
    world = await make_world()
    client = await start_app(
        world, {"JOB_DOCTOR_CHAT__USER_RATE_PER_MIN": "3", "JOB_DOCTOR_CHAT__GROUP_RATE_PER_MIN": "7"}
    )
    url = str(client.make_url("")).rstrip("/")
    if _seconds_left_in_minute() < 8:  # the windows are clock minutes: keep the test inside one
        await asyncio.sleep(_seconds_left_in_minute() + 0.1)

    async def say(sender: str, n: int) -> None:
        for i in range(n):
            status, _ = await post_callback(
                session, url, callback_body(f"状态码 31{i} 是什么意思", sender=sender)
            )
            assert status == 200
        await asyncio.sleep(0.4)  # handled in order of arrival

    await say("张三", 5)  # 3 answered, the 4th told once, the 5th silent (group count 5)
    await say("李四", 2)  # both answered (group count 7)
    await say("王五", 2)  # the group is over its limit now: told once
    await world.wait_for(lambda m: len(m) >= 7, timeout=10)
    await asyncio.sleep(0.8)
    by_person: dict[str, list[str]] = {}
    for chat, text, at in world.messages():
        assert chat == GROUP
        by_person.setdefault(at[0], []).append(text)
    assert [t == RATE_LIMITED for t in by_person["张三"]] == [False, False, False, True]
    assert [t == RATE_LIMITED for t in by_person["李四"]] == [False, False]
    assert by_person["王五"] == [RATE_LIMITED]


async def test_huge_bodies_get_no_5xx_and_are_not_processed(
    make_world: MakeWorld, start_app: StartApp, session: aiohttp.ClientSession
) -> None:
    world = await make_world()
    client = await start_app(
        world,
        {"JOB_DOCTOR_WECOM_AIBOT__TOKEN": AIBOT_TOKEN, "JOB_DOCTOR_WECOM_AIBOT__ENCODING_AES_KEY": AES_KEY},
    )
    url = str(client.make_url("")).rstrip("/")
    huge_text = f"帮忙看下 {STEP} " + "很长的消息" * 400_000  # ~6 MB
    body = json.dumps(callback_body(huge_text), ensure_ascii=False).encode()
    async with session.post(
        url + "/worktool/callback",
        params={"token": TOKEN},
        data=io.BytesIO(body),
        headers={"Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 413 and (await resp.json())["message"] == ""  # refused, nothing to post

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit counts as it reads
        for _ in range(64):
            yield b"x" * 65536

    async with session.post(
        url + "/worktool/callback",
        params={"token": TOKEN},
        data=chunks(),
        headers={"Content-Type": "application/json"},
    ) as resp:
        assert resp.status < 500
    async with session.post(
        url + "/worktool/callback", params={"token": "wrong"}, data=io.BytesIO(body)
    ) as resp:
        assert resp.status == 403

    wecom = WeComAibotSide()
    params, small = wecom.callback(wecom.text(f"帮忙看下 {STEP}"))
    padded = json.dumps({"encrypt": json.loads(small)["encrypt"], "pad": "x" * 2_000_000}).encode()
    async with session.post(url + "/wecom/aibot", params=params, data=io.BytesIO(padded)) as resp:
        assert resp.status == 413

    await asyncio.sleep(0.5)
    assert await accepted(client) == 0
    assert world.messages() == []
    assert world.step_searches(STEP) == 0
    m = await metrics(client)
    assert m[("job_doctor_messages_rejected_total", 'channel="worktool",reason="BodyTooLarge"')] == 2
