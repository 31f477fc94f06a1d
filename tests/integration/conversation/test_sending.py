"""Send failures: retried without duplicates; a lost answer is checked against WorkTool's history."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.integration.conversation.conftest import MakeRig
from tests.integration.conversation.harness import GROUP, HEADER
from tests.support.fakes.openai_server import Answer, FakeOpenAI

STEP = 20031290017  # corpus scenario script_exit_code_1


async def test_server_errors_are_retried_and_one_copy_is_delivered(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    rig = await make_rig(backend)
    rig.fake.fail_next(2, status=500)
    await rig.say("帮助")
    (msg,) = await rig.wait_count(1, timeout=8)
    assert msg[0] == GROUP and msg[1].startswith("你好，我是 job-doctor")
    assert await rig.quiet(0.5) == [msg]
    assert len(rig.fake.request_times) == 3  # two refused, one accepted


async def test_lost_answer_is_checked_in_history_and_not_sent_again(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    rig = await make_rig(backend, worktool={"timeout_s": 0.5})
    rig.fake.hang_next(1, seconds=30)  # the report's first part is queued, its answer never comes
    await rig.say(f"帮忙看下 {STEP}")
    (report,) = await rig.wait_reports(1, timeout=10)
    assert report[0][1].startswith(f"{HEADER}stepInstanceId={STEP}")
    assert await rig.quiet(0.5) == report  # every part exactly once
    assert len(rig.fake.send_bodies) == len(report)


async def test_unreadable_history_means_send_again(make_rig: MakeRig, backend: tuple[str, str]) -> None:
    """DESIGN: when the history cannot be read, a rare duplicate beats a lost message."""
    rig = await make_rig(backend, worktool={"timeout_s": 0.5})
    rig.fake.hang_next(1, seconds=30)
    rig.fake.fail_history_next(1)
    await rig.say("帮助")
    msgs = await rig.wait_count(2, timeout=10)
    assert msgs[0] == msgs[1] and msgs[0][1].startswith("你好，我是 job-doctor")
    assert await rig.quiet(0.5) == msgs


async def test_replies_survive_a_worktool_outage_longer_than_the_send_retries(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    """WorkTool down for longer than one send's retries: the reply used to be dropped (and the
    message acknowledged); now the message is handled again and the reply goes out once."""
    rig = await make_rig(backend)
    rig.fake.fail_next(1000, status=500)  # down until recovered
    await rig.say("状态码 310 是什么意思")
    await rig.say("👍", sender="李四")  # feedback without a report: its reply is recorded once
    # both replies exhausted their retries (4 sends x 3 requests each) while WorkTool was down
    deadline = asyncio.get_running_loop().time() + 40
    while len(rig.fake.request_times) < 24:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    rig.fake.recover()
    await rig.wait_count(2, timeout=30)
    await asyncio.sleep(2.5)  # another reclaim round: nothing more goes out
    msgs = rig.messages()
    answers = [m for m in msgs if m[2] == ("张三",)]
    assert len(answers) == 1 and "Agent 异常" in answers[0][1]
    assert len([m for m in msgs if m[2] == ("李四",)]) == 1


async def test_a_follow_up_without_mention_is_answered_after_an_outage(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    """The ask was cleared before the reply went out: the retried turn, a group message without @,
    no longer counted as the follow-up and was dropped."""
    rig = await make_rig(backend)
    await rig.say(f"帮忙看下 {STEP}", sender="李四")  # a fresh report of the step exists
    await rig.wait_reports(1)
    await rig.say("帮我看看这个任务为什么失败")
    await rig.wait_for(lambda msgs: any("stepInstanceId（" in m[1] for m in msgs))  # asks 张三 for the id
    before = len(rig.fake.request_times)
    rig.fake.fail_next(1000, status=500)  # WorkTool down
    await rig.say(str(STEP), at=False)  # the follow-up: the cached report goes to 张三
    deadline = asyncio.get_running_loop().time() + 40
    # past one turn's sends (4 sends x 3 requests): the message is handled again
    while len(rig.fake.request_times) < before + 15:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    rig.fake.recover()

    def to_zhang(msgs: list[tuple[str, str, tuple[str, ...]]]) -> list[str]:
        return [m[1] for m in msgs if m[1].startswith(HEADER) and m[2] == ("张三",)]

    await rig.wait_for(lambda msgs: bool(to_zhang(msgs)), timeout=30)
    await asyncio.sleep(2.5)  # another reclaim round: nothing more goes out
    (first_part,) = to_zhang(rig.messages())  # once; the parts after the first carry no mention
    assert first_part.startswith(f"{HEADER}stepInstanceId={STEP}")


async def test_a_question_handled_again_gets_the_same_answer_without_asking_the_model_again(
    make_rig: MakeRig, backend: tuple[str, str], aiohttp_server: Any
) -> None:
    """A model answers differently each time: the retried turn sent a second, different answer
    (and paid for it) when its first reply was lost."""
    fake = FakeOpenAI(api_key="sk-test")
    calls = iter(range(1, 100))
    fake.default = lambda body: Answer(f"第 {next(calls)} 种说法：滚动执行按批次依次下发。")
    model = await aiohttp_server(fake.app())
    rig = await make_rig(
        backend, llm={"base_url": str(model.make_url("/v1")), "api_key": "sk-test", "model": "m"}
    )
    rig.fake.fail_next(1000, status=500)  # WorkTool down
    await rig.say("作业平台的滚动执行是怎么分批的", sender="王五", group=None)
    deadline = asyncio.get_running_loop().time() + 40
    while len(rig.fake.request_times) < 15:  # past one turn's sends: the message is handled again
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    rig.fake.recover()
    await rig.wait_count(1, timeout=30)
    await asyncio.sleep(2.5)  # another reclaim round: nothing more goes out
    (answer,) = rig.messages()
    assert answer[0] == "王五" and "第 1 种说法" in answer[1]
    assert len(fake.requests) == 1
