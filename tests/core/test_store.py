from __future__ import annotations

import asyncio

from bot.core.store import Store


async def test_claim_is_first_wins_and_expires(store: Store) -> None:
    key = store.key("dedup", "a")
    assert await store.claim(key, 0.2) is True
    assert await store.claim(key, 0.2) is False
    await asyncio.sleep(0.35)
    assert await store.claim(key, 0.2) is True


async def test_concurrent_claims_only_one_wins(store: Store) -> None:
    key = store.key("dedup", "race")
    results = await asyncio.gather(*(store.claim(key, 5) for _ in range(20)))
    assert results.count(True) == 1


async def test_json_roundtrip_with_ttl(store: Store) -> None:
    key = store.key("conv", "chat", "user")
    await store.set_json(key, {"state": "ask", "ids": [1, 2], "名": "值"}, ttl_s=0.2)
    assert await store.get_json(key) == {"state": "ask", "ids": [1, 2], "名": "值"}
    await asyncio.sleep(0.35)
    assert await store.get_json(key) is None


async def test_counter_window(store: Store) -> None:
    key = store.key("rate", "u1")
    assert [await store.incr(key, ttl_s=0.3) for _ in range(3)] == [1, 2, 3]
    assert await store.get_int(key) == 3
    await asyncio.sleep(0.45)
    assert await store.get_int(key) == 0
    assert await store.incr(key, 5, ttl_s=1) == 5


async def test_lock_only_holder_releases(store: Store) -> None:
    token = await store.acquire_lock("digest", 5)
    assert token
    assert await store.acquire_lock("digest", 5) is None
    assert await store.release_lock("digest", "not-the-token") is False
    assert await store.extend_lock("digest", token, 5) is True
    assert await store.release_lock("digest", token) is True
    assert await store.acquire_lock("digest", 5) is not None


async def test_keys_use_prefix(store: Store) -> None:
    await store.set_json(store.key("x"), 1)
    assert store.key("x").startswith(store.prefix)
    assert await store.redis.get(store.prefix + "x") == "1"
