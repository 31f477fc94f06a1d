"""`job-doctor digest [--dry-run] [--json]` through the command's entry point."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import structlog

from bot.cli.digest import run as run_digest_command
from bot.core.logsetup import configure_logging
from bot.core.settings import Settings
from tests.digest.conftest import Serve
from tests.digest.world import AGENT_OFFLINE, SCRIPT_EXIT, TZ, World, before, world_settings
from tests.support.fakes.wecom_webhook import FakeWeComWebhook
from tests.support.fakes.worktool import FakeWorkTool

NOW = datetime(2025, 3, 10, 14, 30, tzinfo=TZ)
GROUP = "运维值班群"
HOOK_KEY = "cli-hook-key"


@pytest.fixture(autouse=True)
def logs_on_stderr() -> Iterator[None]:
    """As the CLI entry point sets it up: logs on stderr, stdout is for the digest only."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging(json_lines=False, level="INFO", stream=sys.stderr)
    try:
        yield
    finally:
        structlog.reset_defaults()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


async def rig(serve: Serve) -> tuple[Settings, FakeWorkTool, FakeWeComWebhook]:
    w = World()
    w.add_scenario(SCRIPT_EXIT, biz=2, at=before(NOW, hours=3), job_name="发布-web")
    w.add_scenario(AGENT_OFFLINE, biz=2, at=before(NOW, hours=23), job_name="装机")
    w.add_bare(biz=2, at=before(NOW, hours=25))  # older than the manual window
    worktool, webhook = FakeWorkTool(), FakeWeComWebhook(keys=[HOOK_KEY])
    hook = await serve(webhook.app())
    settings = world_settings(
        bkjob_url=await serve(w.bkjob_app()),
        bklog_url=await serve(w.bklog_app()),
        biz_ids=[2],
        targets=[
            {"channel": "worktool", "chat": GROUP},
            {"channel": "webhook", "key": f"{hook}/cgi-bin/webhook/send?key={HOOK_KEY}"},
        ],
        worktool_url=await serve(worktool.app()),
    )
    return settings, worktool, webhook


async def test_dry_run_json_prints_the_contract_and_posts_nothing(
    serve: Serve, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, worktool, webhook = await rig(serve)
    assert settings.redis_url == ""

    code = await run_digest_command(settings, dry_run=True, as_json=True, now=NOW)

    assert code == 0
    body = json.loads(capsys.readouterr().out)  # stdout is the JSON and nothing else
    assert body["date"] == "2025-03-10"
    assert body["window"] == {"start": "2025-03-09T14:30:00+08:00", "end": "2025-03-10T14:30:00+08:00"}
    assert body["total_failed_jobs"] == 2 and body["total_failed_steps"] == 2
    assert [(g["signature"], g["stage"], g["fault_side"], g["count"]) for g in body["groups"]] == [
        ("agent_abnormal", "execution", "environment", 1),
        ("script_exit_nonzero", "execution", "user", 1),
    ]
    example = body["groups"][1]["examples"][0]
    assert set(example) >= {"bk_biz_id", "job_instance_id", "step_instance_id", "name"}
    assert example["name"] == "发布-web" and example["bk_biz_id"] == 2
    assert body["new_signatures"] == []
    assert worktool.delivered == [] and webhook.messages == []


async def test_manual_run_posts_to_every_target(serve: Serve, capsys: pytest.CaptureFixture[str]) -> None:
    settings, worktool, webhook = await rig(serve)

    code = await run_digest_command(settings, dry_run=False, as_json=False, now=NOW)

    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("【job-doctor 失败日报】2025-03-10")
    texts = [m[1] for m in worktool.messages(GROUP)]
    assert texts and texts[0].startswith("【job-doctor 失败日报】2025-03-10")
    assert "发布-web" in "\n".join(texts)
    kinds = [m.msgtype for m in webhook.messages]
    assert kinds.count("markdown") >= 1 and kinds[-1] == "image"


async def test_failed_target_is_reported_with_exit_1(
    serve: Serve, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, worktool, webhook = await rig(serve)
    webhook.keys.clear()  # the key is no longer valid: 93000

    code = await run_digest_command(settings, dry_run=False, as_json=True, now=NOW + timedelta(seconds=1))

    captured = capsys.readouterr()
    assert code == 1 and "posting to webhook:" in captured.err
    assert json.loads(captured.out)["total_failed_jobs"] == 2
    assert worktool.messages(GROUP)  # the other target still got it


async def test_configuration_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_digest_command(Settings(), dry_run=True, as_json=True) == 2
    assert "JOB_DOCTOR_DIGEST__BIZ_IDS" in capsys.readouterr().err
    no_job = Settings(digest={"biz_ids": [2]})
    assert await run_digest_command(no_job, dry_run=True, as_json=False) == 2
    assert "JOB_DOCTOR_BKJOB__BASE_URL" in capsys.readouterr().err
    no_targets = Settings(digest={"biz_ids": [2]}, bkjob={"base_url": "http://127.0.0.1:9"})
    assert await run_digest_command(no_targets, dry_run=False, as_json=False) == 2
    assert "--dry-run" in capsys.readouterr().err
