"""The local web console: a browser chat page that talks to the bot like an ops group does.

It is a real channel (DESIGN.md principle 4): browser messages become `IncomingMessage`s in the
durable inbox, the runtime routes them, and replies come back through `ConsoleChannel`.
"""

from bot.channels.console.channel import (
    CHANNEL_NAME,
    GROUP_CHAT_ID,
    GROUP_CHAT_NAME,
    ConsoleChannel,
    private_chat_id,
)
from bot.channels.console.routes import (
    CONSOLE,
    CONSOLE_TOKEN,
    SAMPLE_IDS,
    console_component,
    fingerprint,
    is_loopback,
    normalize_text,
    setup_console,
    to_incoming,
)

__all__ = [
    "CHANNEL_NAME",
    "CONSOLE",
    "CONSOLE_TOKEN",
    "GROUP_CHAT_ID",
    "GROUP_CHAT_NAME",
    "SAMPLE_IDS",
    "ConsoleChannel",
    "console_component",
    "fingerprint",
    "is_loopback",
    "normalize_text",
    "private_chat_id",
    "setup_console",
    "to_incoming",
]
