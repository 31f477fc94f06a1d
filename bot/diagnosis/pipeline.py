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
from bot.clients.bklog import BkLogClient, QueryTemplates
from bot.clients.gateway import GatewayError
from bot.clients.gse import GseClient
from bot.core.metrics import Metrics
from bot.core.models import AnalysisJob, DiagnosisReport
from bot.core.settings import Settings
from bot.diagnosis.collector import Collected, Collector
from bot.diagnosis.condense import Condensed, condense
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
    ) -> None:
        self.settings = settings
        self.bklog = bklog
        self.templates = templates
        self.catalog = catalog
        self.bkjob = bkjob
        self.gse = gse
        self.metrics = metrics
        self.model_step = model_step
        self.tz = ZoneInfo(settings.bklog.time_zone)
        self._clock = clock or (lambda: datetime.now(self.tz))

    async def analyze_job(self, job: AnalysisJob) -> DiagnosisReport:
        return await self.analyze(AnalysisRequest.of_job(job))

    # ------------------------------------------------------------------ window

    async def _window(self, req: AnalysisRequest) -> tuple[datetime, datetime, str | None]:
        now = self._clock()
        cfg = self.settings.bklog
        if req.since or req.until:
            until = req.until or now
            since = req.since or until - timedelta(days=cfg.lookback_days)
            return since, until, None
        if self.bkjob and req.task_instance_id and req.bk_scope_id and req.step_instance_id:
            try:
                status = await self.bkjob.get_job_instance_status(
                    req.bk_scope_id, req.task_instance_id, bk_scope_type=req.bk_scope_type or "biz"
                )
                for step in status.steps:
                    if step.step_instance_id == req.step_instance_id and step.start_time:
                        end = step.end_time or now
                        return (
                            step.start_time - timedelta(seconds=cfg.pad_before_s),
                            min(now, end + timedelta(seconds=cfg.pad_after_s)),
                            None,
                        )
            except GatewayError as exc:
                return now - timedelta(days=cfg.lookback_days), now, f"BK-JOB 查询步骤时间失败：{exc.zh}"
        return now - timedelta(days=cfg.lookback_days), now, None

    # ------------------------------------------------------------------ main

    async def analyze(self, req: AnalysisRequest) -> DiagnosisReport:
        notices: list[str] = []
        if req.step_instance_id is None and not req.request_id:
            raise ValueError("need a step instance id or a request id")
        start, end, note = await self._window(req)
        if note:
            notices.append(note)
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
        enrichment = await self._enrich(match, req, cond)
        report = build_rule_report(
            RuleInputs(
                collected=collected,
                condensed=cond,
                match=match,
                step_instance_id=step_id,
                request_id=req.request_id,
                links=self._links(req, cond, step_id),
                enrichment=enrichment,
                notices=notices,
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

    def _links(self, req: AnalysisRequest, cond: Condensed | None, step_id: int | None) -> list[str]:
        web = self.settings.bkjob.web_url
        task = req.task_instance_id or (cond.task_instance_id if cond else None)
        if web is None or task is None:
            return []
        root = str(web).rstrip("/")
        ec = cond.execute_count if cond and cond.execute_count is not None else req.execute_count
        if req.bk_scope_id and step_id:
            scope = req.bk_scope_type or "biz"
            link = f"{root}/{scope}/{req.bk_scope_id}/execute/step/{task}?stepInstanceId={step_id}"
            return [link + (f"&retryCount={ec}" if ec is not None else "")]
        if step_id:
            return [
                f"{root}/api_execute/{task}?stepInstanceId={step_id}"
                + (f"&retryCount={ec}" if ec is not None else "")
            ]
        return [f"{root}/api_execute/{task}"]

    async def _enrich(
        self, match: SignatureMatch | None, req: AnalysisRequest, cond: Condensed | None
    ) -> list[str]:
        """Optional facts from GSE / BK-JOB; each failure is noted, never fatal."""
        out: list[str] = []
        if self.gse is not None and match is not None and "gse_agent_state" in match.facts:
            agents = [a for a in (match.values.get("agent_id", "") or "").split("、") if a and a != "未知"]
            agents = [a.split(":", 1)[1] if a.startswith("1:") else a for a in agents][:50]
            if agents:
                try:
                    states = await self.gse.agent_states(agents)
                    for agent in agents:
                        st = states.get(agent)
                        if st is None or not st.found:
                            out.append(
                                f"GSE 当前查不到 Agent {agent} 的状态（可能未安装或 agent id 不匹配）。"
                            )
                        else:
                            alive = "正常" if st.alive else "异常"
                            out.append(f"GSE 当前 Agent {agent} 状态：{st.status_zh}（{alive}）。")
                except GatewayError as exc:
                    out.append(f"查询 GSE Agent 状态失败：{exc.zh}")
        if (
            self.bkjob is not None
            and req.bk_scope_id
            and cond
            and cond.task_instance_id
            and cond.step_instance_id
        ):
            try:
                step = await self.bkjob.get_step_instance_status(
                    req.bk_scope_id,
                    cond.task_instance_id,
                    cond.step_instance_id,
                    bk_scope_type=req.bk_scope_type or "biz",
                )
                for group in step.groups[:5]:
                    ips = "、".join(h.ip or str(h.bk_host_id) for h in group.hosts[:5])
                    more = "等" if len(group.hosts) > 5 else ""
                    out.append(
                        f"BK-JOB 主机结果：{group.result_type_desc or group.result_type} {group.host_size} 台（{ips}{more}）"
                    )
            except GatewayError as exc:
                out.append(f"查询 BK-JOB 步骤状态失败：{exc.zh}")
            except AttributeError:
                pass
        return out
