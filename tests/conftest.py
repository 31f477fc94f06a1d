"""Shared fixtures: settings without ambient config, stores on both backends (real Redis + embedded)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from bot.core.settings import Settings
from bot.core.store import Store, open_store
from bot.core.topology import RedisTopology
from bot.devtools.redislab import ClusterTopology, redis_server_available

REDIS_URL = os.environ.get("JOB_DOCTOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def require_redis_server() -> None:
    """The `redis-server` binary, for tests that start their own topology."""
    if redis_server_available():
        return
    if os.environ.get("CI") == "true":
        pytest.fail("redis-server is required under CI=true (.ci/ensure-redis.sh installs it)")
    pytest.skip("redis-server is not installed")


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterTopology]:
    """A three-node Redis Cluster of our own, shared by the session (tests use their own prefix)."""
    require_redis_server()
    cluster = ClusterTopology(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def require_redis() -> None:
    if redis_available():
        return
    if os.environ.get("CI") == "true":
        pytest.fail("Redis on 127.0.0.1:6379 is required under CI=true")
    pytest.skip("no Redis on 127.0.0.1:6379")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # Tests never read the developer's job-doctor.toml or JOB_DOCTOR_* environment.
    for name in list(os.environ):
        if name.startswith("JOB_DOCTOR_") and not name.startswith("JOB_DOCTOR_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    yield


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.fixture
def key_prefix() -> str:
    return f"jdtest:{uuid.uuid4().hex[:10]}:"


async def _drop_prefix(store: Store) -> None:
    keys = [k async for k in store.redis.scan_iter(match=store.prefix + "*", count=500)]
    if keys:
        await store.redis.delete(*keys)


@pytest.fixture(params=["embedded", "redis", "cluster"])
async def store(request: pytest.FixtureRequest, key_prefix: str) -> AsyncIterator[Store]:
    """The same store tests run on the embedded store, the real Redis and a Redis Cluster."""
    if request.param == "redis":
        require_redis()
        st = open_store(REDIS_URL, prefix=key_prefix)
    elif request.param == "cluster":
        cluster: ClusterTopology = request.getfixturevalue("redis_cluster")
        st = open_store(RedisTopology("cluster", cluster.url), prefix=key_prefix)
    else:
        st = open_store("", prefix=key_prefix)
    try:
        yield st
    finally:
        if not st.embedded:
            await _drop_prefix(st)
        await st.close()
