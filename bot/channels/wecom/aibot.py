"""WeCom AI bot (智能机器人) core shared by the HTTP and the WebSocket mode (wecom-channels.md §2).

* parsing: a decrypted callback / ``aibot_msg_callback`` body → `IncomingMessage` (text and mixed
  text items, voice transcriptions; group text without the leading ``@bot``);
* stream state in the store (so any replica can answer a refresh): one hash + one list per stream
  id, updated by Lua scripts so "append a reply" and "tell WeCom the stream is finished" never
  race — a reply appended after the finishing answer goes the late way instead;
* the relay list that carries WebSocket frames to the one process holding the connection;
* `AibotChannel`: the `Channel` for ``"wecom_aibot"``. A reply to a message whose stream is still
  open joins the stream (the user sees it in the same bubble); later it goes through the message's
  one-shot ``response_url`` (HTTP) or ``aibot_send_msg`` (WebSocket).

Stream content is cumulative and replaced on every answer: the placeholder until a reply exists,
then the replies so far (progress notes dropped once a final reply is there), trimmed to
``content_max_bytes`` with a "详情" hint.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Literal, cast

import aiohttp
import structlog

from bot.core.models import ChatTarget, IncomingMessage, Reply
from bot.core.store import Store
from bot.delivery.port import Part, SendError, SendUnknown
from bot.delivery.render import HEADER_PREFIX, MARKDOWN_MAX_BYTES
from bot.delivery.split import utf8_len
from handlers import texts

log = structlog.get_logger(__name__)

CHANNEL_NAME = "wecom_aibot"

Mode = Literal["http", "ws"]
AppendResult = Literal["appended", "closed", "missing"]
FINAL_KINDS = frozenset({"report", "answer", "question", "error", "notice", "digest"})

_MENTION_LEAD = re.compile(r"^\s*@\S+\s*")
_SPACES = re.compile(r"[ \t\u3000\xa0]+")
_ID_IN_HEADER = re.compile(r"(stepInstanceId|request_id)=([0-9A-Za-z]+)")


@dataclass(frozen=True)
class AibotOptions:
    """Tunables of both modes (constructor-level; tests shorten the timings)."""

    # self-imposed stream deadline, below WeCom's 6 minutes from the user's message: a stream
    # without a final reply by then is finished with a "still working" note
    stream_window_s: float = 330.0
    state_ttl_s: float = 7200.0
    response_url_ttl_s: float = 3600.0  # response_url is valid for one hour
    content_max_bytes: int = MARKDOWN_MAX_BYTES
    request_timeout_s: float = 10.0  # response_url POST
    bot_name: str = ""  # display name, to strip "@name" anywhere (else a leading @token in groups)
    # HTTP callbacks
    max_clock_skew_s: float = 300.0  # older (or further in the future) timestamps are replays
    max_body_bytes: int = 64 * 1024
    msgid_dedup_s: float = 86400.0
    # WebSocket long connection
    ping_interval_s: float = 30.0
    missed_pings: int = 2  # like the official SDK: two unanswered pings = dead connection
    ack_timeout_s: float = 5.0
    connect_timeout_s: float = 10.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    lease_ttl_s: float = 30.0
    lease_retry_s: float = 5.0
    relay_poll_s: float = 0.5


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Callback:
    """What a decrypted callback is about."""

    kind: Literal["message", "unsupported", "refresh", "event", "ignored"]
    msgid: str
    data: dict[str, Any]
    text: str = ""  # message: the user's text (mention stripped)
    stream_id: str = ""  # refresh: the stream asked for
    event: str = ""  # event: its eventtype


def _text_of(data: dict[str, Any]) -> str | None:
    msgtype = data.get("msgtype")
    if msgtype == "text":
        content = (data.get("text") or {}).get("content")
        return content if isinstance(content, str) else None
    if msgtype == "voice":  # delivered already transcribed
        voice = data.get("voice") or {}
        content = voice.get("content") or voice.get("text")
        return content if isinstance(content, str) else None
    if msgtype == "mixed":
        items = (data.get("mixed") or {}).get("msg_item") or []
        texts = [
            str((item.get("text") or {}).get("content", ""))
            for item in items
            if isinstance(item, dict) and item.get("msgtype") == "text"
        ]
        texts = [t for t in texts if t.strip()]
        return "\n".join(texts) if texts else None
    return None


def clean_text(text: str, *, is_group: bool, bot_name: str = "") -> str:
    """Remove the bot's mention and normalise whitespace (newlines kept)."""
    if bot_name:
        text = text.replace(f"@{bot_name}", " ")
    elif is_group:
        text = _MENTION_LEAD.sub("", text, count=1)  # group text starts with "@<bot name>"
    lines = [_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").split("\n")]
    return "\n".join(line for line in lines if line)


def classify_callback(data: dict[str, Any], *, bot_name: str = "") -> Callback:
    msgid = str(data.get("msgid") or "")
    msgtype = data.get("msgtype")
    if msgtype == "stream":
        return Callback("refresh", msgid, data, stream_id=str((data.get("stream") or {}).get("id") or ""))
    if msgtype == "event":
        event = data.get("event") or {}
        name = event.get("eventtype") if isinstance(event, dict) else None
        return Callback("event", msgid, data, event=str(name or ""))
    if msgtype in ("text", "mixed", "voice", "image", "file"):
        if not msgid or not isinstance(data.get("from"), dict):
            return Callback("ignored", msgid, data)
        raw = _text_of(data)
        if raw is None:
            return Callback("unsupported", msgid, data)
        text = clean_text(raw, is_group=data.get("chattype") == "group", bot_name=bot_name)
        return Callback("message", msgid, data, text=text)
    return Callback("ignored", msgid, data)


def stream_id_for(msgid: str) -> str:
    """Deterministic per message, so a repeated callback (WeCom retries) finds the same stream."""
    return "jd" + hashlib.sha256(f"wecom-aibot-stream\x1f{msgid}".encode()).hexdigest()[:30]


def to_incoming(cb: Callback, *, mode: Mode, extra: dict[str, str] | None = None) -> IncomingMessage:
    data = cb.data
    is_group = data.get("chattype") == "group"
    sender = str((data.get("from") or {}).get("userid") or "")
    chat_id = str(data.get("chatid") or "") if is_group else sender
    now = time.time()
    context = {
        "mode": mode,
        "msgid": cb.msgid,
        "stream_id": stream_id_for(cb.msgid),
        "received_ms": str(int(now * 1000)),
        "chattype": "group" if is_group else "single",
    }
    if isinstance(data.get("response_url"), str) and data["response_url"]:
        context["response_url"] = data["response_url"]
    context.update(extra or {})
    return IncomingMessage(
        channel=CHANNEL_NAME,
        chat_id=chat_id or sender,
        is_group=is_group,
        sender_id=sender,
        text=cb.text,
        mentioned=True,  # groups deliver only @-mentions; private chats are always addressed
        raw_id=cb.msgid,
        reply_context=context,
    )


def inbox_fingerprint(msgid: str) -> str:
    return f"{CHANNEL_NAME}:{msgid}"


# --------------------------------------------------------------------------- stream content


@dataclass(frozen=True)
class StreamPart:
    kind: str
    text: str

    @property
    def final(self) -> bool:
        return self.kind != "progress"


@dataclass(frozen=True)
class StreamView:
    parts: list[StreamPart]
    closed: bool  # the finishing answer was given (or is being given now)
    timed_out: bool  # closed at the deadline without a final reply
    meta: dict[str, str]

    @property
    def has_final(self) -> bool:
        return any(p.final for p in self.parts)


def _detail_hint(text: str) -> str:
    m = _ID_IN_HEADER.search(text.split("\n", 1)[0]) if text.startswith(HEADER_PREFIX) else None
    return texts.DETAIL_HINT.format(ident=m.group(2)) if m else texts.TRIMMED


def trim_markdown(text: str, max_bytes: int) -> str:
    """Cut at a line boundary to ``max_bytes`` (UTF-8) and say how to get the rest."""
    if utf8_len(text) <= max_bytes:
        return text
    tail = "\n\n…\n\n" + _detail_hint(text)
    budget = max(0, max_bytes - utf8_len(tail))
    cut = text.encode("utf-8")[:budget].decode("utf-8", "ignore")
    if "\n" in cut[len(cut) // 2 :]:
        cut = cut[: cut.rfind("\n")]
    if cut.count("```") % 2:  # do not leave a code fence open
        cut = cut[: cut.rfind("```")].rstrip()
    return cut + tail


def compose(view: StreamView | None, max_bytes: int) -> str:
    """The stream content to show now (cumulative; the whole text every time)."""
    if view is None:
        return texts.AIBOT_STREAM_GONE
    parts = [p for p in view.parts if p.final] if view.has_final else list(view.parts)
    shown = [p.text for p in parts]
    if view.timed_out and not view.has_final:
        shown.append(texts.AIBOT_STILL_WORKING)
    if not shown:
        return texts.AIBOT_PLACEHOLDER
    # the latest replies matter most: older ones go first when it does not fit
    while len(shown) > 1 and utf8_len("\n\n".join(shown)) > max_bytes:
        shown.pop(0)
    return trim_markdown("\n\n".join(shown), max_bytes)


# --------------------------------------------------------------------------- stream state

# KEYS[1]=meta hash, KEYS[2]=parts list; ARGV[1]=ttl ms, ARGV[2..]=field/value pairs
_OPEN = """
if redis.call('exists', KEYS[1]) == 1 then return 0 end
redis.call('hset', KEYS[1], unpack(ARGV, 2))
redis.call('pexpire', KEYS[1], ARGV[1])
return 1
"""

# KEYS: meta, parts; ARGV[1]=part json, ARGV[2]=final(0/1), ARGV[3]=now ms, ARGV[4]=ttl ms
_APPEND = """
if redis.call('exists', KEYS[1]) == 0 then return 'missing' end
if redis.call('hget', KEYS[1], 'closed') == '1' then return 'closed' end
if tonumber(ARGV[3]) >= tonumber(redis.call('hget', KEYS[1], 'deadline') or '0') then return 'closed' end
redis.call('rpush', KEYS[2], ARGV[1])
if ARGV[2] == '1' then redis.call('hset', KEYS[1], 'final', '1') end
redis.call('pexpire', KEYS[2], ARGV[4])
return 'appended'
"""

# Read the stream and, when `ARGV[2]` = 1, close it if this answer finishes it (a final reply is
# there, or the deadline passed). Closing and reading in one step: a reply appended afterwards
# sees "closed" and takes the late path instead of disappearing.
_VIEW = """
if redis.call('exists', KEYS[1]) == 0 then return false end
if ARGV[2] == '1' and redis.call('hget', KEYS[1], 'closed') ~= '1' then
  if redis.call('hget', KEYS[1], 'final') == '1' then
    redis.call('hset', KEYS[1], 'closed', '1')
  elseif tonumber(ARGV[1]) >= tonumber(redis.call('hget', KEYS[1], 'deadline') or '0') then
    redis.call('hset', KEYS[1], 'closed', '1', 'timed_out', '1')
  end
end
return {redis.call('hgetall', KEYS[1]), redis.call('lrange', KEYS[2], 0, -1)}
"""


class StreamStore:
    """Per-message stream state in the store, shared by every replica."""

    def __init__(self, store: Store, *, window_s: float, ttl_s: float) -> None:
        self.store = store
        self.window_ms = int(window_s * 1000)
        self.ttl_ms = max(1000, int(ttl_s * 1000))

    def _keys(self, sid: str) -> tuple[str, str]:
        base = self.store.key("aibot", "stream", sid, slot=sid)  # the scripts touch both: one slot
        return base, base + ":parts"

    async def open(self, sid: str, meta: dict[str, str], *, created_ms: int | None = None) -> bool:
        """Create the stream unless it exists (a repeated callback). True when created now."""
        created = created_ms if created_ms is not None else int(time.time() * 1000)
        fields = {**meta, "created": str(created), "deadline": str(created + self.window_ms), "closed": "0"}
        flat = [x for kv in fields.items() for x in kv]
        res = await self.store.redis.eval(_OPEN, 2, *self._keys(sid), self.ttl_ms, *flat)
        return bool(res)

    async def append(self, sid: str, part: StreamPart) -> AppendResult:
        payload = json.dumps({"k": part.kind, "t": part.text}, ensure_ascii=False)
        res = await self.store.redis.eval(
            _APPEND, 2, *self._keys(sid), payload, int(part.final), int(time.time() * 1000), self.ttl_ms
        )
        return str(res)  # type: ignore[return-value]

    async def view(self, sid: str, *, finish: bool) -> StreamView | None:
        """The stream as it is; with ``finish`` the answer built from it may finish it (closes it)."""
        res = await self.store.redis.eval(_VIEW, 2, *self._keys(sid), int(time.time() * 1000), int(finish))
        if not res:
            return None
        flat, raw_parts = res
        meta = {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
        parts: list[StreamPart] = []
        for raw in raw_parts:
            try:
                item = json.loads(raw)
                parts.append(StreamPart(str(item["k"]), str(item["t"])))
            except (ValueError, KeyError, TypeError):
                continue
        return StreamView(parts, meta.get("closed") == "1", meta.get("timed_out") == "1", meta)

    async def update(self, sid: str, **fields: str) -> None:
        meta, _parts = self._keys(sid)
        await self.store.redis.hset(meta, mapping=cast(Any, fields))

    async def contains(self, sid: str, text: str) -> bool:
        view = await self.view(sid, finish=False)
        return view is not None and any(p.text == text for p in view.parts)


# --------------------------------------------------------------------------- WebSocket relay


_PUSH = """
redis.call('rpush', KEYS[1], ARGV[1])
redis.call('pexpire', KEYS[1], ARGV[2])
"""


class Relay:
    """Frames for the WebSocket holder, in a Redis list: any replica produces, the holder consumes.

    Only the lease holder reads, so it can peek, send, then pop: a holder that dies mid-send
    leaves the item for the next one (at least once; stream frames are idempotent).
    """

    def __init__(self, store: Store, bot_id: str, *, ttl_s: float) -> None:
        self.store = store
        self.key = store.key("aibot", "relay", bot_id)
        self.ttl_ms = max(1000, int(ttl_s * 1000))
        self.wake = asyncio.Event()

    async def push(self, item: dict[str, str]) -> None:
        await self.store.redis.eval(_PUSH, 1, self.key, json.dumps(item, ensure_ascii=False), self.ttl_ms)
        self.wake.set()

    async def peek(self) -> dict[str, str] | Literal[False] | None:
        """The oldest item; None when empty; False when it cannot be decoded (pop it)."""
        raw = await self.store.redis.lindex(self.key, 0)
        if raw is None:
            return None
        try:
            item = json.loads(raw)
        except ValueError:
            return False
        return {str(k): str(v) for k, v in item.items()} if isinstance(item, dict) else False

    async def pop(self) -> None:
        await self.store.redis.lpop(self.key)


# --------------------------------------------------------------------------- the channel


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


class AibotChannel:
    """`bot.delivery.port.Channel` for the WeCom AI bot, both modes (mode in ``reply_context``)."""

    name = CHANNEL_NAME

    def __init__(
        self,
        store: Store,
        http: aiohttp.ClientSession,
        options: AibotOptions | None = None,
        *,
        relay: Relay | None = None,
    ) -> None:
        self.options = options or AibotOptions()
        self.store = store
        self._http = http
        self.relay = relay  # set when this process runs the WebSocket mode
        self.streams = StreamStore(
            store, window_s=self.options.stream_window_s, ttl_s=self.options.state_ttl_s
        )

    # ------------------------------------------------------------------ Channel protocol

    def render(self, reply: Reply) -> list[str]:
        # WeCom quotes the user's message in a stream / response_url reply, so no @ prefix.
        return [trim_markdown(reply.markdown or reply.text, self.options.content_max_bytes)]

    async def send_part(self, part: Part) -> None:
        target, text = part.target, part.text
        ctx = target.reply_context
        sid = ctx.get("stream_id", "")
        if sid:
            result = await self.streams.append(sid, StreamPart(part.kind, text))
            if result == "appended":
                if ctx.get("mode") == "ws":
                    await self._relay().push({"t": "stream", "sid": sid})
                return
        if part.kind == "progress":
            log.info("aibot_progress_skipped", reason="stream closed")  # not worth the one-shot path
            return
        if ctx.get("mode") == "ws":
            await self._relay().push({"t": "send", "chatid": target.chat_id, "content": text})
            await self.store.redis.set(self._handed_key(target, text), "1", px=86_400_000)
            return
        await self._post_response_url(target, text)

    async def already_sent(self, part: Part, *, since_ms: int) -> bool | None:
        target, text = part.target, part.text
        sid = target.reply_context.get("stream_id", "")
        if sid and await self.streams.contains(sid, text):
            return True
        if await self.store.exists(self._handed_key(target, text)):
            return True
        url = target.reply_context.get("response_url", "")
        if url:
            used = await self.store.redis.get(self._rurl_key(url))
            return used is not None and str(used) == _digest(target.chat_id, text)
        return False

    # ------------------------------------------------------------------ late paths

    def _relay(self) -> Relay:
        if self.relay is None:
            raise SendError("WebSocket mode is not enabled in this process")
        return self.relay

    def _handed_key(self, target: ChatTarget, part: str) -> str:
        return self.store.key(
            "aibot", "handed", _digest(target.chat_id, target.reply_context.get("msgid", ""), part)
        )

    def _rurl_key(self, url: str) -> str:
        return self.store.key("aibot", "rurl", _digest(url))

    async def _post_response_url(self, target: ChatTarget, part: str) -> None:
        ctx = target.reply_context
        url = ctx.get("response_url", "")
        received_ms = int(ctx.get("received_ms") or 0)
        if not url or (
            received_ms and time.time() * 1000 - received_ms > self.options.response_url_ttl_s * 1000
        ):
            log.warning("aibot_reply_dropped", reason="no usable response_url")
            return
        mark = _digest(target.chat_id, part)
        key = self._rurl_key(url)
        if not await self.store.claim(key, self.options.response_url_ttl_s + 60, mark):
            if str(await self.store.redis.get(key)) != mark:
                log.warning("aibot_reply_dropped", reason="response_url already used")
            return
        body = {"msgtype": "markdown", "markdown": {"content": part}}
        try:
            async with self._http.post(
                url, json=body, timeout=aiohttp.ClientTimeout(total=self.options.request_timeout_s)
            ) as resp:
                text = await resp.text()
        except (aiohttp.ClientConnectorError, aiohttp.InvalidURL) as exc:
            await self.store.delete(key)  # nothing went out: the URL is still unused
            raise SendError(f"response_url unreachable: {type(exc).__name__}") from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise SendUnknown(f"response_url: {type(exc).__name__}") from exc
        try:
            errcode = json.loads(text).get("errcode", 0) if text.strip() else 0
        except (ValueError, AttributeError):
            errcode = None
        if resp.status >= 400 or errcode not in (0, None):
            await self.store.delete(key)
            raise SendError(f"response_url answered HTTP {resp.status} errcode {errcode}")
