"""HTTP side of the console: the page, its WebSocket, two small JSON APIs, and access control.

A browser message goes the same way as a WorkTool callback: one `IncomingMessage`, accepted
durably into the inbox (deduplicated by a fingerprint that includes the page's own message id),
then routed by the runtime's consumer. The page never talks to handlers directly.

Access: on a loopback host the console is open to this machine only (the Host header must be a
loopback name, which also defeats DNS rebinding); on any other host every console route needs the
console token (``?token=``, ``Authorization: Bearer`` or the cookie set when the page was opened
with a valid token). Under ``serve`` with no token the routes are not registered at all; ``demo``
makes up a one-off token instead (readable from `CONSOLE_TOKEN` so the CLI can print the URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import structlog
from aiohttp import WSMsgType, web
from redis.exceptions import RedisError
from yarl import URL

from bot.app import keys as K
from bot.app.runtime import CHANNELS, INBOX, REPORTS
from bot.channels.console.channel import (
    CHANNEL_NAME,
    GROUP_CHAT_ID,
    GROUP_CHAT_NAME,
    ConsoleChannel,
    Subscriber,
    private_chat_id,
)
from bot.core.models import FAULT_SIDE_ZH, STAGE_ZH, IncomingMessage
from bot.core.store import StoreError
from bot.delivery.port import ChannelRegistry
from bot.delivery.render import report_header
from bot.delivery.reports import StoredReport

log = structlog.get_logger(__name__)

Component = Callable[[web.Application], None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CONSOLE = web.AppKey("console_channel", ConsoleChannel)
SAMPLE_IDS = web.AppKey("console_sample_ids", list)  # set by `demo`: step ids shown as chips
CONSOLE_TOKEN = web.AppKey("console_token", str)  # present when the console requires a token

MAX_TEXT_CHARS = 4000
MAX_NAME_CHARS = 32
DEFAULT_USER = "访客"
COOKIE = "jd_console"
_COOKIE_SALT = b"job-doctor console session v1"
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})
_ASSETS = {
    "app.js": "text/javascript",
    "style.css": "text/css",
}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# The bot's own mention, anywhere in the text (WeCom/WorkTool place it first, people do not
# always), with the punctuation people type right after it.
_MENTION = re.compile(r"(?:^|(?<=\s))@(?:job[-_]?doctor|bot)(?=$|[\s,，:：])[\s,，:：]*", re.IGNORECASE)
_SPACES = re.compile(r"[^\S\n]+")


# --------------------------------------------------------------------------- text and identity


def normalize_text(raw: str) -> tuple[str, bool]:
    """Strip the bot's mention and normalise whitespace; returns (text, mentioned)."""
    text, n = _MENTION.subn(" ", raw)
    lines = [_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").split("\n")]
    cleaned = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return cleaned, n > 0


def clean_name(raw: object) -> str:
    name = " ".join(str(raw or "").split())[:MAX_NAME_CHARS]
    return name or DEFAULT_USER


def chat_of(mode: str, user: str) -> tuple[str, str, bool]:
    """(chat_id, chat_name, is_group) for a page's mode and display name."""
    if mode == "private":
        return private_chat_id(user), user, False
    return GROUP_CHAT_ID, GROUP_CHAT_NAME, True


def fingerprint(chat_id: str, sender: str, text: str, client_id: str) -> str:
    """Same page message resent after a reconnect → same fingerprint; the same text typed again
    gets a new client id and is a new message."""
    raw = "\x1f".join(("console", chat_id, sender, text, client_id))
    return hashlib.sha256(raw.encode()).hexdigest()


def to_incoming(mode: str, user: str, raw_text: str, client_id: str) -> IncomingMessage:
    chat_id, chat_name, is_group = chat_of(mode, user)
    text, mentioned = normalize_text(raw_text)
    return IncomingMessage(
        channel=CHANNEL_NAME,
        chat_id=chat_id,
        chat_name=chat_name,
        is_group=is_group,
        sender_id=user,
        sender_name=user,
        text=text,
        mentioned=mentioned or not is_group,
        raw_id=client_id,
    )


# --------------------------------------------------------------------------- access


def is_loopback(host: str) -> bool:
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Access:
    token: str | None  # None: loopback host, open to this machine

    def cookie_value(self) -> str:
        assert self.token is not None
        return hmac.new(self.token.encode(), _COOKIE_SALT, hashlib.sha256).hexdigest()

    def _presented(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        return request.query.get("token")

    def token_ok(self, request: web.Request) -> bool:
        assert self.token is not None
        given = self._presented(request)
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def allowed(self, request: web.Request) -> bool:
        if self.token is None:
            # Only pages served as localhost may use an open console (no DNS-rebound names).
            host = URL(f"http://{request.host}").host or ""
            return is_loopback(host)
        if self.token_ok(request):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), self.cookie_value().encode())


def _guard(access: Access, handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        if not access.allowed(request):
            if access.token is None:
                return web.Response(status=403, text="console is only served to localhost\n")
            return web.Response(
                status=401,
                text="console token required (?token=... or Authorization: Bearer ...)\n",
                headers={"WWW-Authenticate": 'Bearer realm="job-doctor console"'},
            )
        return await handler(request)

    return guarded


# --------------------------------------------------------------------------- page and assets


def _asset(name: str) -> bytes:
    return resources.files("bot.channels.console").joinpath("static", name).read_bytes()


def _security_headers(resp: web.StreamResponse) -> None:
    resp.headers["Content-Security-Policy"] = _CSP
    resp.headers["Referrer-Policy"] = "no-referrer"  # the token may sit in the page's URL
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Cache-Control"] = "no-cache"


def _page_view(access: Access) -> Handler:
    async def page(request: web.Request) -> web.StreamResponse:
        resp = web.Response(body=_asset("index.html"), content_type="text/html", charset="utf-8")
        _security_headers(resp)
        if access.token is not None and access.token_ok(request):
            # Lets the page's own script and stylesheet load without repeating the token.
            resp.set_cookie(COOKIE, access.cookie_value(), path="/console", httponly=True, samesite="Strict")
        return resp

    return page


async def asset_view(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    ctype = _ASSETS.get(name)
    if ctype is None:
        raise web.HTTPNotFound()
    resp = web.Response(body=_asset(name), content_type=ctype, charset="utf-8")
    _security_headers(resp)
    return resp


# --------------------------------------------------------------------------- JSON APIs


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).astimezone().isoformat(timespec="seconds")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        return None


def _status(stored: StoredReport) -> tuple[str, str]:
    r = stored.report
    if r.stage == "unknown" and not r.evidence:
        return "no_logs", "未找到日志"
    if r.stage == "unknown":
        return "undetermined", "未能定位"
    return "diagnosed", "已定位"


def recent_entry(stored: StoredReport) -> dict[str, Any]:
    r = stored.report
    times = [t for t in (_parse_time(e.time) for e in r.timeline) if t is not None]
    span = None
    if len(times) >= 2 and all((t.tzinfo is None) == (times[0].tzinfo is None) for t in times):
        span = round((max(times) - min(times)).total_seconds(), 3)
    status, status_zh = _status(stored)
    return {
        "request_key": stored.request_key,
        "header": report_header(r),
        "step_instance_id": r.step_instance_id,
        "task_instance_id": r.task_instance_id,
        "request_ids": r.request_ids,
        "status": status,
        "status_zh": status_zh,
        "stage": r.stage,
        "stage_zh": STAGE_ZH.get(r.stage, r.stage),
        "fault_side": r.fault_side,
        "fault_side_zh": FAULT_SIDE_ZH.get(r.fault_side, r.fault_side),
        "source": r.source,
        "confidence": r.confidence,
        "signature": r.signature,
        "summary": r.summary,
        "finished_at": _iso(stored.finished_at),
        "log_span_s": span,  # first to last timeline time: how long the step ran before failing
        "duration_s": None if stored.duration_s is None else round(stored.duration_s, 2),  # the analysis
        "timeline": [
            {
                "phase": t.phase,
                "phase_zh": STAGE_ZH.get(t.phase, t.phase),
                "status": t.status,
                "time": t.time,
                "note": t.note,
            }
            for t in r.timeline
        ],
        "links": [u for u in r.links if u.startswith(("http://", "https://"))],
    }


async def recent_view(request: web.Request) -> web.StreamResponse:
    try:
        limit = max(1, min(50, int(request.query.get("limit", "20"))))
    except ValueError:
        raise web.HTTPBadRequest(text="limit must be an integer\n") from None
    reports = request.app.get(REPORTS)
    if reports is None:
        return web.json_response({"items": [], "ready": False})
    try:
        items = [recent_entry(s) for s in await reports.recent(limit)]
    except (RedisError, StoreError, OSError) as exc:
        log.warning("console_recent_failed", error=type(exc).__name__)
        return web.json_response({"items": [], "ready": False, "error": "存储暂时不可用"}, status=503)
    resp = web.json_response({"items": items, "ready": True}, dumps=_dumps)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _sample(item: object) -> dict[str, str] | None:
    if isinstance(item, dict):
        ident = str(item.get("id", "")).strip()
        label = str(item.get("label", "") or ident)
    else:
        ident = label = str(item).strip()
    return {"id": ident, "label": label} if ident else None


async def samples_view(request: web.Request) -> web.StreamResponse:
    samples = [s for s in (_sample(i) for i in request.app.get(SAMPLE_IDS, [])) if s is not None]
    return web.json_response({"samples": samples}, dumps=_dumps)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


# --------------------------------------------------------------------------- WebSocket


def _same_origin(request: web.Request) -> bool:
    """Browsers always send Origin on WebSocket handshakes: refuse other sites' pages."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser (CLI tools, tests)
    try:
        return URL(origin).raw_authority.lower() == request.host.lower()
    except ValueError:
        return False


async def ws_view(request: web.Request) -> web.StreamResponse:
    if not _same_origin(request):
        return web.Response(status=403, text="cross-origin WebSocket refused\n")
    app = request.app
    channel = app[CONSOLE]
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=64 * 1024)
    await ws.prepare(request)
    user = clean_name(request.query.get("user"))
    mode = "private" if request.query.get("mode") == "private" else "group"
    sub = channel.subscribe(ws, chat_of(mode, user)[0])
    writer = asyncio.create_task(channel.writer(sub), name="console-ws-writer")
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await _on_frame(app, channel, sub, msg.data)
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        channel.unsubscribe(sub)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await writer
        await ws.close()
    return ws


async def _on_frame(app: web.Application, channel: ConsoleChannel, sub: Subscriber, data: str) -> None:
    try:
        frame = json.loads(data)
    except ValueError:
        channel.send_to(sub, {"type": "error", "text": "无法解析的消息"})
        return
    if not isinstance(frame, dict):
        return
    kind = frame.get("type")
    mode = "private" if frame.get("mode") == "private" else "group"
    user = clean_name(frame.get("user"))
    if kind == "ping":
        channel.send_to(sub, {"type": "pong"})
    elif kind == "join":
        channel.move(sub, chat_of(mode, user)[0])
    elif kind == "message":
        await _on_message(app, channel, sub, frame, mode, user)


def _ack(channel: ConsoleChannel, sub: Subscriber, client_id: str, accepted: bool, reason: str = "") -> None:
    channel.send_to(sub, {"type": "ack", "client_id": client_id, "accepted": accepted, "reason": reason})


async def _on_message(
    app: web.Application,
    channel: ConsoleChannel,
    sub: Subscriber,
    frame: dict[str, Any],
    mode: str,
    user: str,
) -> None:
    raw = frame.get("text")
    client_id = str(frame.get("id") or "")[:64] or uuid.uuid4().hex
    if not isinstance(raw, str) or not raw.strip():
        _ack(channel, sub, client_id, False, "empty")
        return
    if len(raw) > MAX_TEXT_CHARS:
        _ack(channel, sub, client_id, False, "too_long")
        channel.send_to(sub, {"type": "error", "text": f"消息太长（最多 {MAX_TEXT_CHARS} 字）"})
        return
    msg = to_incoming(mode, user, raw, client_id)
    if sub.chat_id != msg.chat_id:
        channel.move(sub, msg.chat_id)
    metrics = app[K.METRICS]
    if channel.has_client_message(msg.chat_id, client_id):
        # a page resending after a reconnect: already here, nothing to do
        metrics.duplicates.labels(CHANNEL_NAME).inc()
        _ack(channel, sub, client_id, False, "duplicate")
        return
    inbox = app.get(INBOX)
    if inbox is None:
        _ack(channel, sub, client_id, False, "not_ready")
        channel.send_to(sub, {"type": "error", "text": "机器人还没有就绪，请稍后再发"})
        return
    # The echo shows what the user typed, mention included: that is what a group member sees.
    seq = channel.reserve_echo(msg.chat_id, msg.chat_name, user, raw.strip(), client_id)
    try:
        fp = fingerprint(msg.chat_id, msg.sender_id, msg.text, client_id)
        accepted = await inbox.accept(fp, msg, window_s=app[K.SETTINGS].chat.dedup_window_s)
    except (RedisError, StoreError, OSError) as exc:
        channel.drop_echo(msg.chat_id, seq)
        log.warning("console_accept_failed", error=type(exc).__name__)
        _ack(channel, sub, client_id, False, "unavailable")
        channel.send_to(sub, {"type": "error", "text": "消息暂时无法送达（存储不可用），稍后会自动重发"})
        return
    if accepted:
        metrics.messages_received.labels(CHANNEL_NAME).inc()
        channel.confirm_echo(msg.chat_id, seq)
        _ack(channel, sub, client_id, True)
    else:
        metrics.duplicates.labels(CHANNEL_NAME).inc()
        channel.drop_echo(msg.chat_id, seq)
        _ack(channel, sub, client_id, False, "duplicate")


async def _close_sockets(app: web.Application) -> None:
    await app[CONSOLE].close_all()


# --------------------------------------------------------------------------- component


def console_component(*, host: str | None = None, history: int = 200) -> Component:
    """A console component for an explicit listen address (the CLI's ``--host``)."""

    def setup(app: web.Application) -> None:
        _setup(app, host=host, history=history)

    return setup


def setup_console(app: web.Application) -> None:
    """Register the console channel and routes; call before `setup_runtime`.

    The listen address is ``settings.http.host`` (unset: 0.0.0.0 for serve, 127.0.0.1 for demo);
    use `console_component(host=...)` when the address comes from elsewhere.
    """
    _setup(app, host=None, history=200)


def _setup(app: web.Application, *, host: str | None, history: int) -> None:
    settings, mode = app[K.SETTINGS], app[K.MODE]
    bind = host or settings.http.host or ("127.0.0.1" if mode == "demo" else "0.0.0.0")
    configured = settings.console.token.get_secret_value() if settings.console.token else ""
    token: str | None = None
    if not is_loopback(bind):
        if configured:
            token = configured
        elif mode == "demo":
            token = secrets.token_urlsafe(18)
            log.warning("console_token_generated", host=bind, hint="open the URL the CLI prints")
        else:
            log.warning(
                "console_disabled",
                host=bind,
                reason="JOB_DOCTOR_CONSOLE__TOKEN is required when the HTTP host is not loopback",
            )
            return
        app[CONSOLE_TOKEN] = token
    access = Access(token)
    channel = ConsoleChannel(history=history)
    app[CONSOLE] = channel
    if CHANNELS not in app:
        app[CHANNELS] = ChannelRegistry()
    app[CHANNELS].add(channel)
    app.on_shutdown.append(_close_sockets)
    r = app.router
    r.add_get("/console", _guard(access, _page_view(access)))
    r.add_get("/console/static/{name}", _guard(access, asset_view))
    r.add_get("/console/ws", _guard(access, ws_view))
    r.add_get("/console/api/recent", _guard(access, recent_view))
    r.add_get("/console/api/samples", _guard(access, samples_view))
