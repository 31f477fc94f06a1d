"""Fake WorkTool cloud (wecom-channels.md §1.4, §1.5) as a real aiohttp app.

``POST /wework/sendRawMessage?robotId=ID`` validates the envelope (``socketType`` 2, ``list`` of
1..100 commands; type 203 needs a non-empty ``titleList`` of strings and a string
``receivedContent``) and answers ``{"code": 200, "message": "操作成功", "data": "<messageId>"}``,
or ``{"code": 101011, "message": "数据格式错误"}`` / ``101013 非法权限`` (unknown robot) with HTTP 200.
Accepted text commands are "delivered" at once: they show up in `delivered` and, as execution
results, in ``GET /robot/rawMsg/list?robotId=ID&page=&size=&startTime=&endTime=&type=`` as the real
cloud serves it: ``startTime``/``endTime`` are date strings ``YYYY-MM-DD HH:MM:SS`` in China time
(an epoch number is a format error, code 101011), ``data`` is a bare array of rows with
``messageId, errorCode, errorReason, runTime`` (a string such as ``2024-04-28T11:00:00``)``,
timeCost, type, rawMsg, rawSuccess, successList, failList``; newest first.

Fault injection for the next send requests: `fail_next` (HTTP 500), `rate_limit_next` (HTTP 429),
`hang_next` (the commands ARE recorded as sent, then the answer is held back longer than the
client's timeout: "sent, answer lost"), `reject_next` (a JSON error code), `fail_delivery_next`
(accepted, but the phone fails: rawSuccess 1, failList). `fail_history_next` breaks the history;
`refuse_chat` refuses every send to one chat.
Every request is timestamped with the injectable `clock`; `max_requests_per_window` is the QPM
counter, and `enforce_per_minute` makes the fake answer 429 beyond it like the real cloud.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

SEND_PATH = "/wework/sendRawMessage"
HISTORY_PATH = "/robot/rawMsg/list"
OK = {"code": 200, "message": "操作成功"}
MAX_COMMANDS = 100
CHINA = ZoneInfo("Asia/Shanghai")
FORMAT_ERROR = {"code": 101011, "message": "数据格式错误", "data": None}


def _china_time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, CHINA).replace(tzinfo=None)


def _query_time(value: str | None) -> datetime | None:
    """`YYYY-MM-DD HH:MM:SS` (China time), the only form the history API reads."""
    if value is None:
        return None
    return datetime.strptime(value, "%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class Delivered:
    chat: str
    text: str
    at_list: tuple[str, ...]
    message_id: str


@dataclass
class _Fault:
    kind: str  # "ok" | "500" | "429" | "hang" | "reject" | "phone_fail"
    seconds: float = 0.0
    code: int = 0
    retry_after: float | None = None


@dataclass
class FakeWorkTool:
    robot_ids: Iterable[str] = ("robot-1",)
    clock: Callable[[], float] = time.monotonic
    clock_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    enforce_per_minute: int | None = None
    window_s: float = 60.0

    delivered: list[Delivered] = field(default_factory=list)
    send_bodies: list[dict[str, Any]] = field(default_factory=list)  # valid send bodies, as received
    request_times: list[float] = field(default_factory=list)  # every request, both endpoints
    history: list[dict[str, Any]] = field(default_factory=list)
    _send_faults: deque[_Fault] = field(default_factory=deque)
    _history_faults: deque[int] = field(default_factory=deque)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1582945256466776064))
    _reject_message: str = "数据格式错误"
    _refused_chats: dict[str, tuple[int, str]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)  # chat titles of refused sends, in order
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    # ------------------------------------------------------------------ fault injection

    def fail_next(self, n: int = 1, *, status: int = 500) -> None:
        self._send_faults.extend(_Fault(str(status)) for _ in range(n))

    def rate_limit_next(self, n: int = 1, *, retry_after: float | None = None) -> None:
        self._send_faults.extend(_Fault("429", retry_after=retry_after) for _ in range(n))

    def hang_next(self, n: int = 1, *, seconds: float = 30.0, after: int = 0) -> None:
        """The next n send requests (after `after` normal ones) are recorded, then left hanging."""
        self._send_faults.extend(_Fault("ok") for _ in range(after))
        self._send_faults.extend(_Fault("hang", seconds=seconds) for _ in range(n))

    def reject_next(self, n: int = 1, *, code: int = 101011, message: str = "数据格式错误") -> None:
        self._send_faults.extend(_Fault("reject", code=code) for _ in range(n))
        self._reject_message = message

    def fail_delivery_next(self, n: int = 1, *, code: int = 201101) -> None:
        self._send_faults.extend(_Fault("phone_fail", code=code) for _ in range(n))

    def recover(self) -> None:
        """Forget every queued send fault (the outage is over)."""
        self._send_faults.clear()

    def fail_history_next(self, n: int = 1, *, status: int = 500) -> None:
        self._history_faults.extend([status] * n)

    def refuse_chat(self, title: str, *, code: int = 101011, message: str = "查找聊天窗失败") -> None:
        """Every send addressed to `title` is refused with a JSON error code (a renamed group)."""
        self._refused_chats[title] = (code, message)

    # ------------------------------------------------------------------ accessors

    def messages(self, chat: str | None = None) -> list[tuple[str, str, tuple[str, ...]]]:
        """Delivered (chat, text, atList) in order."""
        return [(d.chat, d.text, d.at_list) for d in self.delivered if chat is None or d.chat == chat]

    def max_requests_per_window(self) -> int:
        """Largest number of requests seen inside any sliding `window_s` (the QPM counter)."""
        times = sorted(self.request_times)
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while times[lo] <= t - self.window_s:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    # ------------------------------------------------------------------ app

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(SEND_PATH, self._send)
        app.router.add_get(HISTORY_PATH, self._history)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, _app: web.Application) -> None:
        self._release.set()  # let hanging handlers finish so the server closes promptly

    def _over_limit(self, now: float) -> bool:
        if self.enforce_per_minute is None:
            return False
        recent = [t for t in self.request_times if t > now - self.window_s]
        return len(recent) > self.enforce_per_minute

    async def _send(self, request: web.Request) -> web.Response:
        now = self.clock()
        self.request_times.append(now)
        if self._over_limit(now):
            return web.json_response({"code": 429, "message": "请求过于频繁"}, status=429)
        if request.query.get("robotId") not in set(self.robot_ids):
            return web.json_response({"code": 101013, "message": "非法权限", "data": None})
        fault = self._send_faults.popleft() if self._send_faults else None
        if fault and fault.kind in ("500", "429"):
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
            return web.json_response(
                {"code": int(fault.kind), "message": "error"}, status=int(fault.kind), headers=headers
            )
        if fault and fault.kind == "reject":
            return web.json_response({"code": fault.code, "message": self._reject_message, "data": None})
        body = self._validate(await request.read())
        if body is None:
            return web.json_response({"code": 101011, "message": "数据格式错误", "data": None})
        for command in body["list"]:
            for title in command.get("titleList") or ():
                if title in self._refused_chats:
                    self.refused.append(title)
                    code, message = self._refused_chats[title]
                    return web.json_response({"code": code, "message": message, "data": None})
        self.send_bodies.append(body)
        message_id = str(next(self._ids))
        for command in body["list"]:
            self._execute(
                command, message_id, failed_code=fault.code if fault and fault.kind == "phone_fail" else 0
            )
        if fault and fault.kind == "hang":
            try:
                await asyncio.wait_for(self._release.wait(), fault.seconds)
            except TimeoutError:
                pass
        return web.json_response({**OK, "data": message_id})

    def _execute(self, command: dict[str, Any], message_id: str, *, failed_code: int) -> None:
        titles: list[str] = command.get("titleList") or []
        if command["type"] == 203 and not failed_code:
            for title in titles:
                at_list = tuple(command.get("atList") or ())
                self.delivered.append(Delivered(title, command["receivedContent"], at_list, message_id))
        raw = {"messageId": message_id, **command}
        self.history.append(
            {
                "messageId": message_id,
                "errorCode": failed_code,
                "errorReason": "查找聊天窗失败" if failed_code else "",
                "runMs": self.clock_ms(),  # for filtering; the wire shows `runTime` as a string
                "timeCost": 4.5,
                "type": command["type"],
                "rawMsg": json.dumps(raw, ensure_ascii=False),
                "rawSuccess": 1 if failed_code else 0,
                "successList": [] if failed_code else list(titles),
                "failList": list(titles) if failed_code else [],
            }
        )

    @staticmethod
    def _validate(raw: bytes) -> dict[str, Any] | None:
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("socketType") != 2:
            return None
        commands = data.get("list")
        if not isinstance(commands, list) or not 1 <= len(commands) <= MAX_COMMANDS:
            return None
        for command in commands:
            if not isinstance(command, dict) or not isinstance(command.get("type"), int):
                return None
            if command["type"] == 203:
                titles, content = command.get("titleList"), command.get("receivedContent")
                if (
                    not isinstance(titles, list)
                    or not titles
                    or not all(isinstance(t, str) and t for t in titles)
                ):
                    return None
                if not isinstance(content, str):
                    return None
                at_list = command.get("atList", [])
                if not isinstance(at_list, list) or not all(isinstance(a, str) for a in at_list):
                    return None
        return data

    async def _history(self, request: web.Request) -> web.Response:
        self.request_times.append(self.clock())
        if self._history_faults:
            status = self._history_faults.popleft()
            return web.json_response({"code": status, "message": "error"}, status=status)
        query = request.query
        if query.get("robotId") not in set(self.robot_ids):
            return web.json_response({"code": 101013, "message": "非法权限", "data": None})
        try:
            page = int(query.get("page", "1"))
            size = int(query.get("size", "10"))
            start = _query_time(query.get("startTime"))
            end = _query_time(query.get("endTime"))
            wanted_type = int(query["type"]) if "type" in query else None
        except ValueError:
            return web.json_response(FORMAT_ERROR)
        rows = [
            row
            for row in reversed(self.history)
            if (start is None or _china_time(row["runMs"]) >= start)
            and (end is None or _china_time(row["runMs"]) <= end)
            and (wanted_type is None or row["type"] == wanted_type)
        ]
        chunk = [
            {
                **{k: v for k, v in row.items() if k != "runMs"},
                "runTime": _china_time(row["runMs"]).isoformat(),
            }
            for row in rows[(page - 1) * size : page * size]
        ]
        return web.json_response({**OK, "data": chunk})
