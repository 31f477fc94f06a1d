"""Rate limits and the group allowlist."""

from __future__ import annotations

import asyncio

from tests.integration.conversation.conftest import MakeRig
from tests.integration.conversation.harness import GROUP, seconds_left_in_minute


async def test_flood_from_one_user_gets_one_polite_refusal(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    rig = await make_rig(backend, chat={"user_rate_per_min": 3})
    if seconds_left_in_minute() < 4:  # the limit is per clock minute: keep the flood inside one
        await asyncio.sleep(seconds_left_in_minute() + 0.1)
    for i in range(10):
        await rig.say(f"状态码 31{i} 是什么意思")
    await rig.wait_count(4)
    msgs = await rig.quiet(0.8)
    assert len(msgs) == 4
    refusals = [m for m in msgs if m[1] == "请求太频繁了，请稍后再试。"]
    assert refusals == [(GROUP, "请求太频繁了，请稍后再试。", ("张三",))]
    # Someone else in the same group is still served.
    await rig.say("状态码 310 是什么意思", sender="李四")
    msgs = await rig.wait_count(5)
    assert msgs[-1][2] == ("李四",) and "Agent 异常" in msgs[-1][1]


async def test_groups_outside_the_allowlist_get_silence(make_rig: MakeRig, backend: tuple[str, str]) -> None:
    rig = await make_rig(backend, chat={"allowed_groups": [GROUP]})
    await rig.say("状态码 310 是什么意思", group="闲聊群")
    await rig.say("帮我看看这个任务为什么失败", group="闲聊群")
    assert await rig.quiet(0.6) == []
    await rig.say("状态码 310 是什么意思")
    (msg,) = await rig.wait_count(1)
    assert msg[0] == GROUP and "Agent 异常" in msg[1]


async def test_images_from_groups_outside_the_allowlist_get_silence(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    rig = await make_rig(backend, chat={"allowed_groups": [GROUP]})
    await rig.say("", text_type="2", group="闲聊群")
    assert await rig.quiet(0.6) == []
    await rig.say("", text_type="2")
    (msg,) = await rig.wait_count(1)
    assert msg[0] == GROUP and "文字" in msg[1]


async def test_private_chats_are_closed_to_unlisted_users_when_a_group_allowlist_is_set(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    """Only CHAT__ALLOWED_GROUPS set: a private peer (even an external contact) used to be served."""
    rig = await make_rig(backend, chat={"allowed_groups": [GROUP], "allowed_users": ["张三"]})
    await rig.say("状态码 310 是什么意思", sender="外部联系人", group=None)
    await rig.say("状态码 310 是什么意思", sender="外部联系人", group=None)  # told once, then silence
    (msg,) = await rig.wait_count(1)
    assert msg[0] == "外部联系人" and "使用名单" in msg[1]
    await rig.say("状态码 310 是什么意思", sender="张三", group=None)  # a listed user is served
    msgs = await rig.wait_count(2)
    assert msgs[-1][0] == "张三" and "Agent 异常" in msgs[-1][1]
    assert len(await rig.quiet(0.5)) == 2


async def test_group_allowlist_alone_closes_private_chats(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    rig = await make_rig(backend, chat={"allowed_groups": [GROUP]})
    await rig.say("状态码 310 是什么意思", sender="李四", group=None)
    (msg,) = await rig.wait_count(1)
    assert msg[0] == "李四" and "使用名单" in msg[1]
    await rig.say("状态码 310 是什么意思", sender="李四")  # in the allowed group: served
    msgs = await rig.wait_count(2)
    assert msgs[-1][0] == GROUP and "Agent 异常" in msgs[-1][1]
