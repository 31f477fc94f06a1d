"""Typed keys for everything that hangs off the aiohttp application."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from bot.app.health import Health
from bot.core.metrics import Metrics
from bot.core.redact import Redactor
from bot.core.settings import Settings
from bot.core.store import Store
from bot.core.tasks import TaskTracker

SETTINGS = web.AppKey("settings", Settings)
MODE = web.AppKey("mode", str)  # "serve" | "demo"
REDACTOR = web.AppKey("redactor", Redactor)
METRICS = web.AppKey("metrics", Metrics)
TASKS = web.AppKey("tasks", TaskTracker)
HEALTH = web.AppKey("health", Health)
HTTP = web.AppKey("http", aiohttp.ClientSession)
STORE = web.AppKey("store", Store)
