"""`job-doctor eval` (the scenario corpus through the whole pipeline) and `job-doctor cases export`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bot.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail
from bot.core.settings import Settings
from bot.devtools.cases import export_disputed
from bot.devtools.evaluate import format_results, run_all


async def run_eval(scenarios: str | None, *, as_json: bool) -> int:
    results = await run_all(Path(scenarios) if scenarios else None)
    if as_json:
        rows = [
            {"name": r.name, "ok": r.ok, "checks": r.checks, "problems": r.problems, "error": r.error}
            for r in results
        ]
        print(json.dumps(rows, ensure_ascii=False, indent=2))
    else:
        print(format_results(results))
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


async def export_cases(settings: Settings, target: str) -> int:
    if not settings.redis_url:
        fail("cases export", "needs JOB_DOCTOR_REDIS_URL (feedback lives in the bot's Redis)")
        return EXIT_USAGE
    written = await export_disputed(settings, Path(target))
    for path in written:
        print(path)
    print(f"{len(written)} disputed case(s) exported", file=sys.stderr)
    return EXIT_OK
