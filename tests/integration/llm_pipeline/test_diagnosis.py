"""The model step inside the real Analyzer: sandbox BkLog and a scripted OpenAI-compatible server over HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bot.devtools.sandbox import FAULTS
from bot.diagnosis.llm_step import FALLBACK_NOTICE
from bot.llm.diagnose import CONTRADICTION_CONFIDENCE_CAP
from tests.integration.llm_pipeline.conftest import Rig, RigFactory
from tests.integration.llm_pipeline.helpers import QuotingModel, ToolHungryModel, key_lines, physical_lines
from tests.support.fakes.openai_server import Answer, Behaviour, Garbage, Hang, rate_limited, server_error

FABRICATED = (
    "Analyse execute object task result, result: ScriptExecuteObjectTaskResult[agentId=999, "
    "status=4, errorCode=1326, errorMsg='disk full on /data']"
)


async def test_happy_path_one_call_narrative_from_model_ids_from_rules(rig: Rig) -> None:
    rules = await rig.analyze(model=False)
    model = QuotingModel()
    rig.fake.push(model)

    report = await rig.analyze()

    assert report.source == "llm"
    assert (
        report.summary == model.answer(rig.fake.requests[0].body)["summary"]
    )  # the model's Chinese narrative
    assert "Agent" in report.root_cause and report.stage == "execution" and report.fault_side == "environment"
    # One model call on the critical path, carrying the condensed evidence and the rule candidate.
    assert len(rig.fake.requests) == 1
    body = rig.fake.requests[0].body
    prompt = body["messages"][1]["content"]
    assert "agent_abnormal" in prompt and "规则引擎的候选结论" in prompt
    assert any("errorCode=117" in msg for _t, msg in key_lines(body))
    assert body["response_format"]["type"] == "json_schema"
    assert {t["function"]["name"] for t in body["tools"]} == {"search_logs", "agent_state"}
    # Evidence: exactly the collected lines, whole; ids, timeline and links from the rules.
    collected = physical_lines(rig.docs)
    assert report.evidence and all(e.text in collected for e in report.evidence)
    assert any("errorCode=117" in e.text for e in report.evidence)
    assert report.request_ids == rules.request_ids == rig.scenario.expected.request_ids
    assert report.timeline == rules.timeline
    assert report.signature == rules.signature == "agent_abnormal"
    assert report.step_instance_id == rules.step_instance_id and report.queries == rules.queries
    assert not report.notices
    assert rig.metric("job_doctor_llm_calls_total", outcome="ok") == 1
    assert rig.metric("job_doctor_llm_tokens_total", kind="prompt") > 0
    assert rig.metric("job_doctor_llm_tokens_total", kind="completion") > 0


async def test_fabricated_quotes_are_dropped_and_confidence_lowered(rig: Rig) -> None:
    rig.fake.push(QuotingModel(fabricated=(FABRICATED,), confidence=0.9))

    report = await rig.analyze()

    assert report.source == "llm"
    texts = [e.text for e in report.evidence]
    assert texts and all(t in physical_lines(rig.docs) for t in texts)
    assert not any("1326" in t or "disk full" in t for t in texts)
    assert report.confidence < 0.9
    assert any("找不到" in n for n in report.notices)


async def test_only_fabricated_quotes_fall_back_to_rule_evidence(rig: Rig) -> None:
    rules = await rig.analyze(model=False)
    rig.fake.push(QuotingModel(quote=r"^$", fabricated=(FABRICATED,), confidence=0.95))

    report = await rig.analyze()

    assert report.source == "llm"
    assert [e.text for e in report.evidence] == [e.text for e in rules.evidence]
    assert report.confidence <= 0.3


async def test_invalid_json_is_repaired_once(rig: Rig) -> None:
    rig.fake.push(Answer("根据日志，Agent 异常导致失败。"), QuotingModel())

    report = await rig.analyze()

    assert report.source == "llm"
    assert len(rig.fake.requests) == 2
    repair = rig.fake.requests[1].body
    assert repair["messages"][-1]["role"] == "user" and "不符合要求" in repair["messages"][-1]["content"]
    assert "tools" not in repair  # the repair round offers no tools
    assert not report.notices


async def test_failed_repair_gives_rules_with_notice(rig: Rig) -> None:
    rig.fake.push(Answer("not json"), Answer('{"summary": "only english", "stage": "execution"}'))

    report = await rig.analyze()

    assert report.source == "rules"
    assert report.signature == "agent_abnormal" and report.stage == "execution"
    assert FALLBACK_NOTICE["fallback_invalid"] in report.notices
    assert len(rig.fake.requests) == 2
    assert rig.metric("job_doctor_llm_fallbacks_total", reason="fallback_invalid") == 1


async def test_rate_limited_with_retry_after_then_ok(rig: Rig) -> None:
    rig.fake.push(rate_limited(retry_after="1"), QuotingModel())

    report = await rig.analyze()

    assert report.source == "llm"
    first, second = rig.fake.requests
    assert second.at - first.at >= 0.9  # Retry-After honoured
    assert rig.metric("job_doctor_llm_calls_total", outcome="rate_limited") == 1
    assert rig.metric("job_doctor_llm_calls_total", outcome="ok") == 1
    assert rig.metric("job_doctor_llm_fallbacks_total", reason="fallback_rate_limited") == 0


async def test_rate_limited_past_the_deadline_gives_rules(rig: Rig) -> None:
    rig.fake.default = rate_limited(retry_after="30")
    started = time.monotonic()

    report = await rig.analyze(rig.settings(deadline_s=3.0))

    assert time.monotonic() - started < 3.0  # no point waiting 30 s: rules at once
    assert report.source == "rules"
    assert FALLBACK_NOTICE["fallback_rate_limited"] in report.notices
    assert rig.metric("job_doctor_llm_fallbacks_total", reason="fallback_rate_limited") == 1


async def test_hanging_model_gives_rules_within_the_deadline(rig: Rig) -> None:
    rig.fake.default = Hang(30)
    settings = rig.settings(timeout_s=0.6, deadline_s=1.5)
    started = time.monotonic()

    report = await rig.analyze(settings)

    elapsed = time.monotonic() - started
    assert elapsed < 1.5 + 1.5, elapsed  # the deadline plus the BkLog queries, never the model's 30 s
    assert report.source == "rules"
    assert report.signature == "agent_abnormal"
    assert FALLBACK_NOTICE["fallback_timeout"] in report.notices
    assert rig.metric("job_doctor_llm_fallbacks_total", reason="fallback_timeout") == 1
    assert rig.metric("job_doctor_llm_calls_total", outcome="timeout") >= 1


@pytest.mark.parametrize("failure", ["5xx", "garbage", "connection"])
async def test_unavailable_model_gives_rules_with_notice(rig: Rig, failure: str) -> None:
    settings = rig.settings(deadline_s=4.0)
    if failure == "5xx":
        rig.fake.default = server_error()
    elif failure == "garbage":
        rig.fake.default = Garbage()
    else:
        # A port nobody listens on: connection refused.
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        settings = rig.settings(base_url=f"http://127.0.0.1:{port}/v1", deadline_s=4.0)

    report = await rig.analyze(settings)

    assert report.source == "rules"
    assert FALLBACK_NOTICE["fallback_error"] in report.notices
    assert rig.metric("job_doctor_llm_fallbacks_total", reason="fallback_error") == 1
    outcome = {"5xx": "server_error", "garbage": "bad_response", "connection": "connection_error"}[failure]
    assert rig.metric("job_doctor_llm_calls_total", outcome=outcome) >= 1


async def test_tool_rounds_are_bounded_and_the_last_round_offers_no_tools(rig: Rig) -> None:
    rig.fake.default = ToolHungryModel(query="errorCode")
    before = len(rig.bklog_queries())

    report = await rig.analyze(rig.settings(max_tool_rounds=2))

    assert report.source == "llm"
    bodies = [r.body for r in rig.fake.requests]
    assert len(bodies) == 3  # two tool rounds, then a forced answer
    assert [bool(b.get("tools")) for b in bodies] == [True, True, False]
    assert "工具调用次数已用完" in bodies[-1]["messages"][-1]["content"]
    tool_queries = rig.bklog_queries()[before:]
    # each tool round ran one read-only BkLog search, restricted to the step's ids
    tool_queries = [q for q in tool_queries if q.startswith("(")]  # the collector's own start with log:
    assert [q.startswith('(log: "errorCode") AND (log: "20031265375"') for q in tool_queries] == [True, True]
    # The tool results went back to the model as data.
    tool_msgs = [m for m in bodies[-1]["messages"] if m["role"] == "tool"]
    assert len(tool_msgs) == 2 and all("<logs>" in m["content"] for m in tool_msgs)


async def test_unknown_tools_do_nothing(rig: Rig) -> None:
    rig.fake.default = ToolHungryModel(tool_name="send_message")

    report = await rig.analyze(rig.settings(max_tool_rounds=1))

    assert report.source == "llm"
    last = rig.fake.requests[-1].body
    tool_msgs = [m for m in last["messages"] if m["role"] == "tool"]
    assert tool_msgs and "没有名为 send_message 的工具" in tool_msgs[0]["content"]


async def test_contradiction_with_a_strong_signature_is_flagged(rig: Rig) -> None:
    rig.fake.push(QuotingModel(stage="callback", fault_side="system", confidence=0.95))

    report = await rig.analyze()

    assert report.source == "llm"
    assert (report.stage, report.fault_side) == ("execution", "environment")  # the signature's verdict
    assert report.confidence <= CONTRADICTION_CONFIDENCE_CAP
    assert any("agent_abnormal" in n and "人工复核" in n for n in report.notices)


async def test_no_model_call_without_logs(make_rig: RigFactory) -> None:
    rig = await make_rig("missing_logs")
    rig.fake.default = QuotingModel()

    report = await rig.analyze()

    assert report.stage == "unknown" and report.source == "rules"
    assert rig.fake.requests == []


async def test_a_slow_tool_cannot_stretch_the_deadline(rig: Rig) -> None:
    hungry = ToolHungryModel()

    def slow_bklog_then_tool(body: dict[str, Any]) -> Behaviour:
        rig.bklog_app[FAULTS].delay(20)  # the BkLog search this tool call triggers will hang
        return hungry(body)

    rig.fake.default = slow_bklog_then_tool
    started = time.monotonic()

    report = await rig.analyze(rig.settings(deadline_s=1.5))

    assert time.monotonic() - started < 1.5 + 1.5
    assert report.source == "rules"
    assert FALLBACK_NOTICE["fallback_timeout"] in report.notices
    assert len(rig.fake.requests) == 1
