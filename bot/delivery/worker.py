"""Consumers of the durable queues: the inbox (messages → router) and the jobs (analyses).

Each runs as a daemon loop with a bounded pool. An entry is acknowledged only after its effect
is durable (the reply went out, the report was delivered); a process that dies leaves it
pending and another consumer reclaims it after `claim_idle_s`; a process that stops hands its
unfinished entries back, and another consumer takes them within seconds.

Nothing is retried forever: an entry handed out more than `max_attempts` times (its worker kept
dying or failing on it) and a report that cannot be delivered to one requester after
`max_attempts` attempts go to the dead-letter stream with the reason; the other requesters of
the job get their report regardless.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import structlog
from pydantic import BaseModel
from redis.exceptions import RedisError

from bot.core.metrics import Metrics
from bot.core.models import AnalysisJob, DiagnosisReport, IncomingMessage, Requester
from bot.core.store import Store
from bot.delivery.queue import DeadLetters, Entry, Inbox, JobQueue, StreamQueue, requester_id
from bot.delivery.reports import ReportStore
from bot.delivery.send import DeliveryBusy

log = structlog.get_logger(__name__)
T = TypeVar("T", bound=BaseModel)

Analyze = Callable[[AnalysisJob], Awaitable[DiagnosisReport]]
DeliverReport = Callable[[Requester, str, str], Awaitable[None]]  # requester, request_key, delivery salt
DeliverFailure = Callable[[Requester, AnalysisJob, str], Awaitable[None]]
HandleMessage = Callable[[IncomingMessage], Awaitable[object]]


def raise_if_cancelling() -> None:
    """Honour a cancel request a library swallowed.

    Python 3.11's `asyncio.wait_for` (redis-py wraps every command in it) can lose a cancellation
    that races a command finishing; a loop that then carries on never stops and shutdown hangs.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class _Loop(Generic[T]):
    """Read + reclaim loop over one stream with at most `concurrency` entries in flight."""

    def __init__(
        self,
        queue: StreamQueue[T],
        *,
        name: str,
        concurrency: int,
        claim_idle_s: float,
        max_attempts: int,
        dead: DeadLetters,
        metrics: Metrics,
    ) -> None:
        self.queue = queue
        self.name = name
        self.consumer = f"{consumer_name()}-{name}"
        self.sem = asyncio.Semaphore(concurrency)
        self.claim_idle_ms = int(claim_idle_s * 1000)
        # Often enough that work handed back by a stopping replica starts within seconds; an idle
        # XAUTOCLAIM is one cheap command.
        self.reclaim_every_s = min(2.0, max(0.2, claim_idle_s / 4))
        self.max_attempts = max_attempts
        self.dead = dead
        self.metrics = metrics
        self._inflight: set[asyncio.Task[None]] = set()
        self._active: set[str] = set()  # ids of the entries those tasks run

    async def process(self, entry: Entry[T]) -> None:
        raise NotImplementedError

    async def give_up(self, entry: Entry[T], reason: str) -> None:
        """Move an entry that keeps failing to the dead-letter stream and acknowledge it."""
        await self.dead.add(
            queue=self.name,
            entry_id=entry.id,
            reason=reason,
            payload=entry.raw,
            attempts=entry.deliveries - 1,
        )
        self.metrics.dead_letters.labels(self.name, "attempts").inc()
        log.error("entry_dead_lettered", loop=self.name, entry=entry.id, reason=reason)
        await self.queue.ack(entry.id)

    async def _heartbeat(self, entry_id: str) -> None:
        # Long analyses outlive claim_idle_s: keep the entry ours so no other replica runs it too.
        interval = max(0.2, self.claim_idle_ms / 3000)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.queue.touch(self.consumer, entry_id)
            except (RedisError, OSError) as exc:
                log.warning("heartbeat_failed", entry=entry_id, error=type(exc).__name__)

    async def _run_one(self, entry: Entry[T]) -> None:
        beat = asyncio.create_task(self._heartbeat(entry.id), name=f"heartbeat:{entry.id}")
        try:
            if entry.deliveries > self.max_attempts:
                await self.give_up(entry, f"handed out {entry.deliveries} times without finishing")
            else:
                await self.process(entry)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an entry must never kill the loop; it stays pending for reclaim
            log.error("entry_failed", loop=self.name, entry=entry.id, error=repr(exc)[:300])
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
            self.sem.release()

    async def run(self) -> None:
        backoff = 0.5
        last_reclaim = 0.0
        grouped = False  # (re)create the consumer group once, and again only after an error
        while True:
            raise_if_cancelling()
            try:
                if not grouped:
                    await self.queue.ensure_group()
                    grouped = True
                entries: list[Entry[T]] = []
                free = self.sem._value  # how many more we may start now
                # Never claim more than we start at once: a claimed entry that waits for a slot
                # has no heartbeat and would be taken over while still ours.
                if free > 0 and time.monotonic() - last_reclaim > self.reclaim_every_s:
                    entries = await self.queue.reclaim(
                        self.consumer, min_idle_ms=self.claim_idle_ms, count=free
                    )
                    last_reclaim = time.monotonic()
                if not entries and free > 0:
                    entries = await self.queue.read(self.consumer, count=free, block_ms=500)
                backoff = 0.5
            except (RedisError, OSError) as exc:
                grouped = False  # e.g. NOGROUP after the stream was deleted
                log.warning("queue_unreachable", loop=self.name, error=type(exc).__name__, retry_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)  # a failover takes seconds: do not sleep through it
                continue
            if not entries and self.sem._value == 0:
                await asyncio.sleep(0.05)
            for entry in entries:
                if entry.id in self._active:
                    # Our own entry whose heartbeat lagged (a stalled loop): it is still running
                    # here, so reclaiming it must not start it a second time.
                    continue
                await self.sem.acquire()
                task = asyncio.create_task(self._run_one(entry), name=f"{self.name}:{entry.id}")
                self._inflight.add(task)
                self._active.add(entry.id)
                task.add_done_callback(self._inflight.discard)
                task.add_done_callback(functools.partial(self._finished, entry.id))

    def _finished(self, entry_id: str, _task: asyncio.Task[None]) -> None:
        self._active.discard(entry_id)

    async def stop(self, grace_s: float) -> None:
        """Let in-flight entries finish within the grace period, then hand the rest back at once."""
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        try:
            handed = await self.queue.hand_back(self.consumer)
        except (RedisError, OSError) as exc:  # they come back after claim_idle_s instead
            log.warning("hand_back_failed", loop=self.name, error=type(exc).__name__)
            return
        if handed:
            log.info("entries_handed_back", loop=self.name, entries=len(handed))


class InboxConsumer(_Loop[IncomingMessage]):
    def __init__(
        self,
        inbox: Inbox,
        handle: HandleMessage,
        *,
        concurrency: int,
        claim_idle_s: float,
        max_attempts: int,
        dead: DeadLetters,
        metrics: Metrics,
    ) -> None:
        super().__init__(
            inbox,
            name="inbox",
            concurrency=concurrency,
            claim_idle_s=claim_idle_s,
            max_attempts=max_attempts,
            dead=dead,
            metrics=metrics,
        )
        self.handle = handle

    async def process(self, entry: Entry[IncomingMessage]) -> None:
        if entry.item is not None:
            await self.handle(entry.item)
        await self.queue.ack(entry.id)


class JobWorker(_Loop[AnalysisJob]):
    def __init__(
        self,
        jobs: JobQueue,
        store: Store,
        reports: ReportStore,
        metrics: Metrics,
        *,
        analyze: Analyze,
        deliver_report: DeliverReport,
        deliver_failure: DeliverFailure,
        concurrency: int,
        claim_idle_s: float,
        max_attempts: int,
        timeout_s: float,
        dead: DeadLetters,
        retry_base_s: float = 1.0,
    ) -> None:
        super().__init__(
            jobs,
            name="jobs",
            concurrency=concurrency,
            claim_idle_s=claim_idle_s,
            max_attempts=max_attempts,
            dead=dead,
            metrics=metrics,
        )
        self.jobs = jobs
        self.store = store
        self.reports = reports
        self.analyze = analyze
        self.deliver_report = deliver_report
        self.deliver_failure = deliver_failure
        self.timeout_s = timeout_s
        self.retry_base_s = retry_base_s

    async def process(self, entry: Entry[AnalysisJob]) -> None:
        job = entry.item
        if job is None:
            await self.jobs.ack(entry.id)
            return
        result_key = self.store.key("result", entry.id)
        with structlog.contextvars.bound_contextvars(job=entry.id, request_key=job.request_key):
            # A reclaimed entry whose analysis already finished only needs delivering.
            done_before = await self.store.exists(result_key)
            if not done_before:
                started = time.perf_counter()
                report = await self._analyse(entry, job)
                if report is None:
                    return
                await self.reports.save(job.request_key, report, duration_s=time.perf_counter() - started)
                await self.store.set_json(result_key, {"ok": True}, ttl_s=86400)
            requesters = await self.jobs.finish(job.request_key, entry.id)
            await self._deliver_all(entry, job, requesters)
            await self.store.set_json(self.store.key("done", entry.id), 1, ttl_s=3600)
            await self.jobs.complete(entry.id, job.request_key)
            await self.store.delete(result_key)
            self.metrics.jobs_done.labels("ok").inc()

    async def _deliver_all(
        self, entry: Entry[AnalysisJob], job: AnalysisJob, requesters: list[Requester]
    ) -> None:
        """The report to every requester; one whose delivery keeps failing never holds up the others.

        Each requester gets `max_attempts` attempts (counted in the store, so a takeover continues
        the count); after that the delivery goes to the dead-letter stream with the reason. A part
        marked "being sent" elsewhere is not an attempt: it is tried again after a pause.
        """
        state = self.jobs.delivery_state(job.request_key, entry.id)
        given_up = await state.dead()
        todo = [r for r in requesters if requester_id(r) not in given_up]
        pause = self.retry_base_s
        while todo:
            again: list[Requester] = []
            for requester in todo:
                try:
                    await self.deliver_report(requester, job.request_key, entry.id)
                except (asyncio.CancelledError, RedisError):
                    raise  # the store, not this delivery: the entry is taken up again as a whole
                except DeliveryBusy:
                    again.append(requester)
                except Exception as exc:
                    attempts = await state.failed(requester)
                    log.warning("report_not_delivered", attempt=attempts, error=str(exc)[:300])
                    if attempts < self.max_attempts:
                        again.append(requester)
                        continue
                    await self.dead.add(
                        queue=self.name,
                        entry_id=entry.id,
                        reason=f"delivery failed {attempts} times: {exc}",
                        payload=entry.raw,
                        attempts=attempts,
                        requester=requester,
                    )
                    await state.give_up(requester)
                    self.metrics.dead_letters.labels(self.name, "delivery").inc()
                    log.error("delivery_dead_lettered", chat=requester.target.chat_id, attempts=attempts)
            todo = again
            if todo:
                await asyncio.sleep(pause)
                pause = min(pause * 2, 30.0)

    async def give_up(self, entry: Entry[AnalysisJob], reason: str) -> None:
        """A job that keeps killing or failing its worker: its requesters are told, then it is dead-lettered."""
        job = entry.item
        if job is not None:
            for requester in await self.jobs.finish(job.request_key, entry.id):
                with contextlib.suppress(Exception):
                    await self.deliver_failure(requester, job, entry.id)
        await super().give_up(entry, reason)
        if job is not None:
            await self.jobs.complete(entry.id, job.request_key)

    async def _analyse(self, entry: Entry[AnalysisJob], job: AnalysisJob) -> DiagnosisReport | None:
        start = time.perf_counter()
        self.metrics.jobs_running.inc()
        try:
            async with asyncio.timeout(self.timeout_s):
                report = await self.analyze(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("analysis_failed", attempt=job.attempts + 1, error=repr(exc)[:300])
            await self._failed(entry, job)
            return None
        finally:
            self.metrics.jobs_running.dec()
        self.metrics.analysis_seconds.labels(report.source).observe(time.perf_counter() - start)
        return report

    async def _failed(self, entry: Entry[AnalysisJob], job: AnalysisJob) -> None:
        attempts = job.attempts + 1
        if attempts < self.max_attempts:
            await asyncio.sleep(min(2.0**attempts, 30.0))
            await self.jobs.requeue(entry.id, job.model_copy(update={"attempts": attempts}))
            self.metrics.jobs_done.labels("retried").inc()
            return
        # Out of attempts: everyone who asked is told, then the entry is done.
        for requester in await self.jobs.finish(job.request_key, entry.id):
            with contextlib.suppress(Exception):
                await self.deliver_failure(requester, job, entry.id)
        await self.store.set_json(self.store.key("done", entry.id), 1, ttl_s=3600)
        await self.jobs.complete(entry.id, job.request_key)
        self.metrics.jobs_done.labels("failed").inc()
