"""Every key that hangs something off the aiohttp application (one place, typed)."""

from __future__ import annotations

from aiohttp import web

from bot.app.services import Services
from bot.core.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
MODE = web.AppKey("mode", str)  # "serve" | "demo"
SERVICES = web.AppKey("services", Services)
