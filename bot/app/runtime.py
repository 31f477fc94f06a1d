"""The background of a running app: inbox consumer, job worker, channel loops, the digest.

On start the loops run as tracked daemons. On stop they stop reading; in-flight work gets the
grace period; whatever is unfinished stays pending in Redis for the next process.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from typing import Any

import structlog

from bot.app.services import Services
from bot.core.logsetup import message_context
from bot.core.models import IncomingMessage
from bot.core.store import StoreError
from bot.delivery.worker import InboxConsumer, JobWorker, raise_if_cancelling

log = structlog.get_logger(__name__)

INBOX_CONCURRENCY = 8


class Background:
    def __init__(self, services: Services) -> None:
        s = services
        cfg = s.settings
        self.services = services
        self.consumer = InboxConsumer(
            s.inbox,
            self.handle,
            concurrency=INBOX_CONCURRENCY,
            claim_idle_s=cfg.worker.claim_idle_s,
            max_attempts=cfg.worker.max_attempts,
            dead=s.dead_letters,
            metrics=s.metrics,
        )
        self.worker = JobWorker(
            s.jobs,
            s.store,
            s.reports,
            s.metrics,
            analyze=s.analyze,
            deliver_report=s.replies.send_report,
            deliver_failure=s.replies.send_failure,
            concurrency=cfg.worker.concurrency,
            claim_idle_s=cfg.worker.claim_idle_s,
            max_attempts=cfg.worker.max_attempts,
            timeout_s=cfg.llm.deadline_s + 120,
            dead=s.dead_letters,
        )
        self._loops: list[asyncio.Task[Any]] = []  # the engine's own loops
        self._channel_loops: list[asyncio.Task[Any]] = []

    async def handle(self, msg: IncomingMessage) -> object:
        with message_context(msg):
            return await self.services.router.dispatch(msg, self.services.conversation)

    def start(self) -> None:
        s = self.services
        daemons: list[tuple[str, Coroutine[Any, Any, Any]]] = [
            ("wait-for-redis", wait_for_redis(s)),
            ("inbox-consumer", self.consumer.run()),
            ("job-worker", self.worker.run()),
            ("queue-gauge", queue_gauge(s)),
        ]
        self._loops = [s.tasks.spawn(coro, name=name, daemon=True) for name, coro in daemons]
        self._channel_loops = [
            s.tasks.spawn(loop(), name=f"channel-loop-{i}", daemon=True)
            for i, endpoint in enumerate(s.endpoints)
            for loop in endpoint.loops()
        ]
        if s.digest_scheduler is not None:
            s.digest_scheduler.start(self._spawn_work)

    def _spawn_work(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        try:
            self.services.tasks.spawn(coro, name=name)
        except RuntimeError:  # shutting down: the next start catches up
            log.info("work_not_started_shutting_down", task=name)

    async def stop(self) -> None:
        """Stop reading; in-flight entries get the grace period, the rest is handed back."""
        s = self.services
        if s.digest_scheduler is not None:
            await s.digest_scheduler.stop()
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        grace = s.settings.http.shutdown_grace_s
        await asyncio.gather(self.consumer.stop(grace), self.worker.stop(grace))
        # Channel loops last: a reply finished within the grace period still goes out (WebSocket).
        for loop in self._channel_loops:
            loop.cancel()
        await asyncio.gather(*self._channel_loops, return_exceptions=True)


async def wait_for_redis(services: Services) -> None:
    """Log (with backoff) until the store answers; /readyz reports the outage meanwhile."""
    store = services.store
    delay = 0.5
    while True:
        try:
            await store.ping()
            log.info("store_ready", embedded=store.embedded)
            return
        except (StoreError, OSError) as exc:
            log.warning("store_unreachable", error=type(exc).__name__, retry_in_s=round(delay, 1))
        await asyncio.sleep(delay + random.uniform(0, delay / 4))
        delay = min(delay * 2, 30.0)


async def queue_gauge(services: Services) -> None:
    metrics = services.metrics
    while True:
        raise_if_cancelling()
        try:
            metrics.queue_depth.set(await services.jobs.depth())
            metrics.inbox_depth.set(await services.inbox.length())
            metrics.dead_letter_depth.set(await services.dead_letters.count())
        except Exception as exc:  # a metrics poll must never die
            log.debug("queue_gauge_failed", error=type(exc).__name__)
        await asyncio.sleep(5)
