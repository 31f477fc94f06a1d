"""Who may use the bot and how often: one seam in front of every handler (the router calls it)."""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.core.models import IncomingMessage
from bot.core.settings import ChatSettings
from bot.core.store import Store
from handlers import texts
from handlers.state import TURN_MEMORY_S

SILENT = ""  # refused without a word (not our group, or already told about the rate limit)


class AccessPolicy:
    def __init__(self, chat: ChatSettings, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.chat = chat
        self.store = store
        self._clock = clock

    async def _last_minute(self, limit: int, *parts: str) -> int:
        """Messages in the last 60 s, this one included (refused ones count too: a flood stays out).
        Clock-minute counters let a sender through twice the limit across a minute boundary."""
        return await self.store.count_recent(
            self.store.key(*parts), now_s=self._clock(), window_s=60.0, keep=limit + 1
        )

    async def check(self, msg: IncomingMessage, *, turn: str = "") -> str | None:
        """None when the sender may use the bot now; else the polite refusal (`SILENT` = say nothing).

        With `turn` (the message's stable key) the decision is kept: a message handled again after a
        reply of it was lost is neither counted twice nor refused by its own first pass.
        """
        if not turn:
            return await self._decide(msg)
        kept = self.store.key("policy", turn)
        known = await self.store.get_json(kept)
        if isinstance(known, dict) and "refusal" in known:
            refusal = known["refusal"]
            return refusal if isinstance(refusal, str) else None
        decision = await self._decide(msg)
        await self.store.set_json(kept, {"refusal": decision}, ttl_s=TURN_MEMORY_S)
        return decision

    async def _decide(self, msg: IncomingMessage) -> str | None:
        chat = self.chat
        if (
            msg.is_group
            and chat.allowed_groups
            and not ({msg.chat_id, msg.chat_name} & set(chat.allowed_groups))
        ):
            return SILENT
        listed = msg.sender_id in chat.allowed_users or msg.sender_name in chat.allowed_users
        # With any allowlist set a private chat (a WorkTool external contact too) is served only for
        # listed users: the group list alone must not leave every private peer a way in.
        private_closed = not msg.is_group and bool(chat.allowed_groups or chat.allowed_users)
        if (chat.allowed_users or private_closed) and not listed:
            # Told once per hour, then silence: a stranger's flood must not make the bot flood back.
            told = await self.store.claim(
                self.store.key("rl", "refused", msg.channel, msg.chat_id, msg.sender_id), 3600
            )
            return texts.NOT_ALLOWED if told else SILENT
        user_n = await self._last_minute(chat.user_rate_per_min, "rl", "u", msg.channel, msg.limit_key)
        group_n = 0
        if msg.is_group:
            group_n = await self._last_minute(chat.group_rate_per_min, "rl", "g", msg.channel, msg.chat_id)
        if user_n > chat.user_rate_per_min or group_n > chat.group_rate_per_min:
            # Say it once a minute, then stay quiet: a flood must not make the bot flood back.
            first = await self.store.claim(self.store.key("rl", "told", msg.chat_id, msg.limit_key), 60)
            return texts.RATE_LIMITED if first else SILENT
        return None

    async def allow_forced(self, msg: IncomingMessage, *, turn: str = "") -> bool:
        """May this sender force one more re-analysis (`重新分析`, cache skipped) this hour?

        Kept per `turn` like `check`: a message handled again is not counted again."""
        limit = self.chat.reanalyze_per_hour
        if limit <= 0:
            return False
        kept = self.store.key("policy", "force", turn) if turn else ""
        if kept and (known := await self.store.get_json(kept)) is not None:
            return bool(known)
        hour = int(self._clock() // 3600)
        used = await self.store.incr(
            self.store.key("rl", "force", msg.channel, msg.limit_key, hour), ttl_s=3700
        )
        if kept:
            await self.store.set_json(kept, used <= limit, ttl_s=TURN_MEMORY_S)
        return used <= limit
