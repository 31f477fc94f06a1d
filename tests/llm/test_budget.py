"""Token budgets on fakeredis and on the real Redis; exhaustion short-circuits the model."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import fakeredis
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.llm.budget import BUDGET_NOTICE, TokenBudget
from bot.llm.client import LlmClient
from bot.llm.diagnose import llm_diagnose
from bot.llm.prompts import PromptLibrary
from bot.llm.scrub import Scrubber
from tests.llm.samples import LINES, candidate, evidence_text, model_answer
from tests.support.fakes.openai_server import FakeOpenAI, answer_json


@pytest.fixture(params=["fakeredis", "redis"])
async def redis_client(request: pytest.FixtureRequest) -> AsyncIterator[aioredis.Redis]:
    if request.param == "fakeredis":
        r: aioredis.Redis = fakeredis.FakeAsyncRedis()
    else:
        r = aioredis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1)
        try:
            await r.ping()
        except (RedisConnectionError, OSError):
            await r.aclose()
            pytest.skip("no Redis on 127.0.0.1:6379")
    yield r
    await r.aclose()


@pytest.fixture
def prefix() -> str:
    return f"test-llm-{uuid.uuid4().hex[:8]}:"


async def cleanup(r: aioredis.Redis, prefix: str) -> None:
    keys = [k async for k in r.scan_iter(match=f"{prefix}*")]
    if keys:
        await r.delete(*keys)


async def test_chat_and_daily_limits(redis_client: aioredis.Redis, prefix: str) -> None:
    budget = TokenBudget(redis_client, prefix=prefix, daily_limit=1000, chat_daily_limit=300)
    try:
        assert await budget.check("group-a")
        await budget.add("group-a", 299)
        assert await budget.check("group-a")
        await budget.add("group-a", 1)
        assert not await budget.check("group-a")
        assert await budget.check("group-b")
        await budget.add("group-b", 700)
        assert not await budget.check("group-c")  # the whole bot is spent
        assert await budget.used("group-a") == (1000, 300)
        ttl = await redis_client.ttl(
            f"{prefix}llm:tokens:" + datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y%m%d")
        )
        assert 0 < ttl <= 2 * 24 * 3600
    finally:
        await cleanup(redis_client, prefix)


async def test_new_day_resets(redis_client: aioredis.Redis, prefix: str) -> None:
    now = [datetime(2024, 5, 30, 23, 59, tzinfo=ZoneInfo("Asia/Shanghai"))]
    budget = TokenBudget(redis_client, prefix=prefix, daily_limit=0, chat_daily_limit=10, now=lambda: now[0])
    try:
        await budget.add("g", 10)
        assert not await budget.check("g")
        now[0] += timedelta(minutes=2)
        assert await budget.check("g")
    finally:
        await cleanup(redis_client, prefix)


async def test_exhausted_budget_skips_the_model(
    client: LlmClient, fake: FakeOpenAI, prompts: PromptLibrary, prefix: str
) -> None:
    r = fakeredis.FakeAsyncRedis()
    budget = TokenBudget(r, prefix=prefix, daily_limit=0, chat_daily_limit=50)
    try:
        fake.push(answer_json(model_answer()), answer_json(model_answer()))
        kwargs = dict(
            candidate=candidate(),
            evidence_text=evidence_text(),
            collected_lines=LINES,
            tools=None,
            deadline_s=5,
            scrubber=Scrubber(),
            budget=budget,
            budget_key="运维值班群",
        )
        first = await llm_diagnose(client, prompts, **kwargs)  # type: ignore[arg-type]
        assert first.outcome == "ok" and first.tokens > 50
        assert (await budget.used("运维值班群"))[1] == first.tokens
        second = await llm_diagnose(client, prompts, **kwargs)  # type: ignore[arg-type]
        assert second.outcome == "budget_exhausted" and second.report is None and second.calls == 0
        assert second.notes == [BUDGET_NOTICE] and "额度" in BUDGET_NOTICE
        assert len(fake.requests) == 1
    finally:
        await r.aclose()


async def test_one_sender_cannot_spend_more_than_their_own_budget_across_chats(
    redis_client: aioredis.Redis, prefix: str
) -> None:
    """Each private chat (each console name) had its own chat budget: one person could spend the bot's."""
    budget = TokenBudget(
        redis_client, prefix=prefix, daily_limit=10_000, chat_daily_limit=300, user_daily_limit=500
    )
    try:
        for chat in ("private:张三", "console-private:甲", "console-private:乙"):
            if await budget.check(chat, "console:session:abc"):
                await budget.add(chat, 299, "console:session:abc")
        assert not await budget.check("console-private:丙", "console:session:abc")  # 598 ≥ 500
        assert await budget.check("console-private:丙", "console:session:other")
        assert (await budget.used("x"))[0] == 598  # the bot's budget kept the rest
    finally:
        await cleanup(redis_client, prefix)
