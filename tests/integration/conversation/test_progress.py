"""The one progress message when a report is slow, and none when it is quick."""

from __future__ import annotations

from tests.integration.conversation.conftest import MakeRig
from tests.integration.conversation.harness import GROUP, HEADER, slow_bklog, step_searches

STEP = 20031290017  # corpus scenario script_exit_code_1


async def test_slow_analysis_sends_exactly_one_progress_message_first(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    rig = await make_rig(backend, chat={"progress_after_s": 0.5})
    slow_bklog(rig.bklog, 1.5)
    await rig.say(f"帮忙看下 {STEP}")
    (report,) = await rig.wait_reports(1)
    msgs = await rig.quiet(0.6)
    progress = [m for m in msgs if "正在分析" in m[1]]
    assert progress == [(GROUP, f"收到，正在分析 stepInstanceId={STEP}，稍后发出报告。", ("张三",))]
    assert msgs == [progress[0], *report]
    assert report[0][1].startswith(f"{HEADER}stepInstanceId={STEP}")
    # The analysis outlived worker.claim_idle_s (1 s), yet it ran once: its entry was kept alive.
    assert rig.settings.worker.claim_idle_s < 1.5
    assert step_searches(rig.bklog, STEP) == 1


async def test_quick_analysis_sends_no_progress_message(make_rig: MakeRig, backend: tuple[str, str]) -> None:
    rig = await make_rig(backend, chat={"progress_after_s": 2.0})
    await rig.say(f"帮忙看下 {STEP}")
    (report,) = await rig.wait_reports(1)
    assert await rig.quiet(2.1) == report  # past the progress deadline: nothing more came
