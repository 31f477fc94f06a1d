"""Which Redis the store talks to, how to connect to it, and how healthy it is.

Four topologies: the embedded store (fakeredis, no server), one Redis server, a master followed
through failovers by asking its Sentinels (`redis.asyncio.sentinel`), and a Redis Cluster
(`redis.asyncio.cluster.RedisCluster`, reached through any one node). Nothing here ever puts a
password into a description or an error: descriptions name hosts and ports only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError, ResponseError

from bot.core.settings import Settings, parse_host_port

Kind = Literal["embedded", "single", "sentinel", "cluster"]
RedisClient = aioredis.Redis | RedisCluster


class TopologyUnhealthy(RedisError):
    """The servers answer, but not as a store the bot can write to (no master, cluster failing).

    `reason` is the few fixed words /readyz may show; the message names hosts (logs, `check`)."""

    def __init__(self, message: str, reason: str = "error") -> None:
        super().__init__(message)
        self.reason = reason


CLUSTER_NODE = "the server is a Redis Cluster node: set JOB_DOCTOR_REDIS_CLUSTER=true"


@dataclass(frozen=True)
class RedisTopology:
    kind: Kind
    url: str = field(default="", repr=False)  # may hold the password
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str = ""
    sentinel_password: str = field(default="", repr=False)

    @classmethod
    def of_url(cls, url: str) -> RedisTopology:
        return cls("single", url) if url else cls("embedded")

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisTopology:
        if settings.redis_sentinels:
            secret = settings.redis_sentinel_password
            return cls(
                "sentinel",
                settings.redis_url,
                sentinels=tuple(parse_host_port(s) for s in settings.redis_sentinels.split(",")),
                master_name=settings.redis_sentinel_master,
                sentinel_password=secret.get_secret_value() if secret else "",
            )
        if settings.redis_cluster:
            return cls("cluster", settings.redis_url)
        return cls.of_url(settings.redis_url)

    def describe(self) -> str:
        """Secret-free, one line: what `check` and the logs say about the store."""
        if self.kind == "sentinel":
            where = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"sentinel master {self.master_name!r} via {where}"
        if self.kind == "embedded":
            return "embedded store"
        opts = parse_url(self.url) if self.url.startswith(("redis://", "rediss://")) else {}
        node = f"{opts.get('host', 'localhost')}:{opts.get('port', 6379)}" if opts else "unix socket"
        return f"cluster via {node}" if self.kind == "cluster" else node


@dataclass
class Connection:
    client: RedisClient
    sentinel: Sentinel | None = None

    async def close(self) -> None:
        await self.client.aclose()
        if self.sentinel is not None:
            await self.sentinel.aclose()


def connect(topology: RedisTopology, *, timeout_s: float) -> Connection:
    """A client for a server topology. Connecting is lazy: trouble shows on first use (and in /readyz)."""
    common: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
    }
    if topology.kind == "cluster":
        return Connection(RedisCluster.from_url(topology.url, **common))
    if topology.kind == "sentinel":
        opts = parse_url(topology.url) if topology.url else {}
        master_kwargs: dict[str, Any] = {
            k: v for k, v in opts.items() if k in ("username", "password", "db") and v not in (None, "")
        }
        if "connection_class" in opts:  # rediss:// — TLS to the master (the Sentinel pool picks its class)
            master_kwargs["ssl"] = True
        sentinel_kwargs: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
        if topology.sentinel_password:
            sentinel_kwargs["password"] = topology.sentinel_password
        sentinel = Sentinel(list(topology.sentinels), sentinel_kwargs=sentinel_kwargs)
        client = sentinel.master_for(
            topology.master_name,
            redis_class=aioredis.Redis,
            health_check_interval=15,
            **common,
            **master_kwargs,
        )
        return Connection(client, sentinel)
    if topology.kind == "single":
        client = aioredis.Redis.from_url(
            topology.url, health_check_interval=15, retry_on_timeout=False, **common
        )
        return Connection(client)
    raise ValueError(f"no server to connect to for the {topology.kind} store")


# --------------------------------------------------------------------------- health


@dataclass(frozen=True)
class TopologyState:
    detail: str  # names hosts: `check` and the logs
    public: str  # no address: /readyz


async def inspect(topology: RedisTopology, conn: Connection) -> TopologyState:
    """Where the store is and whether it can take writes; raises TopologyUnhealthy/RedisError when not.

    A PING that some node answers proves little: a Sentinel setup must have a master it names and
    that says it is one, and a cluster must report `cluster_state:ok` on every primary.
    """
    if topology.kind == "sentinel":
        return await _inspect_sentinel(topology, conn)
    if topology.kind == "cluster":
        assert isinstance(conn.client, RedisCluster)
        return await _inspect_cluster(conn.client)
    return await _inspect_single(topology, conn)


async def _inspect_single(topology: RedisTopology, conn: Connection) -> TopologyState:
    try:
        info = await conn.client.info("cluster")
    except ResponseError:  # a proxy may not know INFO sections: nothing to tell then
        info = {}
    if int(info.get("cluster_enabled", 0) or 0):
        # Only the slots of this one node would work: most callbacks would fail with MOVED.
        raise TopologyUnhealthy(CLUSTER_NODE, "cluster node, cluster mode not set")
    return TopologyState(topology.describe(), "single server")


async def _inspect_sentinel(topology: RedisTopology, conn: Connection) -> TopologyState:
    assert conn.sentinel is not None
    answering = 0
    for sentinel in conn.sentinel.sentinels:
        try:
            await sentinel.ping()
            answering += 1
        except (RedisError, OSError):
            continue
    total = len(conn.sentinel.sentinels)
    try:
        host, port = await conn.sentinel.discover_master(topology.master_name)
    except RedisError:
        raise TopologyUnhealthy(
            f"no master known for {topology.master_name!r} ({answering}/{total} sentinels answer)",
            f"sentinel: no master known ({answering}/{total} sentinels answer)",
        ) from None
    info = await conn.client.info("replication")
    if info.get("role") != "master":
        raise TopologyUnhealthy(
            f"{host}:{port} is announced as master but is a {info.get('role')}",
            "sentinel: the announced master is not a master",
        )
    replicas = int(info.get("connected_slaves", 0))
    return TopologyState(
        f"sentinel master {topology.master_name!r} at {host}:{port}, {replicas} replica(s),"
        f" {answering}/{total} sentinels",
        f"sentinel: master known, {replicas} replica(s), {answering}/{total} sentinels",
    )


async def _inspect_cluster(client: RedisCluster) -> TopologyState:
    await client.initialize()  # re-reads the slots map when a node changed
    primaries = client.get_primaries()

    async def state(node: Any) -> dict[str, Any]:
        info: dict[str, Any] = await client.cluster_info(target_nodes=node)
        return info

    results = await asyncio.gather(*(state(n) for n in primaries), return_exceptions=True)
    bad: list[str] = []
    slots = 0
    for node, res in zip(primaries, results, strict=True):
        if isinstance(res, BaseException):
            bad.append(f"{node.name} unreachable ({type(res).__name__})")
        elif res.get("cluster_state") != "ok":
            bad.append(f"{node.name} cluster_state:{res.get('cluster_state')}")
        else:
            slots = max(slots, int(res.get("cluster_slots_ok", 0)))
    if bad:
        raise TopologyUnhealthy(
            "cluster not ok: " + "; ".join(bad)[:200], f"cluster not ok: {len(bad)} node(s) failing"
        )
    ok = f"cluster ok: {len(primaries)} primaries, {slots}/16384 slots"
    return TopologyState(ok, ok)
