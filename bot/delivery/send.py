"""Send a Reply through its channel, each part at most once (outbox), retrying safely."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time

import structlog

from bot.core.metrics import Metrics
from bot.core.models import Reply
from bot.core.redact import Redactor
from bot.delivery.outbox import Outbox
from bot.delivery.port import Channel, ChannelRegistry, Part, SendError, SendUnknown

log = structlog.get_logger(__name__)


class DeliveryFailed(Exception):
    pass


class DeliveryBusy(DeliveryFailed):
    """A part is marked as being sent by someone else: not known to be delivered, try again later."""


def delivery_key(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:32]


class Delivery:
    def __init__(
        self,
        channels: ChannelRegistry,
        outbox: Outbox,
        metrics: Metrics,
        *,
        retries: int = 3,
        backoff_s: float = 1.0,
        unknown_recheck_s: float = 2.0,
        redactor: Redactor | None = None,
    ) -> None:
        self.redactor = redactor or Redactor()
        self.channels = channels
        self.outbox = outbox
        self.metrics = metrics
        self.retries = retries
        self.backoff_s = backoff_s
        self.unknown_recheck_s = unknown_recheck_s

    async def send(self, reply: Reply, key: str) -> int:
        """Deliver every part not yet sent under `key`. Returns how many parts went out now."""
        channel = self.channels.get(reply.target.channel)
        if channel is None:
            log.warning("no_such_channel", channel=reply.target.channel)
            return 0
        # Last line of defence: no secret quoted from a log line ever reaches a chat. The reply is
        # masked before rendering (a secret cut in two by a split is still whole here) and each part
        # again after it (a channel may add text of its own).
        reply = reply.model_copy(
            update={
                "text": self.redactor(reply.text),
                "markdown": self.redactor(reply.markdown),
                "parts": [self.redactor(p) for p in reply.parts],
            }
        )
        texts = [self.redactor(p) for p in (reply.parts or channel.render(reply))]
        sent = 0
        for index, text in enumerate(texts):
            part = Part(reply, text, index)
            state = await self.outbox.begin(key, index)
            if state == "skip":
                continue
            if state == "busy":
                # Never count it as delivered (its sender may have died mid-send); later parts wait so
                # the order holds. The caller keeps the work pending and retries.
                raise DeliveryBusy(f"part {index + 1} is being sent elsewhere")
            since_ms = int(time.time() * 1000) - 3_600_000
            if state == "recover":
                seen = await channel.already_sent(part, since_ms=since_ms)
                if seen:
                    await self.outbox.done(key, index)
                    continue
            try:
                if await self._send_one(channel, part, key, since_ms):
                    sent += 1
            except asyncio.CancelledError:
                # Stopping mid-send (the work is handed back): mark the outcome unknown so the
                # replica that takes over checks the history now instead of waiting as "busy".
                with contextlib.suppress(Exception):
                    await self.outbox.release(key, index)
                raise
        return sent

    async def _send_one(self, channel: Channel, part: Part, key: str, since_ms: int) -> bool:
        name, index = channel.name, part.index
        delay = self.backoff_s
        last_error = "outcome unknown"
        for attempt in range(self.retries + 1):
            try:
                await channel.send_part(part)
            except SendUnknown:
                # Never resend blindly: look at the platform's history first.
                self.metrics.send_failures.labels(name).inc()
                await asyncio.sleep(self.unknown_recheck_s)
                seen = await channel.already_sent(part, since_ms=since_ms)
                if seen:
                    await self.outbox.done(key, index)
                    self.metrics.sends.labels(name).inc()
                    return True
                if seen is None and attempt == self.retries:
                    break
                continue
            except SendError as exc:
                last_error = str(exc)[:200]
                self.metrics.send_failures.labels(name).inc()
                log.warning("send_failed", channel=name, attempt=attempt + 1, error=str(exc)[:200])
                if attempt < self.retries:
                    await asyncio.sleep(delay)
                    delay *= 2
                continue
            await self.outbox.done(key, index)
            self.metrics.sends.labels(name).inc()
            return True
        await self.outbox.abort(key, index)
        raise DeliveryFailed(f"could not deliver part {index + 1} via {name}: {last_error}")
