"""`job-doctor check` shows the Redis topology and its health: the master Sentinel names, the
cluster's state; a cluster node configured as one server is a failure, not a PONG."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.devtools.redislab import ClusterTopology, SentinelTopology
from tests.app.test_cli import run
from tests.conftest import require_redis_server

PASSWORD = "check-redis-pass-3318"


@pytest.fixture
async def sentinel(tmp_path: Path) -> AsyncIterator[SentinelTopology]:
    require_redis_server()
    st = SentinelTopology(tmp_path, password=PASSWORD)
    try:
        await asyncio.to_thread(st.start)
        yield st
    finally:
        st.close()


def _redis_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("redis"))


def test_check_names_the_master_the_sentinels_announce(sentinel: SentinelTopology) -> None:
    res = run(
        "check",
        env={
            "JOB_DOCTOR_REDIS_URL": sentinel.url,
            "JOB_DOCTOR_REDIS_SENTINELS": sentinel.sentinel_addresses,
            "JOB_DOCTOR_REDIS_SENTINEL_MASTER": sentinel.master_name,
        },
    )
    assert res.returncode == 0, res.stdout + res.stderr
    line = _redis_line(res.stdout)
    assert "OK" in line and f"sentinel master 'mymaster' at {sentinel.master.address}" in line, line
    assert "1 replica(s), 3/3 sentinels" in line
    assert PASSWORD not in res.stdout + res.stderr


def test_check_shows_the_cluster_state(redis_cluster: ClusterTopology) -> None:
    res = run("check", env={"JOB_DOCTOR_REDIS_URL": redis_cluster.url, "JOB_DOCTOR_REDIS_CLUSTER": "true"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "cluster ok: 3 primaries, 16384/16384 slots" in _redis_line(res.stdout)


def test_a_cluster_node_configured_as_one_server_fails_the_check(redis_cluster: ClusterTopology) -> None:
    res = run("check", env={"JOB_DOCTOR_REDIS_URL": redis_cluster.url})
    assert res.returncode == 1
    line = _redis_line(res.stdout)
    assert "FAIL" in line and "set JOB_DOCTOR_REDIS_CLUSTER=true" in line, line


def test_sentinels_without_the_master_name_stop_with_one_line() -> None:
    res = run("check", env={"JOB_DOCTOR_REDIS_SENTINELS": "127.0.0.1:26379"})
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0
    assert res.stderr.startswith("job-doctor: invalid setting JOB_DOCTOR_REDIS_SENTINEL_MASTER:"), res.stderr
