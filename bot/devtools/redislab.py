"""Local Redis topologies on free ports, for the tests and the benchmarks.

Each is made of real `redis-server` processes in a work directory: one server; a master with a
replica watched by three Sentinels (`redis-server --sentinel`); a Redis Cluster of three primaries
(slots assigned and nodes introduced with CLUSTER commands, so `redis-cli` is not needed). Every
process writes its output to a file in the work directory; `close()` kills and reaps them all.

Synchronous on purpose: the topologies are started before the code under test runs, from sync
fixtures as well as async ones.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import redis

REDIS_BIN = "redis-server"
SLOTS = 16384


def redis_server_available() -> bool:
    return shutil.which(REDIS_BIN) is not None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too, both below the ephemeral range."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(10_000, 22_000)
        if _bindable(port) and _bindable(port + 10_000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _wait(what: str, check: Callable[[], bool], timeout: float, proc: RedisProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        if proc is not None and not proc.running:
            raise RuntimeError(f"{proc.name} exited: {proc.output()[-1500:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class RedisProcess:
    """One `redis-server` (or Sentinel) process on its own port."""

    def __init__(
        self, name: str, workdir: Path, args: Sequence[str], *, password: str = "", port: int | None = None
    ) -> None:
        self.name = name
        self.port = port or free_port()
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.args = list(args)
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password or None,
            socket_timeout=2,
            decode_responses=True,
            **kwargs,  # type: ignore[arg-type]
        )

    def ping(self) -> bool:
        with self.client() as c:
            return bool(c.ping())

    def start(self, timeout: float = 10.0) -> None:
        assert not self.running, f"{self.name} is already running"
        self._close_out()
        self._out = (self.dir / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [REDIS_BIN, *self.args],
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        _wait(f"{self.name} to answer PING", self.ping, timeout, self)

    def kill(self) -> None:
        """SIGKILL and reap: a crash."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.communicate(timeout=10)

    def _close_out(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def close(self) -> None:
        self.kill()
        self._close_out()

    def output(self) -> str:
        try:
            return (self.dir / "server.log").read_text("utf-8", errors="replace")
        except FileNotFoundError:
            return ""


def _server_args(port: int, password: str, *extra: str) -> list[str]:
    # No disk, and a replica syncs at once (the default waits 5 s for more replicas to join).
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--repl-diskless-sync-delay", "0"]
    if password:
        args += ["--requirepass", password, "--masterauth", password]
    return [*args, *extra]


class SingleRedis:
    def __init__(self, workdir: Path, *, password: str = "") -> None:
        self.server = RedisProcess("redis", workdir, [], password=password)
        self.server.args = _server_args(self.server.port, password)
        self.password = password

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.server.port}/0"

    def start(self) -> SingleRedis:
        self.server.start()
        return self

    def close(self) -> None:
        self.server.close()


class SentinelTopology:
    """A master, one replica and three Sentinels (quorum 2) monitoring it as `master_name`."""

    def __init__(
        self,
        workdir: Path,
        *,
        master_name: str = "mymaster",
        password: str = "",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        self.master_name = master_name
        self.password = password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.master = RedisProcess("master", workdir, [], password=password)
        self.master.args = _server_args(self.master.port, password)
        self.replica = RedisProcess("replica", workdir, [], password=password)
        self.replica.args = _server_args(
            self.replica.port, password, "--replicaof", "127.0.0.1", str(self.master.port)
        )
        self.sentinels = [RedisProcess(f"sentinel{i}", workdir, []) for i in range(3)]

    @property
    def servers(self) -> list[RedisProcess]:
        return [self.master, self.replica]

    @property
    def sentinel_addresses(self) -> str:
        """The value of JOB_DOCTOR_REDIS_SENTINELS."""
        return ",".join(s.address for s in self.sentinels)

    @property
    def url(self) -> str:
        """The value of JOB_DOCTOR_REDIS_URL: password and db only, no host (the Sentinels tell it)."""
        return f"redis://:{self.password}@/0" if self.password else "redis:///0"

    def _sentinel_id(self, sentinel: RedisProcess) -> str:
        return f"{self.sentinels.index(sentinel) + 1:040x}"

    def _sentinel_conf(self, sentinel: RedisProcess) -> Path:
        lines = [
            f"port {sentinel.port}",
            "bind 127.0.0.1",
            f'dir "{sentinel.dir}"',
            f"sentinel monitor {self.master_name} 127.0.0.1 {self.master.port} 2",
            f"sentinel down-after-milliseconds {self.master_name} {self.down_after_ms}",
            f"sentinel failover-timeout {self.master_name} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {self.master_name} 1",
        ]
        if self.password:
            lines.append(f"sentinel auth-pass {self.master_name} {self.password}")
        # Introduced up front: discovering replicas (INFO every 10 s) and peers (hello every 2 s)
        # would otherwise take most of the start-up time.
        lines.append(f"sentinel myid {self._sentinel_id(sentinel)}")
        lines.append(f"sentinel known-replica {self.master_name} 127.0.0.1 {self.replica.port}")
        for peer in self.sentinels:
            if peer is not sentinel:
                lines.append(
                    f"sentinel known-sentinel {self.master_name} 127.0.0.1 {peer.port} {self._sentinel_id(peer)}"
                )
        path = sentinel.dir / "sentinel.conf"
        path.write_text("\n".join(lines) + "\n", "utf-8")
        return path

    def start(self, timeout: float = 20.0) -> SentinelTopology:
        self.master.start()
        self.replica.start()
        _wait("the replica to sync", self._replica_synced, timeout)
        for sentinel in self.sentinels:
            sentinel.args = [str(self._sentinel_conf(sentinel)), "--sentinel"]
            sentinel.start()
        _wait("the Sentinels to know each other and the replica", self._sentinels_ready, timeout)
        return self

    def _replica_synced(self) -> bool:
        with self.replica.client() as c:
            info = c.info("replication")
        return bool(info.get("master_link_status") == "up")

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            with sentinel.client() as c:
                state = c.sentinel_master(self.master_name)
                if int(state.get("num-other-sentinels", 0)) < 2 or int(state.get("num-slaves", 0)) < 1:
                    return False
        return True

    def master_address(self) -> str | None:
        """The master as the first Sentinel that answers announces it ("host:port")."""
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            with contextlib.suppress(redis.RedisError, OSError), sentinel.client() as c:
                addr = c.sentinel_get_master_addr_by_name(self.master_name)
                if addr:
                    return f"{addr[0]}:{addr[1]}"
        return None

    def server_at(self, address: str) -> RedisProcess:
        return next(s for s in self.servers if s.address == address)

    def wait_failover(self, old: str, timeout: float = 30.0) -> str:
        """Block until the Sentinels announce a master other than `old`; returns it."""
        _wait("a new master", lambda: self.master_address() not in (None, old), timeout)
        new = self.master_address()
        assert new is not None
        return new

    def wait_replicated(self, timeout: float = 10.0) -> None:
        """Until the replica has everything the master wrote (offsets equal)."""
        master = self.server_at(self.master_address() or "")

        def caught_up() -> bool:
            with master.client() as c:
                info = c.info("replication")
            offset = int(info.get("master_repl_offset", 0))
            replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
            return bool(replicas) and all(int(r.get("offset", -1)) >= offset for r in replicas)

        _wait("the replica to catch up", caught_up, timeout)

    def close(self) -> None:
        for proc in [*self.sentinels, *self.servers]:
            proc.close()


class ClusterTopology:
    """A Redis Cluster of `size` primaries (no replicas), slots split evenly."""

    def __init__(self, workdir: Path, *, size: int = 3, node_timeout_ms: int = 1000) -> None:
        self.nodes = [RedisProcess(f"node{i}", workdir, [], port=free_cluster_port()) for i in range(size)]
        for node in self.nodes:
            node.args = _server_args(
                node.port,
                "",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(node_timeout_ms),
            )

    @property
    def url(self) -> str:
        """One node of the cluster: the value of JOB_DOCTOR_REDIS_URL with JOB_DOCTOR_REDIS_CLUSTER=true."""
        return f"redis://{self.nodes[0].address}/0"

    def start(self, timeout: float = 30.0) -> ClusterTopology:
        for node in self.nodes:
            node.start()
        size = len(self.nodes)
        for i, node in enumerate(self.nodes):
            first, last = i * SLOTS // size, (i + 1) * SLOTS // size - 1
            with node.client() as c:
                try:
                    c.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
                except redis.ResponseError:  # Redis < 7.0
                    c.execute_command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
        with self.nodes[0].client() as c:
            for node in self.nodes[1:]:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        _wait("the cluster to be ok on every node", self.healthy, timeout)
        return self

    def healthy(self) -> bool:
        for node in self.nodes:
            with node.client() as c:
                info = c.execute_command("CLUSTER", "INFO")
            text = info if isinstance(info, str) else str(info)
            if "cluster_state:ok" not in text or f"cluster_known_nodes:{len(self.nodes)}" not in text:
                return False
        return True

    def close(self) -> None:
        for node in self.nodes:
            node.close()
