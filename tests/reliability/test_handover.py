"""Handing work over between two `serve` replicas at the default claim timeout, and poison deliveries.

- SIGTERM with analyses in flight (drain grace 1 s): the stopping replica hands them back and the
  other one reports them within seconds, long before `WORKER__CLAIM_IDLE_S` (30 s by default).
- SIGKILL mid-analysis: the cut-short work is reported within a minute (claim timeout 30 s, kept
  short by the workers' heartbeats).
- A report that one group can never get goes to the dead-letter stream after
  `WORKER__MAX_ATTEMPTS` with the reason; the other group gets its report; nothing runs again.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time

import aiohttp

from bot.core.models import Requester
from bot.core.store import open_store
from bot.delivery.queue import DeadLetters
from tests.reliability.conftest import MakeBot, MakeWorld
from tests.reliability.procs import BotProcess, RedisServer, metrics_of, wait_metric
from tests.reliability.world import GROUP, HEADER, World, ask, scenario

STEP = scenario("script_exit_code_1").expected.step_instance_id
OTHER = scenario("agent_offline_117").expected.step_instance_id
_STEP = re.compile(r"stepInstanceId=(\d+)")
SLOW_BKLOG = {"JOB_DOCTOR_BKLOG__TIMEOUT_S": "30"}  # BkLog's answers take longer than the delays


async def _bot_with_default_claim(
    make_bot: MakeBot, world: World, url: str, name: str, **extra: str
) -> BotProcess:
    """A replica on the default WORKER__CLAIM_IDLE_S (the suite's bots use 1 s)."""
    bot = await make_bot(world, url, name=name, extra={**SLOW_BKLOG, **extra}, start=False)
    del bot.env["JOB_DOCTOR_WORKER__CLAIM_IDLE_S"]
    return bot


async def _analyses_running(
    session: aiohttp.ClientSession, bot: BotProcess, n: int, timeout: float = 10
) -> None:
    deadline = time.monotonic() + timeout
    while (await metrics_of(session, bot)).get(("job_doctor_jobs_running", ""), 0) < n:
        assert time.monotonic() < deadline, f"{bot.name} never ran {n} analyses at once"
        await asyncio.sleep(0.05)


async def _reported_within(world: World, steps: list[int | None], since: float, limit: float) -> float:
    """Wait until every step has its one report; returns the seconds since `since` it took."""
    await world.wait_reports(len(steps), timeout=limit + 5)
    took = time.monotonic() - since
    heads = [text.split("\n", 1)[0] for _chat, text, _at in world.reports()]
    assert all(h.startswith(HEADER) for h in heads), heads
    reported = sorted(int(m.group(1)) for h in heads if (m := _STEP.search(h)))
    assert reported == sorted(s for s in steps if s is not None), heads
    print(f"reported {took:.1f}s after the signal")
    return took


async def test_sigterm_hands_unfinished_analyses_to_the_other_replica_within_seconds(
    redis_server: RedisServer, make_world: MakeWorld, make_bot: MakeBot, session: aiohttp.ClientSession
) -> None:
    world = await make_world()
    grace = {"JOB_DOCTOR_HTTP__SHUTDOWN_GRACE_S": "1"}
    a = await _bot_with_default_claim(make_bot, world, redis_server.url, "a", **grace)
    b = await _bot_with_default_claim(make_bot, world, redis_server.url, "b", **grace)
    await a.start(session)
    # Each analysis starts with two BkLog queries in parallel: three delays hold both analyses.
    world.bklog_faults.delay(20.0, times=3)
    await ask(session, a.url, f"帮忙看下 {STEP}")
    await ask(session, a.url, f"帮忙看下 {OTHER}", sender="李四")
    await _analyses_running(session, a, 2)
    await b.start(session)

    signalled = time.monotonic()
    a.send(signal.SIGTERM)
    assert await a.wait_exit(10) == 0, a.output()[-3000:]
    took = await _reported_within(world, [STEP, OTHER], signalled, 15)
    assert took < 15, f"handed-back analyses reported {took:.1f}s after SIGTERM"
    assert a.events("entries_handed_back")
    await asyncio.sleep(1.5)
    assert len(world.reports()) == 2  # nothing twice
    await wait_metric(session, b, "job_doctor_jobs_done_total", 'outcome="ok"', 2)


async def test_sigkill_cut_short_analysis_is_reported_within_a_minute(
    redis_server: RedisServer, make_world: MakeWorld, make_bot: MakeBot, session: aiohttp.ClientSession
) -> None:
    world = await make_world()
    a = await _bot_with_default_claim(make_bot, world, redis_server.url, "a")
    b = await _bot_with_default_claim(make_bot, world, redis_server.url, "b")
    await a.start(session)
    world.bklog_faults.delay(20.0)
    await ask(session, a.url, f"帮忙看下 {STEP}")
    await _analyses_running(session, a, 1)
    await b.start(session)

    killed = time.monotonic()
    a.kill()
    took = await _reported_within(world, [STEP], killed, 60)
    assert took < 60, f"cut-short analysis reported {took:.1f}s after SIGKILL"
    assert world.step_searches(STEP) == 2
    await wait_metric(session, b, "job_doctor_jobs_done_total", 'outcome="ok"', 1)


async def test_a_group_that_refuses_the_report_is_dead_lettered_and_the_other_group_gets_it(
    redis_server: RedisServer, make_world: MakeWorld, make_bot: MakeBot, session: aiohttp.ClientSession
) -> None:
    world = await make_world()
    renamed = "改名前的群"
    world.worktool.refuse_chat(renamed)
    bot = await make_bot(world, redis_server.url, extra={"JOB_DOCTOR_WORKER__MAX_ATTEMPTS": "2"})
    world.bklog_faults.delay(1.0)  # both asks join one analysis
    await ask(session, bot.url, f"帮忙看下 {STEP}", sender="张三", group=renamed)  # first in line
    await ask(session, bot.url, f"{STEP} 为什么失败", sender="李四")

    (report,) = await world.wait_reports(1, timeout=30)
    assert (report[0], report[2]) == (GROUP, ("李四",))
    await wait_metric(session, bot, "job_doctor_dead_letters_total", 'queue="jobs",reason="delivery"', 1, 40)
    store = open_store(redis_server.url, prefix=bot.env["JOB_DOCTOR_REDIS_KEY_PREFIX"])
    try:
        [letter] = await DeadLetters(store).entries()
        assert letter["queue"] == "jobs" and letter["attempts"] == "2"
        assert letter["reason"].startswith("delivery failed 2 times: could not deliver part 1 via worktool")
        assert "查找聊天窗失败" in letter["reason"]
        assert Requester.model_validate_json(letter["requester"]).target.chat_id == renamed
        assert json.loads(letter["payload"])["request_key"] == f"step:{STEP}"
        assert (await store.redis.xpending(store.key("q", "jobs"), "workers"))["pending"] == 0
    finally:
        await store.close()
    refused = len(world.worktool.refused)
    await asyncio.sleep(3.0)  # > claim_idle_s: the job is not retried again
    assert len(world.worktool.refused) == refused
    assert world.step_searches(STEP) == 1 and len(world.reports()) == 1
    await wait_metric(session, bot, "job_doctor_dead_letter_depth", "", 1, 8)  # polled every 5 s
