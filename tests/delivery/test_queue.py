from __future__ import annotations

import asyncio

from bot.core.models import AnalysisJob, ChatTarget, IncomingMessage, Requester
from bot.core.store import Store
from bot.delivery.outbox import Outbox
from bot.delivery.queue import Inbox, JobQueue


def _msg(text: str = "@bot 20031265375") -> IncomingMessage:
    return IncomingMessage(channel="worktool", chat_id="ops", is_group=True, sender_id="alice", text=text)


def _req(name: str) -> Requester:
    return Requester(target=ChatTarget(channel="worktool", chat_id="ops"), sender_id=name, sender_name=name)


async def test_inbox_accepts_once_per_window(store: Store) -> None:
    inbox = Inbox(store)
    await inbox.ensure_group()
    results = await asyncio.gather(*(inbox.accept("fp1", _msg(), window_s=5) for _ in range(3)))
    assert results.count(True) == 1
    assert await inbox.accept("fp2", _msg("other"), window_s=5) is True
    entries = await inbox.read("c1", count=10, block_ms=10)
    assert [e.item.text for e in entries if e.item] == ["@bot 20031265375", "other"]
    for e in entries:
        await inbox.ack(e.id)
    assert await inbox.read("c1", count=10, block_ms=10) == []


async def test_unacked_entry_is_reclaimed_by_another_consumer(store: Store) -> None:
    inbox = Inbox(store)
    await inbox.ensure_group()
    await inbox.accept("fp", _msg(), window_s=5)
    first = await inbox.read("dying-worker", count=1, block_ms=10)
    assert len(first) == 1  # read but never acked: the worker "dies"
    assert await inbox.reclaim("survivor", min_idle_ms=10_000) == []  # not idle long enough yet
    await asyncio.sleep(0.05)
    taken = await inbox.reclaim("survivor", min_idle_ms=20)
    assert [e.id for e in taken] == [first[0].id]
    await inbox.ack(taken[0].id)
    assert await inbox.reclaim("survivor", min_idle_ms=0) == []


async def test_jobs_are_single_flight_and_collect_requesters(store: Store) -> None:
    q = JobQueue(store, inflight_ttl_s=60)
    await q.ensure_group()
    job = AnalysisJob(request_key="step:20031265375", step_instance_id=20031265375)
    r1 = await q.submit(job, _req("alice"))
    r2 = await q.submit(job, _req("bob"))
    r3 = await q.submit(job, _req("alice"))  # same person again: not listed twice
    assert (r1.queued, r2.queued, r3.queued) == (True, False, False)
    assert r2.entry_id == r1.entry_id
    entries = await q.read("w1", count=10, block_ms=10)
    assert len(entries) == 1 and entries[0].item == job
    askers = await q.finish(job.request_key, entries[0].id)
    assert [r.sender_id for r in askers] == ["alice", "bob"]
    # a worker that died while delivering: whoever reclaims the entry gets the same list
    assert [r.sender_id for r in await q.finish(job.request_key, entries[0].id)] == ["alice", "bob"]
    await q.complete(entries[0].id)
    # after finishing, the next ask is a new job
    assert (await q.submit(job, _req("carol"))).queued is True


async def test_requeue_replaces_entry_and_keeps_requesters(store: Store) -> None:
    q = JobQueue(store, inflight_ttl_s=60)
    await q.ensure_group()
    job = AnalysisJob(request_key="req:ab", request_id="ab" * 16)
    await q.submit(job, _req("alice"))
    [entry] = await q.read("w1", count=1, block_ms=10)
    assert entry.item is not None
    new_id = await q.requeue(entry.id, entry.item.model_copy(update={"attempts": 1}))
    assert new_id != entry.id
    [again] = await q.read("w1", count=1, block_ms=10)
    assert again.id == new_id and again.item is not None and again.item.attempts == 1
    assert [r.sender_id for r in await q.requesters(job.request_key)] == ["alice"]
    assert await q.pending_count() == 1


async def test_outbox_send_once_and_recover_stale(store: Store) -> None:
    ob = Outbox(store, stale_after_s=1)
    assert await ob.begin("job1", 0, now_ms=1_000) == "send"
    assert await ob.begin("job1", 0, now_ms=1_500) == "busy"  # another worker is sending it right now
    assert await ob.begin("job1", 0, now_ms=3_000) == "recover"  # the sender died mid-send
    await ob.done("job1", 0)
    assert await ob.begin("job1", 0, now_ms=9_000) == "skip"
    assert await ob.begin("job1", 1, now_ms=9_000) == "send"
    await ob.abort("job1", 1)
    assert await ob.begin("job1", 1, now_ms=9_100) == "send"


async def test_touched_entry_is_not_reclaimed(store: Store) -> None:
    inbox = Inbox(store)
    await inbox.ensure_group()
    await inbox.accept("fp", _msg(), window_s=5)
    [entry] = await inbox.read("busy-worker", count=1, block_ms=10)
    for _ in range(3):  # a long analysis keeps its entry alive
        await asyncio.sleep(0.04)
        await inbox.touch("busy-worker", entry.id)
        assert await inbox.reclaim("other", min_idle_ms=30) == []
    await asyncio.sleep(0.06)  # the worker died: no more heartbeats
    assert [e.id for e in await inbox.reclaim("other", min_idle_ms=30)] == [entry.id]
