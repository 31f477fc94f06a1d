"""WorkTool channel: callback parsing and the rate-limited send API client (wecom-channels.md §1)."""

from bot.channels.worktool.parse import (
    BodyTooLarge,
    CallbackBodyError,
    Ignored,
    MalformedBody,
    dedup_fingerprint,
    parse_request,
    to_incoming,
)
from bot.channels.worktool.sender import (
    HistoryUnavailable,
    SendCommand,
    SendFailed,
    SendOutcomeUnknown,
    SendResult,
    SlidingWindowLimiter,
    WorkToolError,
    WorkToolSender,
)

__all__ = [
    "BodyTooLarge",
    "CallbackBodyError",
    "HistoryUnavailable",
    "Ignored",
    "MalformedBody",
    "SendCommand",
    "SendFailed",
    "SendOutcomeUnknown",
    "SendResult",
    "SlidingWindowLimiter",
    "WorkToolError",
    "WorkToolSender",
    "dedup_fingerprint",
    "parse_request",
    "to_incoming",
]
