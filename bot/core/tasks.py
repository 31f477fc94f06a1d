"""Tracks every background task so shutdown can drain them (nothing is fire-and-forget)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

log = structlog.get_logger(__name__)


class TaskTracker:
    """`spawn` work tasks (given the grace period on shutdown) or daemon loops (cancelled at once:
    pollers, reconnect loops, consumers that hand unfinished work back to the queue)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._daemons: set[asyncio.Task[Any]] = set()
        self._closing = False

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str, daemon: bool = False) -> asyncio.Task[Any]:
        if self._closing:
            coro.close()
            raise RuntimeError("task tracker is shutting down")
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        if daemon:
            self._daemons.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._daemons.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background_task_failed", task=task.get_name(), error=repr(task.exception()))

    @property
    def active(self) -> int:
        return len(self._tasks)

    async def drain(self, grace_s: float) -> int:
        """Wait up to grace_s for tasks to finish, then cancel the rest. Returns how many were cancelled."""
        self._closing = True
        daemons = {t for t in self._daemons if not t.done()}
        for task in daemons:
            task.cancel()
        await asyncio.gather(*daemons, return_exceptions=True)
        pending = {t for t in self._tasks if not t.done()}
        if pending and grace_s > 0:
            _, pending = await asyncio.wait(pending, timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            log.warning("background_tasks_cancelled", count=len(pending))
        return len(pending)
