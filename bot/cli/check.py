"""`job-doctor check`: validate settings and reach every configured dependency, one line each."""

from __future__ import annotations

from bot.app.services import AppOptions, build_services
from bot.cli.common import EXIT_FAILED, EXIT_OK
from bot.core.settings import Settings


async def run(settings: Settings) -> int:
    async with build_services(settings, options=AppOptions(mode="cli", probe_timeout_s=8.0)) as services:
        results = await services.health.run(fresh=True)
    width = max(len("settings"), *(len(r.name) for r in results))
    print(f"{'settings'.ljust(width)}  OK    loaded and valid")
    failed = 0
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
