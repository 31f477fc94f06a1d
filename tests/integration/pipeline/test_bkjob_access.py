"""The analysis against a BK-JOB gateway that behaves like the real one: user verification on the
public APIs, app grants on the system APIs, scopes of both types (`biz`, `biz_set`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from bot.app.services import AppOptions, build_services
from bot.core.models import DiagnosisReport
from bot.core.settings import Settings
from bot.devtools.evaluate import SANDBOX_APP, SANDBOX_INDEX_SET, last_timestamp
from bot.devtools.sandbox import REQUESTS, start_site
from bot.devtools.sandbox.bkjob import FakeHost, FakeJobInstance, FakeStep, create_bkjob_app
from bot.devtools.sandbox.bklog import create_bklog_app, docs_from_records
from bot.devtools.scenarios import load_scenarios
from bot.diagnosis.pipeline import AnalysisRequest

SC = next(s for s in load_scenarios() if s.name == "script_exit_code_1")
STEP, TASK = SC.expected.step_instance_id, SC.expected.task_instance_id
TOKEN = "ops-user-access-token-0123"
Analyze = Callable[..., Awaitable[tuple[DiagnosisReport, Any]]]


def job(scope_type: str, scope_id: str) -> FakeJobInstance:
    span = last_timestamp(SC.logs_text)
    end_ms = int(span.timestamp() * 1000)
    host = FakeHost(bk_host_id=11, ip="10.0.3.7", status=104, exit_code=1, log_content="deploy failed\n")
    step = FakeStep(
        step_instance_id=STEP,
        name="deploy",
        status=4,
        start_time=end_ms - 60_000,
        end_time=end_ms,
        hosts=[host],
    )
    assert TASK is not None
    return FakeJobInstance(
        job_instance_id=TASK,
        name="发布",
        create_time=end_ms - 60_000,
        status=4,
        bk_scope_type=scope_type,
        bk_scope_id=scope_id,
        steps=[step],
    )


@pytest.fixture
async def analyze() -> AsyncIterator[Analyze]:
    runners: list[Any] = []
    code, secret, user = SANDBOX_APP

    async def run(
        *,
        scope: tuple[str, str] = ("biz", "2"),
        asked_scope: tuple[str, str] | None = None,
        bkjob: dict[str, Any] | None = None,
        bk: dict[str, Any] | None = None,
        gateway: dict[str, Any] | None = None,
    ) -> tuple[DiagnosisReport, Any]:
        bklog_app = create_bklog_app(
            docs_from_records(SC.logs_text),
            app_code=code,
            app_secret=secret,
            index_set_id=SANDBOX_INDEX_SET,
            access_tokens={TOKEN: "ops"},
        )
        bkjob_app = create_bkjob_app(
            [job(*scope)],
            app_code=code,
            app_secret=secret,
            system_apps=[code],
            access_tokens={TOKEN: "ops"},
            **(gateway or {}),
        )
        for app in (bklog_app, bkjob_app):
            runners.append(await start_site(app))
        (_, bklog_url), (_, bkjob_url) = runners[-2], runners[-1]
        settings = {
            "bk": {"app_code": code, "app_secret": secret, "username": user, **(bk or {})},
            "bklog": {"base_url": bklog_url, "index_set_id": SANDBOX_INDEX_SET, "retries": 0},
            "bkjob": {
                "base_url": bkjob_url,
                "web_url": "https://job.example.com",
                "retries": 0,
                **(bkjob or {}),
            },
        }
        now = last_timestamp(SC.logs_text) + timedelta(minutes=30)
        scope_type, scope_id = asked_scope or scope
        request = AnalysisRequest(
            step_instance_id=STEP,
            task_instance_id=TASK,
            bk_scope_type=scope_type,
            bk_scope_id=int(scope_id),
            use_model=False,
        )
        async with build_services(
            Settings(**settings), options=AppOptions(mode="cli", clock=lambda: now)
        ) as services:
            return await services.analyzer.analyze(request), bkjob_app

    yield run
    for runner, _url in runners:
        await runner.cleanup()


@pytest.mark.parametrize(
    "access",
    [
        {"bkjob": {"use_system_api": True}},
        {"bk": {"access_token": TOKEN}},
        {"gateway": {"exempt_apps": [SANDBOX_APP[0]]}},
    ],
    ids=["system_api", "access_token", "exempt_app"],
)
async def test_each_way_past_user_verification_gives_the_step_facts(
    analyze: Analyze, access: dict[str, Any]
) -> None:
    report, bkjob = await analyze(**access)
    assert report.signature == "script_exit_nonzero"
    assert report.scope == "biz:2"
    assert [(g.status, g.exit_code, g.count, g.hosts, g.output) for g in report.host_groups] == [
        (104, 1, 1, ["10.0.3.7"], ["deploy failed"])
    ]
    assert "1 台 exit_code=1（10.0.3.7）" in report.root_cause
    assert not any("BK-JOB" in n for n in report.notices)  # the step's own window came from BK-JOB
    paths = {r.path for r in bkjob[REQUESTS]}
    system = "bkjob" in access
    assert all(p.startswith("/api/v3/system/") == system for p in paths)


async def test_an_unverified_user_gets_the_logs_report_and_the_way_out(analyze: Analyze) -> None:
    report, _ = await analyze()
    assert report.signature == "script_exit_nonzero"  # the report is built from BkLog alone
    note = "\n".join(report.missing_info)
    assert (
        "1640001" in note
        and "JOB_DOCTOR_BKJOB__USE_SYSTEM_API" in note
        and "JOB_DOCTOR_BK__ACCESS_TOKEN" in note
    )


async def test_a_biz_set_link_is_looked_up_as_a_biz_set(analyze: Analyze) -> None:
    report, bkjob = await analyze(scope=("biz_set", "9991001"), bkjob={"use_system_api": True})
    assert report.scope == "biz_set:9991001" and report.host_groups[0].output == ["deploy failed"]
    assert {r.query.get("bk_scope_type") for r in bkjob[REQUESTS] if r.method == "GET"} == {"biz_set"}
    assert report.links and "/biz_set/9991001/execute/step/" in report.links[0]
    # asked as business 9991001, BK-JOB knows no such job: the facts are missing, said so
    wrong, _ = await analyze(
        scope=("biz_set", "9991001"), asked_scope=("biz", "9991001"), bkjob={"use_system_api": True}
    )
    assert not wrong.host_groups and wrong.scope == "biz:9991001"
    assert any("作业实例 20026188230 不在业务 biz:9991001 中" in m for m in wrong.missing_info)
