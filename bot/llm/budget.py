"""Daily model-token budgets in Redis: one for the whole bot, one per chat.

Keys are per calendar day (in `time_zone`) and expire after two days, so nothing needs cleaning.
When a budget is spent the caller uses the rule-based report and adds `BUDGET_NOTICE`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import redis.asyncio as aioredis

BUDGET_NOTICE = "今日模型调用额度已用完，本次为规则诊断结果（明日自动恢复）。"

_TTL_S = 2 * 24 * 3600


class TokenBudget:
    """`limit`/`chat_limit` of 0 mean unlimited. Works with redis.asyncio and fakeredis."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str,
        daily_limit: int,
        chat_daily_limit: int,
        time_zone: str = "Asia/Shanghai",
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._limit = max(0, daily_limit)
        self._chat_limit = max(0, chat_daily_limit)
        self._tz = ZoneInfo(time_zone)
        self._now = now or (lambda: datetime.now(self._tz))

    def _keys(self, chat_key: str) -> tuple[str, str]:
        day = self._now().astimezone(self._tz).strftime("%Y%m%d")
        base = f"{self._prefix}llm:tokens:{day}"
        return base, f"{base}:chat:{chat_key}"

    async def used(self, chat_key: str) -> tuple[int, int]:
        """Tokens spent today: (whole bot, this chat)."""
        total_key, chat_key_ = self._keys(chat_key)
        values = await self._redis.mget([total_key, chat_key_])
        return int(values[0] or 0), int(values[1] or 0)

    async def check(self, chat_key: str) -> bool:
        """True while both budgets have room left."""
        if not self._limit and not self._chat_limit:
            return True
        total, chat = await self.used(chat_key)
        if self._limit and total >= self._limit:
            return False
        return not (self._chat_limit and chat >= self._chat_limit)

    async def add(self, chat_key: str, tokens: int) -> None:
        if tokens <= 0:
            return
        total_key, chat_key_ = self._keys(chat_key)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incrby(total_key, tokens)
            pipe.expire(total_key, _TTL_S)
            pipe.incrby(chat_key_, tokens)
            pipe.expire(chat_key_, _TTL_S)
            await pipe.execute()
