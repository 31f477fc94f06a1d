"""Fake WeCom group robot webhook (wecom-channels.md §4) as a real aiohttp app.

``POST /cgi-bin/webhook/send?key=KEY`` validates the body per msgtype and its limits and answers
``{"errcode": …, "errmsg": …}`` with HTTP 200, as WeCom does. Every request with a known key counts
against ``per_minute`` in a sliding ``window_s``, failed or not (WeCom counts failures too), except
requests already refused with 45009.

Error codes from the reference: 93000 unknown key, 40008 bad msgtype, 40033 invalid characters,
44004 empty content, 45002 content too large, 45009 rate limit. Not in the reference, chosen here:
40058 malformed field (bad base64, md5 mismatch, not PNG/JPEG, bad mention list), 40009 image too
large. ``inject(errcode, times, after=n)`` makes requests fail with that code once n more were
served normally (failed requests still count).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SEND_PATH = "/cgi-bin/webhook/send"
LIMITS = {"text": 2048, "markdown": 4096, "markdown_v2": 4096}
IMAGE_MAX_BYTES = 2 * 1024 * 1024

ERRMSG = {
    0: "ok",
    -1: "system busy",
    40008: "invalid message type",
    40009: "invalid image size",
    40033: "invalid charset. please check your request, if include \\uxxxx will create fail!",
    40058: "invalid parameter",
    44004: "empty content",
    45002: "content size out of limit",
    45009: "api freq out of limit",
    45033: "api concurrent out of limit",
    93000: "invalid webhook url",
}


@dataclass
class ReceivedMessage:
    key: str
    msgtype: str
    body: dict[str, Any]  # the msgtype's object, e.g. {"content": "…", "mentioned_list": […]}
    at: float = field(default_factory=time.monotonic)

    @property
    def content(self) -> str:
        return str(self.body.get("content", ""))


@dataclass
class Attempt:
    key: str
    at: float
    errcode: int


class FakeWeComWebhook:
    def __init__(self, keys: Iterable[str] = ("test-key",), *, per_minute: int = 20, window_s: float = 60.0):
        self.keys = set(keys)
        self.per_minute = per_minute
        self.window_s = window_s
        self.messages: list[ReceivedMessage] = []  # accepted messages, in order
        self.attempts: list[Attempt] = []  # every request, accepted or not
        self._injected: deque[int | None] = deque()

    def inject(self, errcode: int, times: int = 1, *, after: int = 0) -> None:
        """Answer ``errcode`` to ``times`` requests, once ``after`` further requests were served normally."""
        self._injected.extend([None] * after + [errcode] * times)

    def contents(self, key: str | None = None) -> list[str]:
        return [m.content for m in self.messages if key is None or m.key == key]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(SEND_PATH, self._send)
        return app

    async def _send(self, request: web.Request) -> web.Response:
        key = request.query.get("key", "")
        now = time.monotonic()
        if key not in self.keys:
            return self._answer(key, now, 93000)
        recent = [
            a
            for a in self.attempts
            if a.key == key and a.errcode not in (45009, 93000) and a.at > now - self.window_s
        ]
        if len(recent) >= self.per_minute:
            return self._answer(key, now, 45009)
        injected = self._injected.popleft() if self._injected else None
        if injected is not None:
            return self._answer(key, now, injected)
        errcode, msgtype, body = self._validate(await request.read())
        if errcode == 0:
            self.messages.append(ReceivedMessage(key, msgtype, body, now))
        return self._answer(key, now, errcode)

    def _answer(self, key: str, now: float, errcode: int) -> web.Response:
        self.attempts.append(Attempt(key, now, errcode))
        return web.json_response({"errcode": errcode, "errmsg": ERRMSG.get(errcode, "error")})

    @staticmethod
    def _validate(raw: bytes) -> tuple[int, str, dict[str, Any]]:
        try:
            data = json.loads(raw.decode("utf-8"))
            json.dumps(data, ensure_ascii=False).encode("utf-8")  # lone surrogates from \ud800 escapes
        except UnicodeError:
            return 40033, "", {}
        except ValueError:
            return 40058, "", {}
        if not isinstance(data, dict):
            return 40058, "", {}
        msgtype = data.get("msgtype")
        if msgtype not in (*LIMITS, "image") or not isinstance(data.get(msgtype), dict):
            return 40008, "", {}
        body: dict[str, Any] = data[msgtype]
        if msgtype == "image":
            return FakeWeComWebhook._validate_image(body), msgtype, body
        content = body.get("content")
        if not isinstance(content, str) or not content.strip():
            return 44004, msgtype, body
        if len(content.encode("utf-8")) > LIMITS[msgtype]:
            return 45002, msgtype, body
        for name in ("mentioned_list", "mentioned_mobile_list"):
            value = body.get(name)
            if msgtype == "text" and value is not None:
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    return 40058, msgtype, body
        return 0, msgtype, body

    @staticmethod
    def _validate_image(body: dict[str, Any]) -> int:
        b64, md5 = body.get("base64"), body.get("md5")
        if not isinstance(b64, str) or not isinstance(md5, str):
            return 40058
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            return 40058
        if len(raw) > IMAGE_MAX_BYTES:
            return 40009
        if hashlib.md5(raw, usedforsecurity=False).hexdigest() != md5:
            return 40058
        if not raw.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")):
            return 40058
        return 0
