"""`job-doctor` command line: serve, demo, analyze, digest, check, eval, cases.

Settings are built exactly once here and passed down. Every expected failure ends in one
clear line on stderr and exit code 2 (bad arguments or configuration) or 1 (a check failed).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from bot import __version__
from bot.cli import analyze, check, corpus, digest, serve
from bot.cli.common import EXIT_OK, EXIT_USAGE
from bot.core.logsetup import configure_logging
from bot.core.redact import Redactor
from bot.core.settings import ConfigError, load_settings


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
    ids.add_argument(
        "--url", help="a BK-JOB link that names the step (its business and job instance come along)"
    )
    a.add_argument(
        "--scope", help="the step's business: biz:ID or biz_set:ID (when the id alone does not say)"
    )
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
        if command in ("serve", "demo"):
            return serve.run(settings, redactor, host=args.host, port=args.port, mode=command)
        if command == "analyze":
            # stderr carries the one-line error of a failed run; retries and such only when debugging
            level = "DEBUG" if settings.log_level.upper() == "DEBUG" else "ERROR"
            configure_logging(json_lines=False, level=level, redactor=redactor)
            return asyncio.run(analyze.run(settings, redactor, args))
        configure_logging(json_lines=False, level="WARNING", redactor=redactor)
        if command == "check":
            return asyncio.run(check.run(settings))
        if command == "eval":
            return asyncio.run(corpus.run_eval(args.scenarios, as_json=args.json))
        if command == "digest":
            return asyncio.run(digest.run(settings, dry_run=args.dry_run, as_json=args.json))
        if command == "cases":
            return asyncio.run(corpus.export_cases(settings, args.dir))
        raise AssertionError(f"unhandled command {command}")  # argparse admits only the above
    except ConfigError as exc:  # found while building the services (e.g. a malformed key)
        print(f"job-doctor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
