"""`job-doctor serve` and `job-doctor demo`: run the bot until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from bot.app import keys as K
from bot.app.server import PortInUse, run_server
from bot.app.services import AppOptions, listen_host
from bot.app.web import create_app
from bot.cli.common import EXIT_OK, EXIT_USAGE
from bot.core.logsetup import configure_logging
from bot.core.redact import Redactor
from bot.core.settings import Settings
from bot.devtools.demo import demo_settings, start_sandbox


def run(settings: Settings, redactor: Redactor, *, host: str | None, port: int | None, mode: str) -> int:
    configure_logging(
        json_lines=(mode == "serve" and not sys.stderr.isatty()), level=settings.log_level, redactor=redactor
    )
    try:
        asyncio.run(_run(settings, redactor, host=host, port=port, mode=mode))
    except PortInUse as exc:
        print(f"job-doctor: {exc} (set JOB_DOCTOR_HTTP__PORT or --port)", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


async def _run(
    settings: Settings, redactor: Redactor, *, host: str | None, port: int | None, mode: str
) -> None:
    box = None
    samples: list[dict[str, Any]] = []
    if mode == "demo":
        box = await start_sandbox()
        settings = demo_settings(settings, box)
        samples = box.samples
    bind = listen_host(settings, mode, host)
    bound_port = port if port is not None else settings.http.port
    settings = settings.model_copy(update={"http": settings.http.model_copy(update={"host": bind})})
    try:
        app = await create_app(settings, options=AppOptions(mode=mode, samples=samples), redactor=redactor)
        web_console = app[K.SERVICES].console
        console = None if web_console is None else web_console.token

        async def started(bound: int) -> None:
            if mode != "demo":
                return
            steps = [s for s in samples if s.get("kind") == "step"] or samples
            shown = ", ".join(str(s["id"]) for s in steps[:4])
            query = f"?token={console}" if console else ""
            print(
                f"job-doctor demo is running: http://{bind}:{bound}/console{query}  (Ctrl+C to stop)",
                flush=True,
            )
            print(
                f"try: @job-doctor {steps[0]['id'] if steps else '<stepInstanceId>'}   samples: {shown}",
                flush=True,
            )

        await run_server(app, bind, bound_port, on_started=started)
    finally:
        if box is not None:
            await box.close()
