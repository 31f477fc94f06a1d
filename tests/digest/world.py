"""A BK-JOB + BkLog world for digest tests and the digest bench.

Scenario logs from the scenario corpus are moved in time (record timestamps shifted so the chain
starts at the chosen moment) and, when one scenario is used more than once, given fresh step,
job and trace ids, so every failed step has its own coherent chain. The matching BK-JOB job
instances carry the same ids and the chain's start/end times.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from bot.core.settings import Settings
from bot.devtools.evaluate import SANDBOX_APP, SANDBOX_INDEX_SET
from bot.devtools.sandbox.bkjob import FakeJobInstance, FakeStep, create_bkjob_app
from bot.devtools.sandbox.bklog import DocsProvider, create_bklog_app, docs_from_records
from bot.devtools.scenarios import Scenario, load_scenarios

TZ_NAME = "Asia/Shanghai"
TZ = ZoneInfo(TZ_NAME)
ACCESS_TOKEN = "user-access-token-0123456789"  # a verified user, as the sandbox gateway knows it
WEB_URL = "https://job.example.com"
_TS = re.compile(r"^(\[?)(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3})", re.M)
_TRACE = re.compile(r"\b[0-9a-f]{32}\b")

# Scenarios with both ids, and the signature each is diagnosed with.
SCRIPT_EXIT = "script_exit_code_1"  # script_exit_nonzero, execution / user
SCRIPT_EXIT_MULTI = "script_exit_code_256_multi_host"  # script_exit_nonzero
AGENT_OFFLINE = "agent_offline_117"  # agent_abnormal, execution / environment
GSE_310 = "gse_dispatch_code_nonzero_310"  # gse_dispatch_api_failure
UNMATCHED = "partial_chain_sending_no_ack"  # no signature: dispatch / unknown


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@functools.cache
def _scenarios() -> dict[str, Scenario]:
    return {sc.name: sc for sc in load_scenarios()}


def scenario(name: str) -> Scenario:
    return _scenarios()[name]


def shift_logs(text: str, start: datetime) -> tuple[str, datetime, datetime]:
    """Move every record so the first one is at `start`; returns (text, first, last) times."""
    stamps = [datetime.fromisoformat(m.group(2)) for m in _TS.finditer(text)]
    first_naive = min(stamps)
    delta = start.astimezone(TZ).replace(tzinfo=None) - first_naive

    def move(m: re.Match[str]) -> str:
        moved = datetime.fromisoformat(m.group(2)) + delta
        return m.group(1) + moved.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]

    last = max(stamps) + delta
    return _TS.sub(move, text), start.astimezone(TZ), last.replace(tzinfo=TZ)


def remap_ids(text: str, mapping: dict[str, str], rng: random.Random) -> str:
    """Replace ids (exact digit runs) and give every traceId a fresh one with the same last char."""
    traces: dict[str, str] = {}

    def trace(m: re.Match[str]) -> str:
        old = m.group(0)
        if old not in traces:
            traces[old] = "".join(rng.choice("0123456789abcdef") for _ in range(31)) + old[-1]
        return traces[old]

    text = _TRACE.sub(trace, text)
    for old, new in mapping.items():
        text = re.sub(rf"(?<!\d){old}(?!\d)", new, text)
    return text


@dataclass
class World:
    """Jobs for the sandbox BK-JOB and documents for the sandbox BkLog."""

    jobs: list[FakeJobInstance] = field(default_factory=list)
    docs: list[dict[str, Any]] = field(default_factory=list)
    logs: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # step id → its documents
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    _next_id: int = 30_000_000_000

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def add_scenario(
        self,
        name: str,
        *,
        biz: int,
        at: datetime,
        job_name: str | None = None,
        status: int = 4,
        fresh_ids: bool = False,
        create_time: datetime | None = None,
    ) -> FakeJobInstance:
        """One failed job whose failing step's engine chain is the scenario's, starting at `at`."""
        sc = scenario(name)
        step_id, task_id = sc.expected.step_instance_id, sc.expected.task_instance_id
        assert step_id is not None and task_id is not None, name
        text = sc.logs_text
        if fresh_ids:
            new_step, new_task = self.new_id(), self.new_id()
            text = remap_ids(text, {str(step_id): str(new_step), str(task_id): str(new_task)}, self.rng)
            step_id, task_id = new_step, new_task
        text, first, last = shift_logs(text, at)
        docs = docs_from_records(text, first_gse_index=len(self.docs) + 1, time_zone=TZ_NAME)
        self.docs.extend(docs)
        self.logs[step_id] = docs
        job = FakeJobInstance(
            job_instance_id=task_id,
            name=job_name or f"作业-{name}",
            create_time=ms(create_time or first),
            status=status,
            bk_scope_id=str(biz),
            start_time=ms(first),
            end_time=ms(last),
            steps=[
                FakeStep(self.new_id(), "准备", status=3, start_time=ms(first), end_time=ms(first)),
                FakeStep(step_id, f"步骤-{name}", status=status, start_time=ms(first), end_time=ms(last)),
            ],
        )
        self.jobs.append(job)
        return job

    def add_bare(
        self, *, biz: int, at: datetime, status: int = 4, failed_steps: int = 1, name: str = ""
    ) -> FakeJobInstance:
        """A failed job without any engine logs (its analysis finds nothing)."""
        job_id = self.new_id()
        steps = [
            FakeStep(self.new_id(), f"步骤{i}", status=status, start_time=ms(at), end_time=ms(at) + 1000)
            for i in range(failed_steps)
        ]
        job = FakeJobInstance(
            job_instance_id=job_id,
            name=name or f"作业{job_id}",
            create_time=ms(at),
            status=status,
            bk_scope_id=str(biz),
            start_time=ms(at),
            end_time=ms(at) + 1000,
            steps=steps,
        )
        self.jobs.append(job)
        return job

    # ------------------------------------------------------------------ servers

    def bkjob_app(self, **kw: Any) -> web.Application:
        """The sandbox BK-JOB as a real gateway fronts it: user APIs need a verified user (the
        test app is not exempt); the app is granted the system APIs; ACCESS_TOKEN is a user's."""
        code, secret, user = SANDBOX_APP
        kw.setdefault("system_apps", [code])
        kw.setdefault("access_tokens", {ACCESS_TOKEN: user})
        return create_bkjob_app(self.jobs, app_code=code, app_secret=secret, **kw)

    def bklog_app(self, docs: DocsProvider | None = None) -> web.Application:
        code, secret, user = SANDBOX_APP
        return create_bklog_app(
            docs if docs is not None else self.docs,
            app_code=code,
            app_secret=secret,
            index_set_id=SANDBOX_INDEX_SET,
            access_tokens={ACCESS_TOKEN: user},  # BlueKing's auth service knows the token everywhere
        )


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def world_settings(
    *,
    bkjob_url: str,
    bklog_url: str,
    biz_ids: list[int],
    targets: list[dict[str, str]] | None = None,
    redis_url: str = "",
    prefix: str = "jd:",
    worktool_url: str | None = None,
    **overrides: Any,
) -> Settings:
    code, secret, user = SANDBOX_APP
    data: dict[str, Any] = {
        "redis_url": redis_url,
        "redis_key_prefix": prefix,
        "http": {"shutdown_grace_s": 0.5},
        "bk": {"app_code": code, "app_secret": secret, "username": user},
        "bklog": {
            "base_url": bklog_url,
            "index_set_id": SANDBOX_INDEX_SET,
            "retries": 0,
            "timeout_s": 5,
        },
        # the app-only system APIs (granted to the test app by the sandbox gateway)
        "bkjob": {
            "base_url": bkjob_url,
            "web_url": WEB_URL,
            "retries": 1,
            "timeout_s": 5,
            "use_system_api": True,
        },
        "digest": {
            "biz_ids": biz_ids,
            "time_zone": TZ_NAME,
            "targets": targets or [],
            "concurrency": 4,
        },
    }
    if worktool_url is not None:
        data["worktool"] = {
            "base_url": worktool_url,
            "robot_id": "robot-1",
            "callback_token": "cb-token-0123456789",
            "send_interval_s": 0,
            "timeout_s": 2,
            "part_max_chars": 600,
        }
    return Settings(**_merge(data, overrides))


def fire_at(day: str, hh: int = 9) -> datetime:
    return datetime.fromisoformat(f"{day}T{hh:02d}:00:00").replace(tzinfo=TZ)


def before(moment: datetime, **delta: float) -> datetime:
    return moment - timedelta(**delta)
