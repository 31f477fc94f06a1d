"""Build one digest: failed steps → rule-based analyses → groups by cause → new vs recurring.

Each failed step runs through the ordinary pipeline with rules only (`use_model=False`), its BkLog
window taken from the step's own start/end times (padded), so no extra BK-JOB call is made per
step. Analyses run with bounded concurrency behind a token bucket that caps the BkLog query rate;
a step is analysed at most once per run; a failed analysis is counted, never fatal.

Groups are keyed by failure signature (`sig:<id>`) or, for unmatched failures, by
(stage, fault side) (`unmatched:<stage>:<fault_side>`). The keys seen each day are kept in the
store for `history_days`, which is what "new" and "recurring" are measured against.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date as Date
from datetime import timedelta
from zoneinfo import ZoneInfo

import structlog

from bot.clients.bkjob import BkJobClient
from bot.clients.bklog import BkLogClient, QueryTemplates, load_query_templates
from bot.clients.gateway import GatewayError
from bot.core.models import STAGE_ZH, DiagnosisReport, FaultSide, Stage
from bot.core.settings import Settings
from bot.core.store import StoreError
from bot.diagnosis.pipeline import AnalysisRequest, Analyzer
from bot.diagnosis.signatures import Catalog, load_catalog
from bot.digest.collect import (
    DigestWindow,
    FailedJob,
    FailedStep,
    ReadProblem,
    failed_steps_of,
    list_failed_jobs,
    status_problem,
)
from bot.digest.history import DigestHistory, HistoryDay
from bot.digest.models import (
    BizTotal,
    Digest,
    DigestExample,
    DigestGroup,
    DigestStats,
    TrendDay,
    short_side,
)
from bot.digest.summary import Summarize
from bot.digest.throttle import DEFAULT_BKLOG_QUERIES_PER_S, ThrottledBkLog, TokenBucket, counting_step

log = structlog.get_logger(__name__)

TREND_DAYS = 7


def digest_analyzer(
    settings: Settings,
    bklog: BkLogClient | None,
    *,
    queries_per_s: float = DEFAULT_BKLOG_QUERIES_PER_S,
    templates: QueryTemplates | None = None,
    catalog: Catalog | None = None,
) -> Analyzer:
    """The digest's analyzer: rules only, BkLog behind the rate cap, no per-step BK-JOB or GSE calls
    (the step times come from the job status already read)."""
    throttled = ThrottledBkLog(bklog, TokenBucket(queries_per_s)) if bklog is not None else None
    return Analyzer(
        settings,
        bklog=throttled,
        templates=templates or load_query_templates(),
        catalog=catalog or load_catalog(),
    )


@dataclass
class StepResult:
    step: FailedStep
    report: DiagnosisReport | None
    error: str = ""
    queries: int = 0


def group_key(report: DiagnosisReport) -> str:
    if report.signature:
        return f"sig:{report.signature}"
    return f"unmatched:{report.stage}:{report.fault_side}"


def step_link(web_url: str | None, step: FailedStep) -> str | None:
    if not web_url:
        return None
    root = web_url.rstrip("/")
    return f"{root}/biz/{step.bk_biz_id}/execute/step/{step.job_instance_id}?stepInstanceId={step.step_instance_id}"


@dataclass
class _Run:
    window: DigestWindow
    problems: list[ReadProblem] = field(default_factory=list)
    results: dict[int, StepResult] = field(default_factory=dict)
    steps: dict[int, FailedStep] = field(default_factory=dict)


class DigestBuilder:
    def __init__(
        self,
        settings: Settings,
        *,
        bkjob: BkJobClient,
        analyzer: Analyzer,
        history: DigestHistory | None = None,
        summarize: Summarize | None = None,
        concurrency: int | None = None,
        page_size: int = 500,
        examples_per_group: int = 3,
        step_timeout_s: float = 180.0,
    ) -> None:
        self.settings = settings
        self.bkjob = bkjob
        self.analyzer = analyzer
        self.history = history
        self.summarize = summarize
        self.concurrency = max(1, concurrency or settings.digest.concurrency)
        self.page_size = page_size
        self.examples_per_group = max(1, examples_per_group)
        self.step_timeout_s = step_timeout_s
        self.tz = ZoneInfo(settings.digest.time_zone)
        web = settings.bkjob.web_url
        self.web_url = str(web) if web is not None else None

    # ------------------------------------------------------------------ public

    async def build(self, window: DigestWindow, *, record_history: bool = False) -> Digest:
        started = time.perf_counter()
        window = DigestWindow(window.start.astimezone(self.tz), window.end.astimezone(self.tz))
        statuses = self.settings.digest.failed_statuses
        jobs, problems = await list_failed_jobs(
            self.bkjob,
            biz_ids=self.settings.digest.biz_ids,
            window=window,
            statuses=statuses,
            page_size=self.page_size,
        )
        run = _Run(window, problems=list(problems))
        await self._collect_and_analyse(run, jobs, statuses)
        digest = await self._assemble(run, jobs, started)
        if self.summarize is not None and digest.groups:
            try:
                digest.summary = await self.summarize(digest)
            except Exception as exc:  # the summary is optional by design
                log.info("digest_summary_failed", error=type(exc).__name__)
        if record_history and self.history is not None:
            entry = HistoryDay(
                groups=[g.key for g in digest.groups],
                failed_steps=digest.total_failed_steps,
                failed_jobs=digest.total_failed_jobs,
            )
            await self.history.record(digest.date, entry)
        digest.stats.seconds = round(time.perf_counter() - started, 3)
        return digest

    # ------------------------------------------------------------------ stages

    async def _collect_and_analyse(self, run: _Run, jobs: list[FailedJob], statuses: Sequence[int]) -> None:
        status_gate = asyncio.Semaphore(self.concurrency)
        analysis_gate = asyncio.Semaphore(self.concurrency)

        async with asyncio.TaskGroup() as tg:

            async def per_job(job: FailedJob) -> None:
                try:
                    async with status_gate:
                        steps = await failed_steps_of(self.bkjob, job, statuses)
                except GatewayError as err:
                    run.problems.append(status_problem(job, err))
                    return
                except Exception as exc:  # an odd answer for one job must not end the digest
                    log.warning("digest_job_status_failed", job=job.job_instance_id, error=repr(exc)[:200])
                    run.problems.append(
                        ReadProblem(
                            job.bk_biz_id,
                            f"业务 {job.bk_biz_id} 作业 {job.job_instance_id}：步骤状态读取失败",
                            job.job_instance_id,
                        )
                    )
                    return
                for step in steps:
                    if step.step_instance_id in run.steps:
                        continue  # the same step is never analysed twice in one run
                    run.steps[step.step_instance_id] = step
                    tg.create_task(self._analyse_into(run, step, analysis_gate))

            for job in jobs:
                tg.create_task(per_job(job))

    async def _analyse_into(self, run: _Run, step: FailedStep, gate: asyncio.Semaphore) -> None:
        async with gate:
            run.results[step.step_instance_id] = await self.analyse(step, run.window)

    async def analyse(self, step: FailedStep, window: DigestWindow) -> StepResult:
        """One step through the pipeline, rules only; any failure is returned, never raised."""
        cfg = self.settings.bklog
        start = step.start_time or step.end_time or window.start
        end = step.end_time or window.end
        request = AnalysisRequest(
            step_instance_id=step.step_instance_id,
            task_instance_id=step.job_instance_id,
            bk_scope_type="biz",
            bk_scope_id=step.bk_biz_id,
            since=start - timedelta(seconds=cfg.pad_before_s),
            until=max(end, start) + timedelta(seconds=cfg.pad_after_s),
            use_model=False,
        )
        with counting_step() as stats:
            try:
                async with asyncio.timeout(self.step_timeout_s):
                    report = await self.analyzer.analyze(request)
            except Exception as exc:
                log.warning("digest_step_analysis_failed", step=step.step_instance_id, error=repr(exc)[:200])
                return StepResult(step, None, error=type(exc).__name__, queries=stats.queries)
        if stats.errors and not report.evidence and report.stage == "unknown":
            # BkLog failed for this step: an "unknown" report would hide that, so count it as failed.
            return StepResult(step, None, error="bklog", queries=stats.queries)
        return StepResult(step, report, queries=stats.queries)

    # ------------------------------------------------------------------ assembly

    async def _assemble(self, run: _Run, jobs: list[FailedJob], started: float) -> Digest:
        window = run.window
        analysed = [r for r in run.results.values() if r.report is not None]
        failed = [r for r in run.results.values() if r.report is None]
        members: dict[str, list[StepResult]] = defaultdict(list)
        for r in analysed:
            assert r.report is not None
            members[group_key(r.report)].append(r)

        previous: dict[str, HistoryDay] = {}
        if self.history is not None:
            try:
                previous = await self.history.previous(window.date)
            except (StoreError, OSError) as exc:
                log.warning("digest_history_unreadable", error=type(exc).__name__)
        seen_on: Counter[str] = Counter(k for day in previous.values() for k in set(day.groups))

        groups = [self._group(key, rs, seen_on, bool(previous)) for key, rs in members.items()]
        groups.sort(key=lambda g: (-g.count, g.signature is None, g.key))

        per_biz_jobs = Counter(j.bk_biz_id for j in jobs)
        per_biz_steps = Counter(s.bk_biz_id for s in run.steps.values())
        unreadable = {p.bk_biz_id for p in run.problems if p.job_instance_id is None}
        per_biz = [
            BizTotal(
                bk_biz_id=b,
                failed_jobs=per_biz_jobs[b],
                failed_steps=per_biz_steps[b],
                readable=b not in unreadable,
            )
            for b in dict.fromkeys(self.settings.digest.biz_ids)
        ]
        trend = [
            TrendDay(date=d, failed_steps=previous[d].failed_steps if d in previous else None)
            for d in (
                (Date.fromisoformat(window.date) - timedelta(days=i)).isoformat()
                for i in range(TREND_DAYS - 1, 0, -1)
            )
        ]
        trend.append(TrendDay(date=window.date, failed_steps=len(run.steps)))
        new = [g for g in groups if g.new]
        return Digest(
            date=window.date,
            time_zone=self.settings.digest.time_zone,
            window_start=window.start,
            window_end=window.end,
            total_failed_jobs=len(jobs),
            total_failed_steps=len(run.steps),
            groups=groups,
            new_signatures=[g.signature for g in new if g.signature],
            new_groups=[g.key for g in new],
            history_days=len(previous),
            per_biz=per_biz,
            problems=_problem_lines(run.problems),
            analysis_failed=len(failed),
            trend=trend,
            stats=DigestStats(
                steps_analysed=len(run.results),
                bklog_queries=sum(r.queries for r in run.results.values()),
                seconds=round(time.perf_counter() - started, 3),
            ),
        )

    def _group(self, key: str, rs: list[StepResult], seen_on: Counter[str], has_history: bool) -> DigestGroup:
        reports = [r.report for r in rs if r.report is not None]
        first = reports[0]
        stage: Stage = Counter(r.stage for r in reports).most_common(1)[0][0]
        side: FaultSide = Counter(r.fault_side for r in reports).most_common(1)[0][0]
        signature = first.signature
        if signature:
            entry = self.analyzer.catalog.get(signature)
            title = entry.spec.title if entry is not None else signature
        elif stage == "unknown" and side == "unknown":
            title = "未能判断原因（日志缺失或未匹配已知特征）"
        else:
            title = f"未匹配已知特征（{STAGE_ZH.get(stage, stage)}阶段 · {short_side(side)}）"
        latest = sorted(rs, key=_recency, reverse=True)
        rep = max(latest, key=lambda r: r.report.confidence if r.report else 0.0)
        action = _first_action(rep.report) if rep.report else ""
        return DigestGroup(
            key=key,
            signature=signature,
            title=title,
            stage=stage,
            fault_side=side,
            count=len(rs),
            jobs=len({r.step.job_instance_id for r in rs}),
            examples=self._examples(latest),
            action=action,
            new=has_history and seen_on[key] == 0,
            seen_days=seen_on[key],
        )

    def _examples(self, latest: list[StepResult]) -> list[DigestExample]:
        # Newest first, different job names before repeats of one job.
        chosen: list[StepResult] = []
        names: set[str] = set()
        for r in latest:
            if r.step.job_name not in names:
                chosen.append(r)
                names.add(r.step.job_name)
        for r in latest:
            if r not in chosen:
                chosen.append(r)
        return [
            DigestExample(
                bk_biz_id=r.step.bk_biz_id,
                job_instance_id=r.step.job_instance_id,
                step_instance_id=r.step.step_instance_id,
                name=r.step.job_name,
                step_name=r.step.step_name,
                link=step_link(self.web_url, r.step),
            )
            for r in chosen[: self.examples_per_group]
        ]


def _recency(r: StepResult) -> tuple[float, int]:
    moment = r.step.end_time or r.step.start_time
    return (moment.timestamp() if moment else 0.0, r.step.step_instance_id)


def _first_action(report: DiagnosisReport) -> str:
    # No action (e.g. no logs found): what would settle it is the most useful next step.
    for items in (report.actions.immediate, report.actions.root_fix, report.missing_info):
        for item in items:
            text = " ".join(item.split())
            if text:
                return text
    return ""


def _problem_lines(problems: list[ReadProblem]) -> list[str]:
    """Business-level problems as they are; per-job ones folded per business when there are many."""
    out: list[str] = []
    per_job: dict[tuple[int, str], list[ReadProblem]] = defaultdict(list)
    for p in problems:
        if p.job_instance_id is None:
            if p.text not in out:
                out.append(p.text)
        else:
            per_job[(p.bk_biz_id, p.text.split("：", 1)[-1])].append(p)
    for (biz, words), items in sorted(per_job.items()):
        if len(items) == 1:
            out.append(items[0].text)
        else:
            out.append(f"业务 {biz}：{len(items)} 个作业的{words}")
    return out
