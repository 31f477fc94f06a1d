"""`job-doctor` command line: serve, demo, analyze, digest, check (and eval, cases).

Settings are built exactly once here and passed down. Every expected failure ends in one
clear line on stderr and exit code 2 (bad arguments or configuration) or 1 (a check failed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

import aiohttp

from bot import __version__
from bot.app.health import Health
from bot.app.probes import register_probes
from bot.core.logsetup import configure_logging
from bot.core.redact import Redactor
from bot.core.settings import ConfigError, Settings, load_settings
from bot.core.store import open_store

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One clear line (plus where to look) instead of a usage dump.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="job-doctor", description="Diagnose failed BK-JOB steps from BkLog logs; a WeCom ops bot."
    )
    p.add_argument("--version", action="version", version=f"job-doctor {__version__}")
    p.add_argument(
        "--config",
        metavar="PATH",
        help="TOML settings file (default ./job-doctor.toml or $JOB_DOCTOR_CONFIG)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    s = sub.add_parser("serve", help="run the bot (channels from settings)")
    s.add_argument("--host", help="listen address (default JOB_DOCTOR_HTTP__HOST or 0.0.0.0)")
    s.add_argument("--port", type=int, help="listen port (default JOB_DOCTOR_HTTP__PORT or 8080)")

    d = sub.add_parser("demo", help="run the bot on embedded defaults with sample logs and the web console")
    d.add_argument("--host", help="listen address (default 127.0.0.1)")
    d.add_argument("--port", type=int, help="listen port (default 8080)")

    a = sub.add_parser("analyze", help="analyse one failed step and print the report")
    ids = a.add_mutually_exclusive_group(required=True)
    ids.add_argument("--step-id", help="stepInstanceId of the failed step")
    ids.add_argument("--request-id", help="request id / traceId (32 hex)")
    a.add_argument("--json", action="store_true", help="print the DiagnosisReport JSON only")
    a.add_argument("--no-llm", action="store_true", help="rule-based report even when a model is configured")
    a.add_argument(
        "--since", help="search window start (ISO 8601 or 'YYYY-MM-DD HH:MM:SS' in BkLog's time zone)"
    )
    a.add_argument("--until", help="search window end")
    a.add_argument("--execute-count", type=int, help="diagnose this run (retryCount) instead of the latest")

    g = sub.add_parser("digest", help="build (and unless --dry-run, post) the daily failure digest now")
    g.add_argument("--dry-run", action="store_true", help="post nothing")
    g.add_argument("--json", action="store_true", help="print the digest JSON")

    sub.add_parser("check", help="validate settings and reach every configured dependency")

    e = sub.add_parser("eval", help="run the scenario corpus through the pipeline and print results")
    e.add_argument("--scenarios", metavar="DIR", help="scenario root (default: the built-in corpus)")
    e.add_argument("--json", action="store_true", help="machine-readable results")

    c = sub.add_parser("cases", help="feedback cases")
    csub = c.add_subparsers(dest="cases_command", metavar="ACTION", parser_class=_Parser)
    csub.required = True
    ce = csub.add_parser("export", help="write disputed reports as scenario folders")
    ce.add_argument("dir", help="target folder")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"job-doctor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    redactor = Redactor(settings.secret_values())
    command: str = args.command
    try:
        if command == "serve":
            return _serve(settings, redactor, args, mode="serve")
        if command == "demo":
            return _serve(settings, redactor, args, mode="demo")
        if command == "check":
            configure_logging(json_lines=False, level="WARNING", redactor=redactor)
            return asyncio.run(_check(settings))
        if command == "analyze":
            # stderr carries the one-line error of a failed run; retries and such only when debugging
            level = "DEBUG" if settings.log_level.upper() == "DEBUG" else "ERROR"
            configure_logging(json_lines=False, level=level, redactor=redactor)
            return asyncio.run(_analyze(settings, redactor, args))
        if command == "eval":
            configure_logging(json_lines=False, level="WARNING", redactor=redactor)
            return asyncio.run(_eval(args))
        if command == "digest":
            configure_logging(json_lines=False, level="WARNING", redactor=redactor)
            from bot.cli.digest import run_digest_command

            return asyncio.run(run_digest_command(settings, dry_run=args.dry_run, as_json=args.json))
        if command == "cases":
            configure_logging(json_lines=False, level="WARNING", redactor=redactor)
            return asyncio.run(_cases_export(settings, args))
        raise AssertionError(f"unhandled command {command}")  # argparse admits only the above
    except KeyboardInterrupt:
        return EXIT_OK


def _serve(settings: Settings, redactor: Redactor, args: argparse.Namespace, *, mode: str) -> int:
    from bot.app.server import PortInUse

    configure_logging(
        json_lines=(mode == "serve" and not sys.stderr.isatty()), level=settings.log_level, redactor=redactor
    )
    try:
        asyncio.run(_run(settings, redactor, args, mode=mode))
    except PortInUse as exc:
        print(f"job-doctor: {exc} (set JOB_DOCTOR_HTTP__PORT or --port)", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


async def _run(settings: Settings, redactor: Redactor, args: argparse.Namespace, *, mode: str) -> None:
    from bot.app.components import app_components, attach_samples
    from bot.app.server import run_server
    from bot.app.web import create_app

    box = None
    samples: list[dict[str, object]] = []
    if mode == "demo":
        from bot.devtools.demo import demo_settings, start_sandbox

        box = await start_sandbox()
        settings = demo_settings(settings, box)
        samples = box.samples
    host = args.host or settings.http.host or ("127.0.0.1" if mode == "demo" else "0.0.0.0")
    port = args.port if args.port is not None else settings.http.port
    settings = settings.model_copy(update={"http": settings.http.model_copy(update={"host": host})})
    app = create_app(settings, mode=mode, components=app_components(), redactor=redactor)
    attach_samples(app, samples)

    async def started(bound: int) -> None:
        if mode == "demo":
            steps = [s for s in samples if s.get("kind") == "step"] or samples
            shown = ", ".join(str(s["id"]) for s in steps[:4])
            print(f"job-doctor demo is running: http://{host}:{bound}/console  (Ctrl+C to stop)", flush=True)
            print(
                f"try: @job-doctor {steps[0]['id'] if steps else '<stepInstanceId>'}   samples: {shown}",
                flush=True,
            )

    try:
        await run_server(app, host, port, on_started=started)
    finally:
        if box is not None:
            await box.close()


def _parse_when(value: str | None, tz: str) -> datetime | None:
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


async def _analyze(settings: Settings, redactor: Redactor, args: argparse.Namespace) -> int:
    from bot.app.services import build_analyzer
    from bot.delivery.render import render_text
    from bot.diagnosis.pipeline import AnalysisRequest, BkLogAuthError

    step_id: int | None = None
    request_id: str | None = None
    if args.step_id is not None:
        raw = str(args.step_id).strip()
        if not raw.isdigit() or len(raw) > 19 or int(raw) == 0 or int(raw) > 2**63 - 1:
            print(
                f"job-doctor analyze: --step-id must be a positive number (got {raw[:40]!r})", file=sys.stderr
            )
            return EXIT_USAGE
        step_id = int(raw)
    else:
        raw = str(args.request_id).strip().lower()
        if not re.fullmatch(r"[0-9a-f]{32}", raw):
            print("job-doctor analyze: --request-id must be 32 hex characters (a traceId)", file=sys.stderr)
            return EXIT_USAGE
        request_id = raw
    try:
        since = _parse_when(args.since, settings.bklog.time_zone)
        until = _parse_when(args.until, settings.bklog.time_zone)
    except ValueError as exc:
        print(f"job-doctor analyze: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if since and until and since >= until:
        print("job-doctor analyze: --since must be before --until", file=sys.stderr)
        return EXIT_USAGE
    if settings.bklog.base_url is None or settings.bklog.index_set_id is None:
        print(
            "job-doctor analyze: BkLog is not configured "
            "(set JOB_DOCTOR_BKLOG__BASE_URL and JOB_DOCTOR_BKLOG__INDEX_SET_ID)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    use_model = settings.llm.enabled and not args.no_llm
    async with aiohttp.ClientSession() as session:
        analyzer = build_analyzer(settings, session)
        llm = None
        if use_model:
            from bot.diagnosis.llm_step import make_model_step
            from bot.llm.client import LlmClient
            from bot.llm.prompts import PromptLibrary
            from bot.llm.scrub import Scrubber

            llm = LlmClient.from_settings(settings.llm)
            # the model's read-only tools use the analyzer's own clients
            analyzer.model_step = make_model_step(
                settings,
                llm,
                prompts=PromptLibrary(),
                scrubber=Scrubber(settings.secret_values()),
                bklog=analyzer.bklog,
                gse=analyzer.gse,
                bkjob=analyzer.bkjob,
            )
        try:
            report = await analyzer.analyze(
                AnalysisRequest(
                    step_instance_id=step_id,
                    request_id=request_id,
                    execute_count=args.execute_count,
                    since=since,
                    until=until,
                    use_model=use_model,
                    raise_on_auth_error=True,
                )
            )
        except BkLogAuthError as exc:
            print(f"job-doctor analyze: {redactor(str(exc))}", file=sys.stderr)
            return EXIT_USAGE
        finally:
            if llm is not None:
                await llm.aclose()
    if args.json:
        print(redactor(report.model_dump_json(indent=2)))
    else:
        print(redactor(render_text(report)))
    return EXIT_OK


async def _eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bot.devtools.evaluate import format_results, run_all

    results = await run_all(Path(args.scenarios) if args.scenarios else None)
    if args.json:
        print(
            json.dumps(
                [
                    {"name": r.name, "ok": r.ok, "checks": r.checks, "problems": r.problems, "error": r.error}
                    for r in results
                ],
                ensure_ascii=False,
                indent=2,
            )
        )
    else:
        print(format_results(results))
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


async def _cases_export(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from bot.devtools.cases import export_disputed

    if not settings.redis_url:
        print(
            "job-doctor cases export: needs JOB_DOCTOR_REDIS_URL (feedback lives in the bot's Redis)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    written = await export_disputed(settings, Path(args.dir))
    for path in written:
        print(path)
    print(f"{len(written)} disputed case(s) exported", file=sys.stderr)
    return EXIT_OK


async def _check(settings: Settings) -> int:
    store = open_store(settings.redis_url, prefix=settings.redis_key_prefix)
    health = Health(probe_timeout_s=8.0, cache_s=0)
    failed = 0
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            register_probes(health, settings, store, session)
            results = await health.run(fresh=True)
    finally:
        await store.close()
    width = max(len("settings"), *(len(r.name) for r in results))
    print(f"{'settings'.ljust(width)}  OK    loaded and valid")
    for r in results:
        failed += 0 if r.ok else 1
        print(f"{r.name.ljust(width)}  {'OK  ' if r.ok else 'FAIL'}  {r.detail}")
    not_configured = [
        name
        for name, on in (
            ("bklog", settings.bklog.base_url is not None),
            ("bkjob", settings.bkjob.base_url is not None),
            ("gse", settings.gse.base_url is not None),
            ("llm", settings.llm.enabled),
            ("worktool", settings.worktool.enabled),
            ("wecom_aibot", settings.wecom_aibot.http_enabled or settings.wecom_aibot.ws_enabled),
        )
        if not on
    ]
    if not_configured:
        print(f"{'-'.ljust(width)}  --    not configured: {', '.join(not_configured)}")
    return EXIT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
