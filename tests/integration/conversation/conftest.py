"""Fixtures for the end-to-end conversation tests: fakes over real HTTP and a bot factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import REDIS_URL, require_redis
from tests.integration.conversation.harness import (
    ROBOT_ID,
    Fakes,
    Rig,
    bklog_app,
    drop_prefix,
    rig_settings,
    scenarios,
    start_bot,
)
from tests.support.fakes.worktool import FakeWorkTool

DEFAULT_SCENARIOS = ("script_exit_code_1", "agent_offline_117")

MakeRig = Callable[..., Awaitable[Rig]]


@pytest.fixture(params=["embedded", "redis"])
def backend(request: pytest.FixtureRequest, key_prefix: str) -> tuple[str, str]:
    """(redis_url, key prefix): the core flows run on the embedded store and on the real Redis.

    `make_rig` drops the prefix's keys once its bots have stopped.
    """
    if request.param == "redis":
        require_redis()
        return REDIS_URL, key_prefix
    return "", key_prefix


@pytest.fixture
def real_redis(key_prefix: str) -> tuple[str, str]:
    """(redis_url, key prefix) on the real Redis only (several app instances share it)."""
    require_redis()
    return REDIS_URL, key_prefix


@pytest.fixture
async def make_rig(aiohttp_server: Any) -> AsyncIterator[MakeRig]:
    """Start fakes and a bot: `await make_rig(backend, chat={...}, worktool={...})`.

    Pass `fakes=` (from an earlier rig) to start a second instance against the same fakes.
    """
    clients: list[TestClient[Any, Any]] = []
    stores: set[tuple[str, str]] = set()

    async def make(
        store: tuple[str, str],
        *,
        names: Sequence[str] = DEFAULT_SCENARIOS,
        fakes: Fakes | None = None,
        **overrides: Any,
    ) -> Rig:
        if fakes is None:
            fake = FakeWorkTool(robot_ids=(ROBOT_ID,))
            fake_server = await aiohttp_server(fake.app())
            bklog = bklog_app(scenarios(*names))
            bklog_server = await aiohttp_server(bklog)
            fakes = Fakes(
                fake=fake,
                worktool_url=str(fake_server.make_url("")).rstrip("/"),
                bklog=bklog,
                bklog_url=str(bklog_server.make_url("")).rstrip("/"),
            )
        settings = rig_settings(
            worktool_url=fakes.worktool_url,
            bklog_url=fakes.bklog_url,
            redis_url=store[0],
            prefix=store[1],
            **overrides,
        )
        stores.add(store)
        client = await start_bot(settings)
        clients.append(client)
        return Rig(client=client, fakes=fakes, settings=settings)

    yield make
    for client in reversed(clients):
        await client.close()
    for url, prefix in stores:
        await drop_prefix(url, prefix)  # a no-op for the embedded store
