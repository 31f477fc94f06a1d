"""The local web console: a browser chat page that talks to the bot like an ops group does.

It is a real channel (DESIGN.md principle 4): browser messages become `IncomingMessage`s in the
durable inbox, the consumer routes them, and replies come back through `ConsoleChannel`.
"""

from bot.channels.console.channel import (
    CHANNEL_NAME,
    GROUP_CHAT_ID,
    GROUP_CHAT_NAME,
    ConsoleChannel,
    private_chat_id,
)
from bot.channels.console.web import (
    Access,
    ConsoleWeb,
    console_access,
    fingerprint,
    is_loopback,
    normalize_text,
    to_incoming,
)

__all__ = [
    "CHANNEL_NAME",
    "GROUP_CHAT_ID",
    "GROUP_CHAT_NAME",
    "Access",
    "ConsoleChannel",
    "ConsoleWeb",
    "console_access",
    "fingerprint",
    "is_loopback",
    "normalize_text",
    "private_chat_id",
    "to_incoming",
]
