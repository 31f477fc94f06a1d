"""The model step of the pipeline: one model call over the condensed evidence with the rule
candidate, bounded read-only tools, verified quotes; falls back to the rules (marked so)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import structlog

from bot.clients.bklog import BkLogClient, LogLayout, quote_phrase
from bot.clients.gateway import GatewayError
from bot.clients.gse import GseClient
from bot.core.metrics import Metrics
from bot.core.models import AnalysisJob, DiagnosisReport
from bot.core.settings import Settings
from bot.diagnosis.collector import Collected
from bot.diagnosis.condense import Condensed
from bot.diagnosis.pipeline import Analyzer, ModelStep
from bot.llm.budget import BUDGET_NOTICE, TokenBudget
from bot.llm.client import CallEvent, CallObserver, LlmClient
from bot.llm.diagnose import llm_diagnose
from bot.llm.prompts import PromptLibrary
from bot.llm.scrub import Scrubber

log = structlog.get_logger(__name__)

FALLBACK_NOTICE = {
    "fallback_timeout": "模型响应超时，以下为规则库诊断。",
    "fallback_rate_limited": "模型被限流，以下为规则库诊断。",
    "fallback_error": "模型暂时不可用，以下为规则库诊断。",
    "fallback_invalid": "模型输出无法校验，以下为规则库诊断。",
    "budget_exhausted": BUDGET_NOTICE,
}


# The chat whose token budget an analysis spends. The model step's signature carries no chat (the
# analyzer is chat-agnostic), so the caller that knows the job scopes it around `analyze`.
_BUDGET_CHAT: ContextVar[str] = ContextVar("job_doctor_llm_budget_chat", default="global")
_BUDGET_USER: ContextVar[str] = ContextVar("job_doctor_llm_budget_user", default="")


def budget_key_of(job: AnalysisJob) -> str:
    """The per-chat budget key of a job: the chat of its first requester ("global" without one)."""
    if not job.requesters:
        return "global"
    target = job.requesters[0].target
    return f"{target.channel}:{target.chat_id}"


def budget_user_of(job: AnalysisJob) -> str:
    """The sender whose daily budget a job spends: its first requester ("" without one)."""
    if not job.requesters:
        return ""
    first = job.requesters[0]
    return f"{first.target.channel}:{first.sender_key or first.sender_id}"


@contextmanager
def budget_scope(chat_key: str, user_key: str = "") -> Iterator[None]:
    """Model calls made inside (in this task) are charged to `chat_key`'s (and `user_key`'s) budget."""
    token = _BUDGET_CHAT.set(chat_key or "global")
    user_token = _BUDGET_USER.set(user_key)
    try:
        yield
    finally:
        _BUDGET_USER.reset(user_token)
        _BUDGET_CHAT.reset(token)


MAX_TOOL_SEARCHES = 4  # per analysis, whatever the model asks
TOOL_QUERY_MAX_CHARS = 200
TOOL_QUERY_MAX_TERMS = 6
TOOL_WINDOW_PAD = timedelta(minutes=10)
_TERM_RE = re.compile(r'"([^"]{1,100})"|(\S{1,100})')


@dataclass(frozen=True)
class ToolScope:
    """What a model search may reach: the step's own time span and its ids, nothing else."""

    window: tuple[datetime, datetime]
    ids: tuple[str, ...]  # the step id and its job instance: words of the log line
    traces: tuple[str, ...] = ()  # the chain's traceIds: in the line, or in the layout's trace field
    layout: LogLayout = field(default_factory=LogLayout)

    @classmethod
    def of(
        cls, collected: Collected, layout: LogLayout | None = None, time_zone: str = "Asia/Shanghai"
    ) -> ToolScope | None:
        if collected.window is None:
            return None
        ids = [str(v) for v in (collected.step_instance_id, collected.task_instance_id) if v]
        traces = tuple(dict.fromkeys(collected.trace_ids[:10]))
        times = [r.time for r in collected.records if r.time is not None]
        start, end = collected.window
        if times:  # the run's own span (naive engine times: wall clock in BkLog's time zone)
            low, high = min(times) - TOOL_WINDOW_PAD, max(times) + TOOL_WINDOW_PAD
            if start.tzinfo is not None:
                # The window may be UTC (from BK-JOB's step times): place the engine's wall clock in
                # its own zone first, never stamp it with the window's zone.
                zone = ZoneInfo(time_zone)
                low, high = low.replace(tzinfo=zone), high.replace(tzinfo=zone)
            start, end = max(start, low), min(end, high)
            if end <= start:
                start, end = collected.window
        if not ids and not traces:
            return None
        return cls((start, end), tuple(dict.fromkeys(ids)), traces, layout or LogLayout())

    def query(self, model_query: str) -> str | None:
        """The model's words as literal phrases, ANDed with the step's ids; None when nothing is left.

        The model never writes Lucene: an injected `*) OR (*` is a phrase like any other.
        """
        terms = []
        for m in _TERM_RE.finditer(model_query[:TOOL_QUERY_MAX_CHARS]):
            word = (m.group(1) or m.group(2) or "").strip()
            if word:
                terms.append(quote_phrase(word, self.layout.log_field))
            if len(terms) == TOOL_QUERY_MAX_TERMS:
                break
        if not terms:
            return None
        trace_field = self.layout.trace_field or self.layout.log_field
        ids = [quote_phrase(i, self.layout.log_field) for i in self.ids]
        ids += [quote_phrase(t, trace_field) for t in self.traces]
        return f"({' AND '.join(terms)}) AND ({' OR '.join(ids)})"


class PipelineTools:
    """Read-only look-ups for the model: BkLog search restricted to the step (its time span and ids,
    at most `MAX_TOOL_SEARCHES` small searches), and agent state."""

    def __init__(
        self,
        *,
        bklog: BkLogClient | None,
        gse: GseClient | None,
        window: tuple[datetime, datetime] | None = None,
        scope: ToolScope | None = None,
    ) -> None:
        self.bklog, self.gse, self.window = bklog, gse, window
        self.scope = scope
        self.searches = 0

    async def search_logs(self, query: str, limit: int) -> Sequence[str]:
        if self.bklog is None or self.scope is None:
            return []
        if self.searches >= MAX_TOOL_SEARCHES:
            return [f"（本次分析的检索次数已达上限 {MAX_TOOL_SEARCHES} 次）"]
        scoped = self.scope.query(query)
        if scoped is None:
            return []
        self.searches += 1
        start, end = self.scope.window
        try:
            res = await self.bklog.search(scoped, start, end, size_cap=max(1, min(limit, 50)))
        except GatewayError as exc:
            return [f"(BkLog 查询失败：{exc.zh})"]
        return [str(d.get(self.bklog.layout.log_field, "")) for d in res.docs]

    async def agent_state(self, hosts: Sequence[str]) -> str:
        if self.gse is None:
            return "未配置 GSE，无法查询 Agent 状态。"
        try:
            states = await self.gse.agent_states(list(hosts)[:50])
        except GatewayError as exc:
            return f"GSE 查询失败：{exc.zh}"
        return "\n".join(
            f"{k}: {'运行中' if v.alive else (v.status_zh or '未找到')}" for k, v in states.items()
        )


def scrub_report(report: DiagnosisReport, scrubber: Scrubber) -> DiagnosisReport:
    """The report with every credential masked, in every field (rule timeline notes and events and
    evidence quote raw log lines too); what is not a secret is left exactly as logged."""
    return DiagnosisReport.model_validate(scrubber.obj(report.model_dump()))


def metrics_observer(metrics: Metrics) -> CallObserver:
    def observe(event: CallEvent) -> None:
        metrics.llm_calls.labels(event.outcome).inc()
        metrics.llm_tokens.labels("prompt").inc(event.prompt_tokens)
        metrics.llm_tokens.labels("completion").inc(event.completion_tokens)

    return observe


def make_model_step(
    settings: Settings,
    client: LlmClient,
    *,
    prompts: PromptLibrary,
    scrubber: Scrubber,
    bklog: BkLogClient | None,
    gse: GseClient | None,
    metrics: Metrics | None = None,
    budget: TokenBudget | None = None,
) -> ModelStep:
    cfg = settings.llm

    async def step(
        candidate: DiagnosisReport, cond: Condensed, collected: Collected
    ) -> DiagnosisReport | None:
        tools = PipelineTools(
            bklog=bklog,
            gse=gse,
            window=collected.window,
            scope=ToolScope.of(
                collected,
                bklog.layout if bklog else None,
                bklog.time_zone if bklog else settings.bklog.time_zone,
            ),
        )
        result = await llm_diagnose(
            client,
            prompts,
            candidate=candidate,
            evidence_text=cond.text,
            # what the hosts printed may be quoted as evidence too: it is verified like a log line
            collected_lines=[
                *(r.raw for r in collected.records),
                *(line for g in candidate.host_groups for line in g.output),
            ],
            tools=tools,
            deadline_s=cfg.deadline_s,
            scrubber=scrubber,
            max_tool_rounds=cfg.max_tool_rounds,
            prompt_max_chars=cfg.prompt_max_chars,
            budget=budget,
            budget_key=_BUDGET_CHAT.get(),
            budget_user=_BUDGET_USER.get(),
        )
        log.info("model_step", outcome=result.outcome, calls=result.calls, tokens=result.tokens)
        if result.report is not None:
            return scrub_report(result.report, scrubber)
        if metrics is not None:
            metrics.llm_fallbacks.labels(result.outcome).inc()
        notice = FALLBACK_NOTICE.get(result.outcome, "模型不可用，以下为规则库诊断。")
        return scrub_report(candidate.model_copy(update={"notices": [*candidate.notices, notice]}), scrubber)

    return step


class JobAnalyzer:
    """What the job worker runs for one job: the analysis, its model tokens charged to the asking
    chat's budget, and the report masked before it is stored (详情, console, recent analyses)."""

    def __init__(self, analyzer: Analyzer, scrubber: Scrubber) -> None:
        self.analyzer = analyzer
        self.scrubber = scrubber

    async def __call__(self, job: AnalysisJob) -> DiagnosisReport:
        with budget_scope(budget_key_of(job), budget_user_of(job)):
            report = await self.analyzer.analyze_job(job)
        # Rule timeline notes and events and evidence quote raw log lines too, with or without a model;
        # delivery masks what goes to chats on top.
        return scrub_report(report, self.scrubber)
