"""WeCom AI bot, HTTP callback mode: ``GET|POST /wecom/aibot`` (wecom-channels.md §2.2–2.6, §5).

* ``GET``: URL verification — the decrypted ``echostr`` as the plain body.
* ``POST``: encrypted JSON callbacks. Checked in this order: size, signature (constant time, 403),
  timestamp freshness and a one-time (timestamp, nonce, signature) — a replayed request is refused
  (403) —, then decryption (400). A new message is written to the inbox (durably, deduplicated on
  ``msgid``) *before* the answer, which is the encrypted passive reply that opens the stream. A
  repeated ``msgid`` (WeCom retries a callback whose answer it did not get) is not queued again: it
  gets the same stream back. Stream refreshes are answered from the shared stream state.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from bot.channels.base import Ingress, IngressUnavailable, Loop
from bot.channels.wecom.aibot import (
    AibotChannel,
    AibotOptions,
    Callback,
    classify_callback,
    compose,
    inbox_fingerprint,
    stream_id_for,
    to_incoming,
)
from bot.channels.wecom.crypto import WeComCrypto, WeComCryptoError, restore_plus
from handlers import texts

log = structlog.get_logger(__name__)

PATH = "/wecom/aibot"


class _Rejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def _read_limited(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise _Rejected(413, "too_large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(16 * 1024):
        size += len(chunk)
        if size > limit:
            raise _Rejected(413, "too_large")
        chunks.append(chunk)
    return b"".join(chunks)


class AibotHttpHandler:
    """The inbound side of HTTP mode (`bot.channels.base.Endpoint`)."""

    def __init__(self, crypto: WeComCrypto, channel: AibotChannel, ingress: Ingress) -> None:
        self.crypto = crypto
        self.channel = channel
        self.ingress = ingress
        self.store = channel.store
        self.options: AibotOptions = channel.options

    def routes(self) -> Sequence[web.RouteDef]:
        return [web.get(PATH, self.verify_url), web.post(PATH, self.callback)]

    def loops(self) -> Sequence[Loop]:
        return ()

    async def close(self) -> None:
        return None

    def _unavailable(self, exc: RedisError) -> web.Response:
        """Not acknowledged (WeCom calls again), and counted like every refused callback."""
        self.ingress.reject(self.channel.name, "store_unavailable")
        log.error("aibot_store_unavailable", error=type(exc).__name__)
        return web.Response(status=503)

    def _reject(self, status: int, reason: str) -> web.Response:
        self.ingress.reject(self.channel.name, reason)
        log.warning("aibot_callback_rejected", reason=reason, status=status)
        return web.Response(status=status)  # no detail for the caller

    # ------------------------------------------------------------------ GET: URL verification

    async def verify_url(self, request: web.Request) -> web.Response:
        q = request.query
        sig, ts, nonce = q.get("msg_signature", ""), q.get("timestamp", ""), q.get("nonce", "")
        echostr = restore_plus(q.get("echostr", ""))
        if not (sig and ts and nonce and echostr):
            return self._reject(400, "missing_params")
        if not self.crypto.verify(sig, ts, nonce, echostr):
            return self._reject(403, "signature")
        try:
            plain = self.crypto.decrypt(echostr)
        except WeComCryptoError:
            return self._reject(400, "undecryptable")
        return web.Response(text=plain, content_type="text/plain")

    # ------------------------------------------------------------------ POST: callbacks

    async def callback(self, request: web.Request) -> web.Response:
        try:
            data, nonce = await self._open(request)
        except _Rejected as exc:
            return self._reject(exc.status, exc.reason)
        except RedisError as exc:
            return self._unavailable(exc)
        cb = classify_callback(data, bot_name=self.options.bot_name)
        try:
            payload = await self._answer(cb)
        except IngressUnavailable:
            return web.Response(status=503)  # counted and logged by the ingress
        except RedisError as exc:
            return self._unavailable(exc)
        if payload is None:
            return web.Response(status=200)  # empty body: nothing to say
        return web.Response(text=self.crypto.seal_reply_json(payload, nonce), content_type="application/json")

    async def _open(self, request: web.Request) -> tuple[dict[str, Any], str]:
        body = await _read_limited(request, self.options.max_body_bytes)
        q = request.query
        sig, ts, nonce = q.get("msg_signature", ""), q.get("timestamp", ""), q.get("nonce", "")
        if not (sig and ts and nonce):
            raise _Rejected(400, "missing_params")
        try:
            envelope = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deeply
            raise _Rejected(400, "not_json") from None
        encrypted = envelope.get("encrypt") if isinstance(envelope, dict) else None
        if not isinstance(encrypted, str) or not encrypted:
            raise _Rejected(400, "no_encrypt")
        if not self.crypto.verify(sig, ts, nonce, encrypted):
            raise _Rejected(403, "signature")
        try:
            sent_at = int(ts)
        except ValueError:
            raise _Rejected(403, "stale") from None
        if abs(time.time() - sent_at) > self.options.max_clock_skew_s:
            raise _Rejected(403, "stale")
        store = self.store
        once = hashlib.sha256(f"{ts}\x1f{nonce}\x1f{sig}".encode()).hexdigest()[:32]
        if not await store.claim(store.key("aibot", "replay", once), 2 * self.options.max_clock_skew_s + 60):
            raise _Rejected(403, "replay")
        try:
            plain = self.crypto.decrypt(encrypted)
            data = json.loads(plain)
        except (WeComCryptoError, ValueError, RecursionError):
            raise _Rejected(400, "undecryptable") from None
        if not isinstance(data, dict):
            raise _Rejected(400, "undecryptable")
        return data, nonce

    async def _answer(self, cb: Callback) -> dict[str, Any] | None:
        if cb.kind == "refresh":
            return await self._stream_reply(cb.stream_id)
        if cb.kind == "message":
            return await self._new_message(cb)
        if cb.kind == "unsupported":
            stream = {"id": stream_id_for(cb.msgid), "finish": True, "content": texts.UNSUPPORTED_TYPE}
            return {"msgtype": "stream", "stream": stream}
        if cb.kind == "event":
            if cb.event == "enter_chat":
                return {"msgtype": "text", "text": {"content": texts.AIBOT_WELCOME}}
            log.info("aibot_event_ignored", eventtype=cb.event)  # card clicks, feedback: empty reply
        else:
            log.info("aibot_callback_ignored", msgtype=str(cb.data.get("msgtype")))
        return None

    async def _new_message(self, cb: Callback) -> dict[str, Any]:
        msg = to_incoming(cb, mode="http")
        sid = msg.reply_context["stream_id"]
        meta = {"mode": "http", "msgid": cb.msgid, "chat": msg.chat_id}
        await self.channel.streams.open(sid, meta)
        fingerprint = inbox_fingerprint(cb.msgid)
        if await self.ingress.accept(msg, fingerprint=fingerprint, window_s=self.options.msgid_dedup_s):
            log.info("aibot_message_accepted", msgid=cb.msgid, group=msg.is_group)
        else:
            log.info("aibot_duplicate_callback", msgid=cb.msgid)
        return await self._stream_reply(sid)

    async def _stream_reply(self, sid: str) -> dict[str, Any]:
        view = await self.channel.streams.view(sid, finish=True)
        content = compose(view, self.options.content_max_bytes)
        finish = view is None or view.closed
        return {"msgtype": "stream", "stream": {"id": sid, "finish": finish, "content": content}}
