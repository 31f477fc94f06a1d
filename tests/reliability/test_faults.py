"""Dependencies failing under a running `serve` process: Redis, BkLog, the model, WorkTool's send API.

The bot must stay up (no 5xx on callbacks, no crash), tell the user something clear, and never
lose or duplicate a report.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import aiohttp

from tests.reliability.conftest import MakeBot, MakeWorld
from tests.reliability.procs import BotProcess, RedisServer, metrics_of, readyz, wait_metric
from tests.reliability.world import (
    GROUP,
    HEADER,
    World,
    ask,
    callback_body,
    internal_errors,
    post_callback,
    scenario,
)
from tests.support.fakes.openai_server import Hang, rate_limited

STEP = scenario("script_exit_code_1").expected.step_instance_id
AGENT_STEP = scenario("agent_offline_117").expected.step_instance_id
GSE_STEP = scenario("gse_dispatch_code_nonzero_310").expected.step_instance_id


def report_for(world: World, step: int | None) -> list[str]:
    return [m[1] for m in world.reports() if m[1].startswith(f"{HEADER}stepInstanceId={step}")]


def full_text(world: World, step: int | None) -> str:
    """Every report part for `step` (a split report's later parts carry the header too)."""
    return "\n".join(m[1] for m in world.report_parts() if f"stepInstanceId={step}" in m[1].split("\n", 1)[0])


async def wait_ready(
    session: aiohttp.ClientSession, bot: BotProcess, pred: Any, timeout: float
) -> dict[str, Any]:
    """Poll /readyz (it caches results for a few seconds) until `pred(status, body)` holds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        status, body = await readyz(session, bot)
        last = (status, body)
        if pred(status, body):
            return body
        await asyncio.sleep(0.25)
    raise AssertionError(f"/readyz never matched: {last!r}")


async def test_redis_restart_mid_flight_loses_nothing_and_readyz_shows_the_outage(
    redis_server: RedisServer, make_world: MakeWorld, make_bot: MakeBot, session: aiohttp.ClientSession
) -> None:
    world = await make_world(("script_exit_code_1", "agent_offline_117"))
    bot = await make_bot(world, redis_server.url, extra={"JOB_DOCTOR_HTTP__SHUTDOWN_GRACE_S": "1"})
    world.bklog_faults.delay(2.0)  # the analysis is in flight while Redis goes away
    await ask(session, bot.url, f"帮忙看下 {STEP}")
    deadline = time.monotonic() + 10
    while world.step_searches(STEP) == 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)

    redis_server.kill()  # a crash: whatever was acknowledged is in the append-only file
    down = await wait_ready(session, bot, lambda s, b: s == 503 and b["status"] == "down", timeout=10)
    assert down["checks"]["redis"]["ok"] is False
    assert down["checks"]["redis"]["detail"]  # says why
    # A callback during the outage is not acknowledged (WorkTool must not think it was taken),
    # answered quickly and without internals.
    started = time.monotonic()
    status, text = await post_callback(session, bot.url, callback_body(f"看下 {AGENT_STEP}", sender="李四"))
    assert time.monotonic() - started < 3.0
    assert status == 503, (status, text)
    assert internal_errors(text) == [], text
    await asyncio.sleep(2.5)  # the in-flight analysis finishes meanwhile and cannot be saved

    await redis_server.start()
    await wait_ready(
        session, bot, lambda s, b: b["status"] != "down" and b["checks"]["redis"]["ok"], timeout=15
    )
    (report,) = await world.wait_reports(1, timeout=25)
    assert report[1].startswith(f"{HEADER}stepInstanceId={STEP}")
    # The bot reconnected: new work goes through as usual.
    await ask(session, bot.url, f"看下 {AGENT_STEP}", sender="李四")
    await world.wait_reports(2, timeout=15)
    await asyncio.sleep(1.0)
    assert len(report_for(world, STEP)) == 1
    assert len(report_for(world, AGENT_STEP)) == 1
    assert bot.running
    bot.send(signal.SIGTERM)
    assert await bot.wait_exit(10) == 0
    assert "Traceback" not in bot.output()  # every failure was handled, none escaped


async def test_bklog_slow_failing_or_timing_out_still_gives_a_clear_report(
    redis_server: RedisServer, make_world: MakeWorld, make_bot: MakeBot, session: aiohttp.ClientSession
) -> None:
    world = await make_world(("script_exit_code_1", "agent_offline_117", "gse_dispatch_code_nonzero_310"))
    bot = await make_bot(world, redis_server.url, extra={"JOB_DOCTOR_BKLOG__TIMEOUT_S": "1"})

    # 5xx (HTML from the gateway's nginx and JSON errors): BkLog unreachable, said so.
    world.bklog_faults.html(times=3)
    world.bklog_faults.server_error(times=20, status=502)
    await ask(session, bot.url, f"帮忙看下 {STEP}")
    await world.wait_reports(1)
    world.bklog_faults.clear()
    # Timing out: every answer comes after the client gave up.
    world.bklog_faults.delay(3.0, times=20)
    await ask(session, bot.url, f"帮忙看下 {AGENT_STEP}")
    await world.wait_reports(2, timeout=25)
    world.bklog_faults.clear()
    # Slow but inside the timeout: a normal diagnosis.
    world.bklog_faults.delay(0.5, times=3)
    await ask(session, bot.url, f"帮忙看下 {GSE_STEP}")
    await world.wait_reports(3, timeout=25)

    for step in (STEP, AGENT_STEP):
        text = full_text(world, step)
        assert "BkLog 暂时无法访问" in text, text
        assert "重新分析" in text  # what to do next
    assert "BkLog 暂时无法访问" not in full_text(world, GSE_STEP)
    assert "下发阶段失败" in full_text(world, GSE_STEP)  # the real diagnosis
    for _chat, text, _at in world.messages():
        assert internal_errors(text) == [], text
    assert len(world.reports()) == 3
    assert bot.running
    assert "Traceback" not in bot.output()
    await wait_metric(session, bot, "job_doctor_jobs_done_total", 'outcome="ok"', 3)
    metrics = await metrics_of(session, bot)
    assert metrics.get(("job_doctor_jobs_done_total", 'outcome="failed"'), 0) == 0


async def test_model_rate_limited_or_timing_out_gives_rules_report_marked_as_fallback(
    redis_server: RedisServer, make_world: MakeWorld, make_bot: MakeBot, session: aiohttp.ClientSession
) -> None:
    world = await make_world()
    bot = await make_bot(world, redis_server.url, model=True)
    world.model.default = rate_limited(retry_after="0.2")
    await ask(session, bot.url, f"帮忙看下 {STEP}")
    await world.wait_reports(1, timeout=20)
    world.model.default = Hang(30)
    await ask(session, bot.url, f"帮忙看下 {AGENT_STEP}")
    await world.wait_reports(2, timeout=20)

    limited, slow = full_text(world, STEP), full_text(world, AGENT_STEP)
    assert "模型被限流，以下为规则库诊断。" in limited
    assert "模型响应超时，以下为规则库诊断。" in slow
    for text in (limited, slow):
        assert "诊断来源：规则库" in text
    assert len(world.model.requests) >= 2  # the model was really asked
    await wait_metric(session, bot, "job_doctor_llm_fallbacks_total", 'reason="fallback_rate_limited"', 1)
    await wait_metric(session, bot, "job_doctor_llm_fallbacks_total", 'reason="fallback_timeout"', 1)


async def test_worktool_send_failures_are_retried_and_each_report_arrives_once(
    redis_server: RedisServer, make_world: MakeWorld, make_bot: MakeBot, session: aiohttp.ClientSession
) -> None:
    world = await make_world()
    bot = await make_bot(world, redis_server.url)
    # Refused twice (500, 429), then accepted: retried inside the sender.
    world.worktool.fail_next(1)
    world.worktool.rate_limit_next(1)
    await ask(session, bot.url, f"帮忙看下 {STEP}")
    await world.wait_reports(1, timeout=20)
    # Sent, but the answer is lost: the history says it arrived, so it is not sent again.
    world.worktool.hang_next(1, seconds=10)
    await ask(session, bot.url, f"帮忙看下 {AGENT_STEP}")
    await world.wait_reports(2, timeout=20)
    await asyncio.sleep(3.0)  # past the unknown-outcome recheck

    assert len(report_for(world, STEP)) == 1
    assert len(report_for(world, AGENT_STEP)) == 1
    parts = world.report_parts()
    assert len(parts) == len(set(parts))  # no part of any report went out twice
    metrics = await metrics_of(session, bot)
    assert metrics[("job_doctor_send_failures_total", 'channel="worktool"')] >= 1
    assert all(m[0] == GROUP for m in world.messages())
