"""Two `serve` replicas on Redis Sentinel (the master SIGKILLed between bursts) and on Redis Cluster.

The topologies are our own `redis-server` processes on free ports (`bot.devtools.redislab`):
master + replica + three Sentinels, and a three-node cluster. "Exactly once" is counted on what
the fake WorkTool received: one report per (asker, step), whatever the callbacks and failovers.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from bot.devtools.redislab import ClusterTopology, SentinelTopology
from tests.conftest import require_redis_server
from tests.reliability.conftest import MakeBot, MakeWorld
from tests.reliability.procs import BotProcess, metrics_of, readyz
from tests.reliability.test_replicas import askable
from tests.reliability.world import GROUP, HEADER, World, callback_body, post_callback, step_scenarios

PASSWORD = "sentinel-redis-pass-7781"
_STEP = re.compile(r"stepInstanceId=(\d+)")
Ask = tuple[str, int]  # (asker, step)


@pytest.fixture
async def sentinel_topology(tmp_path: Path) -> AsyncIterator[SentinelTopology]:
    require_redis_server()
    topology = SentinelTopology(tmp_path / "sentinel", password=PASSWORD)
    try:
        await asyncio.to_thread(topology.start)
        yield topology
    finally:
        topology.close()


@pytest.fixture
async def cluster_topology(tmp_path: Path) -> AsyncIterator[ClusterTopology]:
    require_redis_server()
    topology = ClusterTopology(tmp_path / "cluster")
    try:
        await asyncio.to_thread(topology.start)
        yield topology
    finally:
        topology.close()


def _steps(n: int) -> list[int]:
    steps = [sc.expected.step_instance_id for sc in step_scenarios() if askable(sc.expected.step_instance_id)]
    return [s for s in steps if s is not None][:n]


def _text(step: int) -> str:
    return f"帮忙看下 {step}"


async def _call(session: aiohttp.ClientSession, bot: BotProcess, ask: Ask) -> int:
    person, step = ask
    try:
        status, _answer = await post_callback(session, bot.url, callback_body(_text(step), sender=person))
    except (aiohttp.ClientError, TimeoutError):
        return 0  # no answer at all: not acknowledged either
    return status


def _reports_by_ask(world: World) -> Counter[Ask]:
    got: Counter[Ask] = Counter()
    for chat, text, at in world.reports():
        assert chat == GROUP and text.startswith(HEADER), text[:80]
        m = _STEP.search(text.split("\n", 1)[0])
        assert m is not None and len(at) == 1, (text[:80], at)
        got[(at[0], int(m.group(1)))] += 1
    return got


async def _wait_asks_reported(world: World, asks: set[Ask], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not asks <= set(_reports_by_ask(world)):
        missing = sorted(asks - set(_reports_by_ask(world)))
        assert time.monotonic() < deadline, f"never reported: {missing[:10]} ({len(missing)} in all)"
        await asyncio.sleep(0.1)


async def _green_again(
    session: aiohttp.ClientSession, bot: BotProcess, master: str
) -> tuple[float, dict[str, Any]]:
    """Poll /readyz until it is 200 and the bot has logged `master` as the store's: (when, the body)."""
    while True:
        try:
            status, body = await readyz(session, bot)
        except (aiohttp.ClientError, TimeoutError):
            status, body = 0, {}
        if status == 200 and _on_master(bot, master):
            # /readyz names the topology's state, not where the master is
            assert body["checks"]["redis"]["detail"].startswith("ok: sentinel: master known"), body
            return time.monotonic(), body
        await asyncio.sleep(0.25)


def _on_master(bot: BotProcess, master: str) -> bool:
    """The store's health check last found `master` (addresses go to the logs, never /readyz)."""
    seen = bot.events("store_topology")
    return bool(seen) and f"at {master}" in str(seen[-1].get("detail"))


async def test_sentinel_failover_between_bursts_loses_nothing_acknowledged_and_duplicates_nothing(
    sentinel_topology: SentinelTopology,
    make_world: MakeWorld,
    make_bot: MakeBot,
    session: aiohttp.ClientSession,
) -> None:
    st = sentinel_topology
    steps = _steps(24)
    world = await make_world(
        names=[sc.name for sc in step_scenarios() if sc.expected.step_instance_id in steps]
    )
    extra = {
        "JOB_DOCTOR_REDIS_SENTINELS": st.sentinel_addresses,
        "JOB_DOCTOR_REDIS_SENTINEL_MASTER": st.master_name,
        "JOB_DOCTOR_CHAT__DEDUP_WINDOW_S": "600",
        "JOB_DOCTOR_WORKER__CLAIM_IDLE_S": "5",
    }
    a, b = await asyncio.gather(
        make_bot(world, st.url, name="a", extra=extra), make_bot(world, st.url, name="b", extra=extra)
    )
    bots = (a, b)
    old_master = st.master_address()
    assert old_master is not None
    for bot in bots:
        status, body = await readyz(session, bot)
        assert status == 200 and _on_master(bot, old_master), body
        assert old_master not in str(body)

    # Burst 1, reported in full before the kill.
    burst1: list[Ask] = [(p, s) for p in ("张三", "李四") for s in steps[:4]]
    assert {await _call(session, bots[i % 2], ask) for i, ask in enumerate(burst1)} == {200}
    await _wait_asks_reported(world, set(burst1), timeout=30)
    await asyncio.to_thread(st.wait_replicated)

    st.server_at(old_master).kill()
    killed = time.monotonic()
    # Callbacks keep coming while the Sentinels elect a new master: each is either refused (503,
    # nothing stored) or acknowledged (then it must be reported).
    failover = asyncio.create_task(asyncio.to_thread(st.wait_failover, old_master, 30))
    acked: list[Ask] = []
    refused: Counter[str] = Counter()
    sent = 0
    while not failover.done():
        ask, bot = (f"值班{sent}", steps[4 + sent % 12]), bots[sent % 2]
        sent += 1
        status = await _call(session, bot, ask)
        if status == 200:
            acked.append(ask)
        else:
            assert status == 503, status
            refused[bot.name] += 1
        await asyncio.sleep(0.1)
    new_master = await failover
    announced = time.monotonic()
    assert refused, "the outage refused no callback: the kill was not noticed"
    green = [asyncio.create_task(_green_again(session, bot, new_master)) for bot in bots]

    # Acknowledged after the announcement; and the platform re-sends burst 1 (same bodies).
    burst2: list[Ask] = [(p, s) for p in ("王五", "赵六") for s in steps[16:20]]
    for i, ask in enumerate(burst2):
        deadline = time.monotonic() + 20
        while (status := await _call(session, bots[i % 2], ask)) != 200:
            # Not every Sentinel has told every client yet: refused, so nothing was acknowledged.
            assert status == 503, status
            refused[bots[i % 2].name] += 1
            assert time.monotonic() < deadline, (
                f"callbacks still refused {time.monotonic() - announced:.1f}s later"
            )
            await asyncio.sleep(0.2)
    for i, ask in enumerate(burst1):
        assert await _call(session, bots[(i + 1) % 2], ask) == 200  # a duplicate is acknowledged...

    expected = set(burst1) | set(acked) | set(burst2)
    await _wait_asks_reported(world, expected, timeout=60)
    await asyncio.sleep(2.0)  # anything duplicated would show up now
    got = _reports_by_ask(world)
    assert set(got) == expected  # ...and not reported again; nothing refused was half-stored
    assert set(got.values()) == {1}, {k: v for k, v in got.items() if v > 1}

    for bot, task in zip(bots, green, strict=True):
        assert bot.running, bot.output()[-3000:]
        green_at, body = await asyncio.wait_for(task, timeout=max(1.0, killed + 30 - time.monotonic()))
        assert green_at - killed < 30, (green_at - killed, body)
        assert PASSWORD not in str(body)
        rejected = (await metrics_of(session, bot)).get(
            ("job_doctor_messages_rejected_total", 'channel="worktool",reason="store_unavailable"'), 0
        )
        assert rejected == refused[bot.name], (bot.name, rejected, refused)
        assert PASSWORD not in bot.output()
    print(
        f"failover: {sum(refused.values())} callbacks refused, {len(acked)} acknowledged during it;"
        f" new master announced {announced - killed:.1f}s after the kill;"
        f" /readyz green again {max(t.result()[0] for t in green) - killed:.1f}s after the kill"
    )


async def test_two_replicas_on_a_cluster_report_every_request_once(
    cluster_topology: ClusterTopology,
    make_world: MakeWorld,
    make_bot: MakeBot,
    session: aiohttp.ClientSession,
) -> None:
    steps = _steps(30)
    assert len(steps) == 30
    world = await make_world(
        names=[sc.name for sc in step_scenarios() if sc.expected.step_instance_id in steps]
    )
    extra = {"JOB_DOCTOR_REDIS_CLUSTER": "true"}
    url = cluster_topology.url
    a, b = await asyncio.gather(
        make_bot(world, url, name="a", extra=extra), make_bot(world, url, name="b", extra=extra)
    )
    for bot in (a, b):
        status, body = await readyz(session, bot)
        assert status == 200, body
        assert "cluster ok: 3 primaries, 16384/16384 slots" in bot.events("store_topology")[-1]["detail"]
        assert body["checks"]["redis"]["detail"] == "ok: cluster ok: 3 primaries, 16384/16384 slots"

    asks: list[Ask] = [("张三", s) for s in steps]
    calls = [(bot, ask) for ask in asks for bot in (a, b)]  # every request sent twice, once to each
    random.Random(17).shuffle(calls)
    gate = asyncio.Semaphore(16)

    async def call(bot: BotProcess, ask: Ask) -> None:
        async with gate:
            assert await _call(session, bot, ask) == 200

    await asyncio.gather(*(call(bot, ask) for bot, ask in calls))
    await _wait_asks_reported(world, set(asks), timeout=60)
    await asyncio.sleep(1.5)
    got = _reports_by_ask(world)
    assert set(got) == set(asks) and set(got.values()) == {1}

    done = []
    for bot in (a, b):
        metrics = await metrics_of(session, bot)
        done.append(metrics.get(("job_doctor_jobs_done_total", 'outcome="ok"'), 0.0))
        assert "CROSSSLOT" not in bot.output() and "same key slot" not in bot.output()
    assert all(n > 0 for n in done) and sum(done) == 30, done
    # The work spread over the cluster: keys of the bots' prefix live on every node.
    prefix = a.env["JOB_DOCTOR_REDIS_KEY_PREFIX"]
    per_node = []
    for node in cluster_topology.nodes:
        with redis.Redis(port=node.port, decode_responses=True) as client:
            per_node.append(sum(1 for _ in client.scan_iter(match=prefix + "*", count=1000)))
    assert all(n > 0 for n in per_node), per_node
