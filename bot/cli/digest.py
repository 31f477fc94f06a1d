"""`job-doctor digest [--dry-run] [--json]`: build (and unless dry-run, post) the digest now.

A manual run covers the 24 h before now. `--json` prints DESIGN.md's digest JSON and nothing else
on stdout; otherwise the WorkTool text. `--dry-run` posts nothing and needs no Redis (the embedded
store is used when `redis_url` is empty; a configured but unreachable Redis only costs the
new-vs-recurring comparison). A manual post does not touch the scheduled run's marks or history.
"""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.app.services import AppOptions, build_services
from bot.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail
from bot.core.settings import Settings
from bot.delivery.send import delivery_key
from bot.digest.collect import DigestWindow
from bot.digest.post import Target
from bot.digest.render import render_text
from bot.digest.throttle import DEFAULT_BKLOG_QUERIES_PER_S


def _err(message: str) -> None:
    fail("digest", message)


async def run(
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
    options = AppOptions(mode="cli", digest_bklog_queries_per_s=bklog_queries_per_s)
    async with build_services(settings, options=options) as services:
        builder, poster = services.digest_builder, services.digest_poster
        assert builder is not None and poster is not None  # BK-JOB is configured (checked above)
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
        failures = 0
        for target in targets:
            key = delivery_key("digest-manual", digest.date, target.id, moment.isoformat())
            try:
                await poster.post(target, digest, key)
            except Exception as exc:
                failures += 1
                _err(f"posting to {target.id} failed: {type(exc).__name__}: {str(exc)[:200]}")
        return EXIT_FAILED if failures else EXIT_OK
