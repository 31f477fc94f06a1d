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
