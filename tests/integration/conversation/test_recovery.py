"""An analysis interrupted by a hard stop is finished by the next instance: one report, no loss."""

from __future__ import annotations

import asyncio

from tests.integration.conversation.conftest import MakeRig
from tests.integration.conversation.harness import HEADER, open_store_for, slow_bklog, step_searches

STEP = 20031290017  # corpus scenario script_exit_code_1


async def test_second_instance_reclaims_an_interrupted_analysis(
    make_rig: MakeRig, real_redis: tuple[str, str]
) -> None:
    # No grace on shutdown: whatever is running is cut off, as by a crash.
    first = await make_rig(real_redis, http={"shutdown_grace_s": 0}, worker={"claim_idle_s": 1})
    slow_bklog(first.bklog, 3.0)
    await first.say(f"帮忙看下 {STEP}")
    async with asyncio.timeout(5):
        while step_searches(first.bklog, STEP) == 0:  # the analysis is under way (BkLog is slow)
            await asyncio.sleep(0.02)
    await first.client.close()
    assert first.messages() == []

    store = open_store_for(first.settings)
    try:
        pending = await store.redis.xpending(store.key("q", "jobs"), "workers")
        assert pending["pending"] == 1  # handed back, not lost
    finally:
        await store.close()

    second = await make_rig(real_redis, fakes=first.fakes, worker={"claim_idle_s": 1})
    (report,) = await second.wait_reports(1, timeout=15)
    assert report[0][1].startswith(f"{HEADER}stepInstanceId={STEP}")
    assert report[0][2] == ("张三",)
    assert await second.quiet(1.5) == report
    assert step_searches(second.bklog, STEP) == 2  # the cut-off attempt and the finished one

    store = open_store_for(second.settings)
    try:
        pending = await store.redis.xpending(store.key("q", "jobs"), "workers")
        assert pending["pending"] == 0
    finally:
        await store.close()


async def test_part_in_flight_at_a_crash_is_found_in_history_not_sent_twice(
    make_rig: MakeRig, real_redis: tuple[str, str]
) -> None:
    first = await make_rig(
        real_redis, http={"shutdown_grace_s": 0}, worker={"claim_idle_s": 1}, worktool={"timeout_s": 10}
    )
    first.fake.hang_next(1, seconds=30)  # the report's first part reaches WorkTool, the answer never comes
    await first.say(f"帮忙看下 {STEP}")
    await first.wait_count(1)
    await first.client.close()  # dies mid-send: the part is queued, the outbox still says "sending"
    (queued,) = first.messages()
    assert queued[1].startswith(f"{HEADER}stepInstanceId={STEP}")

    second = await make_rig(real_redis, fakes=first.fakes, worker={"claim_idle_s": 1})
    (report,) = await second.wait_reports(1, timeout=15)
    assert report[0] == queued
    assert await second.quiet(1.5) == report  # each part exactly once
    assert step_searches(second.bklog, STEP) == 1  # the finished analysis was not repeated
