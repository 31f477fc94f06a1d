"""The bot under test, wired as `serve` wires it, talking to real local fakes over HTTP.

- the WorkTool cloud: `tests.support.fakes.worktool.FakeWorkTool` (send API + execution history);
- BkLog: the sandbox gateway serving scenario logs from the scenario corpus;
- the bot: `create_app(settings)`, as `serve` builds it, reached through
  `POST /worktool/callback?token=…` exactly as WorkTool calls it.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from bot.app import keys as K
from bot.app.web import create_app
from bot.core.settings import Settings
from bot.core.store import Store, open_store
from bot.devtools.evaluate import SANDBOX_APP, SANDBOX_INDEX_SET
from bot.devtools.sandbox import FAULTS
from bot.devtools.sandbox.bklog import create_bklog_app, docs_from_records, recorded_queries
from bot.devtools.scenarios import Scenario, load_scenarios
from tests.support.fakes.worktool import FakeWorkTool

ROBOT_ID = "robot-1"
TOKEN = "cb-token-0123456789"
BOT_NAME = "job-doctor"
GROUP = "运维群"
HEADER = "【job-doctor 诊断报告】"

_PART = re.compile(r"^(.*) \((\d+)/(\d+)\)$")

Message = tuple[str, str, tuple[str, ...]]  # (chat, text, atList) as the fake WorkTool received it


def scenarios(*names: str) -> list[Scenario]:
    by_name = {sc.name: sc for sc in load_scenarios()}
    return [by_name[n] for n in names]


def bklog_app(chosen: Sequence[Scenario]) -> web.Application:
    """One sandbox BkLog holding the logs of every chosen scenario."""
    docs: list[dict[str, Any]] = []
    for sc in chosen:
        docs.extend(docs_from_records(sc.logs_text, first_gse_index=len(docs) + 1))
    code, secret, _user = SANDBOX_APP
    return create_bklog_app(docs, app_code=code, app_secret=secret, index_set_id=SANDBOX_INDEX_SET)


def step_searches(bklog: web.Application, step: int) -> int:
    """How many analyses of `step` reached BkLog: each one starts with exactly one query for the id."""
    pattern = re.compile(rf'log:\s*"?{step}"?')
    return sum(1 for q in recorded_queries(bklog) if pattern.fullmatch(q.strip()))


def slow_bklog(bklog: web.Application, seconds: float, times: int = 1) -> None:
    bklog[FAULTS].delay(seconds, times)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


def rig_settings(
    *, worktool_url: str, bklog_url: str, redis_url: str, prefix: str, **overrides: Any
) -> Settings:
    code, secret, user = SANDBOX_APP
    data: dict[str, Any] = {
        "redis_url": redis_url,
        "redis_key_prefix": prefix,
        "http": {"shutdown_grace_s": 0.3},
        "bklog": {
            "base_url": bklog_url,
            "index_set_id": SANDBOX_INDEX_SET,
            "app_code": code,
            "app_secret": secret,
            "username": user,
            "retries": 0,
            "timeout_s": 5,
            "lookback_days": 3650,  # the sample logs are old
        },
        "worktool": {
            "base_url": worktool_url,
            "robot_id": ROBOT_ID,
            "callback_token": TOKEN,
            "bot_name": BOT_NAME,
            "send_interval_s": 0,
            "timeout_s": 2,
        },
        "chat": {"progress_after_s": 30},
        "worker": {"claim_idle_s": 1},
    }
    return Settings(**_merge(data, overrides))


def callback_body(
    text: str,
    *,
    sender: str = "张三",
    group: str | None = GROUP,
    at: bool = True,
    text_type: str = "1",
) -> dict[str, str]:
    """A WorkTool callback as the cloud sends it (every value a string, NBSP after the mention)."""
    if group is None:
        return {
            "spoken": text,
            "rawSpoken": text,
            "receivedName": sender,
            "groupName": "",
            "groupRemark": "",
            "roomType": "4",
            "atMe": "false",
            "textType": text_type,
        }
    raw = f"@{BOT_NAME}\u00a0{text}" if at else text
    return {
        "spoken": text,
        "rawSpoken": raw,
        "receivedName": sender,
        "groupName": group,
        "groupRemark": "",
        "roomType": "3",
        "atMe": "true" if at else "false",
        "textType": text_type,
    }


@dataclass(frozen=True)
class Fakes:
    """The fake WorkTool cloud and the sandbox BkLog, with their base URLs (shared by bot instances)."""

    fake: FakeWorkTool
    worktool_url: str
    bklog: web.Application
    bklog_url: str


@dataclass
class Rig:
    """One running bot instance plus the fakes it talks to."""

    client: TestClient[Any, Any]
    fakes: Fakes
    settings: Settings
    latencies: list[float] = field(default_factory=list)

    @property
    def fake(self) -> FakeWorkTool:
        return self.fakes.fake

    @property
    def bklog(self) -> web.Application:
        return self.fakes.bklog

    @property
    def app(self) -> web.Application:
        app: web.Application = self.client.app
        return app

    async def post(self, body: Any = None, *, token: str | None = TOKEN, **kwargs: Any) -> ClientResponse:
        params = {} if token is None else {"token": token}
        start = time.perf_counter()
        if body is not None:
            kwargs["data"] = json.dumps(body, ensure_ascii=False).encode()
            kwargs.setdefault("headers", {"Content-Type": "application/json"})
        resp = await self.client.post("/worktool/callback", params=params, **kwargs)
        await resp.read()
        self.latencies.append(time.perf_counter() - start)
        return resp

    async def say(self, text: str, **kw: Any) -> dict[str, Any]:
        resp = await self.post(callback_body(text, **kw))
        assert resp.status == 200, resp.status
        answer: dict[str, Any] = await resp.json()
        assert answer["code"] == 0
        return answer

    def messages(self, chat: str | None = None) -> list[Message]:
        return self.fake.messages(chat)

    def reports(self, chat: str | None = None) -> list[Message]:
        return [m for m in self.messages(chat) if m[1].startswith(HEADER)]

    async def wait_for(self, pred: Callable[[list[Message]], bool], timeout: float = 10.0) -> list[Message]:
        """Poll what the fake WorkTool received until `pred` holds."""
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages()
            if pred(msgs):
                return msgs
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; WorkTool received: {msgs!r}")
            await asyncio.sleep(0.02)

    def complete_reports(self, chat: str | None = None) -> list[list[Message]]:
        """Reports whose parts all arrived, each as its parts in order, ordered by their first part.

        Parts of reports sent concurrently may interleave: the k-th copy of part i belongs to the
        k-th report with the same chat, header and part count.
        """
        singles: list[tuple[int, list[Message]]] = []
        numbered: dict[tuple[str, str, int], dict[int, list[tuple[int, Message]]]] = {}
        for pos, m in enumerate(self.reports(chat)):
            number = _PART.match(m[1].split("\n", 1)[0])
            if number is None:
                singles.append((pos, [m]))
                continue
            head, i, n = number.group(1), int(number.group(2)), int(number.group(3))
            numbered.setdefault((m[0], head, n), {}).setdefault(i, []).append((pos, m))
        out = list(singles)
        for (_chat, _head, n), by_part in numbered.items():
            complete = min(len(by_part.get(i, [])) for i in range(1, n + 1))
            for k in range(complete):
                out.append((by_part[1][k][0], [by_part[i][k][1] for i in range(1, n + 1)]))
        return [parts for _pos, parts in sorted(out, key=lambda item: item[0])]

    async def wait_reports(
        self, n: int = 1, timeout: float = 10.0, chat: str | None = None
    ) -> list[list[Message]]:
        await self.wait_for(lambda _m: len(self.complete_reports(chat)) >= n, timeout)
        return self.complete_reports(chat)

    async def wait_count(self, n: int, timeout: float = 10.0) -> list[Message]:
        return await self.wait_for(lambda m: len(m) >= n, timeout)

    async def quiet(self, seconds: float) -> list[Message]:
        """Let the bot run a while (to see that nothing more is sent)."""
        await asyncio.sleep(seconds)
        return self.messages()

    @property
    def report_store(self) -> Any:
        return self.app[K.SERVICES].reports


async def start_bot(settings: Settings) -> TestClient[Any, Any]:
    app = await create_app(settings)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return client


async def drop_prefix(redis_url: str, prefix: str) -> None:
    if not redis_url:
        return
    store: Store = open_store(redis_url, prefix=prefix)
    try:
        keys = [k async for k in store.redis.scan_iter(match=prefix + "*", count=500)]
        if keys:
            await store.redis.delete(*keys)
    finally:
        await store.close()


def seconds_left_in_minute() -> float:
    return 60.0 - time.time() % 60.0


def open_store_for(settings: Settings) -> Store:
    return open_store(settings.redis_url, prefix=settings.redis_key_prefix)
