"""WorkTool callback bodies → IncomingMessage, over real HTTP for the body formats."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.channels.worktool.parse import (
    BodyTooLarge,
    CallbackBodyError,
    Ignored,
    MalformedBody,
    dedup_fingerprint,
    parse_request,
    to_incoming,
)
from bot.core.models import IncomingMessage

ROBOT = "robot-1"
BOT = "job-doctor"
MAX_BYTES = 4096
FIXED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
DOC_EXAMPLE = {
    "spoken": "你好",
    "rawSpoken": "@管家 你好",
    "receivedName": "仑哥",
    "groupName": "测试群1",
    "groupRemark": "测试群1备注名",
    "roomType": 1,
    "atMe": "true",
    "textType": 1,
}

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


def incoming(payload: dict[str, Any], bot_name: str = BOT) -> IncomingMessage:
    result = to_incoming(payload, robot_id=ROBOT, bot_name=bot_name, clock=lambda: FIXED)
    assert isinstance(result, IncomingMessage), result
    return result


def ignored(payload: dict[str, Any]) -> Ignored:
    result = to_incoming(payload, robot_id=ROBOT, bot_name=BOT, clock=lambda: FIXED)
    assert isinstance(result, Ignored), result
    return result


# --------------------------------------------------------------------------- bodies over HTTP


async def _echo(request: web.Request) -> web.Response:
    """A callback handler the way the channel uses parse_request: errors answer politely."""
    try:
        payload = await parse_request(request, max_bytes=MAX_BYTES)
    except CallbackBodyError as exc:
        return web.json_response({"code": 0, "message": "参数接收成功", "error": type(exc).__name__})
    return web.json_response({"code": 0, "message": "参数接收成功", "payload": payload})


@pytest.fixture
async def client(aiohttp_client: ClientFactory) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    app.router.add_post("/worktool/callback", _echo)
    return await aiohttp_client(app)


async def post(client: TestClient[web.Request, web.Application], **kwargs: Any) -> dict[str, Any]:
    resp = await client.post("/worktool/callback", **kwargs)
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    return body


async def test_json_body(client: TestClient[web.Request, web.Application]) -> None:
    body = await post(client, json=DOC_EXAMPLE)
    msg = incoming(body["payload"])
    assert (msg.chat_id, msg.chat_name, msg.is_group, msg.sender_id, msg.text, msg.mentioned) == (
        "测试群1备注名",
        "测试群1",
        True,
        "仑哥",
        "你好",
        True,
    )
    assert msg.channel == "worktool" and msg.received_at == FIXED


async def test_urlencoded_form_with_string_fields(client: TestClient[web.Request, web.Application]) -> None:
    form = {k: str(v) for k, v in DOC_EXAMPLE.items()} | {"roomType": "3", "spoken": "看下 20031265375"}
    body = await post(client, data=form)
    msg = incoming(body["payload"])
    assert msg.is_group and msg.text == "看下 20031265375" and msg.mentioned


async def test_multipart_form(client: TestClient[web.Request, web.Application]) -> None:
    form = aiohttp.FormData()
    for key, value in {**DOC_EXAMPLE, "roomType": "4", "spoken": "状态码 310 是什么意思"}.items():
        form.add_field(key, str(value))
    body = await post(client, data=form)
    msg = incoming(body["payload"])
    assert not msg.is_group and msg.chat_id == "仑哥" and msg.text == "状态码 310 是什么意思"


async def test_json_without_content_type_is_sniffed(client: TestClient[web.Request, web.Application]) -> None:
    raw = json.dumps(DOC_EXAMPLE, ensure_ascii=False).encode()
    body = await post(client, data=raw, headers={"Content-Type": ""})
    assert incoming(body["payload"]).text == "你好"


async def test_json_sent_as_form_content_type_is_sniffed(
    client: TestClient[web.Request, web.Application],
) -> None:
    raw = json.dumps(DOC_EXAMPLE, ensure_ascii=False).encode()
    body = await post(client, data=raw, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert incoming(body["payload"]).chat_id == "测试群1备注名"


async def test_form_sent_as_text_plain_is_sniffed(client: TestClient[web.Request, web.Application]) -> None:
    raw = "spoken=hi&receivedName=%E4%BB%91%E5%93%A5&roomType=2&textType=1"
    body = await post(client, data=raw.encode(), headers={"Content-Type": "text/plain"})
    assert incoming(body["payload"]).chat_id == "仑哥"


@pytest.mark.parametrize(
    ("data", "ctype"),
    [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b"", "application/json"),
        (b"hello", ""),
    ],
)
async def test_malformed_bodies_are_answered_politely(
    client: TestClient[web.Request, web.Application], data: bytes, ctype: str
) -> None:
    body = await post(client, data=data, headers={"Content-Type": ctype})
    assert body["code"] == 0 and body["error"] == MalformedBody.__name__


async def test_oversized_body_is_rejected(client: TestClient[web.Request, web.Application]) -> None:
    big = {**DOC_EXAMPLE, "spoken": "x" * (MAX_BYTES + 1)}
    body = await post(client, json=big)
    assert body["code"] == 0 and body["error"] == BodyTooLarge.__name__


async def test_oversized_chunked_body_is_rejected(client: TestClient[web.Request, web.Application]) -> None:
    async def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 1000

    body = await post(client, data=chunks(), headers={"Content-Type": "application/json"})
    assert body["error"] == BodyTooLarge.__name__


# --------------------------------------------------------------------------- payload → message


def test_real_capture_with_strings_and_nbsp_after_the_mention() -> None:
    msg = incoming(
        {
            "spoken": "",
            "rawSpoken": "@job-doctor\u00a0 帮忙看下 20031265375 为啥失败",
            "receivedName": "张三",
            "groupName": "运维值班群",
            "roomType": "3",
            "atMe": "false",
            "textType": "1",
        }
    )
    assert msg.text == "帮忙看下 20031265375 为啥失败"
    assert msg.mentioned  # atMe is unreliable; the mention text decides
    assert msg.chat_id == "运维值班群" and msg.chat_name == "运维值班群"


@pytest.mark.parametrize("space", ["\u00a0", "\u2005", "\u3000", "\u200b", " \u00a0 "])
def test_unicode_spaces_are_normalised(space: str) -> None:
    msg = incoming({**DOC_EXAMPLE, "spoken": "", "rawSpoken": f"@{BOT}{space}看下{space}20031265375{space}"})
    assert msg.text == "看下 20031265375"


def test_spoken_that_still_carries_the_mention_is_stripped() -> None:
    assert incoming({**DOC_EXAMPLE, "spoken": f"@{BOT}\u2005看下 123"}).text == "看下 123"


def test_unknown_bot_name_strips_the_first_mention_of_an_at_me_message() -> None:
    msg = incoming({**DOC_EXAMPLE, "spoken": "", "rawSpoken": "@管家 你好"}, bot_name="")
    assert msg.text == "你好"


@pytest.mark.parametrize(
    ("at_me", "raw", "expected"),
    [
        ("true", "随便聊聊", True),
        (True, "随便聊聊", True),
        (1, "随便聊聊", True),
        ("false", "随便聊聊", False),
        (False, "随便聊聊", False),
        ("false", f"@{BOT} 看下", True),
        (None, f"看下这个 @{BOT}", True),
        ("false", f"@{BOT}2 看下", False),  # someone else
    ],
)
def test_mentioned_in_groups(at_me: Any, raw: str, expected: bool) -> None:
    payload = {**DOC_EXAMPLE, "spoken": "", "rawSpoken": raw, "atMe": at_me}
    assert incoming(payload).mentioned is expected


@pytest.mark.parametrize("room_type", [2, "2", 4, "4"])
def test_private_chats_are_always_mentioned(room_type: Any) -> None:
    msg = incoming(
        {
            "spoken": "你好",
            "rawSpoken": "你好",
            "receivedName": "李四",
            "roomType": room_type,
            "atMe": "false",
        }
    )
    assert (msg.is_group, msg.chat_id, msg.chat_name, msg.sender_id, msg.sender_name, msg.mentioned) == (
        False,
        "李四",
        "李四",
        "李四",
        "李四",
        True,
    )


def test_group_without_remark_uses_the_group_name() -> None:
    msg = incoming({**DOC_EXAMPLE, "groupRemark": ""})
    assert msg.chat_id == "测试群1"


def test_text_type_15_reply_text_is_a_message() -> None:
    assert incoming({**DOC_EXAMPLE, "textType": "15"}).text == "你好"


def test_emoji_only_text_is_a_message() -> None:
    assert incoming({**DOC_EXAMPLE, "spoken": "👍🏻"}).text == "👍🏻"


@pytest.mark.parametrize("text_type", [2, "3", 5, 8, 9, 13, 0])
def test_non_text_addressed_to_the_bot_is_an_unsupported_message(text_type: Any) -> None:
    # The conversation answers it (politely, once per window, under the same access rules).
    msg = incoming({**DOC_EXAMPLE, "textType": text_type})
    assert msg.content == "unsupported" and msg.text == ""
    assert (msg.chat_id, msg.is_group, msg.sender_name) == ("测试群1备注名", True, "仑哥")


def test_non_text_without_mention_is_ignored() -> None:
    result = ignored({**DOC_EXAMPLE, "textType": 2, "atMe": "false", "rawSpoken": ""})
    assert result.reason == "non_text"
    assert (result.chat_id, result.is_group, result.sender_name) == ("测试群1备注名", True, "仑哥")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({**DOC_EXAMPLE, "receivedName": ""}, "missing_sender"),
        ({k: v for k, v in DOC_EXAMPLE.items() if k != "receivedName"}, "missing_sender"),
        ({**DOC_EXAMPLE, "spoken": "", "rawSpoken": ""}, "empty_text"),
        ({**DOC_EXAMPLE, "spoken": " \u00a0", "rawSpoken": f"@{BOT}\u2005"}, "empty_text"),
        ({**DOC_EXAMPLE, "roomType": "7"}, "unknown_room_type"),
        ({**DOC_EXAMPLE, "roomType": "群"}, "unknown_room_type"),
        ({**DOC_EXAMPLE, "groupName": "", "groupRemark": ""}, "missing_chat"),
        ({}, "missing_sender"),
        ({**DOC_EXAMPLE, "receivedName": BOT}, "own_message"),
        ({"spoken": ["not", "a", "string"], "receivedName": {"x": 1}, "roomType": 2}, "missing_sender"),
    ],
)
def test_unusable_payloads_are_ignored_never_raised(payload: dict[str, Any], reason: str) -> None:
    assert ignored(payload).reason == reason


def test_missing_room_type_is_inferred_from_group_fields() -> None:
    group = {k: v for k, v in DOC_EXAMPLE.items() if k != "roomType"}
    assert incoming(group).is_group
    private = {"spoken": "hi", "receivedName": "李四"}
    assert not incoming(private).is_group


def test_reply_context_and_undocumented_message_id() -> None:
    msg = incoming({**DOC_EXAMPLE, "messageId": "m-1"})
    assert msg.raw_id == "m-1" and msg.reply_context == {"robot_id": ROBOT, "room_type": "1"}
    assert incoming(DOC_EXAMPLE).raw_id is None


def test_default_clock_is_now() -> None:
    before = datetime.now(UTC)
    result = to_incoming(DOC_EXAMPLE, robot_id=ROBOT, bot_name=BOT)
    assert isinstance(result, IncomingMessage) and result.received_at >= before


# --------------------------------------------------------------------------- dedup


def test_dedup_fingerprint_is_stable_over_spacing_and_types() -> None:
    a = incoming({**DOC_EXAMPLE, "spoken": "看下 20031265375"})
    b = incoming(
        {
            **{k: str(v) for k, v in DOC_EXAMPLE.items()},
            "spoken": "",
            "rawSpoken": "@管家\u00a0看下\u2005 20031265375 ",
        },
        bot_name="管家",
    )
    assert dedup_fingerprint(a, ROBOT) == dedup_fingerprint(b, ROBOT)
    assert len(dedup_fingerprint(a, ROBOT)) == 64


@pytest.mark.parametrize(
    "change",
    [{"spoken": "看下 20031265376"}, {"receivedName": "王五"}, {"groupRemark": "别的群"}],
)
def test_dedup_fingerprint_differs(change: dict[str, Any]) -> None:
    base = incoming({**DOC_EXAMPLE, "spoken": "看下 20031265375"})
    other = incoming({**DOC_EXAMPLE, "spoken": "看下 20031265375", **change})
    assert dedup_fingerprint(base, ROBOT) != dedup_fingerprint(other, ROBOT)
    assert dedup_fingerprint(base, ROBOT) != dedup_fingerprint(base, "robot-2")


_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=40))


@settings(max_examples=300, deadline=None)
@given(
    payload=st.fixed_dictionaries(
        {},
        optional={
            name: _values
            for name in (
                "spoken",
                "rawSpoken",
                "receivedName",
                "groupName",
                "groupRemark",
                "roomType",
                "atMe",
                "textType",
            )
        },
    )
)
def test_any_payload_gives_a_message_or_ignored(payload: dict[str, Any]) -> None:
    result = to_incoming(payload, robot_id=ROBOT, bot_name=BOT, clock=lambda: FIXED)
    assert isinstance(result, IncomingMessage | Ignored)
    if isinstance(result, IncomingMessage):
        # a text message has text; an unsupported one (image, file) has none and was addressed to us
        assert bool(result.text) == (result.content == "text")
        assert result.text == result.text.strip() and result.chat_id and result.sender_id
        assert result.mentioned or (result.is_group and result.content == "text")
