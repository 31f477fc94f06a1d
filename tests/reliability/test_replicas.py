"""Two `serve` replicas on one Redis under a burst of duplicated WorkTool callbacks.

120 unique requests (4 people × 30 failed steps served by the sandbox BkLog), each called back
1–3 times (200 callbacks), every copy sent to a random replica, all at once. Expected: exactly
one report per unique request (the asker's chat, @-mentioning the asker), the analyses shared
by both replicas, nothing left in the queues.

A second test runs two replicas with the daily digest firing every second: one digest per day
reaches the group, whichever replica wins.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web

from bot.core.store import open_store
from bot.devtools.evaluate import SANDBOX_APP
from bot.digest.render import TEXT_TITLE as DIGEST_TITLE
from handlers.ids import extract_ids
from tests.digest.world import SCRIPT_EXIT, TZ, TZ_NAME
from tests.digest.world import World as DigestWorld
from tests.reliability.conftest import MakeBot, MakeWorld
from tests.reliability.procs import RedisServer, metrics_of
from tests.reliability.world import GROUP, HEADER, ROBOT_ID, World, ask, step_scenarios
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.fakes.worktool import FakeWorkTool

PEOPLE = ("张三", "李四", "王五", "赵六")
PHRASES = ("帮忙看下 {}", "{} 这个步骤为什么失败", "分析一下 stepInstanceId={}", "看看 {} 挂在哪")
_STEP = re.compile(r"stepInstanceId=(\d+)")


def askable(step: int | None) -> bool:
    """Every phrasing names this id (a bare 10-digit number that reads as an epoch time does not)."""
    return all(
        [r.step_instance_id for r in extract_ids(p.format(step), max_ids=3).refs] == [step] for p in PHRASES
    )


async def test_burst_of_duplicated_callbacks_over_two_replicas_gives_one_report_each(
    redis_server: RedisServer, make_world: MakeWorld, make_bot: MakeBot, session: aiohttp.ClientSession
) -> None:
    scenarios = [sc for sc in step_scenarios() if askable(sc.expected.step_instance_id)][:30]
    steps = [sc.expected.step_instance_id for sc in scenarios]
    assert len(steps) == 30
    world = await make_world(names=[sc.name for sc in scenarios])
    a, b = await asyncio.gather(
        make_bot(world, redis_server.url, name="a"), make_bot(world, redis_server.url, name="b")
    )

    rng = random.Random(20240611)
    unique = [
        (person, step, PHRASES[i % len(PHRASES)].format(step))
        for i, person in enumerate(PEOPLE)
        for step in steps
    ]
    copies = [1] * len(unique)
    for i in rng.sample(range(len(unique)), 60):  # 40 twice, 20 three times: 200 callbacks
        copies[i] += 1
    for i in rng.sample([i for i, c in enumerate(copies) if c == 2], 20):
        copies[i] += 1
    calls = [
        (person, text) for (person, _step, text), n in zip(unique, copies, strict=True) for _ in range(n)
    ]
    assert len(unique) == 120 and len(calls) == 200
    rng.shuffle(calls)

    gate = asyncio.Semaphore(32)
    acked: list[float] = []

    async def call(person: str, text: str) -> None:
        async with gate:
            bot = rng.choice((a, b))
            started = time.perf_counter()
            await ask(session, bot.url, text, sender=person)
            acked.append(time.perf_counter() - started)

    await asyncio.gather(*(call(person, text) for person, text in calls))
    assert len(acked) == 200

    await world.wait_reports(120, timeout=45)
    await asyncio.sleep(1.5)  # anything duplicated would show up now
    reports = world.reports()
    assert len(reports) == 120
    got: Counter[tuple[str, int]] = Counter()
    for chat, text, at in reports:
        assert chat == GROUP
        assert text.startswith(HEADER)
        m = _STEP.search(text.split("\n", 1)[0])
        assert m is not None and len(at) == 1
        got[(at[0], int(m.group(1)))] += 1
    assert got == Counter({(person, step): 1 for person, step, _text in unique})
    # No part went out twice either: every part of a step's report arrived once per asker.
    per_part = Counter(text.split("\n", 1)[0] for _chat, text, _at in world.report_parts())
    assert set(per_part.values()) == {len(PEOPLE)}, per_part

    # Both replicas did analyses; together one per step (single-flight, then the cached report).
    done = []
    for bot in (a, b):
        metrics = await metrics_of(session, bot)
        done.append(metrics.get(("job_doctor_jobs_done_total", 'outcome="ok"'), 0.0))
    assert all(n > 0 for n in done), done
    assert sum(done) == len({s for s in steps}), done
    for step in steps:
        assert world.step_searches(step) == 1

    store = open_store(redis_server.url, prefix=a.env["JOB_DOCTOR_REDIS_KEY_PREFIX"])
    try:
        for queue in ("inbox", "jobs"):
            pending = await store.redis.xpending(store.key("q", queue), "workers")
            assert pending["pending"] == 0, queue
    finally:
        await store.close()


async def test_two_replicas_post_one_digest_per_day(
    redis_server: RedisServer, make_bot: MakeBot, aiohttp_server: Any, session: aiohttp.ClientSession
) -> None:
    now = datetime.now(TZ)
    jobs = DigestWorld()
    jobs.add_scenario(SCRIPT_EXIT, biz=2, at=now - timedelta(hours=2), job_name="发布-web")
    jobs.add_bare(biz=2, at=now - timedelta(hours=3))
    worktool = FakeWorkTool(robot_ids=(ROBOT_ID,))
    bklog = jobs.bklog_app()

    async def url(app: web.Application) -> str:
        return str((await aiohttp_server(app)).make_url("")).rstrip("/")

    world = World(
        worktool=worktool,
        worktool_url=await url(worktool.app()),
        bklog=bklog,
        bklog_url=await url(bklog),
        model=FakeOpenAI(),
        model_url="",
    )
    code, secret, user = SANDBOX_APP
    extra = {
        "JOB_DOCTOR_BK__APP_CODE": code,
        "JOB_DOCTOR_BK__APP_SECRET": secret,
        "JOB_DOCTOR_BK__USERNAME": user,
        "JOB_DOCTOR_BKJOB__BASE_URL": await url(jobs.bkjob_app()),
        "JOB_DOCTOR_BKJOB__USE_SYSTEM_API": "true",  # the sandbox verifies users; the digest app may read system APIs
        "JOB_DOCTOR_BKJOB__WEB_URL": "https://job.example.com",
        "JOB_DOCTOR_DIGEST__BIZ_IDS": "[2]",
        "JOB_DOCTOR_DIGEST__TARGETS": json.dumps(
            [{"channel": "worktool", "chat": GROUP}], ensure_ascii=False
        ),
        "JOB_DOCTOR_DIGEST__CRON": "* * * * * *",  # every second: both replicas fire again and again
        "JOB_DOCTOR_DIGEST__TIME_ZONE": TZ_NAME,
        "JOB_DOCTOR_DIGEST__CATCH_UP_GRACE_S": "3600",
    }
    a, b = await asyncio.gather(
        make_bot(world, redis_server.url, name="a", extra=extra),
        make_bot(world, redis_server.url, name="b", extra=extra),
    )
    day = datetime.now(TZ).date().isoformat()
    first = re.compile(rf"^{re.escape(DIGEST_TITLE)}{day}(?: \(1/\d+\))?\n")

    def digests() -> int:
        return sum(1 for _chat, text, _at in world.messages(GROUP) if first.match(text))

    deadline = time.monotonic() + 30
    while digests() < 1:
        assert time.monotonic() < deadline, world.messages()
        await asyncio.sleep(0.1)
    await asyncio.sleep(3.0)  # several more fires on both replicas
    assert digests() == 1
    assert "发布-web" in "\n".join(text for _chat, text, _at in world.messages(GROUP))
    assert a.running and b.running
    assert a.events("digest_scheduled") and b.events("digest_scheduled")  # both raced for it
    assert len(a.events("digest_posted")) + len(b.events("digest_posted")) == 1
