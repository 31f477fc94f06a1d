"""Who may use the bot and how often: one seam in front of every handler (the router calls it)."""

from __future__ import annotations

import time

from bot.core.models import IncomingMessage
from bot.core.settings import ChatSettings
from bot.core.store import Store
from handlers import texts

SILENT = ""  # refused without a word (not our group, or already told about the rate limit)


class AccessPolicy:
    def __init__(self, chat: ChatSettings, store: Store) -> None:
        self.chat = chat
        self.store = store

    async def check(self, msg: IncomingMessage) -> str | None:
        """None when the sender may use the bot now; else the polite refusal (`SILENT` = say nothing)."""
        chat = self.chat
        if (
            msg.is_group
            and chat.allowed_groups
            and not ({msg.chat_id, msg.chat_name} & set(chat.allowed_groups))
        ):
            return SILENT
        if (
            chat.allowed_users
            and msg.sender_id not in chat.allowed_users
            and msg.sender_name not in chat.allowed_users
        ):
            return texts.NOT_ALLOWED
        window = int(time.time() // 60)
        user_n = await self.store.incr(
            self.store.key("rl", "u", msg.channel, msg.sender_id, window), ttl_s=90
        )
        group_n = 0
        if msg.is_group:
            group_n = await self.store.incr(
                self.store.key("rl", "g", msg.channel, msg.chat_id, window), ttl_s=90
            )
        if user_n > chat.user_rate_per_min or group_n > chat.group_rate_per_min:
            # Say it once per window, then stay quiet: a flood must not make the bot flood back.
            first = await self.store.claim(
                self.store.key("rl", "told", msg.chat_id, msg.sender_id, window), 90
            )
            return texts.RATE_LIMITED if first else SILENT
        return None
