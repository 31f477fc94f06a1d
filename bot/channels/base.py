"""What every channel shares on its inbound side: the ingress and the shape the app runs.

Ack first, then work (DESIGN.md principle 1): a channel turns its wire format into one
`IncomingMessage` and hands it to `Ingress.accept`, which writes the dedup key and the inbox entry
in one step. Only then does the channel answer its platform; when the store cannot take the message
the channel answers "unavailable" in its own wire format and acknowledges nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from bot.core.metrics import Metrics
from bot.core.models import IncomingMessage
from bot.delivery.queue import Inbox, InboxFull

log = structlog.get_logger(__name__)

Loop = Callable[[], Coroutine[Any, Any, None]]


class IngressUnavailable(Exception):
    """The store could not take the message: nothing was acknowledged (answer 503)."""


class Ingress:
    """Dedup + durable inbox write + the channel metrics, the same for every channel."""

    def __init__(self, inbox: Inbox, metrics: Metrics) -> None:
        self.inbox = inbox
        self.metrics = metrics

    async def accept(self, msg: IncomingMessage, *, fingerprint: str, window_s: float) -> bool:
        """True when the message is new and stored; False for a duplicate within the window."""
        try:
            accepted = await self.inbox.accept(fingerprint, msg, window_s=window_s)
        except InboxFull as exc:
            # Never trimmed: the consumers are stuck or far behind, and an operator must know.
            self.reject(msg.channel, "inbox_full")
            log.error("inbox_full", channel=msg.channel, max_entries=self.inbox.max_entries)
            raise IngressUnavailable("inbox full") from exc
        except (RedisError, OSError) as exc:
            self.reject(msg.channel, "store_unavailable")
            log.error("ingress_store_unavailable", channel=msg.channel, error=type(exc).__name__)
            raise IngressUnavailable(type(exc).__name__) from exc
        counter = self.metrics.messages_received if accepted else self.metrics.duplicates
        counter.labels(msg.channel).inc()
        return accepted

    def reject(self, channel: str, reason: str) -> None:
        """Count a callback refused before it became a message (token, size, format, replay)."""
        self.metrics.messages_rejected.labels(channel, reason).inc()

    def duplicate(self, channel: str) -> None:
        """Count a duplicate the channel recognised itself (before the inbox)."""
        self.metrics.duplicates.labels(channel).inc()


class Endpoint(Protocol):
    """The inbound side of a channel as the app runs it: its routes, its loops, its shutdown."""

    def routes(self) -> Sequence[web.RouteDef]:
        """Routes to register on the application (empty for a channel without callbacks)."""
        ...

    def loops(self) -> Sequence[Loop]:
        """Long-running daemons to start with the app (e.g. a WebSocket connection)."""
        ...

    async def close(self) -> None:
        """Called once on shutdown, before the store and the HTTP session close."""
        ...
