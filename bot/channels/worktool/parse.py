"""WorkTool message callback → `IncomingMessage` (wecom-channels.md §1.2, §1.8).

The callback body is JSON or a form (the robot's `callBackRequestType`), and real payloads carry
numbers and booleans as strings. Nothing here raises on a bad payload: a message that cannot be
handled becomes `Ignored(reason)`; only an unreadable, oversized or too deeply nested body raises
`CallbackBodyError`, which the caller answers with a 4xx and an empty message. An image or file addressed to the bot
becomes a message with `content="unsupported"`: the conversation tells the sender what it reads.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from bot.core.models import IncomingMessage, utcnow

CHANNEL = "worktool"
GROUP_ROOM_TYPES = frozenset({1, 3})  # 外部群, 内部群
PRIVATE_ROOM_TYPES = frozenset({2, 4})  # 外部联系人, 内部联系人
TEXT_TYPES = frozenset({1, 15})  # 文本, 带回复文本

# Spaces WeCom/WorkTool put around mentions and that users paste: NBSP, U+2000..U+200B, U+2005
# (the mention separator), NNBSP, MMSP, word joiner, ideographic space, BOM.
_SPACE_TRANS = str.maketrans(
    dict.fromkeys([0x00A0, *range(0x2000, 0x200C), 0x202F, 0x205F, 0x2060, 0x3000, 0xFEFF], " ")
)
_HSPACE_RE = re.compile(r"[ \t\f\v]+")
_NAME_MAX = 200
_TRUE = frozenset({"true", "1", "yes", "y", "on"})
_FALSE = frozenset({"false", "0", "no", "n", "off", ""})


class CallbackBodyError(Exception):
    """The callback body cannot be read; answered with a 4xx and an empty message, never a 5xx."""


class BodyTooLarge(CallbackBodyError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"callback body larger than {limit} bytes")
        self.limit = limit


class MalformedBody(CallbackBodyError):
    pass


@dataclass(frozen=True, slots=True)
class Ignored:
    """A callback that carries nothing to handle (logged with its reason, answered `{"code": 0}`)."""

    # "non_text" | "missing_sender" | "missing_chat" | "empty_text" | "unknown_room_type" | "own_message"
    reason: str
    chat_id: str = ""
    is_group: bool = False
    sender_name: str = ""


# --------------------------------------------------------------------------- body


async def _read_limited(request: web.Request, max_bytes: int) -> bytes:
    if request.content_length is not None and request.content_length > max_bytes:
        raise BodyTooLarge(max_bytes)
    chunks: list[bytes] = []
    total = 0
    while chunk := await request.content.readany():
        total += len(chunk)
        if total > max_bytes:  # chunked bodies have no Content-Length
            raise BodyTooLarge(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_json(body: bytes, charset: str) -> dict[str, Any]:
    try:
        value = json.loads(body.decode(charset, errors="replace"))
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise MalformedBody("callback body is not valid JSON") from exc
    if not isinstance(value, dict):
        raise MalformedBody("callback JSON is not an object")
    return value


def _parse_urlencoded(body: bytes, charset: str) -> dict[str, Any]:
    text = body.decode(charset, errors="replace")
    # first value wins: a repeated field is more likely junk appended by a proxy
    result: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        result.setdefault(key, value)
    return result


def _parse_multipart(body: bytes, content_type_header: str) -> dict[str, Any]:
    head = f"Content-Type: {content_type_header}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise MalformedBody("multipart body without parts")
    result: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or not name:
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        charset = part.get_content_charset() or "utf-8"
        result.setdefault(name, payload.decode(charset, errors="replace"))
    return result


def _looks_like_form(text: str) -> bool:
    return "=" in text and not text.lstrip().startswith(("{", "["))


async def parse_request(request: web.Request, *, max_bytes: int) -> dict[str, Any]:
    """Read a callback body (JSON, urlencoded or multipart form) into a flat mapping.

    Dispatches on Content-Type; a missing or wrong type is tolerated by sniffing. Raises
    `BodyTooLarge` / `MalformedBody`.
    """
    body = await _read_limited(request, max_bytes)
    charset = request.charset or "utf-8"
    ctype = request.content_type.lower()
    if ctype.startswith("multipart/"):
        return _parse_multipart(body, request.headers.get("Content-Type", ctype))
    if ctype == "application/x-www-form-urlencoded" and not body.lstrip().startswith(b"{"):
        return _parse_urlencoded(body, charset)
    stripped = body.strip()
    if not stripped:
        raise MalformedBody("empty callback body")
    if ctype == "application/json" or ctype.endswith("+json") or stripped.startswith(b"{"):
        return _parse_json(stripped, charset)
    text = stripped.decode(charset, errors="replace")
    if _looks_like_form(text):
        return _parse_urlencoded(stripped, charset)
    raise MalformedBody(f"unsupported callback body (Content-Type {ctype or 'missing'})")


# --------------------------------------------------------------------------- payload


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            try:
                number = float(value.strip())
            except ValueError:
                return None
            return int(number) if number.is_integer() else None
    return None


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    return None


def _as_str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


def normalise_text(text: str) -> str:
    """Unicode spaces → plain spaces, runs collapsed per line, blank edges stripped."""
    lines = [_HSPACE_RE.sub(" ", line).strip() for line in text.translate(_SPACE_TRANS).splitlines()]
    return "\n".join(lines).strip()


def _mention_re(bot_name: str) -> re.Pattern[str]:
    # "@name" ends at a space, the end, or punctuation; "@job-doctor2" is someone else.
    return re.compile(rf"@{re.escape(bot_name)}(?=$|[\s,，:：!！?？])")


def _strip_leading_mention(text: str, bot_name: str, *, at_me: bool) -> str:
    if bot_name:
        return _mention_re(bot_name).sub("", text, count=1).strip() if text.startswith("@") else text
    if at_me and text.startswith("@"):  # unknown bot name: drop the first @token of an @-me message
        return re.sub(r"^@\S+\s*", "", text, count=1)
    return text


DEFAULT_MAX_TEXT_CHARS = 4000


def _clipped(value: Any, limit: int) -> tuple[str, bool]:
    """The field as text, cut before any parsing: a body may carry 256 KB of crafted text."""
    text = _as_str(value)
    return (text[:limit], True) if len(text) > limit else (text, False)


def to_incoming(
    payload: Mapping[str, Any],
    *,
    robot_id: str,
    bot_name: str,
    clock: Callable[[], datetime] = utcnow,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> IncomingMessage | Ignored:
    """Turn one callback payload into an `IncomingMessage`, or say why it is ignored.

    `spoken` / `rawSpoken` are cut to `max_text_chars` (plus room for the mention) before anything
    reads them; names are cut to 200 characters.
    """
    bot_name = normalise_text(bot_name)
    sender = normalise_text(_as_str(payload.get("receivedName"))[:_NAME_MAX])
    room_type = _as_int(payload.get("roomType"))
    group_name = normalise_text(_as_str(payload.get("groupName"))[:_NAME_MAX])
    group_remark = normalise_text(_as_str(payload.get("groupRemark"))[:_NAME_MAX])
    if room_type is None and payload.get("roomType") in (None, ""):
        room_type = 1 if (group_name or group_remark) else 2  # not sent: infer from the group fields
    if room_type in GROUP_ROOM_TYPES:
        is_group = True
        chat_id = group_remark or group_name  # a remark, when set, is what WeCom search needs
        chat_name = group_name or group_remark
    elif room_type in PRIVATE_ROOM_TYPES:
        is_group = False
        chat_id = chat_name = sender
    else:
        return Ignored("unknown_room_type", sender_name=sender)
    if not sender:
        return Ignored("missing_sender", chat_id=chat_id, is_group=is_group)
    if not chat_id:
        return Ignored("missing_chat", is_group=is_group, sender_name=sender)
    if bot_name and sender == bot_name:
        return Ignored("own_message", chat_id=chat_id, is_group=is_group, sender_name=sender)

    room = max_text_chars + len(bot_name) + 2  # `rawSpoken` still carries "@name "
    raw_text, raw_cut = _clipped(payload.get("rawSpoken"), room)
    spoken_text, spoken_cut = _clipped(payload.get("spoken"), max_text_chars)
    raw = normalise_text(raw_text)
    at_me = _as_bool(payload.get("atMe"))
    mentioned = (
        not is_group or at_me is True or (bool(bot_name) and _mention_re(bot_name).search(raw) is not None)
    )
    # `spoken` normally has the mention removed already; some versions keep it.
    text = _strip_leading_mention(normalise_text(spoken_text), bot_name, at_me=False)
    truncated = spoken_cut
    if not text:
        text = _strip_leading_mention(raw, bot_name, at_me=mentioned)
        truncated = raw_cut
    if len(text) > max_text_chars:
        text, truncated = text[:max_text_chars], True

    text_type = _as_int(payload.get("textType"))
    unsupported = text_type is not None and text_type not in TEXT_TYPES
    if unsupported and not mentioned:
        return Ignored("non_text", chat_id=chat_id, is_group=is_group, sender_name=sender)
    if not text and not unsupported:
        return Ignored("empty_text", chat_id=chat_id, is_group=is_group, sender_name=sender)

    raw_id = _as_str(payload.get("messageId")) or None  # undocumented; used only when present
    return IncomingMessage(
        channel=CHANNEL,
        chat_id=chat_id,
        chat_name=chat_name,
        is_group=is_group,
        sender_id=sender,
        sender_name=sender,
        text="" if unsupported else text,
        mentioned=mentioned,
        received_at=clock(),
        raw_id=raw_id,
        reply_context={"robot_id": robot_id, "room_type": str(room_type)},
        content="unsupported" if unsupported else "text",
        truncated=truncated and not unsupported,
    )


def dedup_fingerprint(msg: IncomingMessage, robot_id: str) -> str:
    """Stable key for "same message called back twice"; the caller applies the time window (TTL)."""
    # An unsupported message has no text (a text message never does): one per sender and window.
    parts = (robot_id, "group" if msg.is_group else "user", msg.chat_id, msg.sender_id, msg.text)
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
