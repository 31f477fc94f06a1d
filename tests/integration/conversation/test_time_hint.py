"""A time in the message ("20031290017 2024-06-11 21:35") sets the BkLog window of the analysis."""

from __future__ import annotations

import re

from aiohttp import web

from bot.devtools.sandbox import REQUESTS
from tests.integration.conversation.conftest import MakeRig
from tests.integration.conversation.harness import GROUP, HEADER, slow_bklog, step_searches

STEP = 20031290017  # corpus scenario script_exit_code_1: its engine ran 2024-06-11 21:30 China time
NO_LOGS = "没有任何作业平台引擎日志"


def step_windows(bklog: web.Application, step: int) -> list[tuple[str, str, str]]:
    """(start_time, end_time, time_zone) of every BkLog search that began an analysis of `step`."""
    pattern = re.compile(rf'log:\s*"?{step}"?')
    return [
        (r.body["start_time"], r.body["end_time"], r.body["time_zone"])
        for r in bklog[REQUESTS]
        if isinstance(r.body, dict) and pattern.fullmatch(str(r.body.get("query_string", "")).strip())
    ]


def all_windows(bklog: web.Application) -> set[tuple[str, str]]:
    return {
        (r.body["start_time"], r.body["end_time"])
        for r in bklog[REQUESTS]
        if isinstance(r.body, dict) and "start_time" in r.body
    }


async def test_the_bklog_window_follows_the_time_in_the_message(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    rig = await make_rig(backend, worktool={"part_max_chars": 100_000})

    # The failure time given: the window is 2 h before to 1 h after it, in BkLog's time zone.
    await rig.say(f"{STEP} 2024-06-11 21:35")
    ((first,),) = await rig.wait_reports(1)
    assert first[1].startswith(f"{HEADER}stepInstanceId={STEP}")
    assert "exitCode=1" in first[1] and NO_LOGS not in first[1]
    assert step_windows(rig.bklog, STEP) == [("2024-06-11 19:35:00", "2024-06-11 22:35:00", "Asia/Shanghai")]
    # Every query of that analysis (the traceIds too) searched the same window.
    assert all_windows(rig.bklog) == {("2024-06-11 19:35:00", "2024-06-11 22:35:00")}
    stored = await rig.report_store.get(f"step:{STEP}:w202406111935-202406112235")
    assert stored is not None and stored.report.window is not None
    assert stored.report.window.start == "2024-06-11T19:35:00+08:00"

    # A time when the step did not run: nothing found, and the report says how to name the time.
    await rig.say(f"{STEP} 2024年6月1日上午10点")
    ((second,),) = (await rig.wait_reports(2))[1:]
    assert NO_LOGS in second[1]
    assert f"请在消息里带上失败时间，如「{STEP} 昨天下午3点」" in second[1]
    assert step_windows(rig.bklog, STEP)[1] == ("2024-06-01 08:00:00", "2024-06-01 12:00:00", "Asia/Shanghai")

    # Without a time: the usual window, not the fresh report of either named window.
    await rig.say(f"帮忙看下 {STEP}")
    ((third,),) = (await rig.wait_reports(3))[2:]
    assert "exitCode=1" in third[1] and NO_LOGS not in third[1]
    assert step_searches(rig.bklog, STEP) == 3
    usual = step_windows(rig.bklog, STEP)[2]
    assert usual[0] < "2024-06-01"  # the test rig looks back ten years

    # A named window inside the fresh usual report's window: that report answers, no new search.
    await rig.say(f"{STEP} 6月11日晚上9点半", sender="李四")
    ((fourth,),) = (await rig.wait_reports(4))[3:]
    assert fourth[1] == third[1]
    assert fourth[2] == ("李四",)
    assert step_searches(rig.bklog, STEP) == 3


async def test_progress_names_the_window_and_a_followup_keeps_the_time_of_the_question(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    rig = await make_rig(backend, chat={"progress_after_s": 0.2})
    # The time comes with the failure; the id with the follow-up (no @, as the bot asked).
    await rig.say("2024-06-11 晚上9点半的作业挂了，帮忙看看")
    (question,) = await rig.wait_count(1)
    assert "stepInstanceId" in question[1]
    slow_bklog(rig.bklog, 1.0)
    await rig.say(str(STEP), at=False)
    (report,) = await rig.wait_reports(1)
    progress = [m for m in rig.messages() if "正在分析" in m[1]]
    assert progress == [
        (
            GROUP,
            f"收到，正在分析 stepInstanceId={STEP}（按「2024-06-11 晚上9点半」查 2024-06-11 19:30 至 "
            "2024-06-11 22:30 的日志），稍后发出报告。",
            ("张三",),
        )
    ]
    assert report[0][1].startswith(f"{HEADER}stepInstanceId={STEP}")
    assert step_windows(rig.bklog, STEP) == [("2024-06-11 19:30:00", "2024-06-11 22:30:00", "Asia/Shanghai")]
