"""Run an aiohttp app until SIGINT/SIGTERM, with a clear message when the port is taken."""

from __future__ import annotations

import asyncio
import errno
import signal
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)


class PortInUse(Exception):
    pass


async def run_server(
    app: web.Application,
    host: str,
    port: int,
    *,
    on_started: Callable[[int], Awaitable[None]] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        raise
    bound = port
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        bound = server.sockets[0].getsockname()[1]
    log.info("listening", host=host, port=bound)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if on_started is not None:
            await on_started(bound)
        await stop.wait()
        log.info("shutting_down")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        # Stops accepting, lets in-flight requests finish, then runs cleanup_ctx (drains tasks).
        await runner.cleanup()
        log.info("stopped")
