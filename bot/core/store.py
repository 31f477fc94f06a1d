"""The one storage interface: Redis (redis.asyncio) or an embedded in-process Redis (fakeredis).

Everything durable goes through here: dedup keys, conversation state, counters, locks, and
the analysis queue (Redis Streams, built on `.redis` by the queue module). Both backends speak
the same protocol, so the same tests run against each.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

# Compare-and-delete / compare-and-extend so a lock is only touched by its holder.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""
_EXTEND = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end
"""
_INCR_EXPIRE = """
local v = redis.call('incrby', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 and redis.call('pttl', KEYS[1]) < 0 then redis.call('pexpire', KEYS[1], ARGV[2]) end
return v
"""

StoreError = RedisError


class Store:
    """Thin typed layer over a Redis client with a key prefix (per deployment, per test run)."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "jd:", embedded: bool = False) -> None:
        self.redis = client
        self.prefix = prefix
        self.embedded = embedded

    def key(self, *parts: object) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> float:
        """Round trip in milliseconds; raises StoreError when the server is unreachable."""
        start = time.perf_counter()
        await self.redis.ping()
        return (time.perf_counter() - start) * 1000

    # ---- dedup / flags

    async def claim(self, key: str, ttl_s: float, value: str = "1") -> bool:
        """SET NX with expiry: True the first time within the window."""
        return bool(await self.redis.set(key, value, nx=True, px=max(1, int(ttl_s * 1000))))

    async def exists(self, key: str) -> bool:
        return bool(await self.redis.exists(key))

    async def delete(self, *keys: str) -> int:
        return int(await self.redis.delete(*keys)) if keys else 0

    # ---- JSON values with TTL (conversation state, cached reports)

    async def get_json(self, key: str) -> Any:
        raw = await self.redis.get(key)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    async def set_json(self, key: str, value: Any, ttl_s: float | None = None) -> None:
        data = json.dumps(value, ensure_ascii=False, default=str)
        if ttl_s is None:
            await self.redis.set(key, data)
        else:
            await self.redis.set(key, data, px=max(1, int(ttl_s * 1000)))

    # ---- counters (rate limits, budgets)

    async def incr(self, key: str, amount: int = 1, ttl_s: float = 0) -> int:
        """Increment; the expiry is set when the counter is created (fixed window)."""
        result = await self.redis.eval(_INCR_EXPIRE, 1, key, amount, int(ttl_s * 1000))
        return int(result)

    async def get_int(self, key: str) -> int:
        raw = await self.redis.get(key)
        try:
            return int(raw) if raw is not None else 0
        except ValueError:
            return 0

    # ---- locks (leader election for the digest, WebSocket lease)

    async def acquire_lock(self, name: str, ttl_s: float) -> str | None:
        token = secrets.token_hex(12)
        ok = await self.redis.set(self.key("lock", name), token, nx=True, px=max(1, int(ttl_s * 1000)))
        return token if ok else None

    async def extend_lock(self, name: str, token: str, ttl_s: float) -> bool:
        res = await self.redis.eval(_EXTEND, 1, self.key("lock", name), token, int(ttl_s * 1000))
        return bool(res)

    async def release_lock(self, name: str, token: str) -> bool:
        return bool(await self.redis.eval(_RELEASE, 1, self.key("lock", name), token))


def open_store(redis_url: str, *, prefix: str = "jd:", timeout_s: float = 2.0) -> Store:
    """Create the store. Connecting is lazy: an unreachable server shows up on first use (and in /readyz)."""
    if not redis_url:
        import fakeredis  # only needed for the embedded backend

        client: aioredis.Redis = fakeredis.FakeAsyncRedis(decode_responses=True)
        return Store(client, prefix=prefix, embedded=True)
    client = aioredis.Redis.from_url(
        redis_url,
        decode_responses=True,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=15,
        retry_on_timeout=False,
    )
    return Store(client, prefix=prefix, embedded=False)
