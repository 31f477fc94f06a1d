"""Which components make up `serve` and `demo` (channels first, then pipeline, then the engine)."""

from __future__ import annotations

import importlib

from aiohttp import web

from bot.app.runtime import setup_runtime
from bot.app.services import setup_pipeline
from bot.app.web import Component
from bot.channels.worktool.channel import setup_worktool


def _optional(module: str, name: str) -> Component | None:
    try:
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
    except (ImportError, AttributeError):
        return None


def app_components() -> list[Component]:
    comps: list[Component | None] = [
        setup_worktool,
        _optional("bot.channels.wecom.http_mode", "setup_wecom_aibot"),
        _optional("bot.channels.wecom.ws_mode", "setup_wecom_aibot_ws"),
        _optional("bot.channels.console.routes", "setup_console"),
        setup_pipeline,
        setup_runtime,
        # after the runtime: WorkTool digest targets go out through its delivery service
        _optional("bot.digest.schedule", "setup_digest"),
    ]
    return [c for c in comps if c is not None]


def attach_samples(app: web.Application, samples: list[dict[str, object]]) -> None:
    """Sample ids the console shows as chips (demo)."""
    try:
        key = importlib.import_module("bot.channels.console.routes").SAMPLE_IDS
    except (ImportError, AttributeError):
        return
    app[key] = samples
