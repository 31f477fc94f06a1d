"""The model step of the pipeline: one model call over the condensed evidence with the rule
candidate, bounded read-only tools, verified quotes; falls back to the rules (marked so)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime

import structlog

from bot.clients.bklog import BkLogClient
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


def budget_key_of(job: AnalysisJob) -> str:
    """The per-chat budget key of a job: the chat of its first requester ("global" without one)."""
    if not job.requesters:
        return "global"
    target = job.requesters[0].target
    return f"{target.channel}:{target.chat_id}"


@contextmanager
def budget_scope(chat_key: str) -> Iterator[None]:
    """Model calls made inside (in this task) are charged to `chat_key`'s daily budget."""
    token = _BUDGET_CHAT.set(chat_key or "global")
    try:
        yield
    finally:
        _BUDGET_CHAT.reset(token)


class PipelineTools:
    """Read-only look-ups for the model: BkLog search in the analysis window (capped), agent state."""

    def __init__(
        self,
        *,
        bklog: BkLogClient | None,
        gse: GseClient | None,
        window: tuple[datetime, datetime] | None,
    ) -> None:
        self.bklog, self.gse, self.window = bklog, gse, window

    async def search_logs(self, query: str, limit: int) -> Sequence[str]:
        if self.bklog is None or self.window is None:
            return []
        try:
            res = await self.bklog.search(
                query, self.window[0], self.window[1], size_cap=max(1, min(limit, 50))
            )
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
        tools = PipelineTools(bklog=bklog, gse=gse, window=collected.window)
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
        with budget_scope(budget_key_of(job)):
            report = await self.analyzer.analyze_job(job)
        # Rule timeline notes and events and evidence quote raw log lines too, with or without a model;
        # delivery masks what goes to chats on top.
        return scrub_report(report, self.scrubber)
