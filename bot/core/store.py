"""The one storage interface: Redis (redis.asyncio, one server, Sentinel or Cluster) or an embedded
in-process Redis (fakeredis).

Everything durable goes through here: dedup keys, conversation state, counters, locks, and
the analysis queue (Redis Streams, built on `.redis` by the queue module). Both backends speak
the same protocol, so the same tests run against each.

On a Redis Cluster every key that a Lua script or a transaction touches together must hash to one
slot: `key(..., slot=...)` puts such keys under one hash tag there (and leaves names as they always
were on one server, so a deploy changes no key).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import MovedError, RedisError

from bot.core.topology import (
    CLUSTER_NODE,
    Connection,
    RedisClient,
    RedisTopology,
    TopologyState,
    TopologyUnhealthy,
    connect,
    inspect,
)

log = structlog.get_logger(__name__)

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

# One sorted set per key: members are events scored by time. Drops what left the window, adds this
# event, keeps only the newest `keep` (enough to say "over the limit"), and counts.
_SLIDING_COUNT = """
redis.call('zremrangebyscore', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
redis.call('zadd', KEYS[1], ARGV[1], ARGV[3])
redis.call('zremrangebyrank', KEYS[1], 0, -(tonumber(ARGV[4]) + 1))
redis.call('pexpire', KEYS[1], ARGV[2])
return redis.call('zcard', KEYS[1])
"""

StoreError = RedisError

# The slot of the inbox: its stream and the dedup keys written with each entry.
INBOX_SLOT = "inbox"
# How long a write that must survive a failover waits for a replica to have it (Sentinel).
REPLICA_WAIT_MS = 200


def hash_tag(value: str) -> str:
    """The text between braces for `value`: readable when it can be, a digest when it has braces."""
    if value and "{" not in value and "}" not in value and len(value) <= 64:
        return value
    return hashlib.sha1(value.encode()).hexdigest()[:16]


class Store:
    """Thin typed layer over a Redis client with a key prefix (per deployment, per test run)."""

    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str = "jd:",
        embedded: bool = False,
        topology: RedisTopology | None = None,
        connection: Connection | None = None,
    ) -> None:
        self.redis = client
        self.prefix = prefix
        self.embedded = embedded
        self.topology = topology or RedisTopology("embedded" if embedded else "single")
        self._connection = connection
        self._topology_seen = ""  # the last topology state health() found, logged when it changes
        self._unreplicated_logged = 0.0

    @property
    def cluster(self) -> bool:
        return self.topology.kind == "cluster"

    def key(self, *parts: object, slot: str | None = None) -> str:
        """`<prefix>a:b:c`; on a cluster keys given the same `slot` share the hash tag `{slot}`."""
        name = ":".join(str(p) for p in parts)
        if slot is None or not self.cluster:
            return self.prefix + name
        return f"{self.prefix}{{{hash_tag(slot)}}}:{name}"

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        else:
            await self.redis.aclose()

    async def ping(self) -> float:
        """Round trip in milliseconds; raises StoreError when the server is unreachable."""
        start = time.perf_counter()
        await self.redis.ping()
        return (time.perf_counter() - start) * 1000

    async def health(self) -> str:
        """A one-line, secret-free description of the store; raises StoreError when it cannot take writes."""
        return (await self.health_state()).detail

    async def health_state(self) -> TopologyState:
        """The store's health in both forms: `detail` names hosts (`check`, the logs), `public` does
        not (/readyz); raises StoreError when the store cannot take writes.

        Beyond a PING: the topology's own state (Sentinel's master, the cluster's state on every
        primary) and a write in the inbox's slot, the write every callback depends on.
        """
        if self.embedded:
            return TopologyState(f"embedded store ({await self.ping():.1f} ms)", "embedded store")
        # The topology first: "no master known" says more than the refused connection behind it.
        state = await inspect(self.topology, self._connection) if self._connection else None
        detail = state.detail if state is not None else ""
        if detail and detail != self._topology_seen:
            # Names hosts: for the logs and `check` only, never /readyz. A failover shows up here.
            log.info("store_topology", detail=detail, before=self._topology_seen or None)
            self._topology_seen = detail
        ms = await self.ping()
        try:
            await self.redis.set(self.key("health", slot=INBOX_SLOT), str(int(time.time())), px=60_000)
        except MovedError:
            raise TopologyUnhealthy(CLUSTER_NODE, "cluster node, cluster mode not set") from None
        return TopologyState(
            f"PONG ({ms:.1f} ms), {detail or self.topology.describe()}",
            state.public if state is not None else self.topology.kind,
        )

    async def eval_replicated(self, script: str, numkeys: int, *args: Any) -> Any:
        """EVAL a write that is acknowledged to the outside world (a callback, a send about to start).

        Behind Sentinel the master replicates asynchronously: a failover right after the answer
        could lose the write. WAIT (on the same connection, hence the pipeline) until a replica has
        it, briefly; without a replica the write still goes through, and that is logged.
        """
        if self.topology.kind != "sentinel":
            return await self.redis.eval(script, numkeys, *args)
        pipe = self.redis.pipeline(transaction=False)
        pipe.eval(script, numkeys, *args)
        pipe.wait(1, REPLICA_WAIT_MS)
        result, replicas = await pipe.execute()
        if not replicas and time.monotonic() - self._unreplicated_logged > 60:
            self._unreplicated_logged = time.monotonic()
            log.warning("write_not_replicated", waited_ms=REPLICA_WAIT_MS)
        return result

    async def get_many(self, keys: list[str]) -> list[Any]:
        """GET of several keys (MGET; on a cluster one request per slot, since they may not share one)."""
        if not keys:
            return []
        if self.cluster:
            assert not isinstance(self.redis, aioredis.Redis)
            return list(await self.redis.mget_nonatomic(keys))
        return list(await self.redis.mget(keys))

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
        except (ValueError, RecursionError):
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

    async def count_recent(self, key: str, *, now_s: float, window_s: float, keep: int) -> int:
        """Count one more event under `key` and return the events of the last `window_s` seconds,
        this one included (at most `keep`: the set holds no more, whatever the flood)."""
        member = f"{now_s:.6f}:{secrets.token_hex(4)}"
        now_ms, window_ms = int(now_s * 1000), max(1, int(window_s * 1000))
        result = await self.redis.eval(_SLIDING_COUNT, 1, key, now_ms, window_ms, member, max(1, keep))
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


def open_store(target: str | RedisTopology, *, prefix: str = "jd:", timeout_s: float = 2.0) -> Store:
    """Create the store for a URL (empty = embedded) or a topology. Connecting is lazy: an
    unreachable server shows up on first use (and in /readyz)."""
    topology = RedisTopology.of_url(target) if isinstance(target, str) else target
    if topology.kind == "embedded":
        import fakeredis  # only needed for the embedded backend

        client: aioredis.Redis = fakeredis.FakeAsyncRedis(decode_responses=True)
        return Store(client, prefix=prefix, embedded=True, topology=topology)
    conn = connect(topology, timeout_s=timeout_s)
    return Store(conn.client, prefix=prefix, topology=topology, connection=conn)
