"""BK-JOB's view of a step, read over HTTP from the sandbox BK-JOB and GSE: the business, the host
groups, what the failing hosts printed, the agents' states, and every failure as a gap."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.app.services import build_bkjob, build_gse
from bot.core.redact import Redactor
from bot.core.scope import Scope, parse_scope
from bot.core.settings import Settings
from bot.devtools.sandbox import REQUESTS, start_site
from bot.devtools.sandbox.bkjob import FakeHost, FakeJobInstance, FakeStep, create_bkjob_app
from bot.devtools.sandbox.gse import create_gse_app
from bot.diagnosis.hosts import StepFacts, gather
from bot.diagnosis.output import output_catalog

APP = ("hosts-test", "hosts-secret", "ops")
TASK, STEP = 20026188230, 20031290017
SECRET = "Tr0ub4dor&3"


def host(n: int, status: int, exit_code: int = 0, out: str = "", agent: str | None = None) -> FakeHost:
    return FakeHost(
        bk_host_id=1000 + n,
        ip=f"10.1.{n // 200}.{n % 200 + 1}",
        status=status,
        exit_code=exit_code,
        log_content=out,
        bk_agent_id=agent if agent is not None else f"02000000005254{n:022d}",
    )


def job(
    hosts: list[FakeHost], *, scope: str = "biz:2", step_type: int = 1, status: int = 4
) -> FakeJobInstance:
    s = parse_scope(scope)
    step = FakeStep(
        step_instance_id=STEP,
        name="deploy",
        type=step_type,
        status=status,
        start_time=1718112600000,
        hosts=hosts,
    )
    return FakeJobInstance(
        job_instance_id=TASK,
        name="发布",
        create_time=1718112600000,
        bk_scope_type=s.type,
        bk_scope_id=str(s.id),
        steps=[step],
    )


Gather = Callable[..., Awaitable[tuple[StepFacts, web.Application]]]


@pytest.fixture
async def facts_of() -> AsyncIterator[Gather]:
    runners: list[web.AppRunner] = []
    async with aiohttp.ClientSession() as session:

        async def run(
            j: FakeJobInstance,
            *,
            scope: Scope | None = None,
            candidates: tuple[str, ...] = (),
            agents: dict[str, dict[str, Any]] | None = None,
            gse_down: bool = False,
            gse_version: str = "v2",
            bkjob_url: str | None = None,
            **bkjob: Any,
        ) -> tuple[StepFacts, web.Application]:
            code, secret, user = APP
            app = create_bkjob_app([j], app_code=code, app_secret=secret, system_apps=[code])
            runner, url = await start_site(app)
            runners.append(runner)
            data: dict[str, Any] = {
                "bk": {"app_code": code, "app_secret": secret, "username": user},
                "bkjob": {
                    "base_url": bkjob_url or url,
                    "use_system_api": True,
                    "retries": 0,
                    "timeout_s": 2,
                    **bkjob,
                },
            }
            if agents is not None:
                g_runner, g_url = await start_site(create_gse_app(agents, app_code=code, app_secret=secret))
                runners.append(g_runner)
                data["gse"] = {
                    "base_url": "http://127.0.0.1:9" if gse_down else g_url,
                    "timeout_s": 1,
                    "api_version": gse_version,
                }
            settings = Settings(**data)
            client = build_bkjob(settings, session)
            assert client is not None
            facts = await gather(
                client,
                build_gse(settings, session),
                settings.bkjob,
                output_catalog(),
                scope=scope,
                candidates=[parse_scope(c) for c in candidates],
                task=TASK,
                step=STEP,
                execute_count=None,
                mask=Redactor([SECRET]),
            )
            return facts, app

        yield run
    for r in runners:
        await r.cleanup()


async def test_hosts_are_grouped_by_status_and_exit_code_failing_first(facts_of: Gather) -> None:
    hosts = [host(i, 9) for i in range(4)]
    hosts += [host(10 + i, 104, 1, "jq: command not found\n") for i in range(12)]
    hosts += [host(30, 104, 2, "tar: x: Cannot write: No space left on device\n")]
    hosts += [host(31, 310, agent="")]
    facts, _ = await facts_of(job(hosts), scope=Scope("biz", 2))
    got = [(g.status, g.exit_code, g.count, len(g.hosts)) for g in facts.groups]
    assert got == [(104, 1, 12, 10), (104, 2, 1, 1), (310, None, 1, 1), (9, None, 4, 4)]
    first = facts.groups[0]
    assert first.output == ["jq: command not found"] and "命令不存在" in first.why
    assert facts.primary is not None and facts.primary.id == "command_not_found"
    assert facts.groups[2].why.startswith("GSE 报告该主机 Agent 异常")


async def test_output_is_read_for_at_most_host_logs_hosts_per_group_and_500_per_call(
    facts_of: Gather,
) -> None:
    # 12 failing groups (exit codes 1..12) of 50 hosts each: 600 hosts to read, two calls
    hosts = [host(g * 50 + i, 104, g + 1, f"fail {g}\n") for g in range(12) for i in range(50)]
    facts, app = await facts_of(job(hosts), scope=Scope("biz", 2), host_logs=50)
    calls = [r for r in app[REQUESTS] if r.path.endswith("batch_get_job_instance_ip_log")]
    sizes = [len(r.body["host_id_list"]) for r in calls]
    assert sizes == [500, 100]
    assert all(g.output == [f"fail {g.exit_code - 1}"] for g in facts.groups if g.exit_code)

    facts, app = await facts_of(job(hosts[:60]), scope=Scope("biz", 2))  # default: 3 per group
    calls = [r for r in app[REQUESTS] if r.path.endswith("batch_get_job_instance_ip_log")]
    assert [len(r.body["host_id_list"]) for r in calls] == [6]


async def test_host_logs_zero_reads_no_output(facts_of: Gather) -> None:
    facts, app = await facts_of(job([host(1, 104, 1, "boom\n")]), scope=Scope("biz", 2), host_logs=0)
    assert not any(r.path.endswith("batch_get_job_instance_ip_log") for r in app[REQUESTS])
    assert facts.groups[0].output == [] and not facts.output_read


async def test_secrets_in_the_output_are_masked(facts_of: Gather) -> None:
    out = f"mysql -uroot --password={SECRET} -e 'select 1'\nexport TOKEN=abc123def456\nERROR 2003: Can't connect to MySQL server password={SECRET}\n"
    facts, _ = await facts_of(job([host(1, 104, 1, out)]), scope=Scope("biz", 2))
    dumped = json.dumps([g.model_dump() for g in facts.groups], ensure_ascii=False)
    assert SECRET not in dumped and "ERROR 2003" in dumped


async def test_the_business_is_found_by_trying_the_configured_ones(facts_of: Gather) -> None:
    facts, app = await facts_of(
        job([host(1, 104, 1, "x failed\n")], scope="biz_set:9991001"), candidates=("biz:2", "biz_set:9991001")
    )
    assert facts.scope == Scope("biz_set", 9991001) and facts.groups
    tried = [
        (r.query.get("bk_scope_type"), r.query.get("bk_scope_id"))
        for r in app[REQUESTS]
        if r.path.endswith("get_job_instance_status")
    ]
    assert tried == [("biz", "2"), ("biz_set", "9991001")]
    assert all(
        r.query.get("bk_scope_type") == "biz_set"
        for r in app[REQUESTS]
        if r.path.endswith("get_step_instance_status")
    )

    none, _ = await facts_of(job([host(1, 104, 1)], scope="biz:7"), candidates=("biz:2", "biz:3"))
    assert none.scope is None and not none.groups
    assert none.gaps == ["作业实例 20026188230 不在业务 biz:2、biz:3 中"]


async def test_bkjob_unreachable_is_a_gap_not_an_error(facts_of: Gather) -> None:
    facts, _ = await facts_of(job([host(1, 104, 1)]), scope=Scope("biz", 2), bkjob_url="http://127.0.0.1:9")
    assert not facts.groups and facts.gaps and facts.gaps[0].startswith("BK-JOB 暂时无法访问")


async def test_a_file_step_reads_the_failed_transfers_log(facts_of: Gather) -> None:
    log = "[2024-06-11 21:30:02] FileName: /data/pkg.tgz FileSize: 0 State: download failed StatusDesc: failed Detail: No space left on device"
    facts, _ = await facts_of(job([host(1, 202, 0, log)], step_type=2), scope=Scope("biz", 2))
    assert facts.groups[0].output == [log] and "磁盘已满" in facts.groups[0].why


async def test_agent_states_are_named(facts_of: Gather) -> None:
    hosts = [
        host(1, 310, agent="a-alive"),
        host(2, 310, agent="a-lossy"),
        host(3, 310, agent="a-gone"),
        host(4, 18, agent=""),
    ]
    agents = {
        "a-alive": {"status_code": 2, "version": "2.1.5"},
        "a-lossy": {"status_code": 3, "version": "2.1.3"},
    }
    facts, _ = await facts_of(job(hosts), scope=Scope("biz", 2), agents=agents)
    states = {a.split(" ", 1)[0]: a.split(" ", 1)[1] for g in facts.groups for a in g.agents}
    assert states["10.1.0.2"] == "正常（运行中，版本 2.1.5）"
    assert states["10.1.0.3"] == "异常（有损状态，版本 2.1.3）"
    assert states["10.1.0.4"].startswith("无数据")
    assert states["10.1.0.5"].startswith("未安装")
    assert not facts.gaps

    down, _ = await facts_of(job(hosts), scope=Scope("biz", 2), agents=agents, gse_down=True)
    assert {a.split(" ", 1)[1] for g in down.groups for a in g.agents if "10.1.0.5" not in a} == {"未知"}
    assert any(g.startswith("查询 GSE Agent 状态失败") for g in down.gaps)


async def test_the_legacy_gse_api_is_asked_by_host(facts_of: Gather) -> None:
    hosts = [host(1, 310, agent="a-alive"), host(2, 310, agent="a-down")]
    agents = {
        "a-alive": {"status_code": 2, "ip": "10.1.0.2", "bk_cloud_id": 0},
        "a-down": {"status_code": 6, "ip": "10.1.0.3", "bk_cloud_id": 0},
    }
    facts, _ = await facts_of(job(hosts), scope=Scope("biz", 2), agents=agents, gse_version="v1")
    states = dict(a.split(" ", 1) for g in facts.groups for a in g.agents)
    assert states == {"10.1.0.2": "正常（在线）", "10.1.0.3": "异常（离线）"}


async def test_a_running_step_has_its_timeout_read(facts_of: Gather) -> None:
    facts, app = await facts_of(job([host(1, 7), host(2, 9)], status=2), scope=Scope("biz", 2))
    assert facts.running and facts.detail is not None and facts.detail.timeout_s == 3600
    assert [g.count for g in facts.pending] == [1]
    assert any(r.path.endswith("get_step_instance_detail") for r in app[REQUESTS])
