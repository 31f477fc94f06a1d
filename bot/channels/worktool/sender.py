"""WorkTool send API client (wecom-channels.md §1.4, §1.5, §8).

Sends text commands (type 203) through `POST /wework/sendRawMessage`, within two limits:
at most `requests_per_minute` HTTP requests per host (WorkTool drops the excess and may block
the IP) and at most one text command per `send_interval_s` per robot (the phone pastes and
sends serially, ~4-5 s each). The send API has no idempotency key, so a request whose answer is
lost after it was sent is never retried here: it raises `SendOutcomeUnknown`, and the caller
asks `find_sent` (the execution-result history) before sending again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import structlog

from bot.delivery.port import SendError, SendUnknown

log = structlog.get_logger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

MAX_COMMANDS_PER_REQUEST = 100
TEXT_COMMAND = 203
# The history API reads `startTime`/`endTime` as date strings in China time, not epoch numbers.
HISTORY_TZ = ZoneInfo("Asia/Shanghai")
HISTORY_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_ACCEPTED_CODES = frozenset({0, 200})
_MAX_BACKOFF_S = 30.0


class WorkToolError(Exception):
    pass


class SendFailed(WorkToolError, SendError):
    """Every attempt was refused before delivery (connection / 5xx / 429): nothing was queued."""


class SendOutcomeUnknown(WorkToolError, SendUnknown):
    """The request went out but its answer was lost: the message may or may not be queued.

    `completed` holds the results of the commands of a batch that were accepted before this one.
    """

    def __init__(self, message: str, *, completed: Sequence[SendResult] = ()) -> None:
        super().__init__(message)
        self.completed = list(completed)


class HistoryUnavailable(WorkToolError):
    """The execution-result history could not be read; the caller should send again."""


@dataclass(frozen=True, slots=True)
class SendCommand:
    chat_title: str
    text: str
    at_list: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        # One title per command: the phone retries failed commands, several titles could double-send.
        return {
            "type": TEXT_COMMAND,
            "titleList": [self.chat_title],
            "receivedContent": self.text,
            "atList": list(self.at_list),
        }


@dataclass(frozen=True, slots=True)
class SendResult:
    message_id: str | None
    accepted: bool  # queued by the WorkTool cloud; not yet delivered by the phone
    code: int | None = None
    message: str = ""


class SlidingWindowLimiter:
    """At most `limit` acquisitions per `window_s` (sliding); `acquire` waits for a free slot.

    Share one instance between all senders that talk to the same host.
    """

    def __init__(
        self,
        limit: int,
        window_s: float = 60.0,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._sleep = sleep
        self._stamps: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> float:
        """Take a slot; returns how long it waited."""
        waited = 0.0
        async with self._lock:  # FIFO: waiters queue on the lock
            while True:
                now = self._clock()
                while self._stamps and self._stamps[0] <= now - self.window_s:
                    self._stamps.popleft()
                if len(self._stamps) < self.limit:
                    self._stamps.append(now)
                    return waited
                delay = self._stamps[0] + self.window_s - now
                waited += delay
                await self._sleep(delay)


@dataclass
class _Pacer:
    """One text command per `interval_s` per robot: a batch of n reserves n slots."""

    interval_s: float
    clock: Clock
    sleep: Sleep
    _next_free: float = float("-inf")
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def reserve(self, commands: int) -> None:
        async with self._lock:
            now = self.clock()
            if self._next_free > now:
                await self.sleep(self._next_free - now)
                now = self.clock()
            self._next_free = max(now, self._next_free) + commands * self.interval_s


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return [value] if value else []
    return [str(v) for v in value] if isinstance(value, list) else []


def history_time(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, HISTORY_TZ).strftime(HISTORY_TIME_FORMAT)


def _history_rows(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict):
        for name in ("list", "records", "rows", "data"):
            if isinstance(data.get(name), list):
                data = data[name]
                break
    if not isinstance(data, list):
        raise HistoryUnavailable("unexpected history shape")
    return [row for row in data if isinstance(row, dict)]


def _row_delivered(row: dict[str, Any], chat_title: str, header_prefix: str) -> bool:
    raw = row.get("rawMsg")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError):
            raw = {}
    if not isinstance(raw, dict):
        raw = {}
    if _as_int(row.get("type", raw.get("type"))) != TEXT_COMMAND:
        return False
    content = raw.get("receivedContent", row.get("receivedContent"))
    if not isinstance(content, str) or not content.startswith(header_prefix):
        return False
    success, failed = _as_list(row.get("successList")), _as_list(row.get("failList"))
    if chat_title in failed or (
        chat_title not in success and chat_title not in _as_list(raw.get("titleList"))
    ):
        return False
    return chat_title in success or _as_int(row.get("rawSuccess")) == 0


class WorkToolSender:
    """Async client for one robot. The `session` belongs to the caller (one per application)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        robot_id: str,
        timeout_s: float,
        requests_per_minute: int = 60,
        send_interval_s: float = 4.5,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        key: str | None = None,
        max_attempts: int = 3,
        backoff_s: float = 1.0,
        limiter: SlidingWindowLimiter | None = None,
        history_page_size: int = 100,
        history_max_pages: int = 5,
    ) -> None:
        self._session = session
        self._base = str(base_url).rstrip("/")
        self._robot_id = robot_id
        self._key = key
        self._timeout = aiohttp.ClientTimeout(total=2 * timeout_s, connect=timeout_s, sock_read=timeout_s)
        self._sleep = sleep
        self._max_attempts = max(1, max_attempts)
        self._backoff_s = backoff_s
        self._limiter = limiter or SlidingWindowLimiter(requests_per_minute, clock=clock, sleep=sleep)
        self._pacer = _Pacer(send_interval_s, clock, sleep)
        self._history_page_size = history_page_size
        self._history_max_pages = history_max_pages

    @property
    def robot_id(self) -> str:
        return self._robot_id

    def _params(self, **extra: str | int) -> dict[str, str]:
        params = {"robotId": self._robot_id, **{k: str(v) for k, v in extra.items()}}
        if self._key:
            params["key"] = self._key
        return params

    async def send_text(self, chat_title: str, text: str, at_list: Sequence[str] | None = None) -> SendResult:
        """Queue one text message; raises `SendFailed` or `SendOutcomeUnknown`."""
        results = await self.send_batch([SendCommand(chat_title, text, tuple(at_list or ()))])
        return results[0]

    async def send_batch(self, commands: Sequence[SendCommand]) -> list[SendResult]:
        """Queue several commands, up to 100 per HTTP request; one result per command, in order."""
        results: list[SendResult] = []
        for start in range(0, len(commands), MAX_COMMANDS_PER_REQUEST):
            chunk = commands[start : start + MAX_COMMANDS_PER_REQUEST]
            await self._pacer.reserve(len(chunk))
            try:
                result = await self._post(chunk)
            except SendOutcomeUnknown as exc:
                raise SendOutcomeUnknown(str(exc), completed=results) from exc
            results.extend([result] * len(chunk))
        return results

    async def _post(self, commands: Sequence[SendCommand]) -> SendResult:
        url = f"{self._base}/wework/sendRawMessage"
        body = {"socketType": 2, "list": [c.to_wire() for c in commands]}
        last_error = ""
        for attempt in range(1, self._max_attempts + 1):
            await self._limiter.acquire()
            delay: float | None = None
            try:
                async with self._session.post(
                    url, params=self._params(), json=body, timeout=self._timeout
                ) as resp:
                    if resp.status == 429 or resp.status >= 500:
                        last_error = f"HTTP {resp.status}"
                        delay = _retry_after(resp.headers)
                    elif resp.status >= 400:
                        log.warning("worktool.send_refused", status=resp.status, commands=len(commands))
                        return SendResult(None, False, code=resp.status, message=f"HTTP {resp.status}")
                    else:
                        try:
                            payload = await resp.json(content_type=None)
                        except ValueError as exc:
                            raise SendOutcomeUnknown("send API answered without JSON") from exc
                        return self._result(payload, len(commands))
            except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError) as exc:
                last_error = f"connect: {type(exc).__name__}"  # nothing left this host: safe to retry
            except (TimeoutError, aiohttp.ClientError) as exc:
                log.warning("worktool.send_outcome_unknown", error=type(exc).__name__, commands=len(commands))
                raise SendOutcomeUnknown(f"send request sent but no answer: {type(exc).__name__}") from exc
            if attempt < self._max_attempts:
                backoff = min(_MAX_BACKOFF_S, self._backoff_s * 2 ** (attempt - 1))
                log.info("worktool.send_retry", attempt=attempt, error=last_error)
                await self._sleep(max(backoff, delay or 0.0))
        raise SendFailed(f"send API unavailable after {self._max_attempts} attempts: {last_error}")

    @staticmethod
    def _result(payload: Any, n_commands: int) -> SendResult:
        if not isinstance(payload, dict):
            raise SendOutcomeUnknown("send API answered an unexpected JSON value")
        code = _as_int(payload.get("code"))
        message = str(payload.get("message") or "")
        data = payload.get("data")
        if code in _ACCEPTED_CODES:
            message_id = str(data) if isinstance(data, str | int) and str(data) else None
            log.info("worktool.sent", commands=n_commands, message_id=message_id)
            return SendResult(message_id, True, code=code, message=message)
        log.warning("worktool.send_rejected", code=code, message=message, commands=n_commands)
        return SendResult(None, False, code=code, message=message)

    async def find_sent(self, chat_title: str, header_prefix: str, since_ms: int) -> bool:
        """Did a text command to `chat_title` starting with `header_prefix` succeed since `since_ms`?

        Reads the execution-result history (`/robot/rawMsg/list`). A command still queued on the
        phone is not in it yet. Raises `HistoryUnavailable` when the history cannot be read.
        """
        url = f"{self._base}/robot/rawMsg/list"
        size = self._history_page_size
        # A minute past now: the phone's clock and ours need not agree to the second.
        window = {
            "startTime": history_time(since_ms),
            "endTime": history_time(int(time.time() * 1000) + 60_000),
        }
        for page in range(1, self._history_max_pages + 1):
            await self._limiter.acquire()
            params = self._params(page=page, size=size, type=TEXT_COMMAND, sort="run_time,desc", **window)
            try:
                async with self._session.get(url, params=params, timeout=self._timeout) as resp:
                    if resp.status != 200:
                        raise HistoryUnavailable(f"history HTTP {resp.status}")
                    payload = await resp.json(content_type=None)
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                raise HistoryUnavailable(f"history unreadable: {type(exc).__name__}") from exc
            if not isinstance(payload, dict) or _as_int(payload.get("code")) not in _ACCEPTED_CODES:
                raise HistoryUnavailable("history answered an error")
            rows = _history_rows(payload.get("data"))
            if any(_row_delivered(row, chat_title, header_prefix) for row in rows):
                return True
            if len(rows) < size:
                return False
        return False
