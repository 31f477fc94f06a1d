"""The job worker on every backend: poison deliveries and entries go to the dead-letter stream,
the other requesters get their report, and a stopping worker hands its entries back at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
import redis.exceptions

from bot.core.metrics import Metrics
from bot.core.models import AnalysisJob, ChatTarget, DiagnosisReport, Requester
from bot.core.store import Store
from bot.delivery.queue import DeadLetters, JobQueue
from bot.delivery.reports import ReportStore
from bot.delivery.send import DeliveryFailed
from bot.delivery.worker import Analyze, JobWorker

JOB = AnalysisJob(request_key="step:20031265375", step_instance_id=20031265375)


def _req(chat: str, name: str) -> Requester:
    return Requester(target=ChatTarget(channel="worktool", chat_id=chat), sender_id=name, sender_name=name)


RENAMED = _req("群名已改", "alice")  # WorkTool cannot find this chat any more
BOB, CAROL = _req("运维群", "bob"), _req("运维群", "carol")


class World:
    def __init__(self, store: Store, *, max_attempts: int = 3, analyze: Analyze | None = None) -> None:
        self.store = store
        self.jobs = JobQueue(store, inflight_ttl_s=60)
        self.dead = DeadLetters(store)
        self.metrics = Metrics()
        self.delivered: list[str] = []
        self.refused: list[str] = []
        self.failures: list[str] = []
        self.analyses = 0
        self.worker = JobWorker(
            self.jobs,
            store,
            ReportStore(store, fresh_s=300),
            self.metrics,
            analyze=analyze or self.analyze,
            deliver_report=self.deliver_report,
            deliver_failure=self.deliver_failure,
            concurrency=2,
            claim_idle_s=0.3,
            max_attempts=max_attempts,
            timeout_s=10,
            dead=self.dead,
            retry_base_s=0.01,
        )

    async def analyze(self, job: AnalysisJob) -> DiagnosisReport:
        self.analyses += 1
        return DiagnosisReport(step_instance_id=job.step_instance_id, summary="脚本返回码非零")

    async def deliver_report(self, requester: Requester, request_key: str, salt: str) -> None:
        if requester.target.chat_id == RENAMED.target.chat_id:
            self.refused.append(requester.sender_id)
            raise DeliveryFailed("could not deliver part 1 via worktool: 查找聊天窗失败")
        self.delivered.append(requester.sender_id)

    async def deliver_failure(self, requester: Requester, job: AnalysisJob, salt: str) -> None:
        self.failures.append(requester.sender_id)

    def dead_count(self, reason: str) -> float:
        sample = self.metrics.registry.get_sample_value(
            "job_doctor_dead_letters_total", {"queue": "jobs", "reason": reason}
        )
        return sample or 0.0


@pytest.fixture
async def running() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            stuck = [t.get_stack(limit=5) for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            raise AssertionError(f"timed out; other tasks are at {stuck}")
        await asyncio.sleep(0.02)


async def test_a_requester_that_cannot_be_reached_is_dead_lettered_and_never_blocks_the_others(
    store: Store, running: list[asyncio.Task[None]]
) -> None:
    w = World(store, max_attempts=3)
    await w.jobs.ensure_group()
    for requester in (RENAMED, BOB, CAROL):  # the unreachable one asked first
        await w.jobs.submit(JOB, requester)
    running.append(asyncio.create_task(w.worker.run()))

    await _until(lambda: w.dead_count("delivery") == 1)
    await _until(lambda: not w.worker._inflight)
    assert sorted(w.delivered) == ["bob", "carol"]
    assert w.refused == ["alice"] * 3  # max_attempts, then never again
    assert w.analyses == 1
    [letter] = await w.dead.entries()
    assert letter["queue"] == "jobs"
    assert (
        letter["reason"] == "delivery failed 3 times: could not deliver part 1 via worktool: 查找聊天窗失败"
    )
    assert Requester.model_validate_json(letter["requester"]) == RENAMED
    assert AnalysisJob.model_validate_json(letter["payload"]).request_key == JOB.request_key
    assert await w.jobs.pending_count() == 0  # done with, not retried every claim period
    await asyncio.sleep(1.0)  # several claim periods: nothing runs or sends again
    assert w.refused == ["alice"] * 3 and w.analyses == 1


async def test_an_entry_whose_heartbeat_lags_is_not_started_twice_by_its_own_worker(
    store: Store, running: list[asyncio.Task[None]]
) -> None:
    w = World(store, max_attempts=3)
    deliver = w.deliver_report

    async def slow_delivery(requester: Requester, request_key: str, salt: str) -> None:
        await asyncio.sleep(0.4)  # longer than claim_idle_s
        await deliver(requester, request_key, salt)

    async def lost_heartbeat(consumer: str, entry_id: str) -> None:
        return None  # the loop stalled: the entry goes idle while still running here

    w.worker.deliver_report = slow_delivery
    w.jobs.touch = lost_heartbeat  # type: ignore[method-assign]
    await w.jobs.ensure_group()
    for requester in (RENAMED, BOB, CAROL):
        await w.jobs.submit(JOB, requester)
    running.append(asyncio.create_task(w.worker.run()))

    await _until(lambda: w.dead_count("delivery") == 1)
    await _until(lambda: not w.worker._inflight)
    await asyncio.sleep(0.5)
    assert sorted(w.delivered) == ["bob", "carol"]  # once each, though reclaimed while running
    assert w.refused == ["alice"] * 3 and w.analyses == 1


async def test_a_takeover_continues_the_attempt_count_of_a_delivery(store: Store) -> None:
    w = World(store, max_attempts=2)
    await w.jobs.ensure_group()
    await w.jobs.submit(JOB, RENAMED)
    [entry] = await w.jobs.read("first", count=1, block_ms=10)
    state = w.jobs.delivery_state(JOB.request_key, entry.id)
    await w.jobs.finish(JOB.request_key, entry.id)
    assert await state.failed(RENAMED) == 1  # the first worker failed once, then died
    await w.worker._deliver_all(entry, JOB, [RENAMED])
    assert w.refused == ["alice"]  # one more attempt, not two
    assert await w.dead.count() == 1


async def test_an_entry_that_keeps_killing_its_worker_is_given_up_and_its_askers_told(
    store: Store, running: list[asyncio.Task[None]]
) -> None:
    w = World(store, max_attempts=2)
    await w.jobs.ensure_group()
    await w.jobs.submit(JOB, BOB)
    # Two workers took it and died without a trace (no heartbeat, no ack).
    await w.jobs.read("dead-1", count=1, block_ms=10)
    await asyncio.sleep(0.35)
    await w.jobs.reclaim("dead-2", min_idle_ms=300)
    await asyncio.sleep(0.35)
    running.append(asyncio.create_task(w.worker.run()))

    await _until(lambda: w.dead_count("attempts") == 1)
    await _until(lambda: w.failures == ["bob"])
    assert w.analyses == 0  # the third hand-out is not run again
    [letter] = await w.dead.entries()
    assert letter["reason"] == "handed out 3 times without finishing"
    await _until(lambda: not w.worker._inflight)
    assert await w.jobs.pending_count() == 0


async def test_a_stopping_worker_hands_its_entries_back_for_another_to_take_at_once(
    store: Store, running: list[asyncio.Task[None]]
) -> None:
    started = asyncio.Event()

    async def endless(job: AnalysisJob) -> DiagnosisReport:
        started.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    stopping = World(store, analyze=endless)
    stopping.worker.claim_idle_ms = 60_000  # a long claim timeout: only a hand-back is fast
    await stopping.jobs.ensure_group()
    await stopping.jobs.submit(JOB, BOB)
    loop = asyncio.create_task(stopping.worker.run())
    running.append(loop)
    await asyncio.wait_for(started.wait(), 5)
    loop.cancel()
    await stopping.worker.stop(grace_s=0.05)

    [entry] = await stopping.jobs.reclaim("next-replica", min_idle_ms=60_000)
    assert entry.item == JOB and entry.deliveries == 1


async def test_a_store_outage_while_delivering_is_not_counted_as_a_failed_attempt(store: Store) -> None:
    w = World(store, max_attempts=1)
    await w.jobs.ensure_group()
    await w.jobs.submit(JOB, BOB)
    [entry] = await w.jobs.read("w", count=1, block_ms=10)
    await w.jobs.finish(JOB.request_key, entry.id)

    async def store_down(requester: Requester, request_key: str, salt: str) -> None:
        raise redis.exceptions.ConnectionError("Connection refused")

    w.worker.deliver_report = store_down
    with pytest.raises(redis.exceptions.ConnectionError):
        await w.worker._deliver_all(entry, JOB, [BOB])
    assert await w.dead.count() == 0  # the entry is taken up again as a whole, no attempt spent
    w.worker.deliver_report = w.deliver_report
    await w.worker._deliver_all(entry, JOB, [BOB])
    assert w.delivered == ["bob"] and await w.dead.count() == 0
