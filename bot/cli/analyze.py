"""`job-doctor analyze`: one analysis, the report on stdout (`--json`: the DiagnosisReport JSON only)."""

from __future__ import annotations

import argparse
import re
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.app.services import AppOptions, build_services
from bot.cli.common import EXIT_OK, EXIT_USAGE, fail
from bot.core.redact import Redactor
from bot.core.scope import Scope, parse_scope, scope_of
from bot.core.settings import Settings
from bot.delivery.render import render_text
from bot.diagnosis.pipeline import AnalysisRequest, BkLogConfigError
from handlers.ids import extract_ids


def parse_when(value: str | None, tz: str) -> datetime | None:
    if not value:
        return None
    text = value.strip().replace("T", " ")
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=ZoneInfo(tz))
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"cannot read time {value!r} (use ISO 8601 or 'YYYY-MM-DD HH:MM:SS')") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=ZoneInfo(tz))


def request_of(settings: Settings, args: argparse.Namespace) -> AnalysisRequest | str:
    """The request the arguments ask for, or the one-line reason they are wrong."""
    step_id: int | None = None
    request_id: str | None = None
    task_id: int | None = None
    execute_count: int | None = args.execute_count
    scope: Scope | None = None
    if getattr(args, "scope", None):
        try:
            scope = parse_scope(args.scope)
        except ValueError as exc:
            return f"--scope: {exc}"
    if getattr(args, "url", None):
        refs = [r for r in extract_ids(str(args.url), max_ids=1).refs if r.kind == "step" and "/" in r.source]
        if not refs:
            return "--url must be a BK-JOB link that names a step (stepInstanceId=… or /api_execute_step/…)"
        ref = refs[0]
        step_id, task_id = ref.step_instance_id, ref.task_instance_id
        if execute_count is None:
            execute_count = ref.execute_count
        linked = scope_of(ref.bk_scope_type, ref.bk_scope_id)
        if scope is not None and linked is not None and scope != linked:
            return f"--scope {scope} contradicts the link's business {linked}"
        scope = scope or linked
    elif args.step_id is not None:
        raw = str(args.step_id).strip()
        if not raw.isdigit() or len(raw) > 19 or int(raw) == 0 or int(raw) > 2**63 - 1:
            return f"--step-id must be a positive number (got {raw[:40]!r})"
        step_id = int(raw)
    else:
        raw = str(args.request_id).strip().lower()
        if not re.fullmatch(r"[0-9a-f]{32}", raw):
            return "--request-id must be 32 hex characters (a traceId)"
        request_id = raw
    try:
        since = parse_when(args.since, settings.bklog.time_zone)
        until = parse_when(args.until, settings.bklog.time_zone)
    except ValueError as exc:
        return str(exc)
    if since and until and since >= until:
        return "--since must be before --until"
    if settings.bklog.base_url is None or settings.bklog.index_set_id is None:
        return "BkLog is not configured (set JOB_DOCTOR_BKLOG__BASE_URL and JOB_DOCTOR_BKLOG__INDEX_SET_ID)"
    return AnalysisRequest(
        step_instance_id=step_id,
        request_id=request_id,
        task_instance_id=task_id,
        bk_scope_type=scope.type if scope else None,
        bk_scope_id=scope.id if scope else None,
        execute_count=execute_count,
        since=since,
        until=until,
        use_model=settings.llm.enabled and not args.no_llm,
        raise_on_config_error=True,
    )


async def run(settings: Settings, redactor: Redactor, args: argparse.Namespace) -> int:
    request = request_of(settings, args)
    if isinstance(request, str):
        fail("analyze", request)
        return EXIT_USAGE
    async with build_services(settings, options=AppOptions(mode="cli"), redactor=redactor) as services:
        try:
            report = await services.analyzer.analyze(request)
        except BkLogConfigError as exc:
            fail("analyze", redactor(str(exc)))
            return EXIT_USAGE
    if args.json:
        print(redactor(report.model_dump_json(indent=2)))
    else:
        print(redactor(render_text(report)))
    return EXIT_OK
