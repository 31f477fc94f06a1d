"""When and where the digest goes: the APScheduler component and exactly-once posting.

* One replica builds a day's digest: a store lock per fire date (with expiry, kept alive while
  the run lasts). The built digest is cached per fire time, so a retry or another replica after
  a crash posts the same content without reading BK-JOB and BkLog again.
* Each (target, day) is posted once: a mark is set only after the send succeeded; targets already
  marked are skipped. A target whose send failed is retried until `catch_up_grace_s` after the fire.
* A bot that was down at the fire time catches up on start when the last fire time is at most
  `catch_up_grace_s` ago; the marks make sure no day is posted twice.
* WorkTool targets go through the runtime's outbox delivery (each part at most once, history
  checked on recovery); webhook targets keep one outbox record per message as well.

`digest.cron` is a 5-field crontab (minute hour day month weekday); a 6-field form with seconds
first is also accepted (handy for tests and demos).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import aiohttp
import structlog
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from bot.app import keys as K
from bot.app.services import build_bkjob
from bot.channels.webhook import WebhookError, WebhookSender, key_id
from bot.core.models import ChatTarget, Reply
from bot.core.settings import DigestTarget, Settings
from bot.core.store import Store, StoreError
from bot.delivery.outbox import Outbox
from bot.delivery.send import Delivery, delivery_key
from bot.digest.build import (
    DEFAULT_BKLOG_QUERIES_PER_S,
    Digest,
    DigestBuilder,
    DigestHistory,
    make_digest_analyzer,
    model_summarizer,
)
from bot.digest.collect import DigestWindow
from bot.digest.render import markdown_parts, render_markdown, render_text, text_header, text_parts, trend_png

log = structlog.get_logger(__name__)

DEFAULT_WEBHOOK_BASE_URL = "https://qyapi.weixin.qq.com"
DEFAULT_LOCK_TTL_S = 600.0
DEFAULT_RETRY_DELAY_S = 120.0
DEFAULT_MARK_TTL_S = 8 * 86400.0
MIN_ATTEMPTS = 3

BuildFn = Callable[[DigestWindow], Awaitable[Digest]]


class SendIncomplete(Exception):
    """Not every part is known to be delivered; the target stays unmarked and is retried."""


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True, slots=True)
class Target:
    channel: Literal["worktool", "webhook"]
    chat: str = ""
    webhook_key: str = field(default="", repr=False)
    webhook_base_url: str | None = None  # from a full webhook URL given as the key

    @property
    def id(self) -> str:
        """Stable and loggable: a webhook key only appears as its fingerprint."""
        if self.channel == "worktool":
            return f"worktool:{self.chat}"
        return f"webhook:{key_id(self.webhook_key)}"

    @classmethod
    def of(cls, target: DigestTarget) -> Target:
        if target.channel == "worktool":
            if not target.chat.strip():
                raise ValueError("a worktool digest target needs `chat` (the group name)")
            return cls("worktool", chat=target.chat.strip())
        raw = target.key.get_secret_value().strip() if target.key is not None else ""
        base, key = split_webhook_key(raw)
        if not key:
            raise ValueError("a webhook digest target needs `key` (the webhook key or its full URL)")
        return cls("webhook", webhook_key=key, webhook_base_url=base)


def split_webhook_key(raw: str) -> tuple[str | None, str]:
    """Accept the bare key or the whole webhook URL as WeCom shows it (`…/webhook/send?key=…`)."""
    if not raw.lower().startswith(("http://", "https://")):
        return None, raw
    parts = urlsplit(raw)
    key = (parse_qs(parts.query).get("key") or [""])[0]
    return f"{parts.scheme}://{parts.netloc}", key


# --------------------------------------------------------------------------- posting


class DigestPoster:
    """Sends one digest to one target; raises when it is not certainly delivered."""

    def __init__(
        self,
        store: Store,
        session: aiohttp.ClientSession,
        *,
        delivery: Callable[[], Delivery | None],
        part_max_chars: int,
        webhook_base_url: str = DEFAULT_WEBHOOK_BASE_URL,
        webhook_sender: Callable[[str], WebhookSender] | None = None,
        outbox_stale_s: float = 60.0,
    ) -> None:
        self._delivery = delivery
        self._session = session
        self.part_max_chars = part_max_chars
        self.webhook_base_url = webhook_base_url
        self._make_sender = webhook_sender or (lambda base: WebhookSender(session, base_url=base))
        self._senders: dict[str, WebhookSender] = {}
        self.outbox = Outbox(store, stale_after_s=outbox_stale_s)

    async def post(self, target: Target, digest: Digest, key: str) -> None:
        if target.channel == "worktool":
            await self._worktool(target, digest, key)
        else:
            await self._webhook(target, digest, key)

    async def _worktool(self, target: Target, digest: Digest, key: str) -> None:
        delivery = self._delivery()
        if delivery is None:
            raise SendIncomplete("the WorkTool channel is not running")
        parts = text_parts(digest, self.part_max_chars)
        reply = Reply(
            target=ChatTarget(channel="worktool", chat_id=target.chat, chat_name=target.chat, is_group=True),
            kind="digest",
            title=text_header(digest),
            text=render_text(digest),
            markdown=render_markdown(digest),
            parts=parts,
            key=key,
        )
        await delivery.send(reply, key)
        states = [await delivery.outbox.state(key, i) for i in range(len(parts))]
        if any(s != "sent" for s in states):
            # "busy" (another process is mid-send) or no WorkTool channel registered.
            raise SendIncomplete(f"{states.count('sent')}/{len(parts)} parts confirmed")

    def _sender(self, base_url: str) -> WebhookSender:
        sender = self._senders.get(base_url)
        if sender is None:
            sender = self._senders[base_url] = self._make_sender(base_url)
        return sender

    async def _webhook(self, target: Target, digest: Digest, key: str) -> None:
        sender = self._sender(target.webhook_base_url or self.webhook_base_url)
        parts = markdown_parts(digest)
        for index, part in enumerate(parts):
            state = await self.outbox.begin(key, index)
            if state == "skip":
                continue
            if state == "busy":
                raise SendIncomplete(f"webhook part {index + 1} is being sent elsewhere")
            # "recover": the webhook has no history to look at; sending again beats losing it.
            try:
                await sender.send_markdown(target.webhook_key, part)
            except (WebhookError, ValueError):
                await self.outbox.abort(key, index)
                raise
            await self.outbox.done(key, index)
        if digest.empty or not digest.trend:
            return
        index = len(parts)
        if await self.outbox.begin(key, index) != "send":
            return
        try:
            await sender.send_image(target.webhook_key, trend_png(digest.trend))
        except WebhookError as exc:  # the picture is extra: the digest itself went out
            await self.outbox.abort(key, index)
            log.warning("digest_trend_image_failed", target=target.id, errcode=exc.errcode)
            return
        await self.outbox.done(key, index)


# --------------------------------------------------------------------------- schedule


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
        marks = await self.store.redis.mget([self._mark_key(date, t) for t in self.targets])
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


# --------------------------------------------------------------------------- app component

DIGEST_RUNNER = web.AppKey("digest_runner", DigestRunner)
# Optional overrides set before start-up (tests, private deployments of the webhook API).
WEBHOOK_BASE_URL = web.AppKey("digest_webhook_base_url", str)
BKLOG_QUERIES_PER_S = web.AppKey("digest_bklog_queries_per_s", float)


def digest_enabled(settings: Settings) -> bool:
    cfg = settings.digest
    return bool(cfg.biz_ids) and bool(cfg.targets) and settings.bkjob.base_url is not None


def setup_digest(app: web.Application) -> None:
    """The scheduled daily digest; active when businesses, targets and BK-JOB are configured.

    Register after `setup_runtime` (WorkTool targets are sent through its delivery service).
    """
    if not digest_enabled(app[K.SETTINGS]):
        return
    app.cleanup_ctx.append(_digest_ctx)


async def _digest_ctx(app: web.Application) -> AsyncIterator[None]:
    from bot.app.runtime import DELIVERY

    settings, store, session, tasks = app[K.SETTINGS], app[K.STORE], app[K.HTTP], app[K.TASKS]
    bkjob = build_bkjob(settings, session)
    assert bkjob is not None  # digest_enabled checked it
    async with model_summarizer(settings) as summarize:
        builder = DigestBuilder(
            settings,
            bkjob=bkjob,
            analyzer=make_digest_analyzer(
                settings,
                session,
                bklog_queries_per_s=app.get(BKLOG_QUERIES_PER_S, DEFAULT_BKLOG_QUERIES_PER_S),
            ),
            history=DigestHistory(store),
            summarize=summarize,
        )
        poster = DigestPoster(
            store,
            session,
            delivery=lambda: app.get(DELIVERY),
            part_max_chars=settings.worktool.part_max_chars,
            webhook_base_url=app.get(WEBHOOK_BASE_URL, DEFAULT_WEBHOOK_BASE_URL),
        )

        async def build(window: DigestWindow) -> Digest:
            return await builder.build(window, record_history=True)

        runner = DigestRunner(settings, store, build=build, post=poster.post)
        app[DIGEST_RUNNER] = runner

        def spawn(coro: Coroutine[Any, Any, Any], name: str) -> None:
            try:
                tasks.spawn(coro, name=name)
            except RuntimeError:  # shutting down: the next start catches up
                log.info("digest_not_started_shutting_down")

        async def fire() -> None:
            spawn(runner.on_fire(), "digest-run")

        scheduler = AsyncIOScheduler(timezone=runner.tz)
        scheduler.add_job(
            fire,
            runner.trigger,
            id="job-doctor-digest",
            misfire_grace_time=max(1, int(settings.digest.catch_up_grace_s)),
            coalesce=True,
            max_instances=1,
        )
        scheduler.start()
        spawn(runner.catch_up(), "digest-catch-up")
        log.info("digest_scheduled", cron=settings.digest.cron, time_zone=settings.digest.time_zone)
        try:
            yield
        finally:
            scheduler.shutdown(wait=False)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0)  # let the scheduler's loop-side shutdown run
