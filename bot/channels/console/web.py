"""HTTP side of the console: the page, its WebSocket, two small JSON APIs, and access control.

A browser message goes the same way as a WorkTool callback: one `IncomingMessage`, accepted
durably into the inbox (deduplicated by a fingerprint that includes the page's own message id),
then routed by the consumer. The page never talks to handlers directly.

Access: on a loopback host the console is open to this machine only (the Host header must be a
loopback name, which also defeats DNS rebinding); on any other host every console route needs the
console token (``?token=``, ``Authorization: Bearer`` or the cookie set when the page was opened
with a valid token). Under ``serve`` with no token the console is off (`console_access` says so);
``demo`` makes up a one-off token instead (the CLI prints the URL with it).
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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import structlog
from aiohttp import WSMsgType, web
from redis.exceptions import RedisError
from yarl import URL

from bot.channels.base import Ingress, IngressUnavailable, Loop
from bot.channels.console.channel import (
    CHANNEL_NAME,
    GROUP_CHAT_ID,
    GROUP_CHAT_NAME,
    ConsoleChannel,
    Subscriber,
    private_chat_id,
)
from bot.core.models import FAULT_SIDE_ZH, STAGE_ZH, DiagnosisReport, IncomingMessage
from bot.core.settings import Settings
from bot.core.store import StoreError
from bot.delivery.render import report_header
from bot.delivery.reports import ReportStore, StoredReport
from handlers import texts

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_TEXT_CHARS = 4000
MAX_NAME_CHARS = 32
COOKIE = "jd_console"
SESSION_COOKIE = "jd_session"  # who a page really is: display names are typed in, so free to change
_SESSION_RE = re.compile(r"[0-9a-f]{32}")
_COOKIE_SALT = b"job-doctor console session v1"
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})
_ASSETS = {
    "app.js": "text/javascript",
    "markdown.js": "text/javascript",
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
    return name or texts.CONSOLE_DEFAULT_USER


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


def session_of(request: web.Request) -> str:
    """The browser session (cookie set by the page), else the peer address: rate limits and
    budgets count per session, so a new display name is not a new sender."""
    sid = request.cookies.get(SESSION_COOKIE, "")
    if _SESSION_RE.fullmatch(sid):
        return f"session:{sid}"
    return f"peer:{request.remote or 'unknown'}"


def to_incoming(mode: str, user: str, raw_text: str, client_id: str, session: str = "") -> IncomingMessage:
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
        sender_key=session,
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

    def guard(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if not self.allowed(request):
                if self.token is None:
                    return web.Response(status=403, text="console is only served to localhost\n")
                return web.Response(
                    status=401,
                    text="console token required (?token=... or Authorization: Bearer ...)\n",
                    headers={"WWW-Authenticate": 'Bearer realm="job-doctor console"'},
                )
            return await handler(request)

        return guarded


def console_access(settings: Settings, *, mode: str, host: str) -> Access | None:
    """How the console is protected on this listen address; None when it must stay off."""
    if is_loopback(host):
        return Access(None)
    configured = settings.console.token.get_secret_value() if settings.console.token else ""
    if configured:
        return Access(configured)
    if mode == "demo":
        log.warning("console_token_generated", host=host, hint="open the URL the CLI prints")
        return Access(secrets.token_urlsafe(18))
    log.warning(
        "console_disabled",
        host=host,
        reason="JOB_DOCTOR_CONSOLE__TOKEN is required when the HTTP host is not loopback",
    )
    return None


# --------------------------------------------------------------------------- recent analyses


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).astimezone().isoformat(timespec="seconds")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        return None


def _status(stored: StoredReport) -> str:
    r = stored.report
    if r.stage == "unknown" and not r.evidence:
        return "no_logs"
    if r.stage == "unknown":
        return "undetermined"
    return "diagnosed"


def _log_span_s(r: DiagnosisReport) -> float | None:
    """First to last log line of the run; reports stored before the span was kept use the timeline."""
    if r.span is not None:
        return r.span.seconds
    times = [t for t in (_parse_time(e.time) for e in r.timeline) if t is not None]
    if len(times) >= 2 and all((t.tzinfo is None) == (times[0].tzinfo is None) for t in times):
        return round((max(times) - min(times)).total_seconds(), 3)
    return None


def recent_entry(stored: StoredReport) -> dict[str, Any]:
    r = stored.report
    status = _status(stored)
    return {
        "request_key": stored.request_key,
        "header": report_header(r),
        "step_instance_id": r.step_instance_id,
        "task_instance_id": r.task_instance_id,
        "request_ids": r.request_ids,
        "status": status,
        "status_zh": texts.CONSOLE_STATUS[status],
        "stage": r.stage,
        "stage_zh": STAGE_ZH.get(r.stage, r.stage),
        "fault_side": r.fault_side,
        "fault_side_zh": FAULT_SIDE_ZH.get(r.fault_side, r.fault_side),
        "source": r.source,
        "confidence": r.confidence,
        "signature": r.signature,
        "summary": r.summary,
        "finished_at": _iso(stored.finished_at),
        "log_span_s": _log_span_s(r),  # how long the run logged, first to last line
        "span": r.span.model_dump() if r.span is not None else None,  # {start, end, seconds} as logged
        "window": r.window.model_dump() if r.window is not None else None,  # the BkLog window searched
        "duration_s": None if stored.duration_s is None else round(stored.duration_s, 2),  # the analysis
        "timeline": [
            {
                "phase": t.phase,
                "phase_zh": STAGE_ZH.get(t.phase, t.phase),
                "status": t.status,
                "time": t.time,
                "note": t.note,
                "events": [{"time": e.time, "text": e.text} for e in t.events],
            }
            for t in r.timeline
        ],
        "links": [u for u in r.links if u.startswith(("http://", "https://"))],
    }


def _sample(item: object) -> dict[str, str] | None:
    if isinstance(item, dict):
        ident = str(item.get("id", "")).strip()
        label = str(item.get("label", "") or ident)
    else:
        ident = label = str(item).strip()
    return {"id": ident, "label": label} if ident else None


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def _asset(name: str) -> bytes:
    return resources.files("bot.channels.console").joinpath("static", name).read_bytes()


def _security_headers(resp: web.StreamResponse) -> None:
    resp.headers["Content-Security-Policy"] = _CSP
    resp.headers["Referrer-Policy"] = "no-referrer"  # the token may sit in the page's URL
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Cache-Control"] = "no-cache"


def _same_origin(request: web.Request) -> bool:
    """Browsers always send Origin on WebSocket handshakes: refuse other sites' pages."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser (CLI tools, tests)
    try:
        return URL(origin).raw_authority.lower() == request.host.lower()
    except ValueError:
        return False


# --------------------------------------------------------------------------- the endpoint


class ConsoleWeb:
    """The console's routes (`bot.channels.base.Endpoint`); replies come back through the hub."""

    def __init__(
        self,
        hub: ConsoleChannel,
        *,
        access: Access,
        ingress: Ingress,
        reports: ReportStore,
        dedup_window_s: float,
        samples: Sequence[object] = (),
        max_text_chars: int = MAX_TEXT_CHARS,
    ) -> None:
        self.hub = hub
        self.access = access
        self.ingress = ingress
        self.reports = reports
        self.dedup_window_s = dedup_window_s
        self.max_text_chars = max_text_chars
        self.samples = [s for s in (_sample(i) for i in samples) if s is not None]

    @property
    def token(self) -> str | None:
        return self.access.token

    def routes(self) -> Sequence[web.RouteDef]:
        guard = self.access.guard
        return [
            web.get("/console", guard(self.page_view)),
            web.get("/console/static/{name}", guard(self.asset_view)),
            web.get("/console/ws", guard(self.ws_view)),
            web.get("/console/api/recent", guard(self.recent_view)),
            web.get("/console/api/samples", guard(self.samples_view)),
        ]

    def loops(self) -> Sequence[Loop]:
        return ()

    async def close(self) -> None:
        await self.hub.close_all()

    # ------------------------------------------------------------------ page and assets

    async def page_view(self, request: web.Request) -> web.StreamResponse:
        resp = web.Response(body=_asset("index.html"), content_type="text/html", charset="utf-8")
        _security_headers(resp)
        if not _SESSION_RE.fullmatch(request.cookies.get(SESSION_COOKIE, "")):
            resp.set_cookie(
                SESSION_COOKIE, uuid.uuid4().hex, path="/console", httponly=True, samesite="Strict"
            )
        if self.access.token is not None and self.access.token_ok(request):
            # Lets the page's own script and stylesheet load without repeating the token.
            resp.set_cookie(
                COOKIE, self.access.cookie_value(), path="/console", httponly=True, samesite="Strict"
            )
        return resp

    async def asset_view(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        ctype = _ASSETS.get(name)
        if ctype is None:
            raise web.HTTPNotFound()
        resp = web.Response(body=_asset(name), content_type=ctype, charset="utf-8")
        _security_headers(resp)
        return resp

    # ------------------------------------------------------------------ JSON APIs

    async def recent_view(self, request: web.Request) -> web.StreamResponse:
        try:
            limit = max(1, min(50, int(request.query.get("limit", "20"))))
        except ValueError:
            raise web.HTTPBadRequest(text="limit must be an integer\n") from None
        try:
            items = [recent_entry(s) for s in await self.reports.recent(limit)]
        except (RedisError, StoreError, OSError) as exc:
            log.warning("console_recent_failed", error=type(exc).__name__)
            body = {"items": [], "ready": False, "error": texts.CONSOLE_RECENT_DOWN}
            return web.json_response(body, status=503, dumps=_dumps)
        resp = web.json_response({"items": items, "ready": True}, dumps=_dumps)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    async def samples_view(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"samples": self.samples}, dumps=_dumps)

    # ------------------------------------------------------------------ WebSocket

    async def ws_view(self, request: web.Request) -> web.StreamResponse:
        if not _same_origin(request):
            return web.Response(status=403, text="cross-origin WebSocket refused\n")
        hub = self.hub
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=64 * 1024)
        await ws.prepare(request)
        user = clean_name(request.query.get("user"))
        mode = "private" if request.query.get("mode") == "private" else "group"
        session = session_of(request)
        sub = hub.subscribe(ws, chat_of(mode, user)[0])
        writer = asyncio.create_task(hub.writer(sub), name="console-ws-writer")
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_frame(sub, msg.data, session)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            hub.unsubscribe(sub)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await writer
            await ws.close()
        return ws

    async def _on_frame(self, sub: Subscriber, data: str, session: str = "") -> None:
        try:
            frame = json.loads(data)
        except (ValueError, RecursionError):
            self.hub.send_to(sub, {"type": "error", "text": texts.CONSOLE_UNPARSABLE})
            return
        if not isinstance(frame, dict):
            return
        kind = frame.get("type")
        mode = "private" if frame.get("mode") == "private" else "group"
        user = clean_name(frame.get("user"))
        if kind == "ping":
            self.hub.send_to(sub, {"type": "pong"})
        elif kind == "join":
            self.hub.move(sub, chat_of(mode, user)[0])
        elif kind == "message":
            await self._on_message(sub, frame, mode, user, session)

    def _ack(self, sub: Subscriber, client_id: str, accepted: bool, reason: str = "") -> None:
        self.hub.send_to(sub, {"type": "ack", "client_id": client_id, "accepted": accepted, "reason": reason})

    async def _on_message(
        self, sub: Subscriber, frame: dict[str, Any], mode: str, user: str, session: str = ""
    ) -> None:
        hub = self.hub
        raw = frame.get("text")
        client_id = str(frame.get("id") or "")[:64] or uuid.uuid4().hex
        if not isinstance(raw, str) or not raw.strip():
            self._ack(sub, client_id, False, "empty")
            return
        if len(raw) > self.max_text_chars:
            self._ack(sub, client_id, False, "too_long")
            hub.send_to(
                sub, {"type": "error", "text": texts.CONSOLE_TOO_LONG.format(limit=self.max_text_chars)}
            )
            return
        msg = to_incoming(mode, user, raw, client_id, session)
        if sub.chat_id != msg.chat_id:
            hub.move(sub, msg.chat_id)
        if hub.has_client_message(msg.chat_id, client_id):
            # a page resending after a reconnect: already here, nothing to do
            self.ingress.duplicate(CHANNEL_NAME)
            self._ack(sub, client_id, False, "duplicate")
            return
        # The echo shows what the user typed, mention included: that is what a group member sees.
        seq = hub.reserve_echo(msg.chat_id, msg.chat_name, user, raw.strip(), client_id)
        try:
            fp = fingerprint(msg.chat_id, msg.sender_id, msg.text, client_id)
            accepted = await self.ingress.accept(msg, fingerprint=fp, window_s=self.dedup_window_s)
        except IngressUnavailable:
            hub.drop_echo(msg.chat_id, seq)
            self._ack(sub, client_id, False, "unavailable")
            hub.send_to(sub, {"type": "error", "text": texts.CONSOLE_STORE_DOWN})
            return
        if accepted:
            hub.confirm_echo(msg.chat_id, seq)
            self._ack(sub, client_id, True)
        else:
            hub.drop_echo(msg.chat_id, seq)
            self._ack(sub, client_id, False, "duplicate")
