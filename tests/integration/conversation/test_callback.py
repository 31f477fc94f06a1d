"""The WorkTool callback route: token, fast ack, bad bodies, non-text messages."""

from __future__ import annotations

import asyncio
import statistics
from urllib.parse import urlencode

import aiohttp

from tests.integration.conversation.conftest import MakeRig
from tests.integration.conversation.harness import GROUP, TOKEN, callback_body


async def test_wrong_or_missing_token_is_refused_and_nothing_is_sent(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    rig = await make_rig(backend)
    body = callback_body("帮助")
    for token in (None, "", "wrong", TOKEN + "x", TOKEN[:-1]):
        resp = await rig.post(body, token=token)
        assert resp.status == 403
        assert (await resp.json())["code"] != 0
    assert await rig.quiet(0.6) == []


async def test_valid_callback_is_acked_fast_with_code_0(make_rig: MakeRig, backend: tuple[str, str]) -> None:
    rig = await make_rig(backend, chat={"user_rate_per_min": 100, "group_rate_per_min": 100})
    for i in range(20):
        answer = await rig.say(f"状态码 {300 + i} 是什么意思")
        assert answer == {"code": 0, "message": "参数接收成功"}
    # Well inside WorkTool's 3 s budget even on a loaded test machine.
    assert statistics.median(rig.latencies) < 0.2
    assert max(rig.latencies) < 1.0
    # The answers went out through the send API, not in the callback response.
    await rig.wait_count(20)


async def test_malformed_or_huge_bodies_get_4xx_and_no_reply(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    rig = await make_rig(backend)
    json_header = {"Content-Type": "application/json"}
    bodies: list[tuple[bytes, dict[str, str]]] = [
        (b"", json_header),
        (b"{not json", json_header),
        (b"[1, 2, 3]", json_header),
        (b'"just a string"', json_header),
        (b"\xff\xfe\x00garbage", {"Content-Type": "application/octet-stream"}),
        (b'{"spoken": {"nested": true}, "roomType": [], "receivedName": 5}', json_header),
        (b'{"roomType": "99", "receivedName": "x", "spoken": "hi"}', json_header),
        (b"spoken=%E5%B8%AE%E5%8A%A9&roomType=3", {"Content-Type": "application/x-www-form-urlencoded"}),
        (b"x" * (rig.settings.http.max_body_bytes + 10), json_header),
        (b'{"spoken": "' + b"a" * 400_000 + b'"}', json_header),
        # nested too deeply for the JSON decoder (was an HTTP 500), huge numbers, invalid UTF-8
        (b"[" * 5000, json_header),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, json_header),
        (b'{"roomType": ' + b"9" * 5000 + b', "receivedName": "x", "spoken": "hi"}', json_header),
        (b'{"roomType": "' + b"9" * 5000 + b'", "receivedName": "x", "spoken": "hi"}', json_header),
        (b'{"roomType": 1e999, "receivedName": "x", "spoken": "hi"}', json_header),
        (b'{"spoken": "\xff\xfe", "receivedName": "\xc3\x28", "roomType": "3"}', json_header),
    ]
    for raw, headers in bodies:
        resp = await rig.post(token=TOKEN, data=raw, headers=headers)
        answer = await resp.json()
        # a body that is not a callback is a 4xx with an empty message (nothing to post in a chat)
        assert resp.status in (200, 400, 413), raw[:40]
        assert answer == (
            {"code": 0, "message": "参数接收成功"}
            if resp.status == 200
            else {"code": resp.status, "message": ""}
        )
    resp = await rig.post(token=TOKEN, data=b"[" * 5000, headers=json_header)
    assert resp.status == 400

    async def chunked() -> object:
        for _ in range(40):
            yield b"y" * 10_000

    resp = await rig.post(token=TOKEN, data=chunked(), headers=json_header)
    assert resp.status == 413 and (await resp.json()) == {"code": 413, "message": ""}
    assert await rig.quiet(0.6) == []


async def test_image_addressed_to_the_bot_gets_one_polite_note(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    rig = await make_rig(backend)
    for _ in range(3):
        await rig.say("", text_type="2")
    # An image nobody addressed to the bot is ignored.
    await rig.say("", text_type="2", sender="李四", at=False)
    msgs = await rig.wait_count(1)
    await asyncio.sleep(0.5)
    msgs = rig.messages()
    assert len(msgs) == 1
    chat, text, at = msgs[0]
    assert chat == GROUP and at == ("张三",)
    assert "文字" in text


async def test_form_and_native_json_callbacks_are_understood(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    """WorkTool posts form data when the robot's callBackRequestType is 1, JSON (any value types) when 2."""
    rig = await make_rig(backend)
    form = aiohttp.FormData(callback_body("状态码 310 是什么意思"))
    resp = await rig.post(token=TOKEN, data=form)
    assert resp.status == 200 and (await resp.json())["code"] == 0
    urlencoded = urlencode(callback_body("帮助", sender="李四")).encode()
    resp = await rig.post(
        token=TOKEN, data=urlencoded, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert resp.status == 200 and (await resp.json())["code"] == 0
    native = {
        "spoken": "状态码 104 是什么意思",
        "rawSpoken": "@job-doctor 状态码 104 是什么意思",
        "receivedName": "王五",
        "groupName": GROUP,
        "groupRemark": "",
        "roomType": 3,
        "atMe": True,
        "textType": 1,
    }
    resp = await rig.post(native)
    assert resp.status == 200 and (await resp.json())["code"] == 0
    msgs = await rig.wait_count(3)
    by_sender = {m[2]: m[1] for m in msgs}
    assert "Agent 异常" in by_sender[("张三",)]
    assert by_sender[("李四",)].startswith("你好，我是 job-doctor")
    assert "104" in by_sender[("王五",)]
