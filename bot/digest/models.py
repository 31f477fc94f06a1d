"""The digest as data: groups of failed steps by cause, totals per business, the trend."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from bot.core.models import FAULT_SIDE_ZH, FaultSide, Stage


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


def short_side(fault_side: str) -> str:
    """The fault side's short Chinese name (用户问题, 环境问题, ...)."""
    return FAULT_SIDE_ZH.get(fault_side, fault_side).split("（", 1)[0]
