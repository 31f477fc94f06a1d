"""What earlier digests saw: the group keys and totals per day, for "new" and the trend."""

from __future__ import annotations

from datetime import date as Date
from datetime import timedelta

from pydantic import BaseModel, Field

from bot.core.store import Store

DEFAULT_HISTORY_DAYS = 14


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
        raw = await self.store.get_many([self.key(d) for d in dates])
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
