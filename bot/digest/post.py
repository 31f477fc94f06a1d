"""Where the digest goes and how each target gets it exactly once.

WorkTool targets go through the outbox delivery (each part at most once, history checked on
recovery); webhook targets keep one outbox record per message as well.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qs, urlsplit

import aiohttp
import structlog

from bot.channels.webhook import WebhookError, WebhookSender, key_id
from bot.core.models import ChatTarget, Reply
from bot.core.settings import DigestTarget
from bot.core.store import Store
from bot.delivery.outbox import Outbox
from bot.delivery.send import Delivery
from bot.digest.models import Digest
from bot.digest.render import markdown_parts, render_markdown, render_text, text_header, text_parts, trend_png

log = structlog.get_logger(__name__)

DEFAULT_WEBHOOK_BASE_URL = "https://qyapi.weixin.qq.com"


class SendIncomplete(Exception):
    """Not every part is known to be delivered; the target stays unmarked and is retried."""


@dataclass(frozen=True, slots=True)
class Target:
    channel: Literal["worktool", "webhook"]
    chat: str = ""
    webhook_key: str = field(default="", repr=False)
    webhook_base_url: str | None = None  # from a full webhook URL given as the key

    @property
    def id(self) -> str:
        """Stable and loggable: a webhook key only appears as its fingerprint."""
        if self.channel == "worktool":
            return f"worktool:{self.chat}"
        return f"webhook:{key_id(self.webhook_key)}"

    @classmethod
    def of(cls, target: DigestTarget) -> Target:
        if target.channel == "worktool":
            if not target.chat.strip():
                raise ValueError("a worktool digest target needs `chat` (the group name)")
            return cls("worktool", chat=target.chat.strip())
        raw = target.key.get_secret_value().strip() if target.key is not None else ""
        base, key = split_webhook_key(raw)
        if not key:
            raise ValueError("a webhook digest target needs `key` (the webhook key or its full URL)")
        return cls("webhook", webhook_key=key, webhook_base_url=base)


def split_webhook_key(raw: str) -> tuple[str | None, str]:
    """Accept the bare key or the whole webhook URL as WeCom shows it (`…/webhook/send?key=…`)."""
    if not raw.lower().startswith(("http://", "https://")):
        return None, raw
    parts = urlsplit(raw)
    key = (parse_qs(parts.query).get("key") or [""])[0]
    return f"{parts.scheme}://{parts.netloc}", key


class DigestPoster:
    """Sends one digest to one target; raises when it is not certainly delivered."""

    def __init__(
        self,
        store: Store,
        session: aiohttp.ClientSession,
        *,
        delivery: Delivery | None,
        part_max_chars: int,
        webhook_base_url: str = DEFAULT_WEBHOOK_BASE_URL,
        webhook_sender: Callable[[str], WebhookSender] | None = None,
        outbox_stale_s: float = 60.0,
    ) -> None:
        self._delivery = delivery
        self._session = session
        self.part_max_chars = part_max_chars
        self.webhook_base_url = webhook_base_url
        self._make_sender = webhook_sender or (lambda base: WebhookSender(session, base_url=base))
        self._senders: dict[str, WebhookSender] = {}
        self.outbox = Outbox(store, stale_after_s=outbox_stale_s)

    async def post(self, target: Target, digest: Digest, key: str) -> None:
        if target.channel == "worktool":
            await self._worktool(target, digest, key)
        else:
            await self._webhook(target, digest, key)

    async def _worktool(self, target: Target, digest: Digest, key: str) -> None:
        delivery = self._delivery
        if delivery is None:
            raise SendIncomplete("the WorkTool channel is not running")
        parts = text_parts(digest, self.part_max_chars)
        reply = Reply(
            target=ChatTarget(channel="worktool", chat_id=target.chat, chat_name=target.chat, is_group=True),
            kind="digest",
            title=text_header(digest),
            text=render_text(digest),
            markdown=render_markdown(digest),
            parts=parts,
            key=key,
        )
        await delivery.send(reply, key)
        states = [await delivery.outbox.state(key, i) for i in range(len(parts))]
        if any(s != "sent" for s in states):
            # "busy" (another process is mid-send) or no WorkTool channel registered.
            raise SendIncomplete(f"{states.count('sent')}/{len(parts)} parts confirmed")

    def _sender(self, base_url: str) -> WebhookSender:
        sender = self._senders.get(base_url)
        if sender is None:
            sender = self._senders[base_url] = self._make_sender(base_url)
        return sender

    async def _webhook(self, target: Target, digest: Digest, key: str) -> None:
        sender = self._sender(target.webhook_base_url or self.webhook_base_url)
        parts = markdown_parts(digest)
        for index, part in enumerate(parts):
            state = await self.outbox.begin(key, index)
            if state == "skip":
                continue
            if state == "busy":
                raise SendIncomplete(f"webhook part {index + 1} is being sent elsewhere")
            # "recover": the webhook has no history to look at; sending again beats losing it.
            try:
                await sender.send_markdown(target.webhook_key, part)
            except (WebhookError, ValueError):
                await self.outbox.abort(key, index)
                raise
            await self.outbox.done(key, index)
        if digest.empty or not digest.trend:
            return
        index = len(parts)
        if await self.outbox.begin(key, index) != "send":
            return
        try:
            await sender.send_image(target.webhook_key, trend_png(digest.trend))
        except WebhookError as exc:  # the picture is extra: the digest itself went out
            await self.outbox.abort(key, index)
            log.warning("digest_trend_image_failed", target=target.id, errcode=exc.errcode)
            return
        await self.outbox.done(key, index)
