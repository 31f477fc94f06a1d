"""Exactly-once posting: replicas, crashes, retries, catch-up, empty days, and the app component.

Everything runs on the real Redis (unique key prefix) and on the embedded store; the digest goes
to a fake WorkTool cloud and a fake WeCom webhook over real HTTP.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.typedefs import Handler

from bot.app import keys as K
from bot.app.services import build_bkjob, build_bklog
from bot.app.web import create_app
from bot.channels.base import Ingress
from bot.channels.worktool.channel import WorkToolChannel
from bot.channels.worktool.sender import WorkToolSender
from bot.core.metrics import Metrics
from bot.core.settings import Settings
from bot.core.store import Store, open_store
from bot.delivery.outbox import Outbox
from bot.delivery.port import ChannelRegistry
from bot.delivery.queue import Inbox
from bot.delivery.send import Delivery
from bot.devtools.sandbox import REQUESTS
from bot.digest.build import DigestBuilder, digest_analyzer
from bot.digest.collect import DigestWindow
from bot.digest.history import DigestHistory
from bot.digest.post import DigestPoster
from bot.digest.schedule import DigestRunner
from tests.conftest import REDIS_URL
from tests.digest.conftest import Serve
from tests.digest.world import SCRIPT_EXIT, TZ, World, before, fire_at, world_settings
from tests.support.fakes.wecom_webhook import FakeWeComWebhook
from tests.support.fakes.worktool import FakeWorkTool

FIRE = fire_at("2025-03-10")
GROUP = "运维值班群"
HOOK_KEY = "hook-key-0001"
HEADER = "【job-doctor 失败日报】"


@dataclass
class Rig:
    world: World
    bkjob: web.Application
    worktool: FakeWorkTool
    webhook: FakeWeComWebhook
    settings: Settings

    def group_texts(self) -> list[str]:
        return [m[1] for m in self.worktool.messages(GROUP)]

    def digests_in_group(self, date: str = "2025-03-10") -> int:
        """How many digests (first parts) of `date` the group received."""
        first = re.compile(rf"^{HEADER}{date}(?: \(1/\d+\))?\n")
        return sum(1 for t in self.group_texts() if first.match(t))

    def webhook_markdowns(self) -> list[str]:
        return [m.content for m in self.webhook.messages if m.msgtype == "markdown"]

    def webhook_images(self) -> int:
        return sum(1 for m in self.webhook.messages if m.msgtype == "image")

    def list_calls(self) -> int:
        return sum(1 for r in self.bkjob[REQUESTS] if r.path.endswith("/get_job_instance_list"))


async def make_rig(
    serve: Serve,
    store: Store,
    world: World | None = None,
    *,
    webhook_app: web.Application | None = None,
    **digest: Any,
) -> Rig:
    if world is None:
        world = World()
        world.add_scenario(SCRIPT_EXIT, biz=2, at=before(FIRE, hours=2), job_name="发布-web")
        world.add_bare(biz=2, at=before(FIRE, hours=3))
    bkjob = world.bkjob_app()
    worktool = FakeWorkTool()
    webhook = FakeWeComWebhook(keys=[HOOK_KEY])
    hook_url = await serve(webhook_app or webhook.app())
    settings = world_settings(
        bkjob_url=await serve(bkjob),
        bklog_url=await serve(world.bklog_app()),
        biz_ids=[2],
        targets=[
            {"channel": "worktool", "chat": GROUP},
            {"channel": "webhook", "key": f"{hook_url}/cgi-bin/webhook/send?key={HOOK_KEY}"},
        ],
        worktool_url=await serve(worktool.app()),
        redis_url="" if store.embedded else REDIS_URL,
        prefix=store.prefix,
        digest=digest,
    )
    return Rig(world, bkjob, worktool, webhook, settings)


def make_runner(
    rig: Rig,
    store: Store,
    session: aiohttp.ClientSession,
    *,
    clock: Callable[[], datetime] | None = None,
    retry_delay_s: float = 0.05,
    outbox_stale_s: float = 60.0,
) -> DigestRunner:
    settings = rig.settings
    bkjob = build_bkjob(settings, session)
    assert bkjob is not None
    builder = DigestBuilder(
        settings,
        bkjob=bkjob,
        analyzer=digest_analyzer(settings, build_bklog(settings, session)),
        history=DigestHistory(store),
    )
    cfg = settings.worktool
    sender = WorkToolSender(
        session, base_url=str(cfg.base_url), robot_id=cfg.robot_id, timeout_s=2, send_interval_s=0
    )
    channels = ChannelRegistry()
    metrics = Metrics()
    channels.add(WorkToolChannel(settings, sender, Ingress(Inbox(store), metrics)))
    delivery = Delivery(channels, Outbox(store), metrics, backoff_s=0.01, unknown_recheck_s=0.01)
    poster = DigestPoster(
        store,
        session,
        delivery=delivery,
        part_max_chars=cfg.part_max_chars,
        outbox_stale_s=outbox_stale_s,
    )

    async def build(window: DigestWindow) -> Any:
        return await builder.build(window, record_history=True)

    return DigestRunner(
        settings,
        store,
        build=build,
        post=poster.post,
        clock=clock or (lambda: FIRE + timedelta(minutes=1)),
        retry_delay_s=retry_delay_s,
        lock_ttl_s=5,
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def second_store(store: Store) -> Store | None:
    """Another replica's connection to the same store (the embedded store is shared in-process)."""
    return None if store.embedded else open_store(store.topology, prefix=store.prefix)


# --------------------------------------------------------------------------- tests


async def test_two_replicas_racing_post_one_digest_per_target(
    serve: Serve, store: Store, session: aiohttp.ClientSession
) -> None:
    rig = await make_rig(serve, store)
    other = await second_store(store)
    try:
        a = make_runner(rig, store, session)
        b = make_runner(rig, other or store, session)
        first, second = await asyncio.gather(a.run(FIRE), b.run(FIRE))
        again = await b.run_until_posted(FIRE)
    finally:
        if other is not None:
            await other.close()

    winners = [o for o in (first, second) if o.posted]
    assert len(winners) == 1 and len(winners[0].posted) == 2
    loser = second if winners[0] is first else first
    assert loser.locked or loser.already
    assert again.complete and not again.posted
    assert rig.digests_in_group() == 1
    assert len(rig.group_texts()) == len(set(rig.group_texts()))  # no part twice
    assert len(rig.webhook_markdowns()) == 1 and rig.webhook_images() == 1
    assert rig.webhook_markdowns()[0].startswith("## job-doctor 失败日报 2025-03-10")
    assert rig.list_calls() == 3  # built once: one list call per failure status


async def test_crash_after_first_target_other_gets_it_on_retry(
    serve: Serve, store: Store, session: aiohttp.ClientSession
) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()
    hold_first = [True]
    webhook = FakeWeComWebhook(keys=[HOOK_KEY])
    hook_app = webhook.app()

    @web.middleware
    async def stall(request: web.Request, handler: Handler) -> web.StreamResponse:
        if hold_first[0]:  # the first webhook send never completes: the process dies meanwhile
            hold_first[0] = False
            arrived.set()
            await release.wait()
            return web.Response(status=503)
        return await handler(request)

    hook_app.middlewares.append(stall)
    rig = await make_rig(serve, store, webhook_app=hook_app)
    rig.webhook = webhook

    crashing = asyncio.create_task(make_runner(rig, store, session).run_until_posted(FIRE))
    await asyncio.wait_for(arrived.wait(), 20)
    crashing.cancel()  # the replica dies while sending to the second target
    await asyncio.gather(crashing, return_exceptions=True)
    release.set()
    assert rig.digests_in_group() == 1 and rig.webhook_markdowns() == []
    calls = rig.list_calls()

    # Another start (a new process): only the target that did not get it is posted, from the cache.
    restarted = make_runner(rig, store, session, outbox_stale_s=0.1)
    await asyncio.sleep(0.15)
    outcome = await restarted.catch_up(FIRE + timedelta(minutes=5))

    assert outcome is not None and outcome.complete
    assert outcome.posted == [f"webhook:{_fingerprint()}"] and outcome.already == [f"worktool:{GROUP}"]
    assert rig.digests_in_group() == 1
    assert len(rig.webhook_markdowns()) == 1
    assert rig.list_calls() == calls  # the built digest was reused, not rebuilt


def _fingerprint() -> str:
    from bot.channels.webhook import key_id

    return key_id(HOOK_KEY)


async def test_failed_send_is_retried_for_that_target_only(
    serve: Serve, store: Store, session: aiohttp.ClientSession
) -> None:
    rig = await make_rig(serve, store)
    rig.webhook.inject(93000, times=1)  # the webhook refuses once

    outcome = await make_runner(rig, store, session).run_until_posted(FIRE)

    assert outcome.complete
    assert rig.digests_in_group() == 1
    assert len(rig.webhook_markdowns()) == 1
    assert [a.errcode for a in rig.webhook.attempts if a.errcode] == [93000]


async def test_catch_up_within_grace_covers_the_missed_window(
    serve: Serve, store: Store, session: aiohttp.ClientSession
) -> None:
    rig = await make_rig(serve, store, catch_up_grace_s=6 * 3600)
    runner = make_runner(rig, store, session)

    outcome = await runner.catch_up(FIRE + timedelta(hours=2))
    assert outcome is not None and len(outcome.posted) == 2
    listed = [r.query for r in rig.bkjob[REQUESTS] if r.path.endswith("/get_job_instance_list")]
    assert {q["create_time_end"] for q in listed} == {str(int(FIRE.timestamp() * 1000) - 1)}

    later = await runner.catch_up(FIRE + timedelta(hours=3))  # a second start the same day
    assert later is not None and later.already and not later.posted
    assert rig.digests_in_group() == 1 and len(rig.webhook_markdowns()) == 1


async def test_no_catch_up_beyond_grace(serve: Serve, store: Store, session: aiohttp.ClientSession) -> None:
    rig = await make_rig(serve, store, catch_up_grace_s=6 * 3600)
    runner = make_runner(rig, store, session)

    assert await runner.catch_up(FIRE + timedelta(hours=7)) is None
    assert rig.group_texts() == [] and rig.webhook.messages == [] and rig.list_calls() == 0


async def test_lock_left_by_a_dead_replica_expires(
    serve: Serve, store: Store, session: aiohttp.ClientSession
) -> None:
    rig = await make_rig(serve, store)
    assert await store.acquire_lock("digest:2025-03-10", 0.3) is not None  # held by a replica that died

    outcome = await make_runner(rig, store, session, retry_delay_s=0.2).run_until_posted(FIRE)

    assert outcome.complete and len(outcome.posted) == 2
    assert rig.digests_in_group() == 1


async def test_empty_day_posts_the_all_clear(
    serve: Serve, store: Store, session: aiohttp.ClientSession
) -> None:
    world = World()
    world.add_bare(biz=2, at=before(FIRE, hours=30))  # before the window
    rig = await make_rig(serve, store, world, post_when_empty=True)

    outcome = await make_runner(rig, store, session).run(FIRE)

    assert len(outcome.posted) == 2
    assert len(rig.group_texts()) == 1 and "昨日无失败作业" in rig.group_texts()[0]
    assert len(rig.webhook_markdowns()) == 1 and "昨日无失败作业" in rig.webhook_markdowns()[0]
    assert rig.webhook_images() == 0


async def test_empty_day_stays_silent_when_asked(
    serve: Serve, store: Store, session: aiohttp.ClientSession
) -> None:
    rig = await make_rig(serve, store, World(), post_when_empty=False)
    runner = make_runner(rig, store, session)

    outcome = await runner.run(FIRE)
    again = await runner.run(FIRE)

    assert len(outcome.silent) == 2 and not outcome.posted and again.already
    assert rig.group_texts() == [] and rig.webhook.messages == []


async def test_component_runs_on_schedule_and_posts_once(serve: Serve, store: Store) -> None:
    now = datetime.now(TZ)
    world = World()
    world.add_scenario(SCRIPT_EXIT, biz=2, at=now - timedelta(hours=2), job_name="发布-web")
    # Fires every second: the first fire (or the start-up catch-up) posts today's digest, the
    # following fires find it posted.
    rig = await make_rig(serve, store, world, cron="* * * * * *", catch_up_grace_s=3600)
    app = await create_app(rig.settings)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        runner = app[K.SERVICES].digest_runner
        assert runner is not None
        day = runner.now().date().isoformat()
        deadline = time.monotonic() + 20
        while len(await runner.posted_targets(day)) < 2:
            assert time.monotonic() < deadline, rig.group_texts()
            await asyncio.sleep(0.05)
        await asyncio.sleep(2.5)  # a few more fires
        assert rig.digests_in_group(day) == 1
        assert len(rig.webhook_markdowns()) == 1
        assert "发布-web" in "\n".join(rig.group_texts())
    finally:
        await client.close()
