"""One analysis end to end: window → collect → condense → signatures → enrichment → report.

The rule-based report is always built; when a model is configured (and allowed for this
call) it gets the condensed evidence and the rule candidate in one call, and the rules stay
the fallback whenever the model is missing, slow, rate-limited or wrong.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import structlog

from bot.clients.bkjob import BkJobClient
from bot.clients.bkjob_models import JobInstanceStatus
from bot.clients.bklog import BkLogClient, QueryTemplates
from bot.clients.gse import GseClient
from bot.core.metrics import Metrics
from bot.core.models import AnalysisJob, DiagnosisReport
from bot.core.redact import Redactor
from bot.core.scope import Scope, parse_scope, scope_of
from bot.core.settings import Settings
from bot.diagnosis.agents import AgentTarget, agent_facts
from bot.diagnosis.collector import Collected, Collector
from bot.diagnosis.condense import Condensed, condense
from bot.diagnosis.hosts import StepFacts, find_job, gather
from bot.diagnosis.output import OutputCatalog, output_catalog
from bot.diagnosis.rules import RuleInputs, build_rule_report
from bot.diagnosis.signatures import Catalog, SignatureMatch

log = structlog.get_logger(__name__)

# (candidate report, condensed evidence, collected chain) -> improved report or None (keep rules)
ModelStep = Callable[[DiagnosisReport, Condensed, Collected], Awaitable[DiagnosisReport | None]]


class BkLogConfigError(Exception):
    """BkLog cannot be searched as configured (credentials, the app's grant, the user's
    `search_log` permission, the index set); the message is one safe line."""


@dataclass(frozen=True)
class AnalysisRequest:
    step_instance_id: int | None = None
    request_id: str | None = None
    task_instance_id: int | None = None
    execute_count: int | None = None
    bk_scope_type: str | None = None
    bk_scope_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    use_model: bool = True
    # A gateway auth/permission error (16xxxxx) is a configuration problem: raise it instead of
    # reporting it (the CLI exits 2); the bot reports it to the chat instead.
    raise_on_config_error: bool = False

    @classmethod
    def of_job(cls, job: AnalysisJob) -> AnalysisRequest:
        return cls(
            step_instance_id=job.step_instance_id,
            request_id=job.request_id,
            task_instance_id=job.task_instance_id,
            execute_count=job.execute_count,
            bk_scope_type=job.bk_scope_type,
            bk_scope_id=job.bk_scope_id,
            since=job.since,
            until=job.until,
        )


@dataclass(frozen=True)
class _JobLookup:
    status: JobInstanceStatus | None = None
    gap: str = ""


class Analyzer:
    def __init__(
        self,
        settings: Settings,
        *,
        bklog: BkLogClient | None,
        templates: QueryTemplates,
        catalog: Catalog,
        bkjob: BkJobClient | None = None,
        gse: GseClient | None = None,
        metrics: Metrics | None = None,
        model_step: ModelStep | None = None,
        clock: Callable[[], datetime] | None = None,
        redactor: Redactor | None = None,
        outputs: OutputCatalog | None = None,
    ) -> None:
        self.settings = settings
        self.bklog = bklog
        self.templates = templates
        self.catalog = catalog
        self.bkjob = bkjob
        self.gse = gse
        self.metrics = metrics
        self.model_step = model_step
        # host output is masked where it is read: it may reach the model, the store and chats
        self.mask: Callable[[str], str] = redactor or Redactor()
        self.outputs = outputs or output_catalog()
        self.tz = ZoneInfo(settings.bklog.time_zone)
        self._clock = clock or (lambda: datetime.now(self.tz))

    async def analyze_job(self, job: AnalysisJob) -> DiagnosisReport:
        return await self.analyze(AnalysisRequest.of_job(job))

    # ------------------------------------------------------------------ window

    async def _known_job(self, req: AnalysisRequest, scope: Scope | None) -> _JobLookup:
        """The job instance a link named (scope and task known), read before BkLog is searched:
        its step's times narrow the window and the host lookup reuses the answer."""
        if self.bkjob is None or scope is None or not req.task_instance_id:
            return _JobLookup()
        found, status, why = await find_job(self.bkjob, req.task_instance_id, [scope])
        return _JobLookup(status=status if found else None, gap=why)

    def _window(self, req: AnalysisRequest, known: _JobLookup) -> tuple[datetime, datetime]:
        """The BkLog window, both ends in BkLog's zone: the report shows it beside the log times."""
        start, end = self._window_any_zone(req, known)
        return self._local(start), self._local(end)

    def _local(self, when: datetime) -> datetime:
        return when.replace(tzinfo=self.tz) if when.tzinfo is None else when.astimezone(self.tz)

    def _window_any_zone(self, req: AnalysisRequest, known: _JobLookup) -> tuple[datetime, datetime]:
        now = self._clock()
        cfg = self.settings.bklog
        if req.since or req.until:
            until = req.until or now
            since = req.since or until - timedelta(days=cfg.lookback_days)
            return since, until
        step = known.status.step(req.step_instance_id) if known.status and req.step_instance_id else None
        if step is not None and step.start_time:
            end = step.end_time or now
            return (
                step.start_time - timedelta(seconds=cfg.pad_before_s),
                min(now, end + timedelta(seconds=cfg.pad_after_s)),
            )
        return now - timedelta(days=cfg.lookback_days), now

    # ------------------------------------------------------------------ main

    async def analyze(self, req: AnalysisRequest) -> DiagnosisReport:
        notices: list[str] = []
        if req.step_instance_id is None and not req.request_id:
            raise ValueError("need a step instance id or a request id")
        scope = scope_of(req.bk_scope_type, req.bk_scope_id)
        known = await self._known_job(req, scope)
        start, end = self._window(req, known)
        if self.bklog is None:
            collected = Collected(step_instance_id=req.step_instance_id, window=(start, end))
            collected.error = "未配置 BkLog（JOB_DOCTOR_BKLOG__BASE_URL / INDEX_SET_ID）"
        else:
            collector = Collector(self.bklog, self.templates, max_queries=self.settings.bklog.max_queries)
            collected = await collector.collect(
                start=start, end=end, step_instance_id=req.step_instance_id, request_id=req.request_id
            )
            if req.raise_on_config_error and collected.config_error:
                raise BkLogConfigError(collected.config_error)
        if self.metrics is not None:
            for q in collected.queries:
                self.metrics.bklog_queries.labels("error" if q.error else "ok").inc()
        step_id = req.step_instance_id if req.step_instance_id is not None else collected.step_instance_id
        cond: Condensed | None = None
        match: SignatureMatch | None = None
        if collected.records:
            cond = await asyncio.to_thread(
                condense, collected.records, step_instance_id=step_id, execute_count=req.execute_count
            )
            match = await asyncio.to_thread(self.catalog.best, cond.records)
        task = req.task_instance_id or (cond.task_instance_id if cond else None) or collected.task_instance_id
        hosts, hosts_gap = await self._step_facts(req, scope, known, task, step_id, cond)
        enrichment, gaps = await self._agents_from_logs(match, hosts)
        if known.gap:
            gaps.insert(0, known.gap)
        report = build_rule_report(
            RuleInputs(
                collected=collected,
                condensed=cond,
                match=match,
                step_instance_id=step_id,
                request_id=req.request_id,
                links=self._links(req, cond, step_id, hosts.scope if hosts else scope),
                enrichment=enrichment,
                notices=notices,
                gaps=gaps,
                hosts=hosts,
                hosts_gap=hosts_gap,
                scope=str(scope) if scope else None,
                now=self._clock(),
            )
        )
        if req.request_id and req.request_id not in report.request_ids and report.request_ids:
            report.request_ids.insert(0, req.request_id)
        if self.model_step is not None and req.use_model and cond is not None:
            try:
                improved = await self.model_step(report, cond, collected)
            except Exception as exc:  # the model is an improvement, never a point of failure
                log.warning("model_step_failed", error=repr(exc)[:200])
                improved = None
            if improved is not None:
                return improved
        elif not self.settings.llm.enabled and cond is not None:
            report.notices.append("未配置大模型，以下为规则库诊断。")
        return report

    # ------------------------------------------------------------------ extras

    def _links(
        self, req: AnalysisRequest, cond: Condensed | None, step_id: int | None, scope: Scope | None
    ) -> list[str]:
        web = self.settings.bkjob.web_url
        task = req.task_instance_id or (cond.task_instance_id if cond else None)
        if web is None or task is None:
            return []
        root = str(web).rstrip("/")
        ec = cond.execute_count if cond and cond.execute_count is not None else req.execute_count
        if scope is not None and step_id:
            link = f"{root}/{scope.type}/{scope.id}/execute/step/{task}?stepInstanceId={step_id}"
            return [link + (f"&retryCount={ec}" if ec is not None else "")]
        if step_id:
            return [
                f"{root}/api_execute/{task}?stepInstanceId={step_id}"
                + (f"&retryCount={ec}" if ec is not None else "")
            ]
        return [f"{root}/api_execute/{task}"]

    async def _step_facts(
        self,
        req: AnalysisRequest,
        scope: Scope | None,
        known: _JobLookup,
        task: int | None,
        step: int | None,
        cond: Condensed | None,
    ) -> tuple[StepFacts | None, str]:
        """BK-JOB's view of the step, or why it was not asked (a line for missing_info)."""
        cfg = self.settings.bkjob
        if self.bkjob is None:
            return None, (
                "未配置 BK-JOB 接口（JOB_DOCTOR_BKJOB__BASE_URL），报告没有失败主机的输出；"
                "脚本打印的错误行往往就是原因，可在 BK-JOB 步骤详情中查看"
            )
        if task is None or step is None:
            return (
                None,
                "日志中没有该步骤的作业实例 ID，无法向 BK-JOB 查询主机结果；可直接粘贴该步骤的 BK-JOB 链接",
            )
        if known.gap:  # the job the link named was already asked for and not found: said once
            return None, ""
        candidates = [parse_scope(s) for s in cfg.scopes]
        if scope is None and not candidates:
            return None, (
                "不知道该步骤属于哪个业务，没有读取失败主机的输出：粘贴该步骤的 BK-JOB 链接即可"
                "（链接中带业务 ID），或请管理员为本群配置业务（JOB_DOCTOR_CHAT__GROUP_SCOPES）"
                "或候选业务（JOB_DOCTOR_BKJOB__SCOPES）"
            )
        execute_count = cond.execute_count if cond and cond.execute_count is not None else req.execute_count
        facts = await gather(
            self.bkjob,
            self.gse,
            cfg,
            self.outputs,
            scope=scope,
            candidates=candidates,
            task=task,
            step=step,
            execute_count=execute_count,
            mask=self.mask,
            job=known.status,
        )
        return facts, ""

    async def _agents_from_logs(
        self, match: SignatureMatch | None, hosts: StepFacts | None
    ) -> tuple[list[str], list[str]]:
        """Agent state of the hosts a signature names by agent id (when BK-JOB's host groups did
        not already say it): facts for the cause, and what could not be learnt."""
        if match is None or "gse_agent_state" not in match.facts:
            return [], []
        if hosts is not None and any(g.status in self.outputs.agent_statuses for g in hosts.groups):
            return [], []
        ids = [a for a in (match.values.get("agent_id", "") or "").split("、") if a and a != "未知"]
        targets = [
            AgentTarget(label=a, agent_id=a.split(":", 1)[1] if a.startswith("1:") else a) for a in ids[:50]
        ]
        if not targets:
            return [], []
        facts = await agent_facts(self.gse, targets)
        lines = [
            f"GSE 当前 Agent {t.label} 状态：{facts.states[t.label]}。"
            for t in targets
            if t.label in facts.states
        ]
        return lines, [facts.gap] if facts.gap else []
