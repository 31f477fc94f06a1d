"""`job-doctor analyze` against a sandbox BkLog served from a separate thread-free subprocess-friendly server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from bot.devtools.sandbox import FAULTS, Fault, start_site
from bot.devtools.sandbox.bklog import create_bklog_app, docs_from_records
from bot.devtools.scenarios import load_scenarios
from tests.support import REPO

APP = ("cli-test", "cli-secret", "tester")


def scenario(name: str) -> Any:
    return next(s for s in load_scenarios() if s.name == name)


@pytest.fixture
async def bklog() -> AsyncIterator[tuple[web.Application, str]]:
    sc = scenario("agent_offline_117")
    extra = "[2024-05-30 11:00:00.000]  INFO [job-execute,,] 6 --- [main] c.t.b.j.e.engine.listener.JobListener    : Handle job event, event: JobEvent[action=4, actionDesc=REFRESH, jobInstanceId=1, eventSource=null, time=2024-05-30T11:00:00], duration: 1ms\n\xff\xfe broken bytes line"
    docs = docs_from_records(sc.logs_text + extra)
    app = create_bklog_app(docs, app_code=APP[0], app_secret=APP[1], index_set_id=9)
    runner, url = await start_site(app)
    yield app, url
    await runner.cleanup()


def env_for(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOB_DOCTOR_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "JOB_DOCTOR_BKLOG__BASE_URL": url,
            "JOB_DOCTOR_BKLOG__INDEX_SET_ID": "9",
            "JOB_DOCTOR_BKLOG__APP_CODE": APP[0],
            "JOB_DOCTOR_BKLOG__APP_SECRET": APP[1],
            "JOB_DOCTOR_BKLOG__USERNAME": APP[2],
            "JOB_DOCTOR_BKLOG__RETRIES": "1",
            "JOB_DOCTOR_BKLOG__TIMEOUT_S": "2",
            "JOB_DOCTOR_BKLOG__LOOKBACK_DAYS": "3650",
        }
    )
    env.update(extra)
    return env


async def analyze(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bot", "analyze", *args],
            capture_output=True,
            text=True,
            env=env_for(url, **env),
            timeout=60,
            check=False,
        )

    return await asyncio.to_thread(run)


async def test_json_report_only_json_on_stdout(bklog: tuple[web.Application, str]) -> None:
    _app, url = bklog
    sc = scenario("agent_offline_117")
    res = await analyze(url, "--step-id", str(sc.expected.step_instance_id), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)  # nothing but JSON on stdout
    assert report["stage"] == sc.expected.stage
    assert report["fault_side"] == sc.expected.fault_side
    assert set(report["request_ids"]) == set(sc.expected.request_ids)
    assert report["source"] == "rules"
    assert all(
        k in report for k in ("summary", "root_cause", "evidence", "timeline", "actions", "confidence")
    )


async def test_text_report_has_chinese_sections(bklog: tuple[web.Application, str]) -> None:
    _app, url = bklog
    sc = scenario("agent_offline_117")
    res = await analyze(url, "--step-id", str(sc.expected.step_instance_id))
    assert res.returncode == 0, res.stderr
    for heading in ("问题概述", "根因分析", "解决方案", "预防措施"):
        assert heading in res.stdout
    assert f"stepInstanceId={sc.expected.step_instance_id}" in res.stdout


async def test_unknown_id_tells_check_the_id(bklog: tuple[web.Application, str]) -> None:
    _app, url = bklog
    res = await analyze(url, "--step-id", "123456789012", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["stage"] == "unknown" and report["fault_side"] == "unknown"
    assert report["evidence"] == [] and report["request_ids"] == []
    assert "有作业平台引擎日志" in report["summary"]  # the index has engine lines, just not for this id


async def test_window_without_engine_logs_tells_check_collection(bklog: tuple[web.Application, str]) -> None:
    _app, url = bklog
    res = await analyze(
        url, "--step-id", "123456789012", "--json", "--since", "2001-01-01 00:00:00", "--until", "2001-01-02"
    )
    report = json.loads(res.stdout)
    assert "没有任何作业平台引擎日志" in report["summary"]
    assert any("采集" in m for m in report["missing_info"])


@pytest.mark.parametrize("fault", ["500", "html", "timeout"])
async def test_bklog_failures_still_give_a_report(bklog: tuple[web.Application, str], fault: str) -> None:
    app, url = bklog
    kinds = {
        "500": Fault(status=500),
        "html": Fault(status=502, body="<html><body>Bad Gateway</body></html>", content_type="text/html"),
        "timeout": Fault(status=None, delay_s=5),
    }
    app[FAULTS].add(kinds[fault], times=20)
    res = await analyze(url, "--step-id", "20031265375", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["stage"] == "unknown"
    assert "BkLog" in report["summary"]
    assert "Traceback" not in res.stderr


async def test_gateway_auth_error_exits_2_with_one_line(bklog: tuple[web.Application, str]) -> None:
    _app, url = bklog
    res = await analyze(url, "--step-id", "20031265375", JOB_DOCTOR_BKLOG__APP_SECRET="wrong")
    assert res.returncode == 2
    assert res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1
    assert "wrong" not in res.stderr


async def test_no_search_log_permission_exits_2_naming_the_permission_and_the_index_set() -> None:
    """BkLog's IAM denial (HTTP 200, result false, "9900403") is a set-up error, not a report."""
    sc = scenario("agent_offline_117")
    app = create_bklog_app(
        docs_from_records(sc.logs_text), app_code=APP[0], app_secret=APP[1], index_set_id=9, searchers=["ops"]
    )
    runner, url = await start_site(app)
    try:
        res = await analyze(url, "--step-id", "20031265375", "--json")
    finally:
        await runner.cleanup()
    assert res.returncode == 2 and res.stdout == ""
    [line] = res.stderr.strip().splitlines()
    assert "9900403" in line and "search_log" in line and "index set 9" in line and APP[2] in line


async def test_index_set_without_an_approved_index_exits_2() -> None:
    sc = scenario("agent_offline_117")
    app = create_bklog_app(
        docs_from_records(sc.logs_text),
        app_code=APP[0],
        app_secret=APP[1],
        index_set_id=9,
        unapproved_index_sets=[9],
    )
    runner, url = await start_site(app)
    try:
        res = await analyze(url, "--step-id", "20031265375")
    finally:
        await runner.cleanup()
    assert res.returncode == 2 and res.stdout == ""
    [line] = res.stderr.strip().splitlines()
    assert "3624964" in line and "index set 9" in line


@pytest.mark.parametrize(
    "args",
    [
        ["--step-id", "abc"],
        ["--step-id", "99999999999999999999999"],
        ["--request-id", "xyz"],
        ["--step-id", "1", "--since", "yesterday-ish"],
    ],
)
async def test_bad_arguments_exit_2(bklog: tuple[web.Application, str], args: list[str]) -> None:
    _app, url = bklog
    res = await analyze(url, *args)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and res.stderr.strip()


def test_unconfigured_bklog_is_a_configuration_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOB_DOCTOR_")}
    env["PYTHONPATH"] = str(REPO)
    res = subprocess.run(
        [sys.executable, "-m", "bot", "analyze", "--step-id", "1"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert res.returncode == 2 and "BkLog is not configured" in res.stderr
