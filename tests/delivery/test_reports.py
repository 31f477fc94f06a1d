"""Feedback kept in the store is bounded: notes are cut, entries capped, everything expires."""

from __future__ import annotations

import time

import pytest

from bot.core.models import IncomingMessage
from bot.core.store import Store
from bot.delivery import reports as reports_module
from bot.delivery.reports import FEEDBACK_NOTE_MAX_CHARS, FEEDBACK_PER_REPORT, ReportStore

NINETY_DAYS_MS = 90 * 86400 * 1000


def _msg(sender: str = "张三") -> IncomingMessage:
    return IncomingMessage(channel="worktool", chat_id="运维群", is_group=True, sender_id=sender, text="👎")


async def test_a_200kb_note_is_cut_and_feedback_expires(store: Store) -> None:
    reports = ReportStore(store, fresh_s=300)
    await reports.add_feedback("step:1", _msg(), "down", "不准确" * 70_000)  # ~200 KB was stored whole
    (entry,) = await reports.feedback("step:1")
    assert len(entry["note"]) == FEEDBACK_NOTE_MAX_CHARS
    ttl = await store.redis.pttl(store.key("feedback", "step:1"))
    assert 0 < ttl <= NINETY_DAYS_MS
    assert 0 < await store.redis.pttl(store.key("disputed", "at")) <= NINETY_DAYS_MS
    assert await reports.disputed() == ["step:1"]


async def test_feedback_per_report_is_capped_and_old_disputes_drop_out(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports = ReportStore(store, fresh_s=300)
    for i in range(FEEDBACK_PER_REPORT + 20):
        await reports.add_feedback("step:2", _msg(f"u{i}"), "up", "ok")
    kept = await reports.feedback("step:2")
    assert len(kept) == FEEDBACK_PER_REPORT and kept[-1]["by"] == f"u{FEEDBACK_PER_REPORT + 19}"
    # a dispute from 91 days ago is no longer listed (and pruned on the next write)
    real = time.time()
    monkeypatch.setattr(reports_module.time, "time", lambda: real - 91 * 86400)
    await reports.add_feedback("step:old", _msg(), "down", "")
    monkeypatch.setattr(reports_module.time, "time", lambda: real)
    await reports.add_feedback("step:new", _msg(), "down", "")
    assert await reports.disputed() == ["step:new"]
    assert await store.redis.zcard(store.key("disputed", "at")) == 1
