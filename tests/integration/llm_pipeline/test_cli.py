"""`job-doctor analyze` with a configured model (the fake OpenAI server) and with `--no-llm`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from bot.devtools.evaluate import SANDBOX_APP, SANDBOX_INDEX_SET
from tests.integration.llm_pipeline.conftest import API_KEY, Rig
from tests.integration.llm_pipeline.helpers import STEP, QuotingModel
from tests.support import REPO


async def analyze(rig: Rig, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOB_DOCTOR_")}
    code, secret, user = SANDBOX_APP
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "JOB_DOCTOR_BKLOG__BASE_URL": rig.bklog_url,
            "JOB_DOCTOR_BKLOG__INDEX_SET_ID": str(SANDBOX_INDEX_SET),
            "JOB_DOCTOR_BKLOG__APP_CODE": code,
            "JOB_DOCTOR_BKLOG__APP_SECRET": secret,
            "JOB_DOCTOR_BKLOG__USERNAME": user,
            "JOB_DOCTOR_BKLOG__RETRIES": "1",
            "JOB_DOCTOR_BKLOG__LOOKBACK_DAYS": "3650",
            "JOB_DOCTOR_LLM__BASE_URL": rig.fake_url,
            "JOB_DOCTOR_LLM__API_KEY": API_KEY,
            "JOB_DOCTOR_LLM__MODEL": "m",
            "JOB_DOCTOR_LLM__TIMEOUT_S": "5",
            "JOB_DOCTOR_LLM__DEADLINE_S": "10",
        }
    )

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bot", "analyze", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=50,
            check=False,
        )

    return await asyncio.to_thread(run)


async def test_analyze_json_uses_the_model_and_no_llm_uses_rules(rig: Rig) -> None:
    model = QuotingModel()
    rig.fake.default = model

    res = await analyze(rig, "--step-id", str(STEP), "--json")

    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)  # nothing but JSON on stdout
    assert report["source"] == "llm"
    assert report["summary"] == model.answer(rig.fake.requests[0].body)["summary"]
    assert any("errorCode=117" in e["text"] for e in report["evidence"])
    assert report["request_ids"] == rig.scenario.expected.request_ids
    assert len(rig.fake.requests) == 1
    assert rig.fake.requests[0].body["model"] == "m"

    res = await analyze(rig, "--step-id", str(STEP), "--json", "--no-llm")

    assert res.returncode == 0, res.stderr
    rules = json.loads(res.stdout)
    assert rules["source"] == "rules" and rules["signature"] == "agent_abnormal"
    assert len(rig.fake.requests) == 1  # --no-llm made no model call
