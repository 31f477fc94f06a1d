"""`job-doctor` command line: serve, demo, analyze, digest, check (and eval, cases).

Settings are built exactly once here and passed down. Every expected failure ends in one
clear line on stderr and exit code 2 (bad arguments or configuration) or 1 (a check failed).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import aiohttp

from bot import __version__
from bot.health import Health
from bot.logsetup import configure_logging
from bot.probes import register_probes
from bot.redact import Redactor
from bot.settings import ConfigError, Settings, load_settings
from bot.store import open_store

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
        return _not_yet(command)
    except KeyboardInterrupt:
        return EXIT_OK


def _not_yet(command: str) -> int:
    print(f"job-doctor {command}: not available in this version yet", file=sys.stderr)
    return EXIT_USAGE


def _serve(settings: Settings, redactor: Redactor, args: argparse.Namespace, *, mode: str) -> int:
    from bot.app import create_app
    from bot.server import PortInUse, run_server

    if mode == "demo":
        # Embedded defaults: in-process store whatever the environment says.
        settings = settings.model_copy(update={"redis_url": ""})
    configure_logging(
        json_lines=(mode == "serve" and not sys.stderr.isatty()), level=settings.log_level, redactor=redactor
    )
    host = args.host or settings.http.host or ("127.0.0.1" if mode == "demo" else "0.0.0.0")
    port = args.port if args.port is not None else settings.http.port
    app = create_app(settings, mode=mode, redactor=redactor)

    async def started(bound: int) -> None:
        if mode == "demo":
            print(f"job-doctor demo is running: http://{host}:{bound}/console  (Ctrl+C to stop)", flush=True)

    try:
        asyncio.run(run_server(app, host, port, on_started=started))
    except PortInUse as exc:
        print(f"job-doctor: {exc} (set JOB_DOCTOR_HTTP__PORT or --port)", file=sys.stderr)
        return EXIT_USAGE
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
