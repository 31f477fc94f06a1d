"""Questions answered without a model, the commands, and feedback on a report."""

from __future__ import annotations

from tests.integration.conversation.conftest import MakeRig
from tests.integration.conversation.harness import GROUP, HEADER, step_searches

STEP = 20031290017  # corpus scenario script_exit_code_1


async def test_code_question_gets_the_exact_answer_without_a_model(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    rig = await make_rig(backend)
    assert not rig.settings.llm.enabled
    await rig.say("状态码 310 是什么意思")
    ((chat, text, at),) = await rig.wait_count(1)
    assert chat == GROUP and at == ("张三",)
    assert "310" in text and "Agent 异常" in text
    # A general question is answered, not turned into "which step?".
    await rig.say("下发阶段失败一般是什么原因")
    msgs = await rig.wait_count(2)
    assert "GSE" in msgs[1][1] and "stepInstanceId？" not in msgs[1][1]


async def test_help_and_status(make_rig: MakeRig, backend: tuple[str, str]) -> None:
    rig = await make_rig(backend)
    await rig.say("帮助")
    (help_msg,) = await rig.wait_count(1)
    assert help_msg[1].startswith("你好，我是 job-doctor") and "重新分析" in help_msg[1]
    await rig.say("帮我看看这个任务为什么失败")
    await rig.wait_count(2)
    await rig.say("状态")
    status = (await rig.wait_count(3))[2]
    assert status[2] == ("张三",)
    assert "分析队列：0 个任务未完成" in status[1]
    assert "我在等你发送 stepInstanceId" in status[1]


async def test_detail_gives_the_full_report_and_reanalyze_runs_again(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    rig = await make_rig(backend, worktool={"part_max_chars": 100_000})
    await rig.say(f"帮忙看下 {STEP}")
    ((short,),) = await rig.wait_reports(1)
    assert short[1].startswith(f"{HEADER}stepInstanceId={STEP}")
    assert step_searches(rig.bklog, STEP) == 1

    await rig.say(f"详情 {STEP}")
    ((full,),) = (await rig.wait_reports(2))[1:]
    assert full[1].startswith(f"{HEADER}stepInstanceId={STEP}")
    assert full[2] == ("张三",)
    # The full text carries every evidence line of the stored report.
    stored = await rig.report_store.get(f"step:{STEP}")
    assert stored is not None and stored.report.evidence
    for ev in stored.report.evidence:
        assert ev.text in full[1]

    # Without an id: the asker's latest report.
    await rig.say("详情")
    ((latest,),) = (await rig.wait_reports(3))[2:]
    assert latest[1] == full[1]

    # The report is cached, yet 重新分析 runs the analysis again and reports again.
    await rig.say(f"重新分析 {STEP}")
    reports = await rig.wait_reports(4)
    assert reports[3][0][1].startswith(f"{HEADER}stepInstanceId={STEP}")
    assert step_searches(rig.bklog, STEP) == 2

    await rig.say("详情 20039999999")
    msgs = await rig.wait_count(len(rig.messages()) + 1)
    assert "没有找到 20039999999 的近期报告" in msgs[-1][1]


async def test_feedback_on_a_report_is_stored_and_disputed(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    rig = await make_rig(backend)
    # Feedback before any report: nothing to attach it to.
    await rig.say("👎 不准确")
    (first,) = await rig.wait_count(1)
    assert "没有找到你最近收到的报告" in first[1]

    await rig.say(f"帮忙看下 {STEP}")
    await rig.wait_reports(1)
    count = len(rig.messages())
    await rig.say("👎 不准确 原因是脚本本身没问题，是机器磁盘满了")
    msgs = await rig.wait_count(count + 1)
    assert msgs[-1] == (GROUP, "感谢反馈，已记录。", ("张三",))

    store = rig.report_store
    feedback = await store.feedback(f"step:{STEP}")
    assert len(feedback) == 1
    assert feedback[0]["verdict"] == "down"
    assert "磁盘满" in feedback[0]["note"]
    assert feedback[0]["by"] == "张三" and feedback[0]["chat"] == GROUP
    assert await store.disputed() == [f"step:{STEP}"]

    # Praise is stored too but does not dispute anything.
    await rig.say("👍", sender="李四")
    await rig.wait_count(count + 2)
    assert "没有找到你最近收到的报告" in rig.messages()[-1][1]  # 李四 never got a report


async def test_forced_reanalysis_is_limited_per_sender(make_rig: MakeRig, backend: tuple[str, str]) -> None:
    """`重新分析` skipped the cache every time (three ids: three fresh analyses per message)."""
    rig = await make_rig(backend, chat={"reanalyze_per_hour": 1, "reanalyze_cooldown_s": 0})
    await rig.say(f"重新分析 {STEP}")
    await rig.wait_reports(1)
    assert step_searches(rig.bklog, STEP) == 1
    await rig.say(f"重新分析：{STEP}")  # over the sender's hourly limit: told, and the fresh report sent
    await rig.wait_reports(2)
    assert any("最多强制重新分析 1 次" in m[1] for m in rig.messages())
    assert step_searches(rig.bklog, STEP) == 1
    await rig.say(f"重新分析 {STEP}", sender="李四")  # someone else may still force one
    await rig.wait_reports(3)
    assert step_searches(rig.bklog, STEP) == 2
