"""WorkTool as a channel, both directions: the callback route (ack fast, durable first) and sending.

`POST /worktool/callback?token=…`: the token is compared in constant time (403 otherwise, nothing
processed); the body is parsed (JSON, form, multipart; an unreadable, oversized or too deeply nested
body is a 400/413 with an empty message), turned into one IncomingMessage and
written with its dedup key into the Redis inbox in one step, and only then answered
`{"code": 0, ...}` — well inside WorkTool's 3 s. Replies never ride in the callback response.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

import structlog
from aiohttp import web

from bot.channels.base import Ingress, IngressUnavailable, Loop
from bot.channels.worktool.parse import (
    BodyTooLarge,
    CallbackBodyError,
    Ignored,
    dedup_fingerprint,
    parse_request,
    to_incoming,
)
from bot.channels.worktool.sender import HistoryUnavailable, WorkToolSender
from bot.core.models import Reply
from bot.core.settings import Settings
from bot.delivery.port import Part, SendError
from bot.delivery.render import HEADER_PREFIX
from bot.delivery.split import split_parts

log = structlog.get_logger(__name__)

CALLBACK_PATH = "/worktool/callback"
ACK = {"code": 0, "message": "参数接收成功"}
UNAVAILABLE = {"code": 503, "message": ""}


class WorkToolChannel:
    name = "worktool"

    def __init__(self, settings: Settings, sender: WorkToolSender, ingress: Ingress) -> None:
        self.settings = settings
        self.sender = sender
        self.ingress = ingress
        self.part_max_chars = settings.worktool.part_max_chars

    # ------------------------------------------------------------------ outbound

    def render(self, reply: Reply) -> list[str]:
        text = reply.text or reply.markdown
        first_line = text.split("\n", 1)[0]
        header = first_line if first_line.startswith(HEADER_PREFIX) else ""
        return split_parts(text, self.part_max_chars, header)

    async def send_part(self, part: Part) -> None:
        target = part.target
        at = part.reply.mention if (part.first and target.is_group) else None
        result = await self.sender.send_text(target.chat_id, part.text, at)
        if not result.accepted:
            raise SendError(f"WorkTool refused the message (code {result.code}): {result.message[:100]}")

    async def already_sent(self, part: Part, *, since_ms: int) -> bool | None:
        prefix = part.text.split("\n", 1)[0][:60]
        try:
            return await self.sender.find_sent(part.target.chat_id, prefix, since_ms)
        except HistoryUnavailable:
            return None

    # ------------------------------------------------------------------ inbound

    def routes(self) -> Sequence[web.RouteDef]:
        return [web.post(CALLBACK_PATH, self.callback)]

    def loops(self) -> Sequence[Loop]:
        return ()

    async def close(self) -> None:
        return None

    async def callback(self, request: web.Request) -> web.Response:
        settings = self.settings
        token = settings.worktool.callback_token
        expected = token.get_secret_value() if token else ""
        given = request.query.get("token", "")
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            self.ingress.reject(self.name, "token")
            return web.json_response({"code": 403, "message": "forbidden"}, status=403)
        try:
            payload = await parse_request(request, max_bytes=settings.http.max_body_bytes)
        except CallbackBodyError as exc:
            # A 4xx (never a 5xx) with an empty `message`: nothing WorkTool could post into a chat.
            self.ingress.reject(self.name, type(exc).__name__)
            log.warning("worktool_bad_callback", reason=type(exc).__name__)
            status = 413 if isinstance(exc, BodyTooLarge) else 400
            return web.json_response({"code": status, "message": ""}, status=status)
        robot_id = settings.worktool.robot_id
        msg = to_incoming(
            payload,
            robot_id=robot_id,
            bot_name=settings.worktool.bot_name,
            max_text_chars=settings.chat.max_text_chars,
        )
        if isinstance(msg, Ignored):
            log.info("worktool_ignored", reason=msg.reason)
            return web.json_response(ACK)
        try:
            await self.ingress.accept(
                msg, fingerprint=dedup_fingerprint(msg, robot_id), window_s=settings.chat.dedup_window_s
            )
        except IngressUnavailable:
            # Not durable, so not acknowledged: a plain 503 (no error text WorkTool could post to the chat).
            return web.json_response(UNAVAILABLE, status=503)
        return web.json_response(ACK)
