"""Agent-design benchmark (LLM diagnosis issue): evidence first + one model call vs a naive ReAct loop.

Over the scenario corpus, each scenario is diagnosed twice in the same run, against the same fakes
reached over real HTTP: the sandbox BkLog (fixed latency per request) and a scripted
OpenAI-compatible model (fixed latency per call).

- ours: the real Analyzer — the deterministic collector runs the BkLog queries (the two step
  queries in parallel, then one per traceId), then ONE model call with the condensed evidence
  and the rule candidate; the scripted model asks for one read-only tool only when the rule
  candidate is weak (confidence < 0.5), as the design intends tools to be rare.
- ReAct: the model drives every query itself, one tool call per round: search_logs by the step id
  (or the request id), then per traceId it sees on the step's lines, then it answers.

Printed per design: model calls per diagnosis (median), BkLog queries per diagnosis (median),
prompt tokens per diagnosis (median), and time-to-report as a ratio to the ideal critical path
(the BkLog round trips of the collector as it actually runs them — overlapping requests count
once — plus one model call); then the speed-up (ReAct time / our time, median per scenario).

    python bench/agent.py [--model-ms 300] [--bklog-ms 50] [--limit N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's tests/ fakes

from bot.app.services import AppOptions, build_bklog, build_services
from bot.clients.bklog import BkLogClient, load_query_templates
from bot.core.logsetup import configure_logging
from bot.core.settings import Settings
from bot.devtools.evaluate import (
    SANDBOX_APP,
    SANDBOX_INDEX_SET,
    bkjob_world,
    last_timestamp,
    sandbox_settings,
)
from bot.devtools.sandbox import start_site
from bot.devtools.sandbox.bklog import create_bklog_app, docs_from_records
from bot.devtools.scenarios import Scenario, load_scenarios
from bot.diagnosis.pipeline import AnalysisRequest
from bot.llm.client import LlmClient
from bot.llm.prompts import PromptLibrary
from bot.llm.schema import ReportInvalid, parse_report
from tests.support.fakes.openai_server import Behaviour, FakeOpenAI, answer_json, tool_call

API_KEY = "sk-bench-0123456789abcdef"
MAX_REACT_ROUNDS = 40
_TRACE_ON_LINE = re.compile(r"\[job-execute,([0-9a-f]{32}),")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_CONFIDENCE = re.compile(r"规则引擎的候选结论（置信度 ([0-9.]+)）")
_STAGE = re.compile(r"^- 阶段: (\w+)", re.M)
_SIDE = re.compile(r"^- 责任方: (\w+)", re.M)
_KEY_LINE = re.compile(r"^\* (?:\d{4}-\d{2}-\d{2} )?\d{2}:\d{2}:\d{2}(?:\.\d+)?\s+\S+\s+\S+ (.*)$", re.M)


# --------------------------------------------------------------------------- latency + round-trip log


@dataclass
class Spans:
    """(start, end) of every request a fake served, in time.monotonic()."""

    items: list[tuple[float, float]] = field(default_factory=list)

    def waves(self, before: float = float("inf")) -> int:
        """Sequential round trips: overlapping requests (run in parallel) count once."""
        spans = sorted(s for s in self.items if s[0] < before)
        count, end = 0, float("-inf")
        for start, stop in spans:
            if start >= end:
                count += 1
                end = stop
            else:
                end = max(end, stop)
        return count


def with_latency(app: web.Application, seconds: float, spans: Spans) -> web.Application:
    @web.middleware
    async def delay(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.monotonic()
        await asyncio.sleep(seconds)
        try:
            return await handler(request)
        finally:
            spans.items.append((started, time.monotonic()))

    app.middlewares.insert(0, delay)
    return app


# --------------------------------------------------------------------------- scripted models


def _answer(stage: str, side: str, quotes: list[str]) -> Behaviour:
    return answer_json(
        {
            "summary": "步骤执行失败，原因见下方日志。",
            "stage": stage,
            "fault_side": side,
            "root_cause": "根据采集到的日志判断的失败原因。",
            "evidence": [{"time": None, "text": q, "why": "关键日志"} for q in quotes[:3]],
            "actions": {"immediate": ["按根因处理后重试"], "root_fix": [], "improvements": []},
            "prevention": [],
            "missing_info": [],
            "confidence": 0.8,
        }
    )


def design_model(body: dict[str, Any]) -> Behaviour:
    """Our design's model: answers from the evidence; one tool call only for a weak rule candidate."""
    prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")
    conf = float(m.group(1)) if (m := _CONFIDENCE.search(prompt)) else 0.0
    used_tools = any(m["role"] == "tool" for m in body["messages"])
    if body.get("tools") and conf < 0.5 and not used_tools:
        return tool_call("search_logs", {"query": "ERROR", "limit": 20})
    stage = m.group(1) if (m := _STAGE.search(prompt)) else "unknown"
    side = m.group(1) if (m := _SIDE.search(prompt)) else "unknown"
    return _answer(stage, side, _KEY_LINE.findall(prompt))


def react_model(body: dict[str, Any]) -> Behaviour:
    """The naive agent: one search per round — the start id, then each traceId of the step's lines."""
    msgs = body["messages"]
    start = str(json.loads(msgs[1]["content"].split("\n", 1)[0])["start"])
    asked = [
        json.loads(c["function"]["arguments"])["query"]
        for m in msgs
        if m["role"] == "assistant"
        for c in m.get("tool_calls") or []
    ]
    if not asked:
        return tool_call("search_logs", {"query": start})
    step = next((q for q in asked if q.isdigit()), None)
    traces: list[str] = []
    lines: list[str] = []
    for m in msgs:
        if m["role"] != "tool":
            continue
        for line in str(m["content"]).splitlines():
            lines.append(line)
            found = _TRACE_ON_LINE.search(line)
            # Follow the traces of lines about the step (the start query's lines all qualify).
            if found and (step is None or step in line or not traces) and found.group(1) not in traces:
                traces.append(found.group(1))
    if step is None:
        steps = re.findall(r"stepInstanceId[=:]\s?(\d+)", "\n".join(lines))
        if steps:
            return tool_call("search_logs", {"query": steps[0]})
    pending = [t for t in traces if t not in asked]
    if pending:
        return tool_call("search_logs", {"query": pending[0]})
    errors = [ln for ln in lines if " ERROR " in ln] or lines[-3:]
    return _answer("unknown", "unknown", errors)


# --------------------------------------------------------------------------- one diagnosis each way


@dataclass
class Run:
    calls: int
    queries: int
    prompt_tokens: int
    seconds: float
    ideal_s: float
    prompt_chars: int = 0  # the first model request's user message
    host_output: bool = False  # it carried BK-JOB's host groups and output

    @property
    def ratio(self) -> float:
        return self.seconds / self.ideal_s


async def serve_fakes(
    sc: Scenario, model_s: float, bklog_s: float, behaviour: Callable[[dict[str, Any]], Behaviour]
) -> tuple[list[web.AppRunner], str, str, Spans, FakeOpenAI]:
    code, secret, _user = SANDBOX_APP
    spans = Spans()
    bklog_app = create_bklog_app(
        docs_from_records(sc.logs_text), app_code=code, app_secret=secret, index_set_id=SANDBOX_INDEX_SET
    )
    bk_runner, bk_url = await start_site(with_latency(bklog_app, bklog_s, spans))
    fake = FakeOpenAI(api_key=API_KEY, default=behaviour)
    llm_runner, llm_url = await start_site(with_latency(fake.app(), model_s, Spans()))
    return [bk_runner, llm_runner], bk_url, llm_url + "/v1", spans, fake


def _tokens(fake: FakeOpenAI) -> int:
    return sum(len(r.raw) // 4 for r in fake.requests)


def _user_prompt(fake: FakeOpenAI) -> str:
    if not fake.requests:
        return ""
    body = json.loads(fake.requests[0].raw)
    return "".join(m["content"] or "" for m in body["messages"] if m["role"] == "user")


async def run_ours(sc: Scenario, session: aiohttp.ClientSession, model_s: float, bklog_s: float) -> Run:
    runners, bk_url, llm_url, spans, fake = await serve_fakes(sc, model_s, bklog_s, design_model)
    try:
        # scenarios with BK-JOB's answers get them: the host output goes into the same prompt
        world = await bkjob_world(sc, runners)
        settings = sandbox_settings(
            bk_url,
            llm={"base_url": llm_url, "api_key": API_KEY, "model": "m", "timeout_s": 10, "deadline_s": 30},
            **world,
        )
        now = last_timestamp(sc.logs_text) + timedelta(minutes=30)
        async with build_services(
            settings, http=session, options=AppOptions(mode="cli", clock=lambda: now)
        ) as services:
            analyzer = services.analyzer
            exp = sc.expected
            req = AnalysisRequest(
                step_instance_id=None if exp.start_request_id else exp.step_instance_id,
                request_id=exp.start_request_id,
            )
            started = time.monotonic()
            await analyzer.analyze(req)
            seconds = time.monotonic() - started
        first_call = fake.requests[0].at if fake.requests else float("inf")
        ideal = spans.waves(before=first_call) * bklog_s + (model_s if fake.requests else 0.0)
        prompt = _user_prompt(fake)
        return Run(
            len(fake.requests),
            len(spans.items),
            _tokens(fake),
            seconds,
            ideal,
            prompt_chars=len(prompt),
            host_output="BK-JOB 主机结果" in prompt,
        )
    finally:
        for r in runners:
            await r.cleanup()


async def run_react(
    sc: Scenario, session: aiohttp.ClientSession, model_s: float, bklog_s: float, ideal_s: float
) -> Run:
    runners, bk_url, llm_url, spans, fake = await serve_fakes(sc, model_s, bklog_s, react_model)
    try:
        settings = sandbox_settings(bk_url)
        bklog = build_bklog(settings, session)
        assert bklog is not None
        templates = load_query_templates()
        now = last_timestamp(sc.logs_text) + timedelta(minutes=30)
        window = (now - timedelta(days=settings.bklog.lookback_days), now)
        prompts = PromptLibrary()
        search_spec = [s for s in prompts.tool_specs() if s["function"]["name"] == "search_logs"]
        exp = sc.expected
        start: str | int = exp.start_request_id or exp.step_instance_id or 0
        async with LlmClient(base_url=llm_url, api_key=API_KEY, model="m", timeout_s=10) as client:
            started = time.monotonic()
            await react_loop(client, prompts, bklog, templates, window, start, search_spec)
            seconds = time.monotonic() - started
        return Run(len(fake.requests), len(spans.items), _tokens(fake), seconds, ideal_s)
    finally:
        for r in runners:
            await r.cleanup()


async def react_loop(
    client: LlmClient,
    prompts: PromptLibrary,
    bklog: BkLogClient,
    templates: Any,
    window: tuple[datetime, datetime],
    start: str | int,
    tools: list[dict[str, Any]],
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": prompts.system("diagnose")},
        {
            "role": "user",
            "content": json.dumps({"start": start})
            + "\n请用 search_logs 工具自行检索 job-execute 日志，找出该步骤失败的原因，最后输出约定的 JSON。",
        },
    ]
    for _ in range(MAX_REACT_ROUNDS):
        completion = await client.chat(messages, deadline=deadline, tools=tools, purpose="react")
        if not completion.tool_calls:
            try:
                parse_report(completion.content)
            except ReportInvalid:
                pass
            return
        messages.append(completion.assistant_message())
        for call in completion.tool_calls:
            query = str(json.loads(call.arguments)["query"])
            if _HEX32.match(query):
                rendered = templates.render("trace_id", trace_id=query)
            else:
                rendered = templates.render("step_id", step_instance_id=int(query))
            result = await bklog.search(rendered, window[0], window[1])
            text = "\n".join(str(d.get("log", "")) for d in result.docs)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": text})


# --------------------------------------------------------------------------- main


async def main(model_ms: float, bklog_ms: float, limit: int | None) -> None:
    scenarios = [s for s in load_scenarios() if s.expected.step_instance_id or s.expected.start_request_id]
    scenarios = scenarios[:limit] if limit else scenarios
    model_s, bklog_s = model_ms / 1000, bklog_ms / 1000
    ours: list[Run] = []
    react: list[Run] = []
    async with aiohttp.ClientSession() as session:
        for sc in scenarios:
            a = await run_ours(sc, session, model_s, bklog_s)
            b = await run_react(sc, session, model_s, bklog_s, a.ideal_s)
            ours.append(a)
            react.append(b)
            print(
                f"  {sc.name:<52} ours {a.calls} call/{a.queries} q {a.seconds * 1000:6.0f} ms"
                f"   react {b.calls} calls/{b.queries} q {b.seconds * 1000:6.0f} ms",
                file=sys.stderr,
            )

    def med(runs: list[Run], get: Callable[[Run], float]) -> float:
        return statistics.median(get(r) for r in runs)

    speedups = [b.seconds / a.seconds for a, b in zip(ours, react, strict=True)]
    tool_runs = sum(1 for r in ours if r.calls > 1)
    rows = [
        ("model calls / diagnosis (median)", lambda r: r.calls, "{:.0f}"),
        ("BkLog queries / diagnosis (median)", lambda r: r.queries, "{:.0f}"),
        ("prompt tokens / diagnosis (median)", lambda r: r.prompt_tokens, "{:.0f}"),
        ("time-to-report / ideal path (median)", lambda r: r.ratio, "{:.2f}"),
    ]
    print(
        f"agent bench: {len(ours)} scenarios, model {model_ms:.0f} ms/call, BkLog {bklog_ms:.0f} ms/request"
        " (ideal path = collector's BkLog round trips as run + one model call)"
    )
    print(f"{'':<40}{'evidence-first':>16}{'naive ReAct':>14}")
    for label, get, fmt in rows:
        print(f"{label:<40}{fmt.format(med(ours, get)):>16}{fmt.format(med(react, get)):>14}")
    print(
        f"{'max model calls / diagnosis':<40}{max(r.calls for r in ours):>16}{max(r.calls for r in react):>14}"
    )
    print(f"diagnoses where our model used a tool: {tool_runs}/{len(ours)}")
    with_hosts = [r for r in ours if r.host_output]
    budget = Settings().llm.prompt_max_chars
    print(
        f"prompts with BK-JOB host output: {len(with_hosts)}/{len(ours)}, model calls there (median) "
        f"{statistics.median(r.calls for r in with_hosts) if with_hosts else 0:.0f}, largest prompt "
        f"{max((r.prompt_chars for r in ours), default=0)} chars of the {budget}-char budget"
    )
    print(
        f"speed-up (ReAct time / ours, per scenario): median {statistics.median(speedups):.2f}x, "
        f"min {min(speedups):.2f}x, max {max(speedups):.2f}x"
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-ms", type=float, default=300.0, help="fake model latency per call")
    p.add_argument("--bklog-ms", type=float, default=50.0, help="sandbox BkLog latency per request")
    p.add_argument("--limit", type=int, default=None, help="only the first N scenarios")
    args = p.parse_args()
    configure_logging(json_lines=False, level="WARNING")
    asyncio.run(main(args.model_ms, args.bklog_ms, args.limit))
