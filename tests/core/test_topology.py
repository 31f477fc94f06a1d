"""Redis topologies: the settings that choose one, key names and hash tags, and what health means."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

from bot.app.health import public_reason
from bot.core.settings import ConfigError, load_settings
from bot.core.store import INBOX_SLOT, Store, open_store
from bot.core.topology import RedisTopology, TopologyUnhealthy
from bot.devtools.redislab import ClusterTopology
from tests.conftest import require_redis_server

SECRET = "redis-pass-0123456789"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"JOB_DOCTOR_REDIS_SENTINELS": "10.0.0.1:26379"}, "JOB_DOCTOR_REDIS_SENTINEL_MASTER"),
        ({"JOB_DOCTOR_REDIS_SENTINEL_MASTER": "mymaster"}, "JOB_DOCTOR_REDIS_SENTINEL_MASTER"),
        (
            {"JOB_DOCTOR_REDIS_SENTINELS": "10.0.0.1", "JOB_DOCTOR_REDIS_SENTINEL_MASTER": "m"},
            "JOB_DOCTOR_REDIS_SENTINELS",
        ),
        ({"JOB_DOCTOR_REDIS_CLUSTER": "true"}, "JOB_DOCTOR_REDIS_CLUSTER"),
        (
            {
                "JOB_DOCTOR_REDIS_CLUSTER": "true",
                "JOB_DOCTOR_REDIS_URL": f"redis://:{SECRET}@10.0.0.1:7000/3",
            },
            "JOB_DOCTOR_REDIS_CLUSTER",
        ),
        (
            {
                "JOB_DOCTOR_REDIS_CLUSTER": "true",
                "JOB_DOCTOR_REDIS_URL": "redis://10.0.0.1:7000",
                "JOB_DOCTOR_REDIS_SENTINELS": "10.0.0.1:26379",
                "JOB_DOCTOR_REDIS_SENTINEL_MASTER": "m",
            },
            "JOB_DOCTOR_REDIS_CLUSTER",
        ),
        (
            {
                "JOB_DOCTOR_REDIS_CLUSTER": "true",
                "JOB_DOCTOR_REDIS_URL": "redis://10.0.0.1:7000",
                "JOB_DOCTOR_REDIS_KEY_PREFIX": "{jd}:",
            },
            "JOB_DOCTOR_REDIS_CLUSTER",
        ),
    ],
)
def test_a_wrong_combination_stops_start_up_with_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], needle: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(f"invalid setting {needle}:"), message
    assert "\n" not in message
    assert SECRET not in message


def test_sentinel_settings_make_a_sentinel_topology_without_a_host_in_the_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOB_DOCTOR_REDIS_URL", f"redis://:{SECRET}@/2")
    monkeypatch.setenv("JOB_DOCTOR_REDIS_SENTINELS", " 10.0.0.1:26379, 10.0.0.2:26379,[::1]:26380")
    monkeypatch.setenv("JOB_DOCTOR_REDIS_SENTINEL_MASTER", "mymaster")
    monkeypatch.setenv("JOB_DOCTOR_REDIS_SENTINEL_PASSWORD", "sentinel-pass-42")
    settings = load_settings()
    topology = RedisTopology.from_settings(settings)
    assert topology.kind == "sentinel"
    assert topology.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380))
    assert topology.master_name == "mymaster"
    shown = f"{topology.describe()} {topology!r}"
    assert "mymaster" in shown and "10.0.0.2:26379" in shown
    assert SECRET not in shown and "sentinel-pass-42" not in shown
    assert {SECRET, "sentinel-pass-42"} <= set(settings.secret_values())  # masked in logs


def test_cluster_and_single_topologies_describe_a_node_without_its_password() -> None:
    cluster = RedisTopology("cluster", f"redis://:{SECRET}@10.0.0.1:7000")
    assert cluster.describe() == "cluster via 10.0.0.1:7000"
    assert SECRET not in repr(cluster)
    assert RedisTopology.of_url(f"redis://:{SECRET}@10.0.0.9:6380/1").describe() == "10.0.0.9:6380"
    assert RedisTopology.of_url("").kind == "embedded"


def test_key_names_do_not_change_on_one_server_and_share_a_tag_on_a_cluster() -> None:
    single = Store(object(), prefix="jd:")  # type: ignore[arg-type]
    cluster = Store(object(), prefix="jd:", topology=RedisTopology("cluster", "redis://h:1"))  # type: ignore[arg-type]
    # One server (and the embedded store): exactly the names of earlier releases, so a deploy
    # finds the keys the previous version wrote.
    assert single.key("inflight", "step:1", slot="step:1") == "jd:inflight:step:1"
    assert single.key("delivering", "1-0", slot="step:1") == "jd:delivering:1-0"
    assert single.key("q", "inbox", slot=INBOX_SLOT) == "jd:q:inbox"
    assert cluster.key("inflight", "step:1", slot="step:1") == "jd:{step:1}:inflight:step:1"
    assert cluster.key("q", "jobs") == "jd:q:jobs"
    # A value with braces cannot be a tag itself: its digest is (Redis hashes the first {...}).
    weird = cluster.key("aibot", "stream", "a{b}", slot="a{b}")
    assert re.fullmatch(r"jd:\{[0-9a-f]{16}\}:aibot:stream:a\{b\}", weird), weird


async def test_health_describes_the_store_and_writes(store: Store) -> None:
    detail = await store.health()
    if store.embedded:
        assert detail.startswith("embedded store")
    elif store.cluster:
        assert detail.startswith("PONG") and "cluster ok: 3 primaries, 16384/16384 slots" in detail
    else:
        assert detail.startswith("PONG") and "127.0.0.1:6379" in detail


async def test_a_cluster_node_opened_as_one_server_is_not_healthy(redis_cluster: ClusterTopology) -> None:
    # Each node answers PING, but most slots live on the other nodes (writes MOVED): not "ok".
    stores = [open_store(node_url, prefix="jdtest:moved:") for node_url in _node_urls(redis_cluster)]
    try:
        failures = []
        for st in stores:
            assert await st.ping() >= 0
            try:
                await st.health()
            except TopologyUnhealthy as exc:
                failures.append(str(exc))
        assert len(failures) == 3 and all("JOB_DOCTOR_REDIS_CLUSTER=true" in f for f in failures)
        with pytest.raises(TopologyUnhealthy) as caught:
            await stores[0].health()
        assert public_reason(caught.value) == "cluster node, cluster mode not set"  # what /readyz says
    finally:
        for st in stores:
            await st.close()


def _node_urls(cluster: ClusterTopology) -> list[str]:
    return [f"redis://{node.address}/0" for node in cluster.nodes]


async def test_a_cluster_with_a_dead_node_is_down_even_though_other_nodes_answer(tmp_path: Path) -> None:
    require_redis_server()
    cluster = ClusterTopology(tmp_path, node_timeout_ms=500).start()
    store = open_store(RedisTopology("cluster", cluster.url), prefix="jdtest:dead:", timeout_s=0.5)
    try:
        assert "cluster ok" in await store.health()
        cluster.nodes[2].kill()
        with pytest.raises(
            TopologyUnhealthy, match=r"cluster not ok: 127\.0\.0\.1:[0-9]+ unreachable"
        ) as caught:
            await store.health()
        # /readyz gets the state without the node's address
        assert public_reason(caught.value) == "cluster not ok: 1 node(s) failing"
        with redis.Redis(port=cluster.nodes[0].port) as alive:
            assert alive.ping()  # what a PING-only probe would have taken for health
    finally:
        await store.close()
        cluster.close()
