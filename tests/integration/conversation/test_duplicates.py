"""Duplicate callbacks, concurrent askers of the same step, and the fresh-report cache."""

from __future__ import annotations

import asyncio

from tests.integration.conversation.conftest import MakeRig
from tests.integration.conversation.harness import GROUP, HEADER, callback_body, step_searches

STEP = 20031290017  # corpus scenario script_exit_code_1


async def test_same_callback_three_times_gives_one_report(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    rig = await make_rig(backend)
    body = callback_body(f"帮忙看下 {STEP}")
    answers = await asyncio.gather(*(rig.post(body) for _ in range(3)))
    assert [a.status for a in answers] == [200, 200, 200]
    (report,) = await rig.wait_reports(1)
    assert await rig.quiet(0.6) == report
    assert step_searches(rig.bklog, STEP) == 1


async def test_two_askers_of_one_step_share_one_analysis(make_rig: MakeRig, backend: tuple[str, str]) -> None:
    rig = await make_rig(backend)
    await asyncio.gather(
        rig.say(f"帮忙看下 {STEP}", sender="张三"),
        rig.say(f"{STEP} 为什么失败", sender="李四"),
    )
    reports = await rig.wait_reports(2)
    await rig.quiet(0.4)
    assert len(rig.complete_reports()) == 2
    assert sorted(r[0][2] for r in reports) == [("张三",), ("李四",)]
    for parts in reports:
        assert parts[0][1].startswith(f"{HEADER}stepInstanceId={STEP}")
    assert step_searches(rig.bklog, STEP) == 1


async def test_repeat_ask_within_cache_window_is_served_from_cache(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    rig = await make_rig(backend)
    await rig.say(f"帮忙看下 {STEP}")
    (first,) = await rig.wait_reports(1)
    queries = step_searches(rig.bklog, STEP)
    assert queries == 1

    await rig.say(f"{STEP} 再看看", sender="李四")
    await rig.say(f"{STEP} 我也想看", sender="王五", group=None)
    reports = await rig.wait_reports(3)
    again = sorted(reports[1:], key=lambda parts: parts[0][0])
    assert [(r[0][0], r[0][2]) for r in again] == [("王五", ()), (GROUP, ("李四",))]
    # Same content as the first report (same stored analysis), no new BkLog query.
    for parts in again:
        assert [p[1] for p in parts] == [p[1] for p in first]
    assert step_searches(rig.bklog, STEP) == queries
