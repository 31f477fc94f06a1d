"""Hard stops over real processes: SIGKILL mid-analysis, SIGTERM drain / hand-back.

Each test runs `python -m bot serve` subprocesses against our own redis-server and the fakes of
this process; "exactly once" is counted on what the fake WorkTool received.
"""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp

from tests.reliability.conftest import MakeBot, MakeWorld
from tests.reliability.procs import BotProcess, RedisServer, metrics_of, wait_metric
from tests.reliability.world import GROUP, HEADER, World, ask, scenario

STEP = scenario("script_exit_code_1").expected.step_instance_id
OTHER = scenario("agent_offline_117").expected.step_instance_id


async def _analysis_started(world: World, step: int | None, timeout: float = 10.0) -> None:
    assert step is not None
    deadline = time.monotonic() + timeout
    while world.step_searches(step) == 0:
        assert time.monotonic() < deadline, "the analysis never reached BkLog"
        await asyncio.sleep(0.02)


async def _running_on(
    session: aiohttp.ClientSession, bots: list[BotProcess], timeout: float = 10.0
) -> BotProcess:
    """The replica whose job worker is analysing right now (its `job_doctor_jobs_running` is 1)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for bot in bots:
            if (await metrics_of(session, bot)).get(("job_doctor_jobs_running", ""), 0) >= 1:
                return bot
        await asyncio.sleep(0.05)
    raise AssertionError("no replica is running the analysis")


async def _assert_one_report(world: World, step: int | None, *, quiet_s: float = 1.5) -> None:
    (report,) = await world.wait_reports(1, timeout=20)
    await asyncio.sleep(quiet_s)  # nothing more arrives
    assert world.reports() == [report]
    assert report[0] == GROUP
    assert report[1].startswith(f"{HEADER}stepInstanceId={step}")
    assert report[2] == ("张三",)


async def test_sigkill_mid_analysis_other_replica_finishes_and_restart_adds_nothing(
    redis_server: RedisServer, make_world: MakeWorld, make_bot: MakeBot, session: aiohttp.ClientSession
) -> None:
    world = await make_world()
    a = await make_bot(world, redis_server.url, name="a")
    b = await make_bot(world, redis_server.url, name="b")
    world.bklog_faults.delay(4.0)  # the first BkLog query hangs: the kill lands mid-analysis
    await ask(session, a.url, f"帮忙看下 {STEP}")
    await _analysis_started(world, STEP)
    victim = await _running_on(session, [a, b])
    survivor = b if victim is a else a
    victim.kill()
    assert world.messages() == []

    await _assert_one_report(world, STEP)
    await wait_metric(session, survivor, "job_doctor_jobs_done_total", 'outcome="ok"', 1)

    # The killed replica comes back: it must not redo or resend anything.
    await victim.start(session)
    await asyncio.sleep(2.5)  # > claim_idle_s: any orphaned entry would have been reclaimed by now
    assert len(world.reports()) == 1
    assert world.step_searches(STEP) == 2  # the cut-off attempt and the finished one


async def test_sigkill_single_replica_restart_delivers_once(
    redis_server: RedisServer, make_world: MakeWorld, make_bot: MakeBot, session: aiohttp.ClientSession
) -> None:
    world = await make_world()
    bot = await make_bot(world, redis_server.url)
    world.bklog_faults.delay(4.0)
    await ask(session, bot.url, f"帮忙看下 {STEP}")
    await _analysis_started(world, STEP)
    bot.kill()
    await bot.start(session)
    await _assert_one_report(world, STEP)
    assert world.step_searches(STEP) == 2


async def test_sigterm_drains_in_flight_work_within_grace(
    redis_server: RedisServer, make_world: MakeWorld, make_bot: MakeBot, session: aiohttp.ClientSession
) -> None:
    world = await make_world()
    grace = 4.0
    bot = await make_bot(world, redis_server.url, extra={"JOB_DOCTOR_HTTP__SHUTDOWN_GRACE_S": str(grace)})
    world.bklog_faults.delay(1.0)  # finishes well inside the grace period
    await ask(session, bot.url, f"帮忙看下 {STEP}")
    await _analysis_started(world, STEP)
    started = time.monotonic()
    bot.send(signal.SIGTERM)
    code = await bot.wait_exit(grace + 5)
    assert code == 0, bot.output()[-3000:]
    assert time.monotonic() - started < grace + 5
    # Drained: the report went out before the process left.
    assert len(world.reports()) == 1

    await bot.start(session)  # nothing left over for the next process
    await asyncio.sleep(2.0)
    assert len(world.reports()) == 1
    assert world.step_searches(STEP) == 1


async def test_sigterm_hands_back_what_outlives_grace_and_next_process_finishes_once(
    redis_server: RedisServer, make_world: MakeWorld, make_bot: MakeBot, session: aiohttp.ClientSession
) -> None:
    world = await make_world()
    grace = 1.0
    bot = await make_bot(world, redis_server.url, extra={"JOB_DOCTOR_HTTP__SHUTDOWN_GRACE_S": str(grace)})
    world.bklog_faults.delay(8.0)  # far longer than the grace period
    await ask(session, bot.url, f"帮忙看下 {STEP}")
    await _analysis_started(world, STEP)
    started = time.monotonic()
    bot.send(signal.SIGTERM)
    code = await bot.wait_exit(grace + 5)
    elapsed = time.monotonic() - started
    assert code == 0, bot.output()[-3000:]
    assert elapsed < grace + 5, elapsed
    assert world.reports() == []  # cut off, not reported half-done

    await bot.start(session)
    await _assert_one_report(world, STEP)
    assert world.step_searches(STEP) == 2


async def test_sigkill_while_worktool_refuses_the_report_restart_still_delivers_once(
    redis_server: RedisServer, make_world: MakeWorld, make_bot: MakeBot, session: aiohttp.ClientSession
) -> None:
    world = await make_world()
    bot = await make_bot(world, redis_server.url)
    world.worktool.fail_next(1000)  # every send refused: the report sits in "sending"
    await ask(session, bot.url, f"帮忙看下 {STEP}")
    deadline = time.monotonic() + 10
    while not world.worktool.request_times:
        assert time.monotonic() < deadline, "no send was attempted"
        await asyncio.sleep(0.02)
    bot.kill()
    world.worktool._send_faults.clear()  # WorkTool recovers while the bot is down
    assert world.messages() == []

    await bot.start(session)
    await _assert_one_report(world, STEP)
    assert world.step_searches(STEP) == 1  # the finished analysis was kept, only delivery was redone
