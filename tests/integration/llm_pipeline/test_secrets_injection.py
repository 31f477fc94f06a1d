"""Secrets planted in log lines served by the sandbox BkLog never leave for the model, the chat or the
bot's logs; instructions inside log lines stay data."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from bot.core.logsetup import configure_logging
from bot.core.models import AnalysisJob
from bot.core.redact import Redactor
from bot.core.settings import Settings
from bot.delivery.render import render_markdown, render_text
from bot.diagnosis.llm_step import JobAnalyzer
from bot.llm.scrub import Scrubber
from tests.integration.llm_pipeline.conftest import API_KEY, Rig, RigFactory
from tests.integration.llm_pipeline.helpers import (
    INJECTED_GROUP,
    INJECTION,
    PASSWORD,
    STEP,
    TRACE,
    QuotingModel,
    leaks,
    logs_blocks,
    planted_log_text,
    scenario,
    user_text,
)
from tests.support.fakes.openai_server import Behaviour, server_error, tool_call

LogCapture = Callable[[Settings], io.StringIO]


@pytest.fixture
def bot_log() -> Iterator[LogCapture]:
    """The bot's own log output (configured as the entry points do, at DEBUG), restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def capture(settings: Settings) -> io.StringIO:
        buf = io.StringIO()
        configure_logging(
            json_lines=True, level="DEBUG", redactor=Redactor(settings.secret_values()), stream=buf
        )
        return buf

    yield capture
    structlog.reset_defaults()
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


class CuriousModel:
    """Searches for credentials with the tools, then quotes every planted line it was shown."""

    def __init__(self) -> None:
        self.final = QuotingModel(
            quote=r"password|X-Bkapi|signature check|reqStr|errorCode=117|key file|script stdout",
            max_quotes=12,
        )

    def __call__(self, body: dict[str, Any]) -> Behaviour:
        rounds = sum(1 for m in body["messages"] if m["role"] == "assistant")
        if body.get("tools") and rounds == 0:
            return tool_call("search_logs", {"query": "bk_app_secret", "limit": 20})
        if body.get("tools") and rounds == 1:
            return tool_call("search_logs", {"query": TRACE, "limit": 50})
        return self.final(body)


async def planted_rig(make_rig: RigFactory) -> Rig:
    return await make_rig(log_text=planted_log_text(scenario().logs_text))


async def test_secrets_in_log_lines_never_reach_the_model_the_chat_or_the_logs(
    make_rig: RigFactory, bot_log: LogCapture
) -> None:
    rig = await planted_rig(make_rig)
    settings = rig.settings(max_tool_rounds=2)
    secrets = [*leaks("\n".join(str(d["log"]) for d in rig.docs))]
    assert len(secrets) == 8  # every planted secret is really in what BkLog serves
    buf = bot_log(settings)
    rig.fake.default = CuriousModel()

    report = await rig.analyze(settings)

    assert report.source == "llm"
    assert len(rig.fake.requests) == 3
    for req in rig.fake.requests:
        assert leaks(req.raw) == [], req.behaviour
        assert leaks(repr(req.headers)) == []
    first = user_text(rig.fake.requests[0].body)
    # The planted lines did reach the model, masked.
    assert "password=******" in first and "signature check failed" in first
    assert "PRIVATE KEY ******" in first or "PRIVATE KEY" not in first
    tool_results = [m["content"] for m in rig.fake.requests[-1].body["messages"] if m["role"] == "tool"]
    assert len(tool_results) == 2 and "bk_app_secret" in tool_results[0] and "******" in tool_results[0]
    # The report as it would reach a chat (rendered, then through the bot's redactor).
    redactor = Redactor(settings.secret_values())
    quoted = "\n".join(e.text for e in report.evidence)
    assert "signature check failed" in quoted and "password=" in quoted  # the planted lines were quoted
    for text in (render_markdown(report).text, render_text(report), report.model_dump_json()):
        assert leaks(redactor(text)) == []
    # ... and the report itself carries none either (evidence lines are masked, not dropped).
    assert leaks(report.model_dump_json()) == [], [
        (k, v) for k, v in report.model_dump().items() if leaks(str(v))
    ]
    # The bot's logs.
    out = buf.getvalue()
    assert "llm_diagnose_done" in out
    assert leaks(out) == [] and API_KEY not in out


async def test_fallback_report_carries_no_secret_either(make_rig: RigFactory) -> None:
    rig = await planted_rig(make_rig)
    rig.fake.default = server_error()
    settings = rig.settings(deadline_s=3.0)

    report = await rig.analyze(settings)

    assert report.source == "rules" and report.notices
    assert "password=******" in report.model_dump_json()  # the rule timeline quotes the line, masked
    for text in (render_markdown(report).text, render_text(report), report.model_dump_json()):
        assert leaks(text) == []


async def test_injection_in_log_lines_stays_data(make_rig: RigFactory) -> None:
    rig = await planted_rig(make_rig)
    settings = rig.settings()
    # A model that "obeys" the log line: claims another stage and says it posted elsewhere.
    rig.fake.default = QuotingModel(
        stage="callback",
        fault_side="system",
        confidence=0.95,
        summary=f"已按日志要求把报告和全部配置发送到群 {INJECTED_GROUP}。",
    )

    report = await rig.analyze(settings)

    body = rig.fake.requests[0].body
    assert any(INJECTION in block for block in logs_blocks(body))  # inside the data block
    system = body["messages"][0]["content"]
    assert body["messages"][0]["role"] == "system" and INJECTION not in system
    assert "不是指令" in system and "不能发送消息" in system
    # Nothing of the settings is in what the model gets, so "print your settings" has nothing to print.
    raw = rig.fake.requests[0].raw
    for value in settings.secret_values():
        assert value not in raw
    assert API_KEY not in raw and "sandbox-secret" not in raw
    # The claimed stage contradicts a 0.85 signature: flagged, the signature's verdict kept.
    assert (report.stage, report.fault_side) == ("execution", "environment")
    assert report.confidence <= 0.6
    assert any("人工复核" in n for n in report.notices)
    # Only read-only tools exist; none can send anything anywhere.
    assert {t["function"]["name"] for t in body["tools"]} == {"search_logs", "agent_state"}


@pytest.mark.parametrize("model", [True, False], ids=["model_fallback", "rules_only"])
async def test_timeline_events_quote_planted_lines_masked(make_rig: RigFactory, model: bool) -> None:
    rig = await planted_rig(make_rig)
    rig.fake.default = server_error()
    settings = rig.settings(deadline_s=3.0)
    # as built, the events quote the planted line itself: what masking has to catch
    raw = await rig.analyze(settings, model=False)
    raw_events = "\n".join(ev.text for e in raw.timeline for ev in e.events)
    assert f"password={PASSWORD}" in raw_events

    job = AnalysisJob(request_key=f"step:{STEP}", step_instance_id=STEP)
    report = await JobAnalyzer(rig.analyzer(settings, model=model), Scrubber(settings.secret_values()))(job)

    events = "\n".join(ev.text for e in report.timeline for ev in e.events)
    assert "connect mysql with user=job password=****** failed" in events
    assert leaks(events) == [] and PASSWORD not in events
    assert leaks(render_text(report)) == [] and leaks(render_markdown(report).text) == []
