"""The store behind Sentinel: it finds the master, follows it through a failover, says when none is
known, and a write acknowledged to the outside world waits for a replica (briefly, never forever)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app.health import public_reason
from bot.core.models import IncomingMessage
from bot.core.settings import load_settings
from bot.core.store import Store, StoreError, open_store
from bot.core.topology import RedisTopology, TopologyUnhealthy
from bot.delivery.queue import Inbox
from bot.devtools.redislab import SentinelTopology
from tests.conftest import require_redis_server

PASSWORD = "sentinel-store-pass-5521"


@pytest.fixture
async def topology(tmp_path: Path) -> AsyncIterator[SentinelTopology]:
    require_redis_server()
    st = SentinelTopology(tmp_path, password=PASSWORD)
    try:
        await asyncio.to_thread(st.start)
        yield st
    finally:
        st.close()


@pytest.fixture
async def store(topology: SentinelTopology, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Store]:
    monkeypatch.setenv("JOB_DOCTOR_REDIS_URL", topology.url)  # password and db only, no host
    monkeypatch.setenv("JOB_DOCTOR_REDIS_SENTINELS", topology.sentinel_addresses)
    monkeypatch.setenv("JOB_DOCTOR_REDIS_SENTINEL_MASTER", topology.master_name)
    st = open_store(RedisTopology.from_settings(load_settings()), prefix="jdtest:sentinel:", timeout_s=1.0)
    try:
        yield st
    finally:
        await st.close()


def _msg(text: str) -> IncomingMessage:
    return IncomingMessage(channel="worktool", chat_id="ops", is_group=True, sender_id="alice", text=text)


async def test_health_names_the_master_its_replicas_and_the_sentinels(
    topology: SentinelTopology, store: Store
) -> None:
    detail = await store.health()
    assert f"sentinel master 'mymaster' at {topology.master.address}, 1 replica(s), 3/3 sentinels" in detail
    assert PASSWORD not in detail
    public = (await store.health_state()).public
    assert public == "sentinel: master known, 1 replica(s), 3/3 sentinels"  # /readyz: no address


async def test_an_accepted_message_is_on_the_replica_when_the_callback_is_answered(
    topology: SentinelTopology, store: Store
) -> None:
    inbox = Inbox(store)
    await inbox.ensure_group()
    with topology.replica.client() as replica:
        for i in range(20):
            assert await inbox.accept(f"fp{i}", _msg(f"m{i}"), window_s=60)
            assert replica.xlen(inbox.stream) == i + 1  # replicated before accept() returned


async def test_without_a_replica_callbacks_are_still_accepted(
    topology: SentinelTopology, store: Store
) -> None:
    inbox = Inbox(store)
    await inbox.ensure_group()
    topology.replica.kill()
    started = time.monotonic()
    assert await inbox.accept("fp", _msg("m"), window_s=60) is True
    assert time.monotonic() - started < 2  # waited for a replica briefly, not for ever


async def test_the_store_follows_the_master_through_a_failover_and_says_when_none_is_known(
    topology: SentinelTopology, store: Store
) -> None:
    await store.redis.set(store.key("before"), "1")
    await asyncio.to_thread(topology.wait_replicated)
    old = topology.master.address
    topology.master.kill()
    new = await asyncio.to_thread(topology.wait_failover, old)
    deadline = time.monotonic() + 15
    while True:  # the clients learn it from the Sentinels on their next connection
        try:
            assert await store.redis.get(store.key("before")) == "1"
            break
        except StoreError:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
    assert f"at {new}" in await store.health()

    topology.server_at(new).kill()  # no server left to promote
    deadline = time.monotonic() + 15
    while True:
        try:
            await store.health()
        except TopologyUnhealthy as exc:
            assert "no master known for 'mymaster' (3/3 sentinels answer)" in str(exc)
            assert public_reason(exc) == "sentinel: no master known (3/3 sentinels answer)"  # /readyz
            break
        except StoreError:
            pass  # the connection to the dead master fails first
        assert time.monotonic() < deadline, "a master was still announced"
        await asyncio.sleep(0.2)
