"""Application factory: `create_app(settings)` wires resources, routes and components.

Resources are opened and closed through `cleanup_ctx` (in registration order, closed in
reverse) and reached through the typed keys in `bot.app.keys`. Features register themselves
as components: a function that receives the app and adds routes and cleanup contexts.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Sequence

import aiohttp
import structlog
from aiohttp import web

from bot.app import keys as K
from bot.app.health import Health
from bot.app.probes import register_probes
from bot.core.metrics import CONTENT_TYPE, Metrics
from bot.core.redact import Redactor
from bot.core.settings import Settings
from bot.core.store import StoreError, open_store
from bot.core.tasks import TaskTracker

log = structlog.get_logger(__name__)

Component = Callable[[web.Application], None]


async def _http_ctx(app: web.Application) -> AsyncIterator[None]:
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=30, connect=5),
        headers={"User-Agent": "job-doctor"},
    )
    app[K.HTTP] = session
    yield
    await session.close()


async def _wait_for_redis(app: web.Application) -> None:
    """Log (with backoff) until the store answers; /readyz reports the outage meanwhile."""
    store = app[K.STORE]
    delay = 0.5
    while True:
        try:
            await store.ping()
            log.info("store_ready", embedded=store.embedded)
            return
        except (StoreError, OSError) as exc:
            log.warning("store_unreachable", error=type(exc).__name__, retry_in_s=round(delay, 1))
        await asyncio.sleep(delay + random.uniform(0, delay / 4))
        delay = min(delay * 2, 30.0)


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[K.SETTINGS]
    store = open_store(settings.redis_url, prefix=settings.redis_key_prefix)
    app[K.STORE] = store
    app[K.TASKS].spawn(_wait_for_redis(app), name="wait-for-redis", daemon=True)
    register_probes(app[K.HEALTH], settings, store, app[K.HTTP])
    yield
    await store.close()


async def _tasks_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    # Final safety net (normally a no-op: _drain_ctx has drained already).
    await app[K.TASKS].drain(0)


async def _drain_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    # Runs after the components have stopped their loops and before the store and the HTTP
    # session close: background work gets the grace period while its resources still exist.
    await app[K.TASKS].drain(app[K.SETTINGS].http.shutdown_grace_s)


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    health = request.app[K.HEALTH]
    results = await health.run()
    status = health.status_of(results)
    metrics = request.app[K.METRICS]
    for r in results:
        metrics.ready.labels(r.name).set(1 if r.ok else 0)
    body = {"status": status, "checks": {r.name: r.as_json() for r in results}}
    return web.json_response(body, status=503 if status == "down" else 200)


async def metrics_view(request: web.Request) -> web.Response:
    return web.Response(body=request.app[K.METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


def create_app(
    settings: Settings,
    *,
    mode: str = "serve",
    components: Sequence[Component] = (),
    redactor: Redactor | None = None,
) -> web.Application:
    app = web.Application(client_max_size=settings.http.max_body_bytes)
    app[K.SETTINGS] = settings
    app[K.MODE] = mode
    app[K.REDACTOR] = redactor or Redactor(settings.secret_values())
    app[K.METRICS] = Metrics()
    app[K.TASKS] = TaskTracker()
    app[K.HEALTH] = Health()
    app.cleanup_ctx.append(_tasks_ctx)
    app.cleanup_ctx.append(_http_ctx)
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_drain_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    for component in components:
        component(app)
    return app
