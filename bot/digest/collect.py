"""What failed in the digest window, read from BK-JOB (reference bk-job.md §2.1, §4).

`get_job_instance_list` once per (business, failure status) — the API takes one `status` per
call — with every page read; then `get_job_instance_status` per failed job for its failed steps.
The client retries transient errors; what still fails becomes a `ReadProblem` the digest names
("业务 3：无权限读取（1640301）") while everything that could be read is still reported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from bot.clients.bkjob import BkJobClient, InstanceNotFound, UserNotVerified
from bot.clients.gateway import (
    ApiError,
    GatewayAuthError,
    GatewayError,
    GatewayRateLimited,
    UpstreamError,
)

log = structlog.get_logger(__name__)

DAY = timedelta(hours=24)
# BK-JOB's create_time bounds are inclusive: end 1 ms before the fire time so a job created exactly
# at the fire time belongs to the next digest, never to two.
_END_EPSILON = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class DigestWindow:
    """[start, end) in the digest's time zone; `date` is the fire date (YYYY-MM-DD)."""

    start: datetime
    end: datetime

    @classmethod
    def before(cls, moment: datetime) -> DigestWindow:
        if moment.tzinfo is None:
            raise ValueError("the digest window needs an aware datetime")
        return cls(start=moment - DAY, end=moment)

    @property
    def date(self) -> str:
        return self.end.date().isoformat()

    @property
    def query_end(self) -> datetime:
        return self.end - _END_EPSILON


@dataclass(frozen=True, slots=True)
class FailedJob:
    bk_biz_id: int
    job_instance_id: int
    name: str
    status: int | None
    create_time: datetime | None


@dataclass(frozen=True, slots=True)
class FailedStep:
    bk_biz_id: int
    job_instance_id: int
    job_name: str
    step_instance_id: int
    step_name: str
    status: int | None
    execute_count: int | None
    start_time: datetime | None
    end_time: datetime | None


@dataclass(frozen=True, slots=True)
class ReadProblem:
    """Something the digest could not read, in words a chat user understands."""

    bk_biz_id: int
    text: str  # e.g. "业务 3：无权限读取（1640301）"
    job_instance_id: int | None = None


def _error_words(err: GatewayError) -> str:
    ref = f"{err.code}" if err.code is not None else (f"HTTP {err.http_status}" if err.http_status else "")
    ref = f"（{ref}）" if ref else ""
    if isinstance(err, UserNotVerified):
        return (
            f"网关要求已认证的用户{ref}：请网关管理员为应用免用户认证，或开启 "
            "JOB_DOCTOR_BKJOB__USE_SYSTEM_API 并授权系统接口，或配置 JOB_DOCTOR_BK__ACCESS_TOKEN"
        )
    if isinstance(err, GatewayAuthError):
        return f"无权限读取{ref}"
    if isinstance(err, GatewayRateLimited):
        return f"请求被限流，重试后仍失败{ref}"
    if isinstance(err, UpstreamError):
        return f"BK-JOB 暂时不可用{ref}"
    if isinstance(err, InstanceNotFound):
        return f"作业实例不存在{ref}"
    if isinstance(err, ApiError):
        return f"接口返回错误{ref}：{err.message[:80]}"
    return f"读取失败{ref}"


def list_problem(bk_biz_id: int, err: GatewayError) -> ReadProblem:
    return ReadProblem(bk_biz_id, f"业务 {bk_biz_id}：{_error_words(err)}")


def status_problem(job: FailedJob, err: GatewayError) -> ReadProblem:
    words = _error_words(err)
    return ReadProblem(
        job.bk_biz_id,
        f"业务 {job.bk_biz_id} 作业 {job.job_instance_id}：步骤状态读取失败，{words}",
        job.job_instance_id,
    )


async def list_failed_jobs(
    bkjob: BkJobClient,
    *,
    biz_ids: Sequence[int],
    window: DigestWindow,
    statuses: Sequence[int],
    page_size: int = 500,
) -> tuple[list[FailedJob], list[ReadProblem]]:
    """Every failed job created in the window, per business, de-duplicated; plus what failed.

    The (business, status) lists run concurrently; one failing business does not hide the others.
    A business that fails for several statuses with the same error is named once.
    """
    pairs = [(biz, status) for biz in dict.fromkeys(biz_ids) for status in dict.fromkeys(statuses)]

    async def one(biz: int, status: int) -> tuple[int, list[FailedJob] | GatewayError]:
        try:
            items = await bkjob.get_job_instance_list(
                biz,
                create_time_start=window.start,
                create_time_end=window.query_end,
                status=status,
                page_size=page_size,
            )
        except GatewayError as err:
            log.warning("digest_list_failed", bk_biz_id=biz, status=status, error=type(err).__name__)
            return biz, err
        return biz, [
            FailedJob(
                bk_biz_id=biz,
                job_instance_id=i.job_instance_id,
                name=i.name,
                status=i.status if i.status is not None else status,
                create_time=i.create_time,
            )
            for i in items
            if i.job_instance_id
        ]

    results = await asyncio.gather(*(one(b, s) for b, s in pairs))
    jobs: dict[tuple[int, int], FailedJob] = {}
    problems: dict[str, ReadProblem] = {}
    for biz, got in results:
        if isinstance(got, GatewayError):
            problem = list_problem(biz, got)
            problems.setdefault(problem.text, problem)
            continue
        for job in got:
            # A job whose status changed between two status lists, or that shifted across a page
            # boundary while paging newest-first, is listed twice: keep it once.
            jobs.setdefault((job.bk_biz_id, job.job_instance_id), job)
    ordered = sorted(jobs.values(), key=lambda j: (j.bk_biz_id, j.job_instance_id))
    return ordered, list(problems.values())


async def failed_steps_of(bkjob: BkJobClient, job: FailedJob, statuses: Sequence[int]) -> list[FailedStep]:
    """The job's steps whose status is a failure status (raises GatewayError when unreadable)."""
    status = await bkjob.get_job_instance_status(job.bk_biz_id, job.job_instance_id, return_ip_result=False)
    wanted = set(statuses)
    name = job.name or status.job_instance.name
    return [
        FailedStep(
            bk_biz_id=job.bk_biz_id,
            job_instance_id=job.job_instance_id,
            job_name=name,
            step_instance_id=s.step_instance_id,
            step_name=s.name,
            status=s.status,
            execute_count=s.execute_count,
            start_time=s.start_time,
            end_time=s.end_time,
        )
        for s in status.steps
        if s.step_instance_id and s.status in wanted
    ]
