"""Group robot webhook sender against the fake WeCom webhook over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from bot.channels.webhook import WebhookError, WebhookPayloadError, WebhookSender
from tests.support.fakes.wecom_webhook import FakeWeComWebhook

KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
OTHER_KEY = "0b5c0a2e-1111-2222-3333-444455556666"

ServerFactory = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def start(aiohttp_server: ServerFactory, fake: FakeWeComWebhook) -> str:
    server = await aiohttp_server(fake.app())
    return str(server.make_url("")).rstrip("/")


def sender(session: aiohttp.ClientSession, base_url: str, **kw: Any) -> WebhookSender:
    kw.setdefault("rate_limit_pause_s", 0.05)
    kw.setdefault("busy_pause_s", 0.01)
    kw.setdefault("timeout_s", 5)
    return WebhookSender(session, base_url=base_url, **kw)


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + chunk(b"IEND", b"")
    )


async def test_short_markdown_is_one_message(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    fake = FakeWeComWebhook([KEY])
    s = sender(session, await start(aiohttp_server, fake))
    md = "【job-doctor 日报】\n**失败步骤**：3\n> `<script>` 不会被执行"
    assert await s.send_markdown(KEY, md) == 1
    assert [(m.msgtype, m.content) for m in fake.messages] == [("markdown", md)]


async def test_markdown_v2_msgtype(aiohttp_server: ServerFactory, session: aiohttp.ClientSession) -> None:
    fake = FakeWeComWebhook([KEY])
    s = sender(session, await start(aiohttp_server, fake))
    await s.send_markdown(KEY, "```\ncode\n```", msgtype="markdown_v2")
    assert fake.messages[0].msgtype == "markdown_v2"


async def test_long_cjk_markdown_split_by_bytes_at_lines(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    fake = FakeWeComWebhook([KEY])
    s = sender(session, await start(aiohttp_server, fake))
    lines = [
        f"- 第 {i} 台主机 10.0.{i}.1：GSE Agent 异常，任务下发失败，请检查网络与进程状态" for i in range(70)
    ]
    header = "【job-doctor 日报】2024-05-01"
    md = header + "\n\n" + "\n".join(lines)
    assert len(md.encode()) > 4096 >= len(md)  # would fit if counted in characters
    n = await s.send_markdown(KEY, md)
    parts = fake.contents(KEY)
    assert n == len(parts) >= 2
    for i, part in enumerate(parts, 1):
        assert len(part.encode("utf-8")) <= 4096
        assert part.startswith(f"{header} ({i}/{n})\n")
    sent_lines = [line for p in parts for line in p.split("\n")[1:] if line]
    assert sent_lines == lines  # every line whole, in order


async def test_one_long_line_split_never_inside_a_character(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    fake = FakeWeComWebhook([KEY])
    s = sender(session, await start(aiohttp_server, fake))
    line = "诊断🙂" * 1500  # 3- and 4-byte characters, no line breaks, ~15 kB
    n = await s.send_markdown(KEY, line, header="")
    parts = fake.contents(KEY)  # the fake decodes bodies as strict UTF-8
    assert n == len(parts) > 1
    assert all(len(p.encode()) <= 4096 for p in parts)
    assert "".join(p.split("\n", 1)[1] for p in parts) == line
    assert parts[0].startswith(f"(1/{n})\n")


async def test_text_split_at_2048_bytes_with_mentions_on_first_part(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    fake = FakeWeComWebhook([KEY])
    s = sender(session, await start(aiohttp_server, fake))
    text = "\n\n".join(f"第 {i} 段：作业步骤执行失败，原因是目标主机 Agent 不在线。" * 3 for i in range(20))
    n = await s.send_text(KEY, text, mentioned_list=["zhangsan", "@all"])
    assert n == len(fake.messages) > 1
    assert all(m.msgtype == "text" and len(m.content.encode()) <= 2048 for m in fake.messages)
    assert fake.messages[0].body["mentioned_list"] == ["zhangsan", "@all"]
    assert all("mentioned_list" not in m.body for m in fake.messages[1:])


async def test_image_sent_as_base64_with_md5(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    fake = FakeWeComWebhook([KEY])
    s = sender(session, await start(aiohttp_server, fake))
    png = tiny_png()
    await s.send_image(KEY, png)
    (msg,) = fake.messages
    assert msg.msgtype == "image"
    assert base64.b64decode(msg.body["base64"]) == png
    assert msg.body["md5"] == hashlib.md5(png).hexdigest()


async def test_oversized_or_foreign_image_rejected_before_sending(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    fake = FakeWeComWebhook([KEY])
    s = sender(session, await start(aiohttp_server, fake))
    big = tiny_png() + b"\x00" * (2 * 1024 * 1024)
    with pytest.raises(WebhookPayloadError, match="2097152"):
        await s.send_image(KEY, big)
    with pytest.raises(WebhookPayloadError, match="PNG or JPEG"):
        await s.send_image(KEY, b"GIF89a....")
    assert fake.attempts == []


async def test_invalid_key_raises_without_retry_and_never_logs_key(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    fake = FakeWeComWebhook([KEY])
    s = sender(session, await start(aiohttp_server, fake))
    with capture_logs() as logs, pytest.raises(WebhookError) as info:
        await s.send_markdown(OTHER_KEY, "hello")
    assert info.value.errcode == 93000
    assert len(fake.attempts) == 1
    assert OTHER_KEY not in str(info.value) and OTHER_KEY not in repr(info.value.__cause__)
    assert logs and all(OTHER_KEY not in repr(entry) for entry in logs)


async def test_rate_limit_errcode_pauses_and_retries(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    fake = FakeWeComWebhook([KEY])
    s = sender(session, await start(aiohttp_server, fake), rate_limit_pause_s=0.1)
    fake.inject(45009, times=2)
    started = time.monotonic()
    assert await s.send_text(KEY, "告警") == 1
    assert time.monotonic() - started >= 0.2
    assert [a.errcode for a in fake.attempts] == [45009, 45009, 0]
    assert fake.contents() == ["告警"]


async def test_rate_limit_retries_are_bounded(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    fake = FakeWeComWebhook([KEY])
    s = sender(session, await start(aiohttp_server, fake), max_retries=2)
    fake.inject(45009, times=10)
    with pytest.raises(WebhookError) as info:
        await s.send_text(KEY, "告警")
    assert info.value.errcode == 45009
    assert len(fake.attempts) == 3
    assert fake.messages == []


async def test_busy_is_retried_other_errors_are_not(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    fake = FakeWeComWebhook([KEY])
    s = sender(session, await start(aiohttp_server, fake))
    fake.inject(-1)
    assert await s.send_text(KEY, "一") == 1
    fake.inject(40008)
    with pytest.raises(WebhookError) as info:
        await s.send_text(KEY, "二")
    assert info.value.errcode == 40008
    assert [a.errcode for a in fake.attempts] == [-1, 0, 40008]


async def test_failure_mid_message_reports_parts_sent(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    fake = FakeWeComWebhook([KEY])
    s = sender(session, await start(aiohttp_server, fake))
    text = "\n\n".join(["段落" * 300] * 3)  # three parts of ~1800 bytes
    fake.inject(44004, after=1)
    with pytest.raises(WebhookError) as info:
        await s.send_text(KEY, text)
    assert info.value.parts_sent == 1 and len(fake.messages) == 1


async def test_sliding_window_waits_instead_of_dropping(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    # the fake's window is a little shorter: request latency must not make it see 4 in one window
    fake = FakeWeComWebhook([KEY], per_minute=3, window_s=0.3)
    s = sender(session, await start(aiohttp_server, fake), per_minute=3, window_s=0.4, rate_limit_pause_s=5)
    started = time.monotonic()
    for i in range(7):
        await s.send_text(KEY, f"消息 {i}")
    elapsed = time.monotonic() - started
    assert fake.contents() == [f"消息 {i}" for i in range(7)]
    assert all(a.errcode == 0 for a in fake.attempts)
    assert 0.8 <= elapsed < 3


async def test_window_is_per_key(aiohttp_server: ServerFactory, session: aiohttp.ClientSession) -> None:
    fake = FakeWeComWebhook([KEY, OTHER_KEY])
    s = sender(session, await start(aiohttp_server, fake), per_minute=2, window_s=30)
    started = time.monotonic()
    for key in (KEY, KEY, OTHER_KEY, OTHER_KEY):
        await s.send_text(key, "x")
    assert time.monotonic() - started < 2
    assert len(fake.messages) == 4


async def test_parts_of_concurrent_messages_do_not_interleave(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    fake = FakeWeComWebhook([KEY])
    s = sender(session, await start(aiohttp_server, fake))
    a = "A 报告\n\n" + "\n\n".join(["甲" * 1000] * 4)
    b = "B 报告\n\n" + "\n\n".join(["乙" * 1000] * 4)
    na, nb = await asyncio.gather(s.send_markdown(KEY, a), s.send_markdown(KEY, b))
    heads = [c.split(" ")[0] for c in fake.contents()]
    assert heads in (["A"] * na + ["B"] * nb, ["B"] * nb + ["A"] * na)


async def test_unreachable_server_is_a_webhook_error_without_key(session: aiohttp.ClientSession) -> None:
    s = WebhookSender(session, base_url="http://127.0.0.1:9", timeout_s=2)
    with pytest.raises(WebhookError) as info:
        await s.send_text(KEY, "x")
    assert info.value.errcode is None
    assert KEY not in str(info.value) and info.value.__cause__ is None


# --------------------------------------------------------------------------- the fake itself


@pytest.mark.parametrize(
    ("payload", "errcode"),
    [
        ({"msgtype": "text", "text": {"content": "ok"}}, 0),
        ({"msgtype": "video", "video": {}}, 40008),
        ({"msgtype": "text", "text": {"content": "  "}}, 44004),
        ({"msgtype": "text", "text": {"content": "字" * 683}}, 45002),  # 2049 bytes
        ({"msgtype": "markdown", "markdown": {"content": "字" * 1365}}, 0),  # 4095 bytes
        ({"msgtype": "markdown", "markdown": {"content": "字" * 1366}}, 45002),
        ({"msgtype": "text", "text": {"content": "x", "mentioned_list": "all"}}, 40058),
        (
            {
                "msgtype": "image",
                "image": {"base64": base64.b64encode(b"\x89PNG\r\n\x1a\nxx").decode(), "md5": "0"},
            },
            40058,
        ),
    ],
)
async def test_fake_validates_bodies(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, payload: dict[str, Any], errcode: int
) -> None:
    fake = FakeWeComWebhook([KEY])
    url = await start(aiohttp_server, fake) + "/cgi-bin/webhook/send"
    async with session.post(url, params={"key": KEY}, json=payload) as resp:
        assert resp.status == 200
        assert (await resp.json())["errcode"] == errcode
    assert len(fake.messages) == (1 if errcode == 0 else 0)


async def test_fake_rejects_lone_surrogates(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    fake = FakeWeComWebhook([KEY])
    url = await start(aiohttp_server, fake) + "/cgi-bin/webhook/send"
    body = b'{"msgtype": "text", "text": {"content": "\\ud800"}}'
    async with session.post(url, params={"key": KEY}, data=body) as resp:
        assert (await resp.json())["errcode"] == 40033
