"""Durable queues on Redis Streams with consumer groups.

- `Inbox`: messages accepted by a channel callback. The dedup key and the stream entry are
  written in one Lua script, so an acknowledged callback is durable and a duplicate delivery
  never makes a second entry. The inbox is never trimmed: when it holds `max_entries` unprocessed
  entries, new messages are refused (`InboxFull`) instead of old ones being dropped.
- `JobQueue`: analysis jobs, single-flight per request key: while a job for a step is queued
  or running, later askers join its requester list instead of queueing a second analysis.
- `DeadLetters`: what was given up on, with the reason, for an operator to look at.

Entries a consumer read but did not acknowledge (it died) are reclaimed by any consumer after
`claim_idle_s` with XAUTOCLAIM; a consumer that stops hands its entries back at once
(`hand_back`), so another one takes them on its next reclaim instead of after the claim timeout.

Redis Cluster: a Lua script only touches keys of one slot. The inbox's dedup keys live in the
inbox's slot; a request key's in-flight mark, requester list and delivery state share the request
key's slot; the job stream is on its own, so submitting a job is two steps (mark, then add), made
safe by an in-flight mark that says "being created" and is taken over when its creator died.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError, ResponseError

from bot.core.models import AnalysisJob, IncomingMessage, Requester
from bot.core.store import INBOX_SLOT, Store

T = TypeVar("T", bound=BaseModel)

GROUP = "workers"
# Idle time given to a handed-back entry: far beyond any claim timeout, so the next XAUTOCLAIM of
# any consumer takes it.
HANDED_BACK_IDLE_MS = 86_400_000
# A "being created" in-flight mark older than this belongs to a submitter that died mid-way.
CREATING_STALE_MS = 5_000

# KEYS[1]=dedup key, KEYS[2]=stream (one slot); ARGV[1]=ttl ms, ARGV[2]=payload, ARGV[3]=max entries
# Returns the entry id, false for a duplicate, -1 when the inbox is full.
_ACCEPT = """
if redis.call('exists', KEYS[1]) == 1 then return false end
if redis.call('xlen', KEYS[2]) >= tonumber(ARGV[3]) then return -1 end
redis.call('set', KEYS[1], '1', 'PX', ARGV[1])
return redis.call('xadd', KEYS[2], '*', 'p', ARGV[2])
"""

# KEYS[1]=inflight mark, KEYS[2]=requesters list (the request key's slot)
# ARGV[1]=requester json, ARGV[2]=ttl ms, ARGV[3]=stale ms
# Returns {1, mark}: the caller must add the entry, then bind the mark to it; {0, entry id or mark}
# when joining (a mark means the entry is being added right now).
_SUBMIT = """
local present = false
for _, r in ipairs(redis.call('lrange', KEYS[2], 0, -1)) do
  if r == ARGV[1] then present = true end
end
if not present then redis.call('rpush', KEYS[2], ARGV[1]) end
redis.call('pexpire', KEYS[2], ARGV[2])
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('get', KEYS[1])
if cur and string.sub(cur, 1, 4) == 'new:' and now - (tonumber(string.sub(cur, 5)) or 0) >= tonumber(ARGV[3]) then
  cur = false
end
if cur then return {0, cur} end
local mark = 'new:' .. now
redis.call('set', KEYS[1], mark, 'PX', ARGV[2])
return {1, mark}
"""

# While another submitter adds the entry: KEYS[1]=inflight mark, KEYS[2]=requesters; ARGV[1]=requester
# json, ARGV[2]=stale ms. Returns {'id', entry id} once added; {'wait'} meanwhile; {'taken'} when the
# requester left the list (a worker took it to deliver to it); {'again'} when the mark is gone or
# stale with the requester still listed (its creator failed or died: submit again, taking over).
_JOINED = """
local cur = redis.call('get', KEYS[1])
if cur and string.sub(cur, 1, 4) ~= 'new:' then return {'id', cur} end
local listed = false
for _, r in ipairs(redis.call('lrange', KEYS[2], 0, -1)) do
  if r == ARGV[1] then listed = true end
end
if not listed then return {'taken', ''} end
if cur then
  local t = redis.call('time')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if now - (tonumber(string.sub(cur, 5)) or 0) < tonumber(ARGV[2]) then return {'wait', cur} end
end
return {'again', ''}
"""

# Compare-and-set: KEYS[1]=inflight mark; ARGV[1]=expected value, ARGV[2]=new value ('' deletes).
_SWAP = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('del', KEYS[1]) else redis.call('set', KEYS[1], ARGV[2], 'KEEPTTL') end
return 1
"""

# Move every requester to the entry's delivery list and clear the in-flight mark in one step:
# an asker who joins later starts a new job instead of being lost between "read" and "delete",
# and a worker that dies while delivering leaves the list for whoever reclaims the entry.
# KEYS: inflight, requesters, delivery list (the request key's slot)
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

# Re-queue a failed attempt and acknowledge the old entry atomically (one stream, one slot).
_REQUEUE = """
local id = redis.call('xadd', KEYS[1], '*', 'p', ARGV[2])
redis.call('xack', KEYS[1], ARGV[1], ARGV[3])
redis.call('xdel', KEYS[1], ARGV[3])
return id
"""

_ACK = """
redis.call('xack', KEYS[1], ARGV[1], ARGV[2])
return redis.call('xdel', KEYS[1], ARGV[2])
"""


class InboxFull(ResponseError):
    """The inbox holds its maximum of unprocessed entries: the message was not stored."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    id: str
    item: T | None  # None when the payload could not be decoded (acked and dropped by the caller)
    deliveries: int = 1  # how often the entry was handed to a consumer (this time included)
    raw: str = ""  # the payload as stored (what a dead letter keeps)


class StreamQueue(Generic[T]):
    def __init__(self, store: Store, name: str, model: type[T], *, slot: str | None = None) -> None:
        self.store = store
        self.name = name
        self.stream = store.key("q", name, slot=slot)
        self.model = model

    async def ensure_group(self) -> None:
        try:
            await self.store.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _decode(self, entry_id: str, fields: dict[str, Any], deliveries: int = 1) -> Entry[T]:
        raw = str(fields.get("p", ""))
        try:
            return Entry(entry_id, self.model.model_validate_json(raw), deliveries, raw)
        except (ValidationError, ValueError):
            return Entry(entry_id, None, deliveries, raw)

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
        """Take over entries another consumer read but never acknowledged (it died, or handed them back)."""
        resp = await self.store.redis.xautoclaim(
            self.stream, GROUP, consumer, min_idle_time=min_idle_ms, start_id="0-0", count=count
        )
        claimed = resp[1] if isinstance(resp, list | tuple) and len(resp) > 1 else []
        found: list[tuple[str, dict[str, Any]]] = []
        for entry_id, fields in claimed:
            if fields is None:  # deleted meanwhile
                await self.ack(entry_id)
                continue
            found.append((str(entry_id), dict(fields)))
        if not found:
            return []
        counts = await self._delivery_counts(consumer, [entry_id for entry_id, _ in found])
        return [self._decode(entry_id, fields, counts.get(entry_id, 2)) for entry_id, fields in found]

    async def _delivery_counts(self, consumer: str, ids: list[str]) -> dict[str, int]:
        rows = await self.store.redis.xpending_range(
            self.stream, GROUP, min=ids[0], max=ids[-1], count=len(ids) * 4 + 10, consumername=consumer
        )
        return {str(r["message_id"]): int(r["times_delivered"]) for r in rows}

    async def touch(self, consumer: str, entry_id: str) -> None:
        """Reset the entry's idle time: it is still being worked on, so nobody may reclaim it."""
        await self.store.redis.xclaim(self.stream, GROUP, consumer, 0, [entry_id], justid=True)

    async def hand_back(self, consumer: str) -> list[str]:
        """Make every entry `consumer` still holds claimable by any other consumer right away.

        There is no "un-read" in Redis Streams (before 8.x): the entry is re-claimed with an idle
        time beyond any claim timeout, and its delivery count is put back to what it was, so
        handing work over on a deploy does not count as a failed attempt.
        """
        rows = await self.store.redis.xpending_range(
            self.stream, GROUP, min="-", max="+", count=1000, consumername=consumer
        )
        handed: list[str] = []
        for row in rows:
            entry_id = str(row["message_id"])
            await self.store.redis.xclaim(
                self.stream,
                GROUP,
                consumer,
                0,
                [entry_id],
                idle=HANDED_BACK_IDLE_MS,
                retrycount=max(0, int(row["times_delivered"]) - 1),
                justid=True,
            )
            handed.append(entry_id)
        return handed

    async def ack(self, entry_id: str) -> None:
        await self.store.redis.eval(_ACK, 1, self.stream, GROUP, entry_id)

    async def depth(self) -> int:
        """Entries not yet acknowledged (waiting + in progress)."""
        try:
            groups = await self.store.redis.xinfo_groups(self.stream)
        except ResponseError:
            return 0
        pending = sum(int(g.get("pending", 0)) for g in groups)
        lag = sum(int(g.get("lag", 0) or 0) for g in groups)
        return pending + lag

    async def length(self) -> int:
        """Entries in the stream: acknowledged entries are deleted, so these are the unprocessed ones."""
        return int(await self.store.redis.xlen(self.stream))

    async def pending_count(self) -> int:
        try:
            info = await self.store.redis.xpending(self.stream, GROUP)
        except ResponseError:
            return 0
        return int(info.get("pending", 0)) if isinstance(info, dict) else 0


class Inbox(StreamQueue[IncomingMessage]):
    def __init__(self, store: Store, *, max_entries: int = 100_000) -> None:
        super().__init__(store, "inbox", IncomingMessage, slot=INBOX_SLOT)
        self.max_entries = max_entries

    async def accept(self, fingerprint: str, msg: IncomingMessage, *, window_s: float) -> bool:
        """Durably accept a message unless the same one was accepted within the window.

        Raises `InboxFull` (nothing stored) when the inbox holds `max_entries` unprocessed entries.
        """
        res = await self.store.eval_replicated(
            _ACCEPT,
            2,
            self.store.key("dedup", fingerprint, slot=INBOX_SLOT),
            self.stream,
            max(1, int(window_s * 1000)),
            msg.model_dump_json(),
            self.max_entries,
        )
        if res == -1:
            raise InboxFull(f"inbox holds {self.max_entries} unprocessed entries")
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
        return (
            self.store.key("inflight", request_key, slot=request_key),
            self.store.key("askers", request_key, slot=request_key),
        )

    def _delivering(self, request_key: str, entry_id: str) -> str:
        return self.store.key("delivering", entry_id, slot=request_key)

    async def submit(self, job: AnalysisJob, requester: Requester) -> SubmitResult:
        inflight, askers = self._keys(job.request_key)
        who = requester.model_dump_json()
        while True:
            queued, value = await self.store.redis.eval(
                _SUBMIT, 2, inflight, askers, who, self.inflight_ttl_ms, CREATING_STALE_MS
            )
            value = str(value)
            if int(queued):
                return SubmitResult(queued=True, entry_id=await self._create(inflight, value, job))
            if not value.startswith("new:"):
                return SubmitResult(queued=False, entry_id=value)
            # Another submitter is adding the entry right now: wait for it, so this asker never
            # rides on an entry that never comes (its creator may fail or die in between).
            while True:
                await asyncio.sleep(0.02)
                state, value = await self.store.redis.eval(
                    _JOINED, 2, inflight, askers, who, CREATING_STALE_MS
                )
                if state != "wait":
                    break
            if state == "id":
                return SubmitResult(queued=False, entry_id=str(value))
            if state == "taken":
                return SubmitResult(queued=False, entry_id="")

    async def _create(self, inflight: str, mark: str, job: AnalysisJob) -> str:
        try:
            entry_id = await self.add(job)
        except BaseException:
            # Not known to be added: let the next asker (or this message's retry) create it instead
            # of waiting for the mark to go stale; an entry that was added after all costs one more
            # analysis, never a second report.
            with contextlib.suppress(RedisError):
                await self.store.redis.eval(_SWAP, 1, inflight, mark, "")
            raise
        await self.store.redis.eval(_SWAP, 1, inflight, mark, entry_id)
        return entry_id

    async def requesters(self, request_key: str) -> list[Requester]:
        _inflight, askers = self._keys(request_key)
        return _parse_requesters(await self.store.redis.lrange(askers, 0, -1))

    async def finish(self, request_key: str, entry_id: str) -> list[Requester]:
        """Everyone to deliver this entry's result to (idempotent for the same entry)."""
        inflight, askers = self._keys(request_key)
        delivering = self._delivering(request_key, entry_id)
        raw = await self.store.redis.eval(_FINISH, 3, inflight, askers, delivering, 86_400_000)
        return _parse_requesters(raw or [])

    def delivery_state(self, request_key: str, entry_id: str) -> DeliveryState:
        return DeliveryState(self.store, self.store.key("dlv", entry_id, slot=request_key))

    async def complete(self, entry_id: str, request_key: str = "") -> None:
        """Acknowledge the entry and forget its delivery list and state (everything went out)."""
        await self.ack(entry_id)
        await self.store.delete(self._delivering(request_key, entry_id))
        await self.store.delete(self.delivery_state(request_key, entry_id).key)

    async def requeue(self, entry_id: str, job: AnalysisJob) -> str:
        inflight, _askers = self._keys(job.request_key)
        new_id = str(
            await self.store.redis.eval(_REQUEUE, 1, self.stream, GROUP, job.model_dump_json(), entry_id)
        )
        # Joiners from now on wait for the new entry (a crash before this only costs them the
        # progress note's "already done" check).
        await self.store.redis.eval(_SWAP, 1, inflight, entry_id, new_id)
        return new_id


def requester_id(requester: Requester) -> str:
    target = requester.target
    return hashlib.sha256(
        f"{target.channel}\x1f{target.chat_id}\x1f{requester.sender_id}".encode()
    ).hexdigest()[:16]


class DeliveryState:
    """Per-requester delivery attempts of one job entry (a hash: requester id → attempts, or "dead")."""

    def __init__(self, store: Store, key: str) -> None:
        self.store = store
        self.key = key

    async def dead(self) -> set[str]:
        raw = await self.store.redis.hgetall(self.key)
        return {str(k) for k, v in raw.items() if v == "dead"}

    async def failed(self, requester: Requester) -> int:
        """Count one failed attempt for the requester; returns the attempts so far."""
        n = int(await self.store.redis.hincrby(self.key, requester_id(requester), 1))
        await self.store.redis.pexpire(self.key, 86_400_000)
        return n

    async def give_up(self, requester: Requester) -> None:
        await self.store.redis.hset(self.key, requester_id(requester), "dead")


class DeadLetters:
    """The dead-letter stream: entries and deliveries given up on, with why. Bounded (oldest go)."""

    def __init__(self, store: Store, *, keep: int = 10_000) -> None:
        self.store = store
        self.stream = store.key("q", "dead")
        self.keep = keep

    async def add(
        self,
        *,
        queue: str,
        entry_id: str,
        reason: str,
        payload: str,
        attempts: int,
        requester: Requester | None = None,
    ) -> str:
        fields: dict[Any, Any] = {
            "queue": queue,
            "entry": entry_id,
            "reason": reason[:500],
            "attempts": str(attempts),
            "requester": requester.model_dump_json() if requester is not None else "",
            "payload": payload,
            "at": str(int(time.time())),
        }
        return str(await self.store.redis.xadd(self.stream, fields, maxlen=self.keep, approximate=True))

    async def entries(self, count: int = 100) -> list[dict[str, str]]:
        rows = await self.store.redis.xrange(self.stream, "-", "+", count=count)
        return [
            {"id": str(entry_id), **{str(k): str(v) for k, v in (fields or {}).items()}}
            for entry_id, fields in rows or []
        ]

    async def count(self) -> int:
        return int(await self.store.redis.xlen(self.stream))


def _parse_requesters(raw: list[Any]) -> list[Requester]:
    out: list[Requester] = []
    for item in raw:
        try:
            out.append(Requester.model_validate(json.loads(item)))
        except (ValueError, ValidationError):
            continue
    return out
