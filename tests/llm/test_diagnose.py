"""llm_diagnose end to end over real HTTP to the fake model."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from bot.core.models import RunSpan, TimelineEvent, Window
from bot.llm.client import LlmClient
from bot.llm.diagnose import llm_diagnose
from bot.llm.prompts import PromptLibrary
from bot.llm.scrub import Scrubber
from tests.llm import samples
from tests.llm.samples import FINISH_LINE, LINES, RESULT_LINE, candidate, evidence_text, model_answer
from tests.support.fakes.openai_server import (
    Answer,
    FakeOpenAI,
    Hang,
    Status,
    answer_json,
    rate_limited,
    tool_call,
)


async def run(
    client: LlmClient,
    prompts: PromptLibrary,
    *,
    tools: Any = None,
    deadline_s: float = 5.0,
    lines: Sequence[str] = LINES,
    **kw: Any,
) -> Any:
    return await llm_diagnose(
        client,
        prompts,
        candidate=kw.pop("cand", candidate()),
        evidence_text=kw.pop("evidence", evidence_text(list(lines))),
        collected_lines=lines,
        tools=tools,
        deadline_s=deadline_s,
        scrubber=kw.pop("scrubber", Scrubber()),
        **kw,
    )


class Tools:
    """A read-only toolbox over a fixed set of extra log lines (what the pipeline will implement)."""

    def __init__(self, extra: Sequence[str] = ()) -> None:
        self.extra = list(extra)

    async def search_logs(self, query: str, limit: int) -> Sequence[str]:
        return [line for line in self.extra if query.lower() in line.lower()][:limit]

    async def agent_state(self, hosts: Sequence[str]) -> str:
        return json.dumps([{"bk_agent_id": h, "status_code": 2} for h in hosts])


async def test_happy_path_one_call_merged_and_exact(
    client: LlmClient, fake: FakeOpenAI, prompts: PromptLibrary
) -> None:
    fake.push(answer_json(model_answer()))
    res = await run(client, prompts)
    assert res.outcome == "ok" and res.calls == 1 and res.tokens > 0
    assert len(fake.requests) == 1
    body = fake.requests[0].body
    assert body["response_format"]["type"] == "json_schema"
    assert "tools" not in body  # no toolbox, no tools
    rep = res.report
    assert rep is not None and rep.source == "llm"
    assert rep.summary.startswith("步骤") and "退出码 1" in rep.root_cause
    # Evidence is the collected line, whole and exact (the model quoted only the message part).
    assert [e.text for e in rep.evidence] == [RESULT_LINE, FINISH_LINE]
    assert rep.evidence[0].time == "2024-05-30 11:09:01.320"
    assert rep.evidence[0].trace_id == samples.TRACE and rep.evidence[0].level == "INFO"
    assert rep.evidence[0].why.startswith("exitCode=1")
    # Ids, timeline, links and signature come from the candidate.
    cand = candidate()
    assert rep.step_instance_id == cand.step_instance_id and rep.request_ids == cand.request_ids
    assert rep.timeline == cand.timeline and rep.links == cand.links and rep.signature == cand.signature
    assert rep.actions.root_fix == ["修复脚本"] and rep.confidence == 0.9


async def test_invalid_json_then_repair_succeeds(
    client: LlmClient, fake: FakeOpenAI, prompts: PromptLibrary
) -> None:
    fake.push(Answer('{"summary": "脚本失败", "stage": '), answer_json(model_answer()))
    res = await run(client, prompts)
    assert res.outcome == "ok" and res.calls == 2
    repair = fake.requests[1].body["messages"]
    assert repair[-2] == {"role": "assistant", "content": '{"summary": "脚本失败", "stage": '}
    assert "不符合要求" in repair[-1]["content"] and "JSON" in repair[-1]["content"]
    assert res.report is not None and res.report.evidence[0].text == RESULT_LINE


async def test_repair_fails_falls_back_invalid(
    client: LlmClient, fake: FakeOpenAI, prompts: PromptLibrary
) -> None:
    fake.push(Answer("I think the script failed."), Answer("still not json"))
    res = await run(client, prompts)
    assert res.outcome == "fallback_invalid" and res.report is None and res.calls == 2
    assert len(fake.requests) == 2  # exactly one repair attempt


async def test_fenced_json_with_chatter_is_accepted(
    client: LlmClient, fake: FakeOpenAI, prompts: PromptLibrary
) -> None:
    text = "好的，诊断如下：\n```json\n" + json.dumps(model_answer(), ensure_ascii=False) + "\n```"
    fake.push(Answer(text))
    res = await run(client, prompts)
    assert res.outcome == "ok" and res.calls == 1


async def test_wrong_language_is_invalid_then_repaired(
    client: LlmClient, fake: FakeOpenAI, prompts: PromptLibrary
) -> None:
    english = model_answer(summary="The script exited with code 1.", root_cause="User script returned 1.")
    fake.push(answer_json(english), answer_json(english))
    res = await run(client, prompts)
    assert res.outcome == "fallback_invalid" and res.report is None
    assert "中文" in fake.requests[1].body["messages"][-1]["content"]

    fake.push(answer_json(english), answer_json(model_answer()))
    res = await run(client, prompts)
    assert res.outcome == "ok" and res.report is not None


async def test_fabricated_quotes_dropped_and_confidence_lowered(
    client: LlmClient, fake: FakeOpenAI, prompts: PromptLibrary
) -> None:
    fabricated = model_answer(
        evidence=[
            {"time": None, "text": RESULT_LINE, "why": "真实行（带前缀）"},
            {
                "time": None,
                "text": "ERROR GSE agent 0200000000 offline: connection refused by host",
                "why": "编造",
            },
            {
                "time": None,
                "text": f"Refresh step according to gse task status, stepInstanceId: {samples.S}, "
                "gseTaskStatus: ABNORMAL_STATE, batch: 0",
                "why": "改写过的行",
            },
            {"time": None, "text": "executeResult:2", "why": "太短的片段"},
        ],
        confidence=0.9,
    )
    fake.push(answer_json(fabricated))
    res = await run(client, prompts)
    rep = res.report
    assert res.outcome == "ok" and rep is not None
    assert [e.text for e in rep.evidence] == [RESULT_LINE]
    assert res.dropped_quotes == 3
    assert rep.confidence < 0.9 - 0.3
    assert any("找不到" in n for n in rep.notices)


async def test_no_verified_quote_keeps_rule_evidence(
    client: LlmClient, fake: FakeOpenAI, prompts: PromptLibrary
) -> None:
    fake.push(
        answer_json(
            model_answer(evidence=[{"time": None, "text": "Totally invented log line here!", "why": "x"}])
        )
    )
    res = await run(client, prompts)
    rep = res.report
    assert rep is not None and [e.text for e in rep.evidence] == [RESULT_LINE]
    assert rep.confidence <= 0.3


async def test_rate_limited_then_success(client: LlmClient, fake: FakeOpenAI, prompts: PromptLibrary) -> None:
    fake.push(rate_limited(retry_after="1"), answer_json(model_answer()))
    res = await run(client, prompts)
    assert res.outcome == "ok" and res.calls == 2
    assert fake.requests[1].at - fake.requests[0].at >= 0.95


async def test_rate_limited_past_deadline_falls_back(
    client: LlmClient, fake: FakeOpenAI, prompts: PromptLibrary
) -> None:
    fake.push(rate_limited(retry_after="60"))
    res = await run(client, prompts, deadline_s=2)
    assert res.outcome == "fallback_rate_limited" and res.report is None


async def test_server_errors_fall_back(
    make_client: Callable[..., LlmClient], fake: FakeOpenAI, prompts: PromptLibrary
) -> None:
    fake.default = Status(503, "overloaded")
    res = await run(make_client(max_attempts=2), prompts)
    assert res.outcome == "fallback_error" and res.report is None and res.calls == 2


async def test_hang_falls_back_within_deadline(
    make_client: Callable[..., LlmClient], fake: FakeOpenAI, prompts: PromptLibrary
) -> None:
    fake.default = Hang(20)
    started = time.monotonic()
    res = await run(make_client(timeout_s=30), prompts, deadline_s=1.0)
    assert time.monotonic() - started < 1.6
    assert res.outcome == "fallback_timeout" and res.report is None


async def test_tool_rounds_are_bounded(client: LlmClient, fake: FakeOpenAI, prompts: PromptLibrary) -> None:
    # A model that always calls a tool, even when none is offered.
    fake.default = tool_call("agent_state", {"hosts": ["0:10.0.0.8"]})
    res = await run(client, prompts, tools=Tools(), max_tool_rounds=2)
    assert res.report is None and res.outcome == "fallback_invalid"
    offered = ["tools" in r.body for r in fake.requests]
    # two rounds with tools, the final round without, then one repair without
    assert offered == [True, True, False, False]
    assert res.tool_calls == 2
    final = fake.requests[2].body["messages"]
    assert [m["role"] for m in final].count("tool") == 2
    assert "工具调用次数已用完" in final[-1]["content"]


async def test_tool_result_lines_can_be_quoted(
    client: LlmClient, fake: FakeOpenAI, prompts: PromptLibrary
) -> None:
    extra = (
        f"[2024-05-30 11:09:01.500]  WARN [job-execute,{samples.TRACE},aaaaaaaaaaaaaaaa] 6 --- [result-handle-3] "
        "c.t.b.j.e.e.r.ScriptResultHandleTask    : host 10.0.0.8 script stderr: /tmp/deploy.sh: line 12: "
        "conf.yaml: No such file or directory"
    )
    fake.push(
        tool_call("search_logs", {"query": "stderr", "limit": 5}),
        answer_json(
            model_answer(
                evidence=[
                    {
                        "time": None,
                        "text": "/tmp/deploy.sh: line 12: conf.yaml: No such file or directory",
                        "why": "脚本找不到配置文件",
                    }
                ]
            )
        ),
    )
    res = await run(client, prompts, tools=Tools([extra]))
    assert res.outcome == "ok" and res.report is not None
    assert [e.text for e in res.report.evidence] == [extra]
    tool_msg = fake.requests[1].body["messages"][-1]
    assert tool_msg["role"] == "tool" and tool_msg["tool_call_id"] == "call_0"
    assert "<logs>" in tool_msg["content"] and "No such file" in tool_msg["content"]


async def test_json_schema_rejected_downgrades_to_prompt_contract(
    client: LlmClient, fake: FakeOpenAI, prompts: PromptLibrary
) -> None:
    fake.push(Status(400, "response_format type json_schema is not supported"), answer_json(model_answer()))
    res = await run(client, prompts)
    assert res.outcome == "ok"
    assert "response_format" in fake.requests[0].body and "response_format" not in fake.requests[1].body
    fake.push(answer_json(model_answer()))
    await run(client, prompts)
    assert "response_format" not in fake.requests[2].body  # remembered per client


async def test_contradicting_a_strong_signature_keeps_rules_and_flags(
    client: LlmClient, fake: FakeOpenAI, prompts: PromptLibrary
) -> None:
    fake.push(answer_json(model_answer(stage="dispatch", fault_side="third_party", confidence=0.95)))
    res = await run(client, prompts)
    rep = res.report
    assert rep is not None
    assert (rep.stage, rep.fault_side) == ("execution", "user")
    assert rep.confidence <= 0.6
    assert any("不一致" in n and "script_exit_nonzero" in n for n in rep.notices)

    # A weak candidate does not override the model.
    fake.push(answer_json(model_answer(stage="dispatch", fault_side="third_party")))
    res = await run(client, prompts, cand=candidate(confidence=0.5))
    assert res.report is not None and (res.report.stage, res.report.fault_side) == ("dispatch", "third_party")


async def test_prompt_is_kept_under_prompt_max_chars(
    client: LlmClient, fake: FakeOpenAI, prompts: PromptLibrary
) -> None:
    many = [LINES[0]] + [LINES[4]] * 400 + [RESULT_LINE]
    fake.push(answer_json(model_answer()))
    res = await run(client, prompts, lines=many, prompt_max_chars=9000)
    assert res.outcome == "ok"
    msgs = fake.requests[0].body["messages"]
    total = sum(len(m["content"]) for m in msgs)
    assert total <= 9000
    user = msgs[1]["content"]
    assert RESULT_LINE in user and LINES[0] in user  # head and tail survive
    assert "中间省略" in user


async def test_prompt_names_the_runs_span_and_the_window_and_the_report_keeps_them(
    client: LlmClient, fake: FakeOpenAI, prompts: PromptLibrary
) -> None:
    span = RunSpan(start="2024-05-30 11:09:00.101", end="2024-05-30 11:09:01.402", seconds=1.301)
    window = Window(start="2024-05-27T11:39:30+08:00", end="2024-05-30T11:39:30+08:00")
    events = [
        TimelineEvent(time="2024-05-30 11:09:01.320", text="Analyse execute object task result: exitCode=1")
    ]
    cand = candidate(span=span, window=window)
    cand.timeline[2].events = events
    fake.push(answer_json(model_answer()))
    res = await run(client, prompts, cand=cand)
    user = fake.requests[0].body["messages"][1]["content"]
    assert (
        "本次运行的日志跨度（首行 → 末行，引擎本地时间）: 2024-05-30 11:09:00.101 → 2024-05-30 11:09:01.402"
        in user
    )
    assert "检索的 BkLog 时间窗口: 2024-05-27T11:39:30+08:00 → 2024-05-30T11:39:30+08:00" in user
    rep = res.report
    assert rep is not None and rep.source == "llm"
    assert (rep.span, rep.window, rep.timeline[2].events) == (span, window, events)
    # without them, nothing is said about them
    fake.push(answer_json(model_answer()))
    await run(client, prompts)
    user = fake.requests[1].body["messages"][1]["content"]
    assert "日志跨度" not in user and "检索的 BkLog 时间窗口" not in user
