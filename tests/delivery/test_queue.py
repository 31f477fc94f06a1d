from __future__ import annotations

import asyncio

import pytest
from redis.crc import key_slot

from bot.core.models import AnalysisJob, ChatTarget, IncomingMessage, Requester
from bot.core.store import INBOX_SLOT, Store
from bot.core.topology import RedisTopology
from bot.delivery.outbox import Outbox
from bot.delivery.queue import DeadLetters, Inbox, InboxFull, JobQueue


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
    await q.complete(entries[0].id, job.request_key)
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


async def test_full_inbox_refuses_new_messages_and_never_trims(store: Store) -> None:
    inbox = Inbox(store, max_entries=3)
    await inbox.ensure_group()
    for i in range(3):
        assert await inbox.accept(f"fp{i}", _msg(f"m{i}"), window_s=60) is True
    with pytest.raises(InboxFull):
        await inbox.accept("fp3", _msg("m3"), window_s=60)
    assert await inbox.accept("fp0", _msg("m0"), window_s=60) is False  # a duplicate is still a duplicate
    # Nothing accepted was dropped to make room; the refused one was not stored.
    entries = await inbox.read("c1", count=10, block_ms=10)
    assert [e.item.text for e in entries if e.item] == ["m0", "m1", "m2"]
    await inbox.ack(entries[0].id)
    assert await inbox.accept("fp3", _msg("m3"), window_s=60) is True  # room again once one is processed


async def test_handed_back_entry_is_taken_at_once_without_counting_an_attempt(store: Store) -> None:
    q = JobQueue(store, inflight_ttl_s=60)
    await q.ensure_group()
    job = AnalysisJob(request_key="step:1", step_instance_id=1)
    await q.submit(job, _req("alice"))
    [entry] = await q.read("stopping", count=1, block_ms=10)
    # Long before the claim timeout nobody may take it...
    assert await q.reclaim("other", min_idle_ms=60_000) == []
    assert await q.hand_back("stopping") == [entry.id]
    # ...but once handed back the next reclaim takes it, as a first attempt.
    [taken] = await q.reclaim("other", min_idle_ms=60_000)
    assert (taken.id, taken.deliveries, taken.item) == (entry.id, 1, job)
    assert await q.hand_back("stopping") == []


async def test_reclaim_counts_how_often_an_entry_was_handed_out(store: Store) -> None:
    inbox = Inbox(store)
    await inbox.ensure_group()
    await inbox.accept("fp", _msg(), window_s=5)
    [first] = await inbox.read("w1", count=1, block_ms=10)
    assert first.deliveries == 1
    counts = []
    for consumer in ("w2", "w3"):
        await asyncio.sleep(0.03)
        [again] = await inbox.reclaim(consumer, min_idle_ms=20)
        counts.append(again.deliveries)
    assert counts == [2, 3]


async def test_concurrent_submits_make_one_entry_and_every_joiner_knows_it(store: Store) -> None:
    q = JobQueue(store, inflight_ttl_s=60)
    await q.ensure_group()
    job = AnalysisJob(request_key="step:77", step_instance_id=77)
    results = await asyncio.gather(*(q.submit(job, _req(f"user{i}")) for i in range(12)))
    assert sum(r.queued for r in results) == 1
    assert len({r.entry_id for r in results}) == 1
    assert not results[0].entry_id.startswith("new:")
    assert len(await q.read("w", count=10, block_ms=10)) == 1
    assert len(await q.requesters(job.request_key)) == 12


async def test_submit_takes_over_from_a_submitter_that_died_before_adding_the_entry(store: Store) -> None:
    q = JobQueue(store, inflight_ttl_s=60)
    await q.ensure_group()
    job = AnalysisJob(request_key="step:78", step_instance_id=78)
    inflight, askers = q._keys(job.request_key)
    # What a submitter leaves when it dies between marking the request and adding the entry.
    await store.redis.set(inflight, "new:1000", px=60_000)
    await store.redis.rpush(askers, _req("alice").model_dump_json())
    result = await q.submit(job, _req("bob"))
    assert result.queued is True
    [entry] = await q.read("w", count=10, block_ms=10)
    assert entry.id == result.entry_id
    assert [r.sender_id for r in await q.finish(job.request_key, entry.id)] == ["alice", "bob"]


async def test_dead_letters_keep_the_reason_and_the_payload(store: Store) -> None:
    dead = DeadLetters(store)
    assert await dead.count() == 0
    await dead.add(
        queue="jobs",
        entry_id="1-0",
        reason="delivery failed 3 times: 查找聊天窗失败",
        payload="{}",
        attempts=3,
        requester=_req("alice"),
    )
    [row] = await dead.entries()
    assert (row["queue"], row["entry"], row["attempts"]) == ("jobs", "1-0", "3")
    assert row["reason"] == "delivery failed 3 times: 查找聊天窗失败"
    assert Requester.model_validate_json(row["requester"]).sender_id == "alice"
    assert await dead.count() == 1


def test_every_key_a_script_touches_together_hashes_to_one_slot_on_a_cluster() -> None:
    store = Store(object(), prefix="jd:", topology=RedisTopology("cluster", "redis://h:1"))  # type: ignore[arg-type]
    jobs, inbox = JobQueue(store), Inbox(store)
    for request_key in ("step:20031265375", "step:1:ec2", "req:" + "ab" * 16):
        inflight, askers = jobs._keys(request_key)
        together = [inflight, askers, jobs._delivering(request_key, "1700000000000-0")]
        together.append(jobs.delivery_state(request_key, "1700000000000-0").key)
        assert len({key_slot(k.encode()) for k in together}) == 1, together
    accept = [store.key("dedup", "fp", slot=INBOX_SLOT), inbox.stream]
    assert len({key_slot(k.encode()) for k in accept}) == 1
    # ...while different request keys spread over the cluster.
    slots = {key_slot(jobs._keys(f"step:{n}")[0].encode()) for n in range(50)}
    assert len(slots) > 40
