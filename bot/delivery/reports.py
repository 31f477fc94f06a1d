"""Finished reports in the store: a short "fresh" cache for repeat askers, a longer retention
for `详情 <id>` and feedback, each user's latest report, and feedback records."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from bot.core.models import DiagnosisReport, IncomingMessage
from bot.core.store import Store

RETENTION_S = 7 * 86400.0
# Feedback is bounded: a note (`不准确 <note>` accepted 200 KB) is cut, each report keeps its latest
# entries, and feedback and the disputed index expire.
FEEDBACK_NOTE_MAX_CHARS = 1000
FEEDBACK_PER_REPORT = 50
FEEDBACK_RETENTION_S = 90 * 86400.0
DISPUTED_MAX = 1000


@dataclass(frozen=True)
class StoredReport:
    request_key: str
    report: DiagnosisReport
    finished_at: float
    duration_s: float | None = None  # how long the analysis took


class ReportStore:
    def __init__(self, store: Store, *, fresh_s: float) -> None:
        self.store = store
        self.fresh_s = fresh_s

    def _k(self, request_key: str) -> str:
        return self.store.key("report", request_key)

    async def save(
        self, request_key: str, report: DiagnosisReport, *, duration_s: float | None = None
    ) -> None:
        data = {
            "report": report.model_dump(mode="json"),
            "finished_at": time.time(),
            "duration_s": duration_s,
        }
        await self.store.set_json(self._k(request_key), data, ttl_s=RETENTION_S)
        await self.store.redis.zadd(self.store.key("recent"), {request_key: time.time()})
        await self.store.redis.zremrangebyrank(self.store.key("recent"), 0, -201)

    async def get(self, request_key: str) -> StoredReport | None:
        data = await self.store.get_json(self._k(request_key))
        if not isinstance(data, dict):
            return None
        try:
            report = DiagnosisReport.model_validate(data.get("report"))
        except ValidationError:
            return None
        duration = data.get("duration_s")
        return StoredReport(
            request_key,
            report,
            float(data.get("finished_at", 0)),
            float(duration) if isinstance(duration, int | float) else None,
        )

    async def get_fresh(self, request_key: str) -> StoredReport | None:
        got = await self.get(request_key)
        if got is None or time.time() - got.finished_at > self.fresh_s:
            return None
        return got

    async def recent(self, limit: int = 20) -> list[StoredReport]:
        keys = await self.store.redis.zrevrange(self.store.key("recent"), 0, limit - 1)
        out = []
        for key in keys:
            got = await self.get(str(key))
            if got is not None:
                out.append(got)
        return out

    # ---- per-user latest report (for 详情 without id, and feedback)

    def _user_key(self, msg: IncomingMessage) -> str:
        return self.store.key("last", msg.channel, msg.chat_id, msg.sender_id)

    async def remember_for(self, channel: str, chat_id: str, sender_id: str, request_key: str) -> None:
        await self.store.redis.set(
            self.store.key("last", channel, chat_id, sender_id), request_key, px=int(RETENTION_S * 1000)
        )

    async def latest_for(self, msg: IncomingMessage) -> str | None:
        raw = await self.store.redis.get(self._user_key(msg))
        return None if raw is None else str(raw)

    # ---- feedback

    async def add_feedback(self, request_key: str, msg: IncomingMessage, verdict: str, note: str) -> None:
        now = time.time()
        entry = {
            "verdict": verdict,
            "note": note[:FEEDBACK_NOTE_MAX_CHARS],
            "by": (msg.sender_name or msg.sender_id)[:200],
            "chat": msg.chat_id[:200],
            "at": now,
        }
        key = self.store.key("feedback", request_key)
        keep_ms = int(FEEDBACK_RETENTION_S * 1000)
        # Not a transaction: the feedback list and the disputed index live in different cluster
        # slots, and each command is safe on its own (a lost trim or expiry is redone next time).
        pipe = self.store.redis.pipeline(transaction=False)
        pipe.rpush(key, json.dumps(entry, ensure_ascii=False))
        pipe.ltrim(key, -FEEDBACK_PER_REPORT, -1)
        pipe.pexpire(key, keep_ms)
        if verdict == "down":
            disputed = self.store.key("disputed", "at")
            pipe.zadd(disputed, {request_key: now})
            pipe.zremrangebyscore(disputed, "-inf", now - FEEDBACK_RETENTION_S)
            pipe.zremrangebyrank(disputed, 0, -DISPUTED_MAX - 1)
            pipe.pexpire(disputed, keep_ms)
            pipe.pexpire(self.store.key("disputed"), keep_ms)  # the older unbounded set ages out too
        await pipe.execute()

    async def feedback(self, request_key: str) -> list[dict[str, Any]]:
        raw = await self.store.redis.lrange(self.store.key("feedback", request_key), 0, -1)
        return [json.loads(r) for r in raw]

    async def disputed(self) -> list[str]:
        """Reports disputed (👎) within the feedback retention, plus any in the older unbounded set."""
        since = time.time() - FEEDBACK_RETENTION_S
        recent = await self.store.redis.zrangebyscore(self.store.key("disputed", "at"), since, "+inf")
        legacy = await self.store.redis.smembers(self.store.key("disputed"))
        return sorted({str(k) for k in recent} | {str(k) for k in legacy})
