"""The world around the bot processes: fakes served from the test process on 127.0.0.1 ports.

- the WorkTool cloud (`FakeWorkTool`: send API + execution history, with faults);
- the sandbox BkLog gateway (`bot.devtools.sandbox.bklog`, faults through `app[FAULTS]`);
- an OpenAI-compatible model (`FakeOpenAI`, every request recorded).

`bot_env` turns the world into the `JOB_DOCTOR_*` variables a `serve` process is started with.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis.exceptions
from aiohttp import web

from bot.devtools.evaluate import SANDBOX_APP, SANDBOX_INDEX_SET
from bot.devtools.sandbox import FAULTS, Faults
from bot.devtools.sandbox.bklog import create_bklog_app, docs_from_records, recorded_queries
from bot.devtools.scenarios import Scenario, load_scenarios
from tests.integration.conversation.harness import callback_body as conversation_callback_body
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.fakes.worktool import FakeWorkTool

ROBOT_ID = "robot-rel-1"
TOKEN = "cb-token-rel-0123456789abcdef"
BOT_NAME = "job-doctor"
GROUP = "运维值班群"
HEADER = "【job-doctor 诊断报告】"
MODEL_KEY = "sk-rel-model-key-000111222333"
BKLOG_SECRET = SANDBOX_APP[1]

Message = tuple[str, str, tuple[str, ...]]  # (chat, text, atList) as the fake WorkTool received it
_PART = re.compile(r"^(.*) \((\d+)/(\d+)\)$")


def step_scenarios(limit: int | None = None) -> list[Scenario]:
    """Scenarios asked about by stepInstanceId, in a stable order."""
    chosen = [sc for sc in load_scenarios() if sc.expected.step_instance_id]
    return chosen[:limit] if limit is not None else chosen


def scenario(name: str) -> Scenario:
    return next(sc for sc in load_scenarios() if sc.name == name)


def bklog_app(texts: Iterable[str]) -> web.Application:
    docs: list[dict[str, Any]] = []
    for text in texts:
        docs.extend(docs_from_records(text, first_gse_index=len(docs) + 1))
    code, secret, _user = SANDBOX_APP
    return create_bklog_app(docs, app_code=code, app_secret=secret, index_set_id=SANDBOX_INDEX_SET)


@dataclass
class World:
    worktool: FakeWorkTool
    worktool_url: str
    bklog: web.Application
    bklog_url: str
    model: FakeOpenAI
    model_url: str

    @property
    def bklog_faults(self) -> Faults:
        return self.bklog[FAULTS]

    def step_searches(self, step: int | None) -> int:
        """Analyses of `step` that reached BkLog: each starts with exactly one query for the id."""
        assert step is not None
        pattern = re.compile(rf'log:\s*"?{step}"?')
        return sum(1 for q in recorded_queries(self.bklog) if pattern.fullmatch(q.strip()))

    def messages(self, chat: str | None = None) -> list[Message]:
        return self.worktool.messages(chat)

    def report_parts(self, chat: str | None = None) -> list[Message]:
        return [m for m in self.messages(chat) if m[1].startswith(HEADER)]

    def reports(self, chat: str | None = None) -> list[Message]:
        """First parts of reports (one per report, whatever its part count)."""
        out = []
        for m in self.report_parts(chat):
            number = _PART.match(m[1].split("\n", 1)[0])
            if number is None or number.group(2) == "1":
                out.append(m)
        return out

    async def wait_for(self, pred: Callable[[list[Message]], bool], timeout: float) -> list[Message]:
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages()
            if pred(msgs):
                return msgs
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s; WorkTool received: {msgs!r}"[:4000])
            await asyncio.sleep(0.05)

    async def settle(self, quiet_s: float = 1.0, timeout: float = 20.0) -> list[Message]:
        """Wait until nothing new arrived for `quiet_s` (split messages arrive part by part)."""
        deadline = time.monotonic() + timeout
        count, since = len(self.messages()), time.monotonic()
        while time.monotonic() - since < quiet_s:
            assert time.monotonic() < deadline, "the bot kept sending"
            await asyncio.sleep(0.05)
            if len(self.messages()) != count:
                count, since = len(self.messages()), time.monotonic()
        return self.messages()

    async def wait_reports(self, n: int, timeout: float = 20.0) -> list[Message]:
        await self.wait_for(lambda _m: len(self.reports()) >= n, timeout)
        return self.reports()


def bot_env(
    world: World,
    *,
    redis_url: str,
    prefix: str,
    model: bool = False,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """`JOB_DOCTOR_*` settings for one `serve` process: short timings, pacing off, fakes as backends."""
    code, secret, user = SANDBOX_APP
    env = {
        "JOB_DOCTOR_REDIS_URL": redis_url,
        "JOB_DOCTOR_REDIS_KEY_PREFIX": prefix,
        "JOB_DOCTOR_LOG_LEVEL": "INFO",
        "JOB_DOCTOR_HTTP__SHUTDOWN_GRACE_S": "2",
        "JOB_DOCTOR_BKLOG__BASE_URL": world.bklog_url,
        "JOB_DOCTOR_BKLOG__INDEX_SET_ID": str(SANDBOX_INDEX_SET),
        "JOB_DOCTOR_BKLOG__APP_CODE": code,
        "JOB_DOCTOR_BKLOG__APP_SECRET": secret,
        "JOB_DOCTOR_BKLOG__USERNAME": user,
        "JOB_DOCTOR_BKLOG__RETRIES": "0",
        "JOB_DOCTOR_BKLOG__TIMEOUT_S": "5",
        "JOB_DOCTOR_BKLOG__LOOKBACK_DAYS": "3650",  # the sample logs are old
        "JOB_DOCTOR_WORKTOOL__BASE_URL": world.worktool_url,
        "JOB_DOCTOR_WORKTOOL__ROBOT_ID": ROBOT_ID,
        "JOB_DOCTOR_WORKTOOL__CALLBACK_TOKEN": TOKEN,
        "JOB_DOCTOR_WORKTOOL__BOT_NAME": BOT_NAME,
        "JOB_DOCTOR_WORKTOOL__SEND_INTERVAL_S": "0",
        "JOB_DOCTOR_WORKTOOL__TIMEOUT_S": "2",
        "JOB_DOCTOR_WORKTOOL__REQUESTS_PER_MINUTE": "100000",
        "JOB_DOCTOR_CHAT__PROGRESS_AFTER_S": "60",
        "JOB_DOCTOR_CHAT__USER_RATE_PER_MIN": "1000",
        "JOB_DOCTOR_CHAT__GROUP_RATE_PER_MIN": "1000",
        "JOB_DOCTOR_WORKER__CLAIM_IDLE_S": "1",
    }
    if model:
        env.update(
            {
                "JOB_DOCTOR_LLM__BASE_URL": world.model_url,
                "JOB_DOCTOR_LLM__API_KEY": MODEL_KEY,
                "JOB_DOCTOR_LLM__MODEL": world.model.model,
                "JOB_DOCTOR_LLM__TIMEOUT_S": "1",
                "JOB_DOCTOR_LLM__DEADLINE_S": "3",
            }
        )
    env.update(extra or {})
    return env


def callback_body(text: str, *, sender: str = "张三", group: str | None = GROUP) -> dict[str, str]:
    """A WorkTool callback as the cloud sends it, addressed to this world's group by default."""
    return conversation_callback_body(text, sender=sender, group=group)


async def post_callback(
    session: aiohttp.ClientSession,
    base_url: str,
    body: dict[str, Any] | bytes,
    *,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    params = {} if token is None else {"token": token}
    data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    async with session.post(
        base_url + "/worktool/callback",
        params=params,
        data=data,
        headers=headers or {"Content-Type": "application/json"},
    ) as resp:
        return resp.status, await resp.text()


async def ask(
    session: aiohttp.ClientSession,
    base_url: str,
    text: str,
    *,
    sender: str = "张三",
    group: str | None = GROUP,
) -> None:
    """Post one callback and check WorkTool's ack (HTTP 200, code 0)."""
    status, answer = await post_callback(session, base_url, callback_body(text, sender=sender, group=group))
    assert status == 200, (status, answer)
    assert json.loads(answer)["code"] == 0, answer


def chat_texts(world: World) -> Sequence[str]:
    return [m[1] for m in world.messages()]


# Lines of a chat message that quote the engine's own log (records, Java stack frames): they may
# legitimately say "Exception" or "Error:"; everything else is the bot's own words.
_QUOTED = re.compile(
    r"^\s*(?:\[?\d{4}-\d{2}-\d{2} \d{2}:|at [\w$.]+\(|java\.|javax\.|org\.|com\.|Caused by:|\.\.\. \d+ more)"
    r"|\[job-execute,|`"
)


def _internal_markers() -> list[re.Pattern[str]]:
    names = {
        name
        for module in (builtins, redis.exceptions, aiohttp)
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, BaseException) and not name.endswith("Warning")
    }
    literal = ["Traceback", 'File "', "Error:", "Exception:", "Exception("]
    return [re.compile(re.escape(s)) for s in literal] + [re.compile(rf"\b{re.escape(n)}\b") for n in names]


INTERNAL_MARKERS = _internal_markers()


def internal_errors(text: str) -> list[str]:
    """Stack traces, Python exception names or error texts in the bot's own words of a chat message."""
    own = "\n".join(line for line in text.splitlines() if not _QUOTED.search(line))
    return [p.pattern for p in INTERNAL_MARKERS if p.search(own)]
