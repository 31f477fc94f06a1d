"""Fixtures: the fakes (in this process), our own redis-server, and `serve` replicas as subprocesses."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.exceptions import RedisError

from bot.core.store import open_store
from tests.reliability.procs import BotProcess, RedisServer
from tests.reliability.world import MODEL_KEY, ROBOT_ID, World, bklog_app, bot_env, scenario
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.fakes.worktool import FakeWorkTool

ServerFactory = Callable[..., Awaitable[Any]]
MakeWorld = Callable[..., Awaitable[World]]
MakeBot = Callable[..., Awaitable[BotProcess]]

DEFAULT_SCENARIOS = ("script_exit_code_1", "agent_offline_117")


@pytest.fixture
async def make_world(aiohttp_server: ServerFactory) -> MakeWorld:
    async def make(
        names: Sequence[str] = DEFAULT_SCENARIOS,
        *,
        texts: Sequence[str] = (),
        fake: FakeWorkTool | None = None,
    ) -> World:
        worktool = fake or FakeWorkTool(robot_ids=(ROBOT_ID,))
        wt_server = await aiohttp_server(worktool.app())
        bklog = bklog_app([*(scenario(n).logs_text for n in names), *texts])
        bklog_server = await aiohttp_server(bklog)
        model = FakeOpenAI(api_key=MODEL_KEY)
        model_server = await aiohttp_server(model.app())
        return World(
            worktool=worktool,
            worktool_url=str(wt_server.make_url("")).rstrip("/"),
            bklog=bklog,
            bklog_url=str(bklog_server.make_url("")).rstrip("/"),
            model=model,
            model_url=str(model_server.make_url("/v1")),
        )

    return make


@pytest.fixture
async def world(make_world: MakeWorld) -> World:
    return await make_world()


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """Our own redis-server (never the shared one): it may be killed and restarted."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is required under CI=true (.ci/ensure-redis.sh installs it)")
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path)
    try:
        await server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as s:
        yield s


@pytest.fixture
async def make_bot(
    tmp_path: Path, session: aiohttp.ClientSession
) -> AsyncIterator[Callable[..., Awaitable[BotProcess]]]:
    """Start a `serve` process: `await make_bot(world, redis_url, name="a", model=True, extra={...})`.

    Processes share the key prefix of the test unless told otherwise; all are killed and reaped
    at the end, and the prefix's keys are dropped.
    """
    prefix = f"jdrel:{uuid.uuid4().hex[:10]}:"
    bots: list[BotProcess] = []
    urls: set[str] = set()

    async def make(
        world: World,
        redis_url: str,
        *,
        name: str | None = None,
        model: bool = False,
        extra: dict[str, str] | None = None,
        start: bool = True,
    ) -> BotProcess:
        env = bot_env(world, redis_url=redis_url, prefix=prefix, model=model, extra=extra)
        bot = BotProcess(name or f"bot{len(bots)}", tmp_path, env)
        bots.append(bot)
        urls.add(redis_url)
        if start:
            await bot.start(session)
        return bot

    try:
        yield make
    finally:
        for bot in bots:
            bot.close()
        for url in urls:
            store = open_store(url, prefix=prefix, timeout_s=1.0)
            try:
                keys = [k async for k in store.redis.scan_iter(match=prefix + "*", count=500)]
                if keys:
                    await store.redis.delete(*keys)
            except (RedisError, OSError):
                pass  # our own server is already gone
            finally:
                await store.close()
