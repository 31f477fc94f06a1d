"""`job-doctor digest [--dry-run] [--json]`: build (and unless dry-run, post) the digest now.

A manual run covers the 24 h before now. `--json` prints DESIGN.md's digest JSON and nothing else
on stdout; otherwise the WorkTool text. `--dry-run` posts nothing and needs no Redis (the embedded
store is used when `redis_url` is empty; a configured but unreachable Redis only costs the
new-vs-recurring comparison). A manual post does not touch the scheduled run's marks or history.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from zoneinfo import ZoneInfo

import aiohttp

from bot.app.services import build_bkjob
from bot.core.metrics import Metrics
from bot.core.settings import Settings
from bot.core.store import Store, open_store
from bot.delivery.outbox import Outbox
from bot.delivery.port import ChannelRegistry
from bot.delivery.send import Delivery, delivery_key
from bot.digest.build import (
    DEFAULT_BKLOG_QUERIES_PER_S,
    DigestBuilder,
    DigestHistory,
    make_digest_analyzer,
    model_summarizer,
)
from bot.digest.collect import DigestWindow
from bot.digest.render import render_text
from bot.digest.schedule import DigestPoster, Target

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _err(message: str) -> None:
    print(f"job-doctor digest: {message}", file=sys.stderr)


def _standalone_delivery(settings: Settings, session: aiohttp.ClientSession, store: Store) -> Delivery | None:
    """The outbox delivery with a WorkTool channel, as `serve` builds it (only the sending side)."""
    from bot.channels.worktool.channel import WorkToolChannel
    from bot.channels.worktool.sender import WorkToolSender

    cfg = settings.worktool
    if not cfg.robot_id:
        return None
    sender = WorkToolSender(
        session,
        base_url=str(cfg.base_url),
        robot_id=cfg.robot_id,
        timeout_s=cfg.timeout_s,
        requests_per_minute=cfg.requests_per_minute,
        send_interval_s=cfg.send_interval_s,
    )
    registry = ChannelRegistry()
    registry.add(WorkToolChannel(sender, part_max_chars=cfg.part_max_chars))
    return Delivery(registry, Outbox(store), Metrics())


async def run_digest_command(
    settings: Settings,
    *,
    dry_run: bool,
    as_json: bool,
    now: datetime | None = None,
    bklog_queries_per_s: float = DEFAULT_BKLOG_QUERIES_PER_S,
) -> int:
    cfg = settings.digest
    if not cfg.biz_ids:
        _err("no business to report on: set JOB_DOCTOR_DIGEST__BIZ_IDS (a JSON list)")
        return EXIT_USAGE
    if settings.bkjob.base_url is None:
        _err("BK-JOB is not configured: set JOB_DOCTOR_BKJOB__BASE_URL")
        return EXIT_USAGE
    targets: list[Target] = []
    if not dry_run:
        if not cfg.targets:
            _err("no targets to post to: set JOB_DOCTOR_DIGEST__TARGETS, or use --dry-run")
            return EXIT_USAGE
        try:
            targets = [Target.of(t) for t in cfg.targets]
        except ValueError as exc:
            _err(f"invalid JOB_DOCTOR_DIGEST__TARGETS: {exc}")
            return EXIT_USAGE
        if any(t.channel == "worktool" for t in targets) and not settings.worktool.robot_id:
            _err("a worktool target needs JOB_DOCTOR_WORKTOOL__ROBOT_ID")
            return EXIT_USAGE
    tz = ZoneInfo(cfg.time_zone)
    moment = (now or datetime.now(tz)).astimezone(tz)
    window = DigestWindow.before(moment)
    store = open_store(settings.redis_url, prefix=settings.redis_key_prefix)
    try:
        async with aiohttp.ClientSession() as session:
            bkjob = build_bkjob(settings, session)
            assert bkjob is not None
            async with model_summarizer(settings) as summarize:
                builder = DigestBuilder(
                    settings,
                    bkjob=bkjob,
                    analyzer=make_digest_analyzer(settings, session, bklog_queries_per_s=bklog_queries_per_s),
                    history=DigestHistory(store),
                    summarize=summarize,
                )
                digest = await builder.build(window, record_history=False)
            if as_json:
                print(json.dumps(digest.contract_json(), ensure_ascii=False, indent=2))
            else:
                print(render_text(digest))
            if dry_run:
                return EXIT_OK
            if digest.empty and not cfg.post_when_empty:
                _err("nothing failed in the window and post_when_empty is off: nothing posted")
                return EXIT_OK
            delivery = _standalone_delivery(settings, session, store)
            poster = DigestPoster(
                store, session, delivery=lambda: delivery, part_max_chars=settings.worktool.part_max_chars
            )
            failures = 0
            for target in targets:
                key = delivery_key("digest-manual", digest.date, target.id, moment.isoformat())
                try:
                    await poster.post(target, digest, key)
                except Exception as exc:
                    failures += 1
                    _err(f"posting to {target.id} failed: {type(exc).__name__}: {str(exc)[:200]}")
            return EXIT_FAILED if failures else EXIT_OK
    finally:
        await store.close()
