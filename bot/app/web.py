"""The aiohttp application of `serve` and `demo`: the services, their routes, their lifetime.

`create_app` builds the services (`build_services`, the one composition root), registers the
routes of every channel that is on plus `/healthz`, `/readyz` and `/metrics`, and hands the
services' lifetime to the app: the cleanup context starts the background loops on startup, and on
shutdown stops them, drains tracked work within the grace period while the store and the HTTP
session still exist, then closes everything.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from bot.app import keys as K
from bot.app.runtime import Background
from bot.app.services import AppOptions, build_services
from bot.core.metrics import CONTENT_TYPE
from bot.core.redact import Redactor
from bot.core.settings import Settings


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    services = request.app[K.SERVICES]
    health = services.health
    results = await health.run()
    status = health.status_of(results)
    for r in results:
        services.metrics.ready.labels(r.name).set(1 if r.ok else 0)
    body = {"status": status, "checks": {r.name: r.as_json() for r in results}}
    return web.json_response(body, status=503 if status == "down" else 200)


async def metrics_view(request: web.Request) -> web.Response:
    body = request.app[K.SERVICES].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def create_app(
    settings: Settings, *, options: AppOptions | None = None, redactor: Redactor | None = None
) -> web.Application:
    opts = options or AppOptions()
    stack = contextlib.AsyncExitStack()
    services = await stack.enter_async_context(build_services(settings, options=opts, redactor=redactor))
    try:
        app = web.Application(client_max_size=settings.http.max_body_bytes)
        app[K.SETTINGS] = settings
        app[K.MODE] = opts.mode
        app[K.SERVICES] = services
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/metrics", metrics_view)
        for endpoint in services.endpoints:
            app.router.add_routes(endpoint.routes())
        app.on_shutdown.append(_close_endpoints)  # open sockets would hold the server's shutdown
        app.cleanup_ctx.append(_lifetime(stack))
    except BaseException:
        await stack.aclose()
        raise
    return app


async def _close_endpoints(app: web.Application) -> None:
    for endpoint in app[K.SERVICES].endpoints:
        await endpoint.close()


def _lifetime(stack: contextlib.AsyncExitStack) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        services = app[K.SERVICES]
        background = Background(services)
        try:
            background.start()
            yield
            await background.stop()
            # Background work gets the grace period while its resources still exist.
            await services.tasks.drain(services.settings.http.shutdown_grace_s)
        finally:
            await services.tasks.drain(0)
            await stack.aclose()

    return lifetime
