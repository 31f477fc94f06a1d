"""Durable queues on Redis Streams with consumer groups.

- `Inbox`: messages accepted by a channel callback. The dedup key and the stream entry are
  written in one Lua script, so an acknowledged callback is durable and a duplicate delivery
  never makes a second entry.
- `JobQueue`: analysis jobs, single-flight per request key: while a job for a step is queued
  or running, later askers join its requester list instead of queueing a second analysis.

Entries a consumer read but did not acknowledge (it crashed) are reclaimed by any consumer
after `claim_idle_s` with XAUTOCLAIM.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError
from redis.exceptions import ResponseError

from bot.core.models import AnalysisJob, IncomingMessage, Requester
from bot.core.store import Store

T = TypeVar("T", bound=BaseModel)

GROUP = "workers"

# KEYS[1]=dedup key, KEYS[2]=stream; ARGV[1]=ttl ms, ARGV[2]=payload, ARGV[3]=maxlen
_ACCEPT = """
if redis.call('set', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  return redis.call('xadd', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'p', ARGV[2])
end
return false
"""

# KEYS[1]=inflight key, KEYS[2]=requesters list, KEYS[3]=stream
# ARGV[1]=requester json, ARGV[2]=job json, ARGV[3]=inflight ttl ms
# Returns {queued(0/1), entry id or ''}
_SUBMIT = """
local present = false
for _, r in ipairs(redis.call('lrange', KEYS[2], 0, -1)) do
  if r == ARGV[1] then present = true end
end
if not present then redis.call('rpush', KEYS[2], ARGV[1]) end
redis.call('pexpire', KEYS[2], ARGV[3])
if redis.call('set', KEYS[1], '1', 'NX', 'PX', ARGV[3]) then
  local id = redis.call('xadd', KEYS[3], '*', 'p', ARGV[2])
  redis.call('set', KEYS[1], id, 'PX', ARGV[3])
  return {1, id}
end
return {0, redis.call('get', KEYS[1]) or ''}
"""

# Move every requester to the entry's delivery list and clear the in-flight mark in one step:
# an asker who joins later starts a new job instead of being lost between "read" and "delete",
# and a worker that dies while delivering leaves the list for whoever reclaims the entry.
_FINISH = """
local have = {}
for _, r in ipairs(redis.call('lrange', KEYS[3], 0, -1)) do have[r] = true end
for _, r in ipairs(redis.call('lrange', KEYS[2], 0, -1)) do
  if not have[r] then redis.call('rpush', KEYS[3], r); have[r] = true end
end
redis.call('pexpire', KEYS[3], ARGV[1])
redis.call('del', KEYS[1], KEYS[2])
return redis.call('lrange', KEYS[3], 0, -1)
"""

# Re-queue a failed attempt and acknowledge the old entry atomically.
_REQUEUE = """
local id = redis.call('xadd', KEYS[1], '*', 'p', ARGV[2])
redis.call('xack', KEYS[1], ARGV[1], ARGV[3])
redis.call('xdel', KEYS[1], ARGV[3])
if KEYS[2] ~= '' and redis.call('exists', KEYS[2]) == 1 then redis.call('set', KEYS[2], id, 'KEEPTTL') end
return id
"""


@dataclass(frozen=True)
class Entry(Generic[T]):
    id: str
    item: T | None  # None when the payload could not be decoded (acked and dropped by the caller)
    deliveries: int = 1


class StreamQueue(Generic[T]):
    def __init__(self, store: Store, name: str, model: type[T]) -> None:
        self.store = store
        self.stream = store.key("q", name)
        self.model = model

    async def ensure_group(self) -> None:
        try:
            await self.store.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _decode(self, entry_id: str, fields: dict[str, Any], deliveries: int = 1) -> Entry[T]:
        try:
            return Entry(entry_id, self.model.model_validate_json(fields.get("p", "")), deliveries)
        except (ValidationError, ValueError):
            return Entry(entry_id, None, deliveries)

    async def add(self, item: T) -> str:
        return str(await self.store.redis.xadd(self.stream, {"p": item.model_dump_json()}))

    async def read(self, consumer: str, *, count: int = 10, block_ms: int = 1000) -> list[Entry[T]]:
        if self.store.embedded:
            # fakeredis does not survive the cancellation of a blocking XREADGROUP: poll instead.
            resp: Any = await self.store.redis.xreadgroup(GROUP, consumer, {self.stream: ">"}, count=count)
            if not resp:
                await asyncio.sleep(min(block_ms, 100) / 1000)
        else:
            resp = await self.store.redis.xreadgroup(
                GROUP, consumer, {self.stream: ">"}, count=count, block=block_ms
            )
        out: list[Entry[T]] = []
        for _stream, entries in resp or []:
            for entry_id, fields in entries:
                out.append(self._decode(str(entry_id), dict(fields)))
        return out

    async def reclaim(self, consumer: str, *, min_idle_ms: int, count: int = 10) -> list[Entry[T]]:
        """Take over entries another consumer read but never acknowledged (it died)."""
        resp = await self.store.redis.xautoclaim(
            self.stream, GROUP, consumer, min_idle_time=min_idle_ms, start_id="0-0", count=count
        )
        claimed = resp[1] if isinstance(resp, list | tuple) and len(resp) > 1 else []
        out: list[Entry[T]] = []
        for entry_id, fields in claimed:
            if fields is None:  # deleted meanwhile
                await self.ack(entry_id)
                continue
            out.append(self._decode(entry_id, fields, deliveries=2))
        return out

    async def touch(self, consumer: str, entry_id: str) -> None:
        """Reset the entry's idle time: it is still being worked on, so nobody may reclaim it."""
        await self.store.redis.xclaim(self.stream, GROUP, consumer, 0, [entry_id], justid=True)

    async def ack(self, entry_id: str) -> None:
        pipe = self.store.redis.pipeline(transaction=True)
        pipe.xack(self.stream, GROUP, entry_id)
        pipe.xdel(self.stream, entry_id)
        await pipe.execute()

    async def depth(self) -> int:
        """Entries not yet acknowledged (waiting + in progress)."""
        try:
            groups = await self.store.redis.xinfo_groups(self.stream)
        except ResponseError:
            return 0
        pending = sum(int(g.get("pending", 0)) for g in groups)
        lag = sum(int(g.get("lag", 0) or 0) for g in groups)
        return pending + lag

    async def pending_count(self) -> int:
        try:
            info = await self.store.redis.xpending(self.stream, GROUP)
        except ResponseError:
            return 0
        return int(info.get("pending", 0)) if isinstance(info, dict) else 0


class Inbox(StreamQueue[IncomingMessage]):
    def __init__(self, store: Store) -> None:
        super().__init__(store, "inbox", IncomingMessage)

    async def accept(
        self, fingerprint: str, msg: IncomingMessage, *, window_s: float, maxlen: int = 100_000
    ) -> bool:
        """Durably accept a message unless the same one was accepted within the window."""
        res = await self.store.redis.eval(
            _ACCEPT,
            2,
            self.store.key("dedup", fingerprint),
            self.stream,
            max(1, int(window_s * 1000)),
            msg.model_dump_json(),
            maxlen,
        )
        return bool(res)


@dataclass(frozen=True)
class SubmitResult:
    queued: bool  # a new job entry was created
    entry_id: str  # the job entry (new or the one being joined)


class JobQueue(StreamQueue[AnalysisJob]):
    def __init__(self, store: Store, *, inflight_ttl_s: float = 1800.0) -> None:
        super().__init__(store, "jobs", AnalysisJob)
        self.inflight_ttl_ms = max(1000, int(inflight_ttl_s * 1000))

    def _keys(self, request_key: str) -> tuple[str, str]:
        return self.store.key("inflight", request_key), self.store.key("askers", request_key)

    async def submit(self, job: AnalysisJob, requester: Requester) -> SubmitResult:
        inflight, askers = self._keys(job.request_key)
        res = await self.store.redis.eval(
            _SUBMIT,
            3,
            inflight,
            askers,
            self.stream,
            requester.model_dump_json(),
            job.model_dump_json(),
            self.inflight_ttl_ms,
        )
        return SubmitResult(queued=bool(int(res[0])), entry_id=str(res[1]))

    async def requesters(self, request_key: str) -> list[Requester]:
        _inflight, askers = self._keys(request_key)
        return _parse_requesters(await self.store.redis.lrange(askers, 0, -1))

    async def finish(self, request_key: str, entry_id: str) -> list[Requester]:
        """Everyone to deliver this entry's result to (idempotent for the same entry)."""
        inflight, askers = self._keys(request_key)
        delivering = self.store.key("delivering", entry_id)
        raw = await self.store.redis.eval(_FINISH, 3, inflight, askers, delivering, 86_400_000)
        return _parse_requesters(raw or [])

    async def complete(self, entry_id: str) -> None:
        """Acknowledge the entry and forget its delivery list (everything went out)."""
        await self.ack(entry_id)
        await self.store.redis.delete(self.store.key("delivering", entry_id))

    async def requeue(self, entry_id: str, job: AnalysisJob) -> str:
        inflight, _askers = self._keys(job.request_key)
        res = await self.store.redis.eval(
            _REQUEUE, 2, self.stream, inflight, GROUP, job.model_dump_json(), entry_id
        )
        return str(res)


def _parse_requesters(raw: list[Any]) -> list[Requester]:
    out: list[Requester] = []
    for item in raw:
        try:
            out.append(Requester.model_validate(json.loads(item)))
        except (ValueError, ValidationError):
            continue
    return out
