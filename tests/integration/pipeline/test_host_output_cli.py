"""`job-doctor analyze` on a failed script step with BK-JOB and GSE answering (sandboxes over HTTP):
the business, the host groups and what the hosts printed — from a link, from a bare id and the
configured businesses, and without BK-JOB at all."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from bot.devtools.sandbox import REQUESTS, start_site
from bot.devtools.sandbox.bkjob import create_bkjob_app
from bot.devtools.sandbox.bklog import create_bklog_app, docs_from_records
from bot.devtools.sandbox.gse import create_gse_app
from bot.devtools.scenarios import Scenario, load_scenarios
from bot.devtools.world import agents_of, job_from
from tests.support import REPO

APP = ("cli-hosts", "cli-hosts-secret", "ops")
NAME = "output_disk_full_and_agent_down"


def scenario(name: str = NAME) -> Scenario:
    return next(s for s in load_scenarios() if s.name == name)


class World:
    def __init__(self) -> None:
        self.runners: list[web.AppRunner] = []
        self.urls: dict[str, str] = {}
        self.bkjob: web.Application | None = None

    async def start(self, sc: Scenario, *, scope: str | None = None) -> None:
        code, secret, _user = APP
        assert sc.bkjob is not None
        data = sc.bkjob if scope is None else sc.bkjob.model_copy(update={"scope": scope})
        self.bkjob = create_bkjob_app([job_from(data)], app_code=code, app_secret=secret, system_apps=[code])
        apps = {
            "bklog": create_bklog_app(
                docs_from_records(sc.logs_text), app_code=code, app_secret=secret, index_set_id=5
            ),
            "bkjob": self.bkjob,
            "gse": create_gse_app(agents_of(sc), app_code=code, app_secret=secret),
        }
        for name, app in apps.items():
            runner, url = await start_site(app)
            self.runners.append(runner)
            self.urls[name] = url

    def env(self, **extra: str) -> dict[str, str]:
        code, secret, user = APP
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOB_DOCTOR_")}
        env.update(
            {
                "PYTHONPATH": str(REPO),
                "JOB_DOCTOR_BK__APP_CODE": code,
                "JOB_DOCTOR_BK__APP_SECRET": secret,
                "JOB_DOCTOR_BK__USERNAME": user,
                "JOB_DOCTOR_BKLOG__BASE_URL": self.urls["bklog"],
                "JOB_DOCTOR_BKLOG__INDEX_SET_ID": "5",
                "JOB_DOCTOR_BKLOG__LOOKBACK_DAYS": "3650",
                "JOB_DOCTOR_BKJOB__BASE_URL": self.urls["bkjob"],
                "JOB_DOCTOR_BKJOB__USE_SYSTEM_API": "true",
                "JOB_DOCTOR_BKJOB__WEB_URL": "https://job.example.com",
                "JOB_DOCTOR_GSE__BASE_URL": self.urls["gse"],
            }
        )
        env.update(extra)
        return env

    def requests(self, api: str) -> list[Any]:
        assert self.bkjob is not None
        return [r for r in self.bkjob[REQUESTS] if r.path.endswith(api)]


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = World()
    yield w
    for r in w.runners:
        await r.cleanup()


async def analyze(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bot", "analyze", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=90,
            check=False,
        )

    return await asyncio.to_thread(run)


def link(sc: Scenario, scope: str = "biz/2") -> str:
    exp = sc.expected
    return f"https://job.example.com/{scope}/execute/step/{exp.task_instance_id}?stepInstanceId={exp.step_instance_id}"


async def test_a_step_link_gives_the_hosts_and_what_they_printed(world: World) -> None:
    sc = scenario()
    await world.start(sc)
    res = await analyze(world.env(), "--url", link(sc), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["scope"] == "biz:2" and report["window"]["start"] < report["window"]["end"]
    groups = [(g["status"], g["exit_code"], g["count"]) for g in report["host_groups"]]
    assert groups == [(104, 1, 2), (310, None, 1)]
    decisive = "tar: order/lib/order-core.jar: Cannot write: No space left on device"
    assert report["host_groups"][0]["output"] == [decisive]
    assert report["host_groups"][1]["agents"] == ["10.88.14.42 异常（有损状态，版本 2.1.3）"]
    # the link named the business: no business was guessed
    assert [r.query.get("bk_scope_id") for r in world.requests("get_job_instance_status")] == ["2"]

    text = await analyze(world.env(), "--url", link(sc))
    assert text.returncode == 0, text.stderr
    assert decisive in text.stdout and "2 台 脚本返回码非零 exit_code=1" in text.stdout
    # the window BK-JOB's step times gave is shown in BkLog's zone, beside the log times
    assert report["window"]["start"].endswith("+08:00") and report["window"]["end"].endswith("+08:00")
    window_line = next(line for line in text.stdout.splitlines() if line.startswith("检索窗口："))
    assert re.fullmatch(r"检索窗口：\d{4}-\d\d-\d\d \d\d:\d\d:\d\d → .+（UTC\+08:00）", window_line)
    # the password the script printed appears nowhere: report, chat text, logs
    for planted in sc.expected.absent:
        assert planted not in res.stdout + res.stderr + text.stdout + text.stderr


async def test_a_bare_id_finds_its_business_in_the_configured_ones(world: World) -> None:
    sc = scenario()
    await world.start(sc)
    env = world.env(JOB_DOCTOR_BKJOB__SCOPES='["biz:1", "biz_set:9991001", "biz:2"]')
    res = await analyze(env, "--step-id", str(sc.expected.step_instance_id), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["scope"] == "biz:2" and len(report["host_groups"]) == 2
    tried = [
        (r.query["bk_scope_type"], r.query["bk_scope_id"]) for r in world.requests("get_job_instance_status")
    ]
    assert tried == [("biz", "1"), ("biz_set", "9991001"), ("biz", "2")]
    assert report["links"] == [link(sc) + "&retryCount=0"]


async def test_a_scope_given_on_the_command_line_is_the_one_asked(world: World) -> None:
    sc = scenario()
    await world.start(sc)
    env = world.env(JOB_DOCTOR_BKJOB__SCOPES='["biz:1"]')  # the configured guess would be wrong
    res = await analyze(env, "--step-id", str(sc.expected.step_instance_id), "--scope", "biz:2", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["scope"] == "biz:2" and len(report["host_groups"]) == 2
    asked = {
        (r.query["bk_scope_type"], r.query["bk_scope_id"]) for r in world.requests("get_job_instance_status")
    }
    assert asked == {("biz", "2")}


async def test_a_biz_set_link_calls_bkjob_with_the_biz_set(world: World) -> None:
    sc = scenario()
    await world.start(sc, scope="biz_set:9991001")
    res = await analyze(world.env(), "--url", link(sc, "biz_set/9991001"), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["scope"] == "biz_set:9991001" and report["host_groups"]
    calls = [*world.requests("get_job_instance_status"), *world.requests("get_step_instance_status")]
    assert calls and {r.query["bk_scope_type"] for r in calls} == {"biz_set"}
    ip_logs = world.requests("batch_get_job_instance_ip_log")
    assert ip_logs and {r.body["bk_scope_type"] for r in ip_logs} == {"biz_set"}


async def test_without_a_business_the_report_says_how_to_give_one(world: World) -> None:
    sc = scenario("output_command_not_found")
    await world.start(sc)
    res = await analyze(world.env(), "--step-id", str(sc.expected.step_instance_id), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["stage"] == "execution" and report["host_groups"] == [] and report["scope"] is None
    assert any("BK-JOB 链接" in m and "JOB_DOCTOR_BKJOB__SCOPES" in m for m in report["missing_info"])
    assert not world.requests("get_job_instance_status")  # nothing to try


async def test_bkjob_unreachable_still_reports_from_the_logs(world: World) -> None:
    sc = scenario("output_command_not_found")
    await world.start(sc)
    env = world.env(JOB_DOCTOR_BKJOB__BASE_URL="http://127.0.0.1:9", JOB_DOCTOR_BKJOB__RETRIES="0")
    res = await analyze(env, "--url", link(sc), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert (report["stage"], report["signature"]) == ("execution", "script_exit_nonzero")
    assert report["host_groups"] == []
    assert any(m.startswith("BK-JOB 暂时无法访问") and "重新分析" in m for m in report["missing_info"])


async def test_a_scope_that_contradicts_the_link_is_refused(world: World) -> None:
    sc = scenario()
    await world.start(sc)
    res = await analyze(world.env(), "--url", link(sc), "--scope", "biz:3")
    assert res.returncode == 2 and "contradicts" in res.stderr
    bad = await analyze(world.env(), "--step-id", "1", "--scope", "team:3")
    assert bad.returncode == 2 and "biz:ID" in bad.stderr
    not_a_step = await analyze(world.env(), "--url", "https://job.example.com/biz/2/execute/task/1")
    assert not_a_step.returncode == 2 and "names a step" in not_a_step.stderr


def test_scenarios_with_bkjob_answers_cover_every_output_signature() -> None:
    from bot.diagnosis.output import output_catalog

    ids = {e.id for e in output_catalog().entries}
    named = {sc.name.removeprefix("output_") for sc in load_scenarios() if sc.name.startswith("output_")}
    assert ids <= named, f"output signatures without a scenario: {sorted(ids - named)}"
