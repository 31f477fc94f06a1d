"""The web console as a real outgoing channel: per-chat history in memory, pushed to open sockets.

The console has no platform of its own, so this process's memory *is* the platform: every
message of a chat (the users' echoes and the bot's parts) goes into a bounded history with a
per-chat sequence number, and is pushed to every page subscribed to that chat. A page that
connects (or reconnects) gets the history replayed first, so nothing sent while it was away is
lost. Each subscriber has its own send queue and writer, so frames reach a page in exactly the
order they were appended, and a slow page never blocks the bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import WSCloseCode, web

from bot.core.models import Reply
from bot.delivery.port import Part
from handlers import texts

log = structlog.get_logger(__name__)

CHANNEL_NAME = "console"
GROUP_CHAT_ID = "console-group"
GROUP_CHAT_NAME = texts.CONSOLE_GROUP_NAME
PRIVATE_PREFIX = "console-private:"
BOT_SENDER = "bot"

Frame = dict[str, Any]


def private_chat_id(user: str) -> str:
    return f"{PRIVATE_PREFIX}{user}"


def _now() -> tuple[str, int]:
    now = datetime.now(UTC).astimezone()
    return now.isoformat(timespec="seconds"), int(now.timestamp() * 1000)


@dataclass(eq=False)  # identity: one per open socket
class Subscriber:
    ws: web.WebSocketResponse
    chat_id: str
    queue: asyncio.Queue[str | None] = field(default_factory=lambda: asyncio.Queue(maxsize=1000))


@dataclass
class _ChatLog:
    frames: deque[Frame]
    seq: int = 0
    pending: dict[int, Frame] = field(default_factory=dict)  # echoes reserved before the inbox said yes


class ConsoleChannel:
    """`bot.delivery.port.Channel` for the browser console, plus the socket hub it needs."""

    name = CHANNEL_NAME

    def __init__(self, *, history: int = 200, max_chats: int = 500) -> None:
        self.history = history
        self.max_chats = max_chats
        # A new epoch per process: a page that sees another epoch knows the history was reset.
        self.epoch = secrets.token_hex(4)
        self._chats: OrderedDict[str, _ChatLog] = OrderedDict()
        self._subs: dict[str, set[Subscriber]] = {}

    # ------------------------------------------------------------------ Channel protocol

    @staticmethod
    def _mention_prefix(reply: Reply) -> str:
        if reply.target.is_group and reply.mention:
            return " ".join(f"@{m}" for m in reply.mention if m) + " "
        return ""

    def render(self, reply: Reply) -> list[str]:
        return [self._mention_prefix(reply) + (reply.markdown or reply.text)]

    async def send_part(self, part: Part) -> None:
        reply = part.reply
        # The page shows the markdown; the plain text is its fallback (and what tests read).
        plain = part.text if reply.parts else self._mention_prefix(reply) + (reply.text or reply.markdown)
        frame: Frame = {
            "type": "message",
            "from": BOT_SENDER,
            "kind": part.kind,
            "markdown": part.text,
            "text": plain,
        }
        self._publish(part.target.chat_id, part.target.chat_name, frame)

    async def already_sent(self, part: Part, *, since_ms: int) -> bool | None:
        chat = self._chats.get(part.target.chat_id)
        if chat is None:
            return False
        return any(
            f.get("from") == BOT_SENDER and f.get("markdown") == part.text and int(f.get("ts", 0)) >= since_ms
            for f in chat.frames
        )

    # ------------------------------------------------------------------ users' messages

    def reserve_echo(self, chat_id: str, chat_name: str, user: str, text: str, client_id: str) -> int:
        """Take a place in the chat's order for a user's message before it is accepted.

        The bot's answer can only exist after the inbox accepted the message, so reserving the
        sequence number first keeps "question before answer" on every page, whatever the timing.
        """
        chat = self._chat(chat_id)
        chat.seq += 1
        frame = self._frame(chat_id, chat_name, chat.seq, {"from": user, "kind": "user", "text": text})
        frame["client_id"] = client_id
        chat.pending[chat.seq] = frame
        return chat.seq

    def confirm_echo(self, chat_id: str, seq: int) -> None:
        chat = self._chats.get(chat_id)
        frame = chat.pending.pop(seq, None) if chat else None
        if chat is None or frame is None:
            return
        frames = sorted([*chat.frames, frame], key=lambda f: int(f["seq"]))
        chat.frames = deque(frames[-self.history :], maxlen=self.history)
        self._broadcast(chat_id, frame)

    def drop_echo(self, chat_id: str, seq: int) -> None:
        chat = self._chats.get(chat_id)
        if chat is not None:
            chat.pending.pop(seq, None)

    def has_client_message(self, chat_id: str, client_id: str) -> bool:
        chat = self._chats.get(chat_id)
        return chat is not None and any(f.get("client_id") == client_id for f in chat.frames)

    # ------------------------------------------------------------------ sockets

    def subscribe(self, ws: web.WebSocketResponse, chat_id: str) -> Subscriber:
        sub = Subscriber(ws, chat_id)
        self._subs.setdefault(chat_id, set()).add(sub)
        self._enqueue(sub, self.history_frame(chat_id))
        return sub

    def move(self, sub: Subscriber, chat_id: str) -> None:
        """Switch a page to another chat (mode or name changed) and replay that chat."""
        self._unlink(sub)
        sub.chat_id = chat_id
        self._subs.setdefault(chat_id, set()).add(sub)
        self._enqueue(sub, self.history_frame(chat_id))

    def unsubscribe(self, sub: Subscriber) -> None:
        self._unlink(sub)
        with contextlib.suppress(asyncio.QueueFull):
            sub.queue.put_nowait(None)

    def send_to(self, sub: Subscriber, frame: Frame) -> None:
        self._enqueue(sub, frame)

    async def writer(self, sub: Subscriber) -> None:
        """Drain one page's queue onto its socket (runs for the lifetime of the connection)."""
        while True:
            data = await sub.queue.get()
            if data is None or sub.ws.closed:
                break
            await sub.ws.send_str(data)
        # Unsubscribed or stalled: end the connection so the page reconnects and replays.
        await sub.ws.close(code=WSCloseCode.GOING_AWAY, message=b"resubscribe")

    async def close_all(self) -> None:
        subs = [s for group in self._subs.values() for s in group]
        for sub in subs:
            self.unsubscribe(sub)
        await asyncio.gather(
            *(s.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown") for s in subs),
            return_exceptions=True,
        )

    def connected(self, chat_id: str) -> int:
        return len(self._subs.get(chat_id, ()))

    def history_frame(self, chat_id: str) -> Frame:
        chat = self._chats.get(chat_id)
        return {
            "type": "history",
            "epoch": self.epoch,
            "chat": chat_id,
            "messages": list(chat.frames) if chat else [],
        }

    def messages(self, chat_id: str) -> list[Frame]:
        chat = self._chats.get(chat_id)
        return list(chat.frames) if chat else []

    # ------------------------------------------------------------------ internals

    def _chat(self, chat_id: str) -> _ChatLog:
        chat = self._chats.get(chat_id)
        if chat is None:
            chat = self._chats[chat_id] = _ChatLog(deque(maxlen=self.history))
            self._evict()
        self._chats.move_to_end(chat_id)
        return chat

    def _evict(self) -> None:
        # Forget the least recently active chats nobody is watching (private chats per name add up).
        for chat_id in list(self._chats):
            if len(self._chats) <= self.max_chats:
                return
            if not self._subs.get(chat_id):
                del self._chats[chat_id]

    def _frame(self, chat_id: str, chat_name: str, seq: int, fields: Frame) -> Frame:
        iso, ms = _now()
        return {
            "type": "message",
            "id": f"{self.epoch}-{seq}",
            "seq": seq,
            "chat": chat_id,
            "chat_name": chat_name,
            "time": iso,
            "ts": ms,
            **fields,
        }

    def _publish(self, chat_id: str, chat_name: str, fields: Frame) -> Frame:
        chat = self._chat(chat_id)
        chat.seq += 1
        frame = self._frame(chat_id, chat_name, chat.seq, fields)
        chat.frames.append(frame)
        self._broadcast(chat_id, frame)
        return frame

    def _broadcast(self, chat_id: str, frame: Frame) -> None:
        data = json.dumps(frame, ensure_ascii=False)
        for sub in list(self._subs.get(chat_id, ())):
            self._enqueue_raw(sub, data)

    def _enqueue(self, sub: Subscriber, frame: Frame) -> None:
        self._enqueue_raw(sub, json.dumps(frame, ensure_ascii=False))

    def _enqueue_raw(self, sub: Subscriber, data: str) -> None:
        try:
            sub.queue.put_nowait(data)
        except asyncio.QueueFull:
            # A page that stopped reading: drop it; it reconnects and gets the history replayed.
            log.warning("console_subscriber_stalled", chat=sub.chat_id)
            self._unlink(sub)
            while not sub.queue.empty():
                sub.queue.get_nowait()
            sub.queue.put_nowait(None)  # the writer stops and the handler closes the socket

    def _unlink(self, sub: Subscriber) -> None:
        group = self._subs.get(sub.chat_id)
        if group is not None:
            group.discard(sub)
            if not group:
                del self._subs[sub.chat_id]
