"""When the digest goes: the APScheduler trigger, one build per fire date, each target once.

* One replica builds a day's digest: a store lock per fire date (with expiry, kept alive while
  the run lasts). The built digest is cached per fire time, so a retry or another replica after
  a crash posts the same content without reading BK-JOB and BkLog again.
* Each (target, day) is posted once: a mark is set only after the send succeeded; targets already
  marked are skipped. A target whose send failed is retried until `catch_up_grace_s` after the fire.
* A bot that was down at the fire time catches up on start when the last fire time is at most
  `catch_up_grace_s` ago; the marks make sure no day is posted twice.

`digest.cron` is a 5-field crontab (minute hour day month weekday); a 6-field form with seconds
first is also accepted (handy for tests and demos).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from bot.core.settings import Settings
from bot.core.store import Store, StoreError
from bot.delivery.send import delivery_key
from bot.digest.collect import DigestWindow
from bot.digest.models import Digest
from bot.digest.post import Target

log = structlog.get_logger(__name__)

DEFAULT_LOCK_TTL_S = 600.0
DEFAULT_RETRY_DELAY_S = 120.0
DEFAULT_MARK_TTL_S = 8 * 86400.0
MIN_ATTEMPTS = 3

BuildFn = Callable[[DigestWindow], Awaitable[Digest]]


def make_trigger(cron: str, tz: ZoneInfo) -> CronTrigger:
    fields = cron.split()
    if len(fields) == 6:
        second, minute, hour, day, month, dow = fields
        return CronTrigger(
            second=second, minute=minute, hour=hour, day=day, month=month, day_of_week=dow, timezone=tz
        )
    if len(fields) == 5:
        return CronTrigger.from_crontab(cron, timezone=tz)
    raise ValueError(f"digest cron {cron!r} must have 5 fields (or 6 with seconds first)")


def last_fire_time(trigger: CronTrigger, now: datetime, *, max_lookback: timedelta) -> datetime | None:
    """The latest fire time at or before `now`, looking back at most `max_lookback`."""
    span = timedelta(minutes=1)
    while True:
        start = now - min(span, max_lookback)
        first: datetime | None = trigger.get_next_fire_time(None, start)
        if first is not None and first <= now:
            last = first
            while True:
                nxt: datetime | None = trigger.get_next_fire_time(None, last + timedelta(microseconds=1))
                if nxt is None or nxt > now:
                    return last
                last = nxt
        if span >= max_lookback:
            return None
        span *= 4


@dataclass
class RunOutcome:
    date: str
    posted: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    silent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    locked: bool = False

    @property
    def complete(self) -> bool:
        return not self.failed and not self.locked


PostFn = Callable[[Target, Digest, str], Awaitable[None]]


class DigestRunner:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        build: BuildFn,
        post: PostFn,
        clock: Callable[[], datetime] | None = None,
        lock_ttl_s: float = DEFAULT_LOCK_TTL_S,
        retry_delay_s: float = DEFAULT_RETRY_DELAY_S,
        mark_ttl_s: float = DEFAULT_MARK_TTL_S,
    ) -> None:
        cfg = settings.digest
        self.settings = settings
        self.store = store
        self.tz = ZoneInfo(cfg.time_zone)
        self.trigger = make_trigger(cfg.cron, self.tz)
        self.targets: list[Target] = []
        for t in cfg.targets:
            try:
                self.targets.append(Target.of(t))
            except ValueError as exc:  # one bad target must not silence the others
                log.error("digest_target_invalid", channel=t.channel, error=str(exc))
        self.grace = timedelta(seconds=cfg.catch_up_grace_s)
        self._build = build
        self._post = post
        self._clock = clock or (lambda: datetime.now(self.tz))
        self.lock_ttl_s = lock_ttl_s
        self.retry_delay_s = retry_delay_s
        self.mark_ttl_s = max(mark_ttl_s, cfg.catch_up_grace_s + 86400.0)
        self._active: set[str] = set()  # dates with a retry loop running in this process

    def now(self) -> datetime:
        return self._clock().astimezone(self.tz)

    def last_fire(self, now: datetime | None = None) -> datetime | None:
        moment = (now or self.now()).astimezone(self.tz)
        return last_fire_time(self.trigger, moment, max_lookback=max(self.grace, timedelta(days=2)))

    # ------------------------------------------------------------------ entry points

    async def catch_up(self, now: datetime | None = None) -> RunOutcome | None:
        """On start: post the last fire's digest if it is within the grace period and not posted."""
        moment = (now or self.now()).astimezone(self.tz)
        fire = self.last_fire(moment)
        if fire is None or moment - fire > self.grace:
            log.info("digest_no_catch_up", last_fire=fire.isoformat() if fire else None)
            return None
        return await self.run_until_posted(fire)

    async def on_fire(self) -> RunOutcome | None:
        """The scheduler fired (possibly a little late): run for the fire time just passed."""
        fire = self.last_fire()
        if fire is None:
            return None
        return await self.run_until_posted(fire)

    async def run_until_posted(self, fire: datetime) -> RunOutcome:
        date = DigestWindow.before(fire.astimezone(self.tz)).date
        if date in self._active:
            # A catch-up and a fire (or two fires of a frequent cron) overlap: one loop per day.
            return RunOutcome(date, locked=True)
        self._active.add(date)
        try:
            return await self._retry_loop(fire)
        finally:
            self._active.discard(date)

    async def _retry_loop(self, fire: datetime) -> RunOutcome:
        attempt = 0
        while True:
            attempt += 1
            date = DigestWindow.before(fire.astimezone(self.tz)).date
            try:
                outcome = await self.run(fire)
            except (StoreError, OSError) as exc:
                log.warning("digest_store_unavailable", error=type(exc).__name__, attempt=attempt)
                outcome = RunOutcome(date, locked=True)
            except Exception as exc:  # a bug or an odd answer must not end the day's retries
                log.exception("digest_run_failed", date=date, attempt=attempt, error=repr(exc)[:200])
                outcome = RunOutcome(date, failed=[t.id for t in self.targets])
            if outcome.complete:
                return outcome
            if attempt >= MIN_ATTEMPTS and self.now() - fire > self.grace:
                log.error("digest_gave_up", date=outcome.date, failed=outcome.failed, locked=outcome.locked)
                return outcome
            await asyncio.sleep(self.retry_delay_s)

    # ------------------------------------------------------------------ one attempt

    def _mark_key(self, date: str, target: Target) -> str:
        return self.store.key("digest", "sent", date, target.id)

    async def _pending(self, date: str) -> list[Target]:
        marks = await self.store.get_many([self._mark_key(date, t) for t in self.targets])
        return [t for t, m in zip(self.targets, marks, strict=True) if m is None]

    async def posted_targets(self, date: str) -> list[str]:
        pending = {t.id for t in await self._pending(date)}
        return [t.id for t in self.targets if t.id not in pending]

    async def run(self, fire: datetime) -> RunOutcome:
        fire = fire.astimezone(self.tz)
        window = DigestWindow.before(fire)
        date = window.date
        outcome = RunOutcome(date)
        if not self.targets:
            return outcome
        if not await self._pending(date):
            outcome.already = [t.id for t in self.targets]
            return outcome
        lock = f"digest:{date}"
        token = await self.store.acquire_lock(lock, self.lock_ttl_s)
        if token is None:
            log.info("digest_locked_elsewhere", date=date)
            outcome.locked = True
            return outcome
        keeper = asyncio.create_task(self._keep_lock(lock, token), name="digest-lock")
        try:
            pending = {t.id for t in await self._pending(date)}  # another replica may just have finished
            digest = await self._digest_for(window, fire) if pending else None
            for target in self.targets:
                if target.id not in pending or digest is None:
                    outcome.already.append(target.id)
                    continue
                if digest.empty and not self.settings.digest.post_when_empty:
                    # Nothing to send on a quiet day: the day is handled, silently.
                    await self.store.redis.set(self._mark_key(date, target), "silent", px=self._mark_ms)
                    outcome.silent.append(target.id)
                    continue
                try:
                    await self._post(target, digest, delivery_key("digest", date, target.id))
                except Exception as exc:
                    log.warning("digest_post_failed", date=date, target=target.id, error=repr(exc)[:200])
                    outcome.failed.append(target.id)
                    continue
                await self.store.redis.set(self._mark_key(date, target), "sent", px=self._mark_ms)
                outcome.posted.append(target.id)
                log.info("digest_posted", date=date, target=target.id)
            return outcome
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            try:
                await self.store.release_lock(lock, token)
            except (StoreError, OSError) as exc:
                log.warning("digest_lock_release_failed", error=type(exc).__name__)

    @property
    def _mark_ms(self) -> int:
        return int(self.mark_ttl_s * 1000)

    async def _keep_lock(self, name: str, token: str) -> None:
        while True:
            await asyncio.sleep(self.lock_ttl_s / 3)
            if not await self.store.extend_lock(name, token, self.lock_ttl_s):
                log.warning("digest_lock_lost", lock=name)
                return

    async def _digest_for(self, window: DigestWindow, fire: datetime) -> Digest:
        """The digest of this fire time: built once, then served from the store to retries."""
        key = self.store.key("digest", "built", window.date, int(fire.timestamp()))
        cached = await self.store.get_json(key)
        if cached is not None:
            try:
                return Digest.model_validate(cached)
            except ValueError:
                log.warning("digest_cache_unreadable", date=window.date)
        digest = await self._build(window)
        ttl = max(self.grace.total_seconds(), 0) + 86400.0
        await self.store.set_json(key, digest.model_dump(mode="json"), ttl_s=ttl)
        return digest


def digest_enabled(settings: Settings) -> bool:
    cfg = settings.digest
    return bool(cfg.biz_ids) and bool(cfg.targets) and settings.bkjob.base_url is not None


Spawn = Callable[[Coroutine[Any, Any, Any], str], None]


class DigestScheduler:
    """Fires `runner.on_fire` on the cron (in the app's loop) and catches up once on start."""

    def __init__(self, runner: DigestRunner, settings: Settings) -> None:
        self.runner = runner
        self.settings = settings
        self._scheduler: AsyncIOScheduler | None = None

    def start(self, spawn: Spawn) -> None:
        runner = self.runner

        async def fire() -> None:
            spawn(runner.on_fire(), "digest-run")

        scheduler = AsyncIOScheduler(timezone=runner.tz)
        scheduler.add_job(
            fire,
            runner.trigger,
            id="job-doctor-digest",
            misfire_grace_time=max(1, int(self.settings.digest.catch_up_grace_s)),
            coalesce=True,
            max_instances=1,
        )
        scheduler.start()
        self._scheduler = scheduler
        spawn(runner.catch_up(), "digest-catch-up")
        log.info("digest_scheduled", cron=self.settings.digest.cron, time_zone=self.settings.digest.time_zone)

    async def stop(self) -> None:
        if self._scheduler is None:
            return
        self._scheduler.shutdown(wait=False)
        self._scheduler = None
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0)  # let the scheduler's loop-side shutdown run
