"""WeCom group robot webhook (群机器人 / 消息推送), a send-only channel (wecom-channels.md §4, §8).

``POST <base_url>/cgi-bin/webhook/send?key=<key>``; the key is the only credential, so it is never
logged (a short fingerprint is) and never appears in an error message.

* Limits are UTF-8 bytes: text 2048, markdown 4096. Longer messages are split at paragraph, then
  line boundaries (never inside a character) and numbered ``(i/n)``.
* At most ``per_minute`` messages per key in any sliding ``window_s`` (WeCom counts failed sends
  too): the sender waits rather than drops. The parts of one message go out back to back.
* ``45009`` (rate limit) pauses ``rate_limit_pause_s`` and retries; ``-1`` (busy) and ``45033``
  (concurrency) pause briefly and retry; both at most ``max_retries`` times. ``93000`` (invalid key)
  and any other error raise `WebhookError` at once. Network errors are not retried here: the
  message may have been delivered, and the outbox decides.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections import deque
from typing import Any, Literal

import aiohttp
import structlog

from bot.delivery.split import split_parts, utf8_len

log = structlog.get_logger(__name__)

SEND_PATH = "/cgi-bin/webhook/send"
TEXT_MAX_BYTES = 2048
MARKDOWN_MAX_BYTES = 4096
IMAGE_MAX_BYTES = 2 * 1024 * 1024

ERR_BUSY = -1
ERR_RATE_LIMIT = 45009
ERR_CONCURRENCY = 45033
ERR_INVALID_KEY = 93000
_BUSY = frozenset({ERR_BUSY, ERR_CONCURRENCY})
_MAX_HEADER_BYTES = 256  # a longer first line is not repeated on every part

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


class WebhookError(Exception):
    """A send failed. ``errcode`` is WeCom's (None for HTTP/network/local errors); never holds the key."""

    def __init__(
        self,
        message: str,
        *,
        errcode: int | None = None,
        http_status: int | None = None,
        parts_sent: int = 0,
    ) -> None:
        super().__init__(message)
        self.errcode = errcode
        self.http_status = http_status
        self.parts_sent = parts_sent  # parts of a split message delivered before the failure


class WebhookPayloadError(WebhookError):
    """Rejected before sending (e.g. image too large or not PNG/JPEG)."""


def key_id(key: str) -> str:
    """Loggable fingerprint of a webhook key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]


class _Window:
    """Sliding-window limiter for one key; the lock also keeps one message's parts together."""

    def __init__(self) -> None:
        self.sent: deque[float] = deque()
        self.slot = asyncio.Lock()
        self.message = asyncio.Lock()

    async def acquire(self, per_window: int, window_s: float) -> None:
        async with self.slot:
            while True:
                now = time.monotonic()
                while self.sent and self.sent[0] <= now - window_s:
                    self.sent.popleft()
                if len(self.sent) < per_window:
                    self.sent.append(now)
                    return
                await asyncio.sleep(self.sent[0] + window_s - now)


class WebhookSender:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str = "https://qyapi.weixin.qq.com",
        timeout_s: float = 10.0,
        per_minute: int = 20,
        window_s: float = 60.0,
        max_retries: int = 3,
        rate_limit_pause_s: float = 60.0,
        busy_pause_s: float = 2.0,
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self._session = session
        self._url = base_url.rstrip("/") + SEND_PATH
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._per_window = per_minute
        self._window_s = window_s
        self._max_retries = max_retries
        self._rate_limit_pause_s = rate_limit_pause_s
        self._busy_pause_s = busy_pause_s
        self._windows: dict[str, _Window] = {}  # by key fingerprint

    # ------------------------------------------------------------------ public API

    async def send_markdown(
        self,
        key: str,
        markdown: str,
        *,
        header: str | None = None,
        msgtype: Literal["markdown", "markdown_v2"] = "markdown",
    ) -> int:
        """Send markdown (split above 4096 bytes); returns the number of messages sent.

        ``header`` is repeated with ``(i/n)`` on each part of a split message; by default the first
        line when it is short. Use ``markdown_v2`` for code blocks and tables (no @, no colours).
        """
        parts = self._split(markdown, MARKDOWN_MAX_BYTES, header)
        payloads: list[dict[str, Any]] = [{"msgtype": msgtype, msgtype: {"content": p}} for p in parts]
        return await self._send_all(key, payloads)

    async def send_text(
        self,
        key: str,
        text: str,
        mentioned_list: list[str] | None = None,
        *,
        mentioned_mobile_list: list[str] | None = None,
        header: str | None = None,
    ) -> int:
        """Send plain text (split above 2048 bytes); mentions go with the first part only."""
        parts = self._split(text, TEXT_MAX_BYTES, header)
        payloads: list[dict[str, Any]] = []
        for i, part in enumerate(parts):
            body: dict[str, Any] = {"content": part}
            if i == 0 and mentioned_list:
                body["mentioned_list"] = list(mentioned_list)
            if i == 0 and mentioned_mobile_list:
                body["mentioned_mobile_list"] = list(mentioned_mobile_list)
            payloads.append({"msgtype": "text", "text": body})
        return await self._send_all(key, payloads)

    async def send_image(self, key: str, png_bytes: bytes) -> None:
        """Send a PNG or JPEG image of at most 2 MB (raw bytes, before base64)."""
        if not png_bytes:
            raise WebhookPayloadError("image is empty")
        if len(png_bytes) > IMAGE_MAX_BYTES:
            raise WebhookPayloadError(
                f"image is {len(png_bytes)} bytes; the webhook accepts at most {IMAGE_MAX_BYTES} bytes"
            )
        if not png_bytes.startswith((_PNG_MAGIC, _JPEG_MAGIC)):
            raise WebhookPayloadError("image must be PNG or JPEG")
        image = {
            "base64": base64.b64encode(png_bytes).decode("ascii"),
            "md5": hashlib.md5(png_bytes, usedforsecurity=False).hexdigest(),
        }
        await self._send_all(key, [{"msgtype": "image", "image": image}])

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _split(content: str, max_bytes: int, header: str | None) -> list[str]:
        if header is None:
            first = content.partition("\n")[0]
            header = first if utf8_len(first) <= _MAX_HEADER_BYTES else ""
        return split_parts(content, max_bytes, header, measure=utf8_len)

    def _window(self, kid: str) -> _Window:
        window = self._windows.get(kid)
        if window is None:
            window = self._windows[kid] = _Window()
        return window

    async def _send_all(self, key: str, payloads: list[dict[str, Any]]) -> int:
        if not key:
            raise ValueError("webhook key is empty")
        kid = key_id(key)
        window = self._window(kid)
        async with window.message:
            for i, payload in enumerate(payloads):
                try:
                    await self._send_one(key, kid, window, payload)
                except WebhookError as e:
                    e.parts_sent = i
                    raise
                log.info(
                    "webhook.sent", key_id=kid, msgtype=payload["msgtype"], part=i + 1, parts=len(payloads)
                )
        return len(payloads)

    async def _send_one(self, key: str, kid: str, window: _Window, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        attempt = 0
        while True:
            await window.acquire(self._per_window, self._window_s)
            errcode, errmsg = await self._post(key, data)
            if errcode == 0:
                return
            retryable = errcode == ERR_RATE_LIMIT or errcode in _BUSY
            if not retryable or attempt >= self._max_retries:
                log.warning(
                    "webhook.failed", key_id=kid, errcode=errcode, errmsg=errmsg, attempts=attempt + 1
                )
                raise WebhookError(f"webhook send failed: errcode={errcode} {errmsg}", errcode=errcode)
            attempt += 1
            pause = self._rate_limit_pause_s if errcode == ERR_RATE_LIMIT else self._busy_pause_s
            log.warning("webhook.retry", key_id=kid, errcode=errcode, attempt=attempt, pause_s=pause)
            await asyncio.sleep(pause)

    async def _post(self, key: str, data: bytes) -> tuple[int, str]:
        try:
            async with self._session.post(
                self._url,
                params={"key": key},
                data=data,
                headers={"Content-Type": "application/json; charset=utf-8"},
                timeout=self._timeout,
            ) as resp:
                if resp.status != 200:
                    raise WebhookError(f"webhook HTTP {resp.status}", http_status=resp.status)
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            # `from None`: aiohttp errors carry the request URL, which contains the key
            raise WebhookError(f"webhook request failed: {type(e).__name__}") from None
        if not isinstance(body, dict) or not isinstance(body.get("errcode"), int):
            raise WebhookError("webhook answered without an errcode")
        return body["errcode"], str(body.get("errmsg", ""))
