"""Greetings, common questions and the fallback through the real router, without a model."""

from __future__ import annotations

from tests.integration.conversation.conftest import MakeRig
from tests.integration.conversation.harness import GROUP, HEADER, step_searches

STEP = 20031290017  # corpus scenario script_exit_code_1


async def test_greetings_get_the_usage_not_a_shrug(make_rig: MakeRig, backend: tuple[str, str]) -> None:
    rig = await make_rig(backend)
    await rig.say("你好")
    (hello,) = await rig.wait_count(1)
    assert hello[0] == GROUP and hello[2] == ("张三",)
    assert hello[1].startswith("你好，我是 job-doctor")
    assert "stepInstanceId" in hello[1] and "request_id" in hello[1] and "BK-JOB 的步骤链接" in hello[1]
    await rig.say("在吗", sender="王五", group=None)
    private = (await rig.wait_count(2))[1]
    assert private == ("王五", hello[1], ())


async def test_private_questions_answered_from_the_topics(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    rig = await make_rig(backend)
    assert not rig.settings.llm.enabled
    await rig.say("为什么一直在执行中", sender="王五", group=None)
    (stuck,) = await rig.wait_count(1)
    assert stuck[0] == "王五" and "Execution result log always empty!" in stuck[1]

    await rig.say("agent 无数据怎么查", sender="王五", group=None)
    agent = (await rig.wait_count(2))[1]
    assert "cannot find agent state by agentId" in agent[1] and "list_agent_state" in agent[1]

    # Nothing matches: an honest answer that says what the bot can do, not a dead end.
    await rig.say("作业平台的滚动执行是怎么分批的", sender="王五", group=None)
    fallback = (await rig.wait_count(3))[2]
    assert fallback[1].startswith("这个问题我没有现成的答案。")
    assert "作业一直在执行/卡住" in fallback[1] and "stepInstanceId" in fallback[1]


async def test_a_private_failure_without_id_asks_and_gives_the_usual_causes(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    rig = await make_rig(backend)
    await rig.say("我的文件分发失败了", sender="王五", group=None)
    (question,) = await rig.wait_count(1)
    assert question[1].startswith("请提供失败步骤的 stepInstanceId（或 BK-JOB 步骤链接），我来分析。")
    assert "320 文件获取失败" in question[1]
    # The question stands: the id that follows is analysed.
    await rig.say(str(STEP), sender="王五", group=None)
    (report,) = await rig.wait_reports(1)
    assert report[0][1].startswith(f"{HEADER}stepInstanceId={STEP}")
    assert step_searches(rig.bklog, STEP) == 1
    # In a group the question stays short: the causes are not posted to everyone.
    await rig.say("我的文件分发失败了")
    group_question = (await rig.wait_for(lambda m: any(x[0] == GROUP for x in m)))[-1]
    assert group_question[0] == GROUP and "320" not in group_question[1]
