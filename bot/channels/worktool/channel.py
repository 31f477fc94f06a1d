"""WorkTool as a channel: the callback route (ack fast, durable first) and the sending side.

`POST /worktool/callback?token=…`: the token is compared in constant time (403 otherwise, nothing
processed); the body is parsed (JSON, form, multipart), turned into one IncomingMessage and
written with its dedup key into the Redis inbox in one step, and only then answered
`{"code": 0, ...}` — well inside WorkTool's 3 s. Replies never ride in the callback response.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from bot.app import keys as K
from bot.app.runtime import CHANNELS, INBOX
from bot.channels.worktool.parse import (
    CallbackBodyError,
    Ignored,
    dedup_fingerprint,
    parse_request,
    to_incoming,
)
from bot.channels.worktool.sender import HistoryUnavailable, WorkToolSender
from bot.core.models import ChatTarget, Reply
from bot.delivery.port import ChannelRegistry, SendError
from bot.delivery.render import HEADER_PREFIX, split_parts

log = structlog.get_logger(__name__)

ACK = {"code": 0, "message": "参数接收成功"}
UNAVAILABLE = {"code": 503, "message": ""}
SENDER: web.AppKey[WorkToolSender] = web.AppKey("worktool_sender")


class WorkToolChannel:
    name = "worktool"

    def __init__(self, sender: WorkToolSender, *, part_max_chars: int) -> None:
        self.sender = sender
        self.part_max_chars = part_max_chars

    def render(self, reply: Reply) -> list[str]:
        text = reply.text or reply.markdown
        first_line = text.split("\n", 1)[0]
        header = first_line if first_line.startswith(HEADER_PREFIX) else ""
        return split_parts(text, self.part_max_chars, header)

    async def send_part(self, target: ChatTarget, part: str, *, mention: list[str], first: bool) -> None:
        at = mention if (first and target.is_group) else None
        result = await self.sender.send_text(target.chat_id, part, at)
        if not result.accepted:
            raise SendError(f"WorkTool refused the message (code {result.code}): {result.message[:100]}")

    async def already_sent(self, target: ChatTarget, part: str, *, since_ms: int) -> bool | None:
        prefix = part.split("\n", 1)[0][:60]
        try:
            return await self.sender.find_sent(target.chat_id, prefix, since_ms)
        except HistoryUnavailable:
            return None


def setup_worktool(app: web.Application) -> None:
    """Register the WorkTool channel (when robot id and callback token are configured)."""
    settings = app[K.SETTINGS]
    if not settings.worktool.enabled:
        return
    if CHANNELS not in app:
        app[CHANNELS] = ChannelRegistry()
    app.router.add_post("/worktool/callback", callback)
    app.cleanup_ctx.append(_sender_ctx)


async def _sender_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[K.SETTINGS].worktool
    sender = WorkToolSender(
        app[K.HTTP],
        base_url=str(cfg.base_url),
        robot_id=cfg.robot_id,
        timeout_s=cfg.timeout_s,
        requests_per_minute=cfg.requests_per_minute,
        send_interval_s=cfg.send_interval_s,
    )
    app[SENDER] = sender
    app[CHANNELS].add(WorkToolChannel(sender, part_max_chars=cfg.part_max_chars))
    yield


async def callback(request: web.Request) -> web.Response:
    app = request.app
    settings, metrics = app[K.SETTINGS], app[K.METRICS]
    expected = settings.worktool.callback_token.get_secret_value() if settings.worktool.callback_token else ""
    given = request.query.get("token", "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        metrics.messages_rejected.labels("worktool", "token").inc()
        return web.json_response({"code": 403, "message": "forbidden"}, status=403)
    try:
        payload = await parse_request(request, max_bytes=settings.http.max_body_bytes)
    except CallbackBodyError as exc:
        # Answer 200/code 0 so WorkTool never posts an error text into the chat; log the reason.
        metrics.messages_rejected.labels("worktool", type(exc).__name__).inc()
        log.warning("worktool_bad_callback", reason=type(exc).__name__)
        return web.json_response(ACK)
    msg = to_incoming(payload, robot_id=settings.worktool.robot_id, bot_name=settings.worktool.bot_name)
    try:
        if isinstance(msg, Ignored):
            log.info("worktool_ignored", reason=msg.reason)
            if msg.reply and msg.chat_id:
                # e.g. an image sent to the bot: say politely what we can do, once per window.
                await _polite(app, msg)
            return web.json_response(ACK)
        accepted = await app[INBOX].accept(
            dedup_fingerprint(msg, settings.worktool.robot_id), msg, window_s=settings.chat.dedup_window_s
        )
    except (RedisError, OSError) as exc:
        # Not durable, so not acknowledged: a plain 503 (no error text WorkTool could post to the chat).
        metrics.messages_rejected.labels("worktool", "store_unavailable").inc()
        log.error("worktool_store_unavailable", error=type(exc).__name__)
        return web.json_response(UNAVAILABLE, status=503)
    if accepted:
        metrics.messages_received.labels("worktool").inc()
    else:
        metrics.duplicates.labels("worktool").inc()
    return web.json_response(ACK)


async def _polite(app: web.Application, ignored: Ignored) -> None:
    chat = app[K.SETTINGS].chat
    # Same access rules as the router: groups and users outside the allowlists get silence.
    if ignored.is_group and chat.allowed_groups and ignored.chat_id not in chat.allowed_groups:
        return
    if chat.allowed_users and ignored.sender_name not in chat.allowed_users:
        return
    store = app[K.STORE]
    key = store.key("polite", ignored.chat_id, ignored.sender_name)
    if not await store.claim(key, chat.dedup_window_s):
        return
    sender = app[SENDER]

    async def send() -> None:
        try:
            await sender.send_text(
                ignored.chat_id, ignored.reply or "", [ignored.sender_name] if ignored.is_group else None
            )
        except Exception as exc:  # a polite note is best effort
            log.info("polite_reply_failed", error=type(exc).__name__)

    app[K.TASKS].spawn(send(), name="worktool-polite")
