"""WorkToolSender over real HTTP against the fake WorkTool cloud."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.channels.worktool.sender import (
    HistoryUnavailable,
    SendCommand,
    SendFailed,
    SendOutcomeUnknown,
    SendResult,
    SlidingWindowLimiter,
    WorkToolSender,
)
from tests.support.fakes.worktool import FakeWorkTool

ROBOT = "robot-1"
CHAT = "运维值班群"
HEADER = "【job-doctor 诊断报告】stepInstanceId=20031265375"

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]


class VirtualClock:
    """Monotonic clock whose sleep returns at once and moves time forward."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def fake(clock: VirtualClock) -> FakeWorkTool:
    return FakeWorkTool(robot_ids=[ROBOT], clock=clock)


@pytest.fixture
async def server(aiohttp_server: ServerFactory, fake: FakeWorkTool) -> TestServer:
    return await aiohttp_server(fake.app())


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def make_sender(
    session: aiohttp.ClientSession, base_url: str, clock: VirtualClock, **overrides: Any
) -> WorkToolSender:
    options: dict[str, Any] = {
        "robot_id": ROBOT,
        "timeout_s": 2.0,
        "send_interval_s": 0.0,
        "clock": clock,
        "sleep": clock.sleep,
    }
    options.update(overrides)
    return WorkToolSender(session, base_url=base_url, **options)


def url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


def now_ms() -> int:
    return int(time.time() * 1000)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --------------------------------------------------------------------------- wire format


async def test_send_text_body_shape_and_delivery(
    fake: FakeWorkTool, server: TestServer, session: aiohttp.ClientSession, clock: VirtualClock
) -> None:
    sender = make_sender(session, url(server) + "/", clock)
    result = await sender.send_text(CHAT, "第一行\n第二行", ["张三"])
    assert result.accepted and result.message_id == "1582945256466776064" and result.code == 200
    assert fake.send_bodies == [
        {
            "socketType": 2,
            "list": [
                {"type": 203, "titleList": [CHAT], "receivedContent": "第一行\n第二行", "atList": ["张三"]}
            ],
        }
    ]
    assert fake.messages() == [(CHAT, "第一行\n第二行", ("张三",))]


async def test_private_message_without_at_list(
    fake: FakeWorkTool, server: TestServer, session: aiohttp.ClientSession, clock: VirtualClock
) -> None:
    await make_sender(session, url(server), clock).send_text("李四", "你好")
    assert fake.send_bodies[0]["list"][0]["atList"] == []
    assert fake.messages("李四") == [("李四", "你好", ())]


async def test_unknown_robot_is_not_accepted(
    fake: FakeWorkTool, server: TestServer, session: aiohttp.ClientSession, clock: VirtualClock
) -> None:
    result = await make_sender(session, url(server), clock, robot_id="stolen").send_text(CHAT, "x")
    assert result == SendResult(None, False, code=101013, message="非法权限")
    assert fake.messages() == []


async def test_fake_refuses_a_command_without_title(
    fake: FakeWorkTool, server: TestServer, session: aiohttp.ClientSession, clock: VirtualClock
) -> None:
    result = await make_sender(session, url(server), clock).send_text("", "x")
    assert not result.accepted and result.code == 101011
    assert fake.messages() == []


async def test_business_error_is_not_retried(
    fake: FakeWorkTool, server: TestServer, session: aiohttp.ClientSession, clock: VirtualClock
) -> None:
    fake.reject_next(code=101012, message="非法操作")
    result = await make_sender(session, url(server), clock).send_text(CHAT, "x")
    assert (result.accepted, result.code, result.message) == (False, 101012, "非法操作")
    assert len(fake.request_times) == 1 and fake.messages() == []


async def test_batch_splits_at_100_commands(
    fake: FakeWorkTool, server: TestServer, session: aiohttp.ClientSession, clock: VirtualClock
) -> None:
    commands = [SendCommand(f"群{i % 3}", f"消息 {i}") for i in range(150)]
    results = await make_sender(session, url(server), clock).send_batch(commands)
    assert [len(body["list"]) for body in fake.send_bodies] == [100, 50]
    assert all(len(cmd["titleList"]) == 1 for body in fake.send_bodies for cmd in body["list"])
    assert len(results) == 150 and all(r.accepted for r in results)
    assert {r.message_id for r in results[:100]} != {r.message_id for r in results[100:]}
    assert [text for _, text, _ in fake.messages()] == [f"消息 {i}" for i in range(150)]


# --------------------------------------------------------------------------- rate limit and pacing


async def test_61st_request_in_a_minute_waits(
    clock: VirtualClock, aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    fake = FakeWorkTool(robot_ids=[ROBOT], clock=clock, enforce_per_minute=60)
    server = await aiohttp_server(fake.app())
    sender = make_sender(session, url(server), clock, requests_per_minute=60)
    start = clock.now
    for i in range(60):
        assert (await sender.send_text(CHAT, f"m{i}")).accepted
    assert clock.now == start  # the first 60 go out at once
    assert (await sender.send_text(CHAT, "m60")).accepted
    assert clock.now >= start + 60.0  # the 61st waited for the window to slide
    assert len(fake.messages()) == 61
    assert fake.max_requests_per_window() == 60


async def test_fake_answers_429_beyond_its_limit_and_the_client_backs_off(
    clock: VirtualClock, aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    fake = FakeWorkTool(robot_ids=[ROBOT], clock=clock, enforce_per_minute=2)
    server = await aiohttp_server(fake.app())
    sender = make_sender(session, url(server), clock, requests_per_minute=100, backoff_s=31.0)
    for i in range(3):
        assert (await sender.send_text(CHAT, f"m{i}")).accepted
    assert [text for _, text, _ in fake.messages()] == ["m0", "m1", "m2"]
    assert 30.0 in clock.sleeps  # the 429 was retried after a (capped) backoff


async def test_shared_limiter_counts_history_reads_too(
    fake: FakeWorkTool, server: TestServer, session: aiohttp.ClientSession, clock: VirtualClock
) -> None:
    limiter = SlidingWindowLimiter(3, clock=clock, sleep=clock.sleep)
    a = make_sender(session, url(server), clock, limiter=limiter)
    b = make_sender(session, url(server), clock, limiter=limiter)
    await a.send_text(CHAT, "a")
    await b.send_text(CHAT, "b")
    await a.find_sent(CHAT, "a", now_ms() - 60_000)
    assert clock.sleeps == []
    await b.send_text(CHAT, "c")
    assert clock.sleeps and clock.sleeps[-1] == pytest.approx(60.0)


async def test_pacing_one_text_per_interval(
    fake: FakeWorkTool, server: TestServer, session: aiohttp.ClientSession, clock: VirtualClock
) -> None:
    sender = make_sender(session, url(server), clock, send_interval_s=4.5)
    await sender.send_text(CHAT, "1")
    await sender.send_text(CHAT, "2")
    await sender.send_batch([SendCommand(CHAT, "3"), SendCommand(CHAT, "4"), SendCommand(CHAT, "5")])
    await sender.send_text(CHAT, "6")
    times = fake.request_times
    assert [round(b - a, 6) for a, b in itertools.pairwise(times)] == [4.5, 4.5, 13.5]


async def test_concurrent_sends_are_paced_in_real_time(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    fake = FakeWorkTool(robot_ids=[ROBOT])
    server = await aiohttp_server(fake.app())
    sender = WorkToolSender(
        session, base_url=url(server), robot_id=ROBOT, timeout_s=2.0, send_interval_s=0.05
    )
    await asyncio.gather(*(sender.send_text(CHAT, str(i)) for i in range(4)))
    times = sorted(fake.request_times)
    # paced on the client; arrival gaps jitter on a loaded machine, the overall span does not shrink
    assert times[-1] - times[0] >= 3 * 0.05 * 0.8
    assert sorted(text for _, text, _ in fake.messages()) == ["0", "1", "2", "3"]


# --------------------------------------------------------------------------- retries and lost answers


async def test_retry_on_500_then_success_delivers_one_copy(
    fake: FakeWorkTool, server: TestServer, session: aiohttp.ClientSession, clock: VirtualClock
) -> None:
    fake.fail_next(2)
    result = await make_sender(session, url(server), clock, backoff_s=1.0).send_text(CHAT, HEADER)
    assert result.accepted
    assert fake.messages() == [(CHAT, HEADER, ())]
    assert len(fake.request_times) == 3
    assert clock.sleeps == [1.0, 2.0]


async def test_429_honours_retry_after(
    fake: FakeWorkTool, server: TestServer, session: aiohttp.ClientSession, clock: VirtualClock
) -> None:
    fake.rate_limit_next(1, retry_after=7)
    result = await make_sender(session, url(server), clock, backoff_s=1.0).send_text(CHAT, "x")
    assert result.accepted and clock.sleeps == [7.0]
    assert len(fake.messages()) == 1


async def test_persistent_500_raises_send_failed(
    fake: FakeWorkTool, server: TestServer, session: aiohttp.ClientSession, clock: VirtualClock
) -> None:
    fake.fail_next(5)
    with pytest.raises(SendFailed):
        await make_sender(session, url(server), clock, max_attempts=3).send_text(CHAT, "x")
    assert len(fake.request_times) == 3 and fake.messages() == []


async def test_connection_refused_is_retried_then_fails(
    session: aiohttp.ClientSession, clock: VirtualClock
) -> None:
    sender = make_sender(session, closed_port_url(), clock, max_attempts=2, backoff_s=0.5)
    with pytest.raises(SendFailed):
        await sender.send_text(CHAT, "x")
    assert clock.sleeps == [0.5]


async def test_read_timeout_after_sending_is_unknown_and_history_finds_it(
    fake: FakeWorkTool, server: TestServer, session: aiohttp.ClientSession, clock: VirtualClock
) -> None:
    since = now_ms() - 1000
    fake.hang_next(1, seconds=30)
    sender = make_sender(session, url(server), clock, timeout_s=0.3)
    with pytest.raises(SendOutcomeUnknown):
        await sender.send_text(CHAT, HEADER + "\n问题概述：……", ["张三"])
    assert len(fake.request_times) == 1  # never resent blindly
    assert fake.messages() == [(CHAT, HEADER + "\n问题概述：……", ("张三",))]
    assert await sender.find_sent(CHAT, HEADER, since)
    assert not await sender.find_sent("别的群", HEADER, since)
    assert not await sender.find_sent(CHAT, "【job-doctor 诊断报告】stepInstanceId=1", since)
    assert not await sender.find_sent(CHAT, HEADER, now_ms() + 60_000)


async def test_unknown_outcome_in_a_batch_reports_completed_chunks(
    fake: FakeWorkTool, server: TestServer, session: aiohttp.ClientSession, clock: VirtualClock
) -> None:
    commands = [SendCommand(CHAT, f"m{i}") for i in range(120)]
    sender = make_sender(session, url(server), clock, timeout_s=0.3)
    fake.hang_next(1, seconds=30, after=1)  # the first chunk goes through, the second hangs
    with pytest.raises(SendOutcomeUnknown) as info:
        await sender.send_batch(commands)
    assert len(info.value.completed) == 100 and all(r.accepted for r in info.value.completed)
    assert len(fake.messages()) == 120


# --------------------------------------------------------------------------- history


async def test_find_sent_ignores_a_command_the_phone_failed(
    fake: FakeWorkTool, server: TestServer, session: aiohttp.ClientSession, clock: VirtualClock
) -> None:
    fake.fail_delivery_next(1)
    sender = make_sender(session, url(server), clock)
    assert (await sender.send_text(CHAT, HEADER)).accepted
    assert fake.messages() == []
    assert not await sender.find_sent(CHAT, HEADER, now_ms() - 60_000)


async def test_find_sent_pages_through_history(
    fake: FakeWorkTool, server: TestServer, session: aiohttp.ClientSession, clock: VirtualClock
) -> None:
    sender = make_sender(session, url(server), clock, history_page_size=10, history_max_pages=5)
    await sender.send_text(CHAT, HEADER)
    await sender.send_batch([SendCommand("其他群", f"m{i}") for i in range(25)])
    requests_before = len(fake.request_times)
    assert await sender.find_sent(CHAT, HEADER, now_ms() - 60_000)
    assert len(fake.request_times) - requests_before == 3  # newest first: found on page 3
    assert not await sender.find_sent(CHAT, "没有发过", now_ms() - 60_000)


async def test_history_error_raises_history_unavailable(
    fake: FakeWorkTool, server: TestServer, session: aiohttp.ClientSession, clock: VirtualClock
) -> None:
    fake.fail_history_next(1)
    with pytest.raises(HistoryUnavailable):
        await make_sender(session, url(server), clock).find_sent(CHAT, HEADER, 0)


async def test_history_unreachable_raises_history_unavailable(
    session: aiohttp.ClientSession, clock: VirtualClock
) -> None:
    with pytest.raises(HistoryUnavailable):
        await make_sender(session, closed_port_url(), clock).find_sent(CHAT, HEADER, 0)
