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
import contextlib
import contextvars
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date as Date
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import structlog
from pydantic import BaseModel, Field

from bot.app.services import build_bklog
from bot.clients.bkjob import BkJobClient
from bot.clients.bklog import BkLogClient, SearchResult, load_query_templates
from bot.clients.gateway import GatewayError
from bot.core.models import FAULT_SIDE_ZH, STAGE_ZH, DiagnosisReport, FaultSide, Stage
from bot.core.settings import Settings
from bot.core.store import Store, StoreError
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

log = structlog.get_logger(__name__)

DEFAULT_BKLOG_QUERIES_PER_S = 20.0
DEFAULT_HISTORY_DAYS = 14
TREND_DAYS = 7

Summarize = Callable[["Digest"], Awaitable[str | None]]


# --------------------------------------------------------------------------- BkLog rate cap


class TokenBucket:
    """At most `rate_per_s` acquisitions per second on average, bursts up to `burst`."""

    def __init__(
        self,
        rate_per_s: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.rate = rate_per_s
        self.capacity = burst if burst is not None else max(1.0, rate_per_s)
        self._clock = clock
        self._tokens = self.capacity
        self._last = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:  # FIFO: waiters are served in order, none starves
            while True:
                now = self._clock()
                self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)


@dataclass
class QueryStats:
    """BkLog queries of one step's analysis (shared with the collector's child tasks)."""

    queries: int = 0
    errors: int = 0


_STEP_STATS: contextvars.ContextVar[QueryStats | None] = contextvars.ContextVar(
    "digest_step_stats", default=None
)


class ThrottledBkLog(BkLogClient):
    """The analyzer's BkLog client behind a token bucket; counts queries per run and per step."""

    def __init__(self, inner: BkLogClient, bucket: TokenBucket) -> None:
        # Same configuration and transport as `inner` (no second setup to keep in sync).
        vars(self).update(vars(inner))
        self._inner = inner
        self._bucket = bucket
        self.queries = 0
        self.errors = 0

    async def search(
        self,
        query_string: str,
        start: datetime,
        end: datetime,
        *,
        size_cap: int | None = None,
        filters: Sequence[Mapping[str, Any]] = (),
    ) -> SearchResult:
        await self._bucket.acquire()
        stats = _STEP_STATS.get()
        self.queries += 1
        if stats is not None:
            stats.queries += 1
        try:
            return await self._inner.search(query_string, start, end, size_cap=size_cap, filters=filters)
        except GatewayError:
            self.errors += 1
            if stats is not None:
                stats.errors += 1
            raise


def make_digest_analyzer(
    settings: Settings,
    session: aiohttp.ClientSession,
    *,
    bklog_queries_per_s: float = DEFAULT_BKLOG_QUERIES_PER_S,
    catalog: Catalog | None = None,
) -> Analyzer:
    """A rules-only analyzer for the digest: throttled BkLog, no per-step BK-JOB or GSE calls."""
    inner = build_bklog(settings, session)
    bklog = ThrottledBkLog(inner, TokenBucket(bklog_queries_per_s)) if inner is not None else None
    return Analyzer(
        settings,
        bklog=bklog,
        templates=load_query_templates(),
        catalog=catalog or load_catalog(),
        bkjob=None,  # the step times come from the job status already read; nothing more to ask
        gse=None,
    )


# --------------------------------------------------------------------------- digest model


class DigestExample(BaseModel):
    bk_biz_id: int
    job_instance_id: int
    step_instance_id: int
    name: str  # the job instance's name
    step_name: str = ""
    link: str | None = None


class DigestGroup(BaseModel):
    key: str  # "sig:<id>" or "unmatched:<stage>:<fault_side>"
    signature: str | None
    title: str
    stage: Stage
    fault_side: FaultSide
    count: int  # failed steps
    jobs: int
    examples: list[DigestExample] = Field(default_factory=list)
    action: str = ""
    new: bool = False
    seen_days: int = 0  # on how many of the previous history days this group occurred


class BizTotal(BaseModel):
    bk_biz_id: int
    failed_jobs: int
    failed_steps: int
    readable: bool = True  # False: its job list could not be read (see `problems`)


class TrendDay(BaseModel):
    date: str
    failed_steps: int | None  # None: no digest recorded for that day


class DigestStats(BaseModel):
    steps_analysed: int = 0
    bklog_queries: int = 0
    seconds: float = 0.0


class Digest(BaseModel):
    date: str
    time_zone: str
    window_start: datetime
    window_end: datetime
    total_failed_jobs: int
    total_failed_steps: int
    groups: list[DigestGroup] = Field(default_factory=list)
    new_signatures: list[str] = Field(default_factory=list)
    new_groups: list[str] = Field(default_factory=list)
    history_days: int = 0  # previous days with a recorded digest (0: nothing to compare with)
    per_biz: list[BizTotal] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    analysis_failed: int = 0
    trend: list[TrendDay] = Field(default_factory=list)
    summary: str | None = None
    stats: DigestStats = Field(default_factory=DigestStats)

    @property
    def empty(self) -> bool:
        """Nothing failed and everything could be read: the "昨日无失败作业" day."""
        return self.total_failed_jobs == 0 and not self.problems

    def contract_json(self) -> dict[str, Any]:
        """DESIGN.md's `digest --json` shape, plus additive keys."""
        return {
            "date": self.date,
            "window": {
                "start": self.window_start.isoformat(timespec="seconds"),
                "end": self.window_end.isoformat(timespec="seconds"),
            },
            "total_failed_jobs": self.total_failed_jobs,
            "total_failed_steps": self.total_failed_steps,
            "groups": [
                {
                    "signature": g.signature,
                    "stage": g.stage,
                    "fault_side": g.fault_side,
                    "count": g.count,
                    "examples": [
                        {
                            "bk_biz_id": e.bk_biz_id,
                            "job_instance_id": e.job_instance_id,
                            "step_instance_id": e.step_instance_id,
                            "name": e.name,
                            "step_name": e.step_name,
                            "link": e.link,
                        }
                        for e in g.examples
                    ],
                    "key": g.key,
                    "title": g.title,
                    "jobs": g.jobs,
                    "action": g.action,
                    "new": g.new,
                    "seen_days": g.seen_days,
                }
                for g in self.groups
            ],
            "new_signatures": list(self.new_signatures),
            "time_zone": self.time_zone,
            "new_groups": list(self.new_groups),
            "history_days": self.history_days,
            "per_biz": [b.model_dump() for b in self.per_biz],
            "problems": list(self.problems),
            "analysis_failed": self.analysis_failed,
            "trend": [t.model_dump() for t in self.trend],
            "summary": self.summary,
            "stats": self.stats.model_dump(),
        }


# --------------------------------------------------------------------------- history


class HistoryDay(BaseModel):
    groups: list[str] = Field(default_factory=list)
    failed_steps: int = 0
    failed_jobs: int = 0


class DigestHistory:
    """Group keys and totals per digest date, kept `days` (+ margin) in the store."""

    def __init__(self, store: Store, *, days: int = DEFAULT_HISTORY_DAYS) -> None:
        self.store = store
        self.days = max(1, days)

    def key(self, day: str) -> str:
        return self.store.key("digest", "history", day)

    async def previous(self, day: str, days: int | None = None) -> dict[str, HistoryDay]:
        """Recorded days among the `days` before `day` (not `day` itself)."""
        n = days if days is not None else self.days
        base = Date.fromisoformat(day)
        dates = [(base - timedelta(days=i)).isoformat() for i in range(1, n + 1)]
        raw = await self.store.redis.mget([self.key(d) for d in dates])
        out: dict[str, HistoryDay] = {}
        for d, value in zip(dates, raw, strict=True):
            if value is None:
                continue
            try:
                out[d] = HistoryDay.model_validate_json(value)
            except ValueError:
                continue
        return out

    async def record(self, day: str, entry: HistoryDay) -> None:
        ttl = (self.days + 2) * 86400.0
        await self.store.set_json(self.key(day), entry.model_dump(), ttl_s=ttl)


# --------------------------------------------------------------------------- model summary


@contextlib.asynccontextmanager
async def model_summarizer(settings: Settings) -> AsyncIterator[Summarize | None]:
    """The optional one-paragraph model summary (None when no model is configured)."""
    if not settings.llm.enabled:
        yield None
        return
    from bot.llm.client import LlmClient
    from bot.llm.diagnose import summarize_digest
    from bot.llm.prompts import PromptLibrary
    from bot.llm.scrub import Scrubber

    llm = LlmClient.from_settings(settings.llm)
    prompts = PromptLibrary()
    scrubber = Scrubber(settings.secret_values())

    async def summarize(digest: Digest) -> str | None:
        groups = [
            {
                # the prompt shows `signature`; the Chinese title reads better to the model
                "signature": f"{g.title}（{g.signature}）" if g.signature else None,
                "stage": g.stage,
                "fault_side": g.fault_side,
                "count": g.count,
            }
            for g in digest.groups[:20]
        ]
        return await summarize_digest(
            llm,
            prompts,
            date=digest.date,
            total_failed_steps=digest.total_failed_steps,
            groups=groups,
            deadline_s=settings.llm.timeout_s,
            scrubber=scrubber,
        )

    try:
        yield summarize
    finally:
        await llm.aclose()


# --------------------------------------------------------------------------- building


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


def short_side(fault_side: str) -> str:
    return FAULT_SIDE_ZH.get(fault_side, fault_side).split("（", 1)[0]


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
        stats = QueryStats()
        token = _STEP_STATS.set(stats)
        try:
            async with asyncio.timeout(self.step_timeout_s):
                report = await self.analyzer.analyze(request)
        except Exception as exc:
            log.warning("digest_step_analysis_failed", step=step.step_instance_id, error=repr(exc)[:200])
            return StepResult(step, None, error=type(exc).__name__, queries=stats.queries)
        finally:
            _STEP_STATS.reset(token)
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
