"""The model gets BK-JOB's host groups and what the hosts printed in the same single prompt, masked;
a model that quotes an output line has it verified like a log line."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import aiohttp
from aiohttp import web

from bot.app.services import AppOptions, build_services
from bot.devtools.evaluate import (
    SANDBOX_APP,
    SANDBOX_INDEX_SET,
    bkjob_world,
    last_timestamp,
    sandbox_settings,
)
from bot.devtools.sandbox import start_site
from bot.devtools.sandbox.bklog import create_bklog_app, docs_from_records
from bot.diagnosis.pipeline import AnalysisRequest
from tests.integration.llm_pipeline.helpers import diagnosis, scenario, user_text
from tests.support.fakes.openai_server import Behaviour, FakeOpenAI, answer_json

API_KEY = "sk-test-0123456789abcdef"
_OUTPUT = re.compile(r"^\s*输出：(.*)$", re.M)


def quoting_output(body: dict[str, Any]) -> Behaviour:
    """A model that blames what the hosts printed, quoting the first output line it was shown."""
    printed = _OUTPUT.findall(user_text(body))
    evidence = [{"time": None, "text": printed[0], "why": "主机输出：写文件时磁盘已满"}] if printed else []
    return answer_json(
        diagnosis(
            stage="execution",
            fault_side="environment",
            evidence=evidence,
            summary="2 台主机解压发布包时 /data 分区已满，另 1 台 Agent 异常。",
            root_cause="主机输出 No space left on device：目标主机磁盘已满，属于环境问题。",
        )
    )


async def test_host_output_reaches_the_model_masked_in_one_call() -> None:
    sc = scenario("output_disk_full_and_agent_down")
    code, secret, _user = SANDBOX_APP
    fake = FakeOpenAI(api_key=API_KEY, default=quoting_output)
    runners: list[web.AppRunner] = []
    try:
        bklog = create_bklog_app(
            docs_from_records(sc.logs_text), app_code=code, app_secret=secret, index_set_id=SANDBOX_INDEX_SET
        )
        urls = []
        for app in (bklog, fake.app()):
            runner, url = await start_site(app)
            runners.append(runner)
            urls.append(url)
        settings = sandbox_settings(
            urls[0],
            llm={
                "base_url": urls[1] + "/v1",
                "api_key": API_KEY,
                "model": "m",
                "timeout_s": 5,
                "deadline_s": 10,
            },
            **await bkjob_world(sc, runners),
        )
        now = last_timestamp(sc.logs_text) + timedelta(minutes=30)
        async with aiohttp.ClientSession() as session:
            async with build_services(
                settings, http=session, options=AppOptions(mode="cli", clock=lambda: now)
            ) as services:
                report = await services.analyzer.analyze(
                    AnalysisRequest(step_instance_id=sc.expected.step_instance_id)
                )
    finally:
        for r in runners:
            await r.cleanup()

    assert len(fake.requests) == 1  # host output rides in the same single call
    prompt = user_text(json.loads(fake.requests[0].raw))
    decisive = "tar: order/lib/order-core.jar: Cannot write: No space left on device"
    assert "BK-JOB 主机结果（业务 biz:2）" in prompt and decisive in prompt
    assert "10.88.14.42 异常（有损状态，版本 2.1.3）" in prompt
    assert len(prompt) <= settings.llm.prompt_max_chars
    for planted in sc.expected.absent:
        assert planted not in fake.raw_bodies()
        assert planted not in report.model_dump_json()
    assert report.source == "llm"
    assert [e.text for e in report.evidence][:1] == [decisive]  # the quoted output line was verified
    assert report.host_groups and report.host_groups[0].output == [decisive]
