"""The outbound port: what every channel offers the delivery service.

A channel renders a channel-neutral `Reply` into the parts it can send, sends one `Part` (which
carries its reply, so the channel knows the reply's kind, target and mentions), and — where the
platform allows — tells whether a part already went out (WorkTool's history), so a crash between
"sent" and "recorded" does not duplicate a report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.core.models import ChatTarget, Reply, ReplyKind


class SendError(Exception):
    """The part was certainly not delivered; it may be retried later."""


class SendUnknown(Exception):
    """The request went out but the answer was lost: it may or may not have been delivered."""


@dataclass(frozen=True, slots=True)
class Part:
    """One sendable piece of a reply (already rendered by the channel and masked)."""

    reply: Reply
    text: str
    index: int = 0

    @property
    def target(self) -> ChatTarget:
        return self.reply.target

    @property
    def kind(self) -> ReplyKind:
        return self.reply.kind

    @property
    def first(self) -> bool:
        return self.index == 0


class Channel(Protocol):
    name: str

    def render(self, reply: Reply) -> list[str]:
        """Split a reply into sendable parts (numbered, header first, asker mentioned)."""
        ...

    async def send_part(self, part: Part) -> None:
        """Send one part; raise SendError (not delivered) or SendUnknown (outcome unknown)."""
        ...

    async def already_sent(self, part: Part, *, since_ms: int) -> bool | None:
        """True/False when the platform's history tells; None when it cannot be read."""
        ...


class ChannelRegistry:
    def __init__(self) -> None:
        self._channels: dict[str, Channel] = {}

    def add(self, channel: Channel) -> None:
        self._channels[channel.name] = channel

    def get(self, name: str) -> Channel | None:
        return self._channels.get(name)

    @property
    def names(self) -> list[str]:
        return list(self._channels)
