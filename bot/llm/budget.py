"""Daily model-token budgets in Redis: one for the whole bot, one per chat.

Keys are per calendar day (in `time_zone`) and expire after two days, so nothing needs cleaning.
When a budget is spent the caller uses the rule-based report and adds `BUDGET_NOTICE`. The two
counters are independent keys (they may sit on different cluster nodes): each is read and charged
on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.core.topology import RedisClient

BUDGET_NOTICE = "今日模型调用额度已用完，本次为规则诊断结果（明日自动恢复）。"

_TTL_S = 2 * 24 * 3600

# Charge a counter and make sure it expires, in one step (a key without TTL would live forever).
_CHARGE = """
local v = redis.call('incrby', KEYS[1], ARGV[1])
redis.call('expire', KEYS[1], ARGV[2])
return v
"""


class TokenBudget:
    """`limit`/`chat_limit` of 0 mean unlimited. Works with redis.asyncio and fakeredis."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        prefix: str,
        daily_limit: int,
        chat_daily_limit: int,
        user_daily_limit: int = 0,
        time_zone: str = "Asia/Shanghai",
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._limit = max(0, daily_limit)
        self._chat_limit = max(0, chat_daily_limit)
        # per real sender (console: per browser session), whatever chat they use: one person
        # cannot spend the bot's budget through private chats or new console names
        self._user_limit = max(0, user_daily_limit)
        self._tz = ZoneInfo(time_zone)
        self._now = now or (lambda: datetime.now(self._tz))

    def _keys(self, chat_key: str) -> tuple[str, str]:
        base = self._base()
        return base, f"{base}:chat:{chat_key}"

    def _base(self) -> str:
        day = self._now().astimezone(self._tz).strftime("%Y%m%d")
        return f"{self._prefix}llm:tokens:{day}"

    def _user_key(self, user_key: str) -> str:
        return f"{self._base()}:user:{user_key}"

    async def used(self, chat_key: str) -> tuple[int, int]:
        """Tokens spent today: (whole bot, this chat)."""
        total_key, chat_key_ = self._keys(chat_key)
        total = await self._redis.get(total_key)
        chat = await self._redis.get(chat_key_)
        return int(total or 0), int(chat or 0)

    async def check(self, chat_key: str, user_key: str = "") -> bool:
        """True while every budget (bot, chat, and the sender's when `user_key` is given) has room."""
        if user_key and self._user_limit:
            spent = int(await self._redis.get(self._user_key(user_key)) or 0)
            if spent >= self._user_limit:
                return False
        if not self._limit and not self._chat_limit:
            return True
        total, chat = await self.used(chat_key)
        if self._limit and total >= self._limit:
            return False
        return not (self._chat_limit and chat >= self._chat_limit)

    async def add(self, chat_key: str, tokens: int, user_key: str = "") -> None:
        if tokens <= 0:
            return
        total_key, chat_key_ = self._keys(chat_key)
        keys = [total_key, chat_key_, *([self._user_key(user_key)] if user_key else [])]
        for key in keys:  # one key per script: the keys may live in different cluster slots
            await self._redis.eval(_CHARGE, 1, key, tokens, _TTL_S)
