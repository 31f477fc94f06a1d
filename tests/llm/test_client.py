"""LlmClient against the fake OpenAI server: retries, Retry-After, deadlines, usage, observer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from email.utils import formatdate

import openai
import pytest

from bot.llm.client import (
    LlmClient,
    LlmRateLimited,
    LlmRejected,
    LlmTimeout,
    LlmUnavailable,
    RecordingObserver,
    parse_retry_after,
)
from tests.support.fakes.openai_server import (
    Answer,
    FakeOpenAI,
    Garbage,
    Hang,
    Status,
    rate_limited,
    server_error,
)

MSGS = [{"role": "user", "content": "你好"}]


def deadline(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_answer_usage_and_observer(
    client: LlmClient, fake: FakeOpenAI, observer: RecordingObserver
) -> None:
    fake.push(Answer("好的"))
    out = await client.chat(MSGS, deadline=deadline(5))
    assert out.content == "好的"
    assert out.total_tokens > 0 and client.usage.total_tokens == out.total_tokens
    assert [e.outcome for e in observer.events] == ["ok"]
    assert observer.events[0].prompt_tokens == out.prompt_tokens
    assert fake.requests[0].headers["Authorization"] == f"Bearer {fake.api_key}"
    assert fake.requests[0].body["model"] == "fake-model"


async def test_retry_after_is_honoured_then_success(
    client: LlmClient, fake: FakeOpenAI, observer: RecordingObserver
) -> None:
    fake.push(rate_limited(retry_after="1"), Answer("第二次成功"))
    out = await client.chat(MSGS, deadline=deadline(10))
    assert out.content == "第二次成功"
    assert len(fake.requests) == 2
    gap = fake.requests[1].at - fake.requests[0].at
    assert gap >= 0.95, gap
    assert [e.outcome for e in observer.events] == ["rate_limited", "ok"]


async def test_retry_after_http_date() -> None:
    now = time.time()
    assert parse_retry_after({"retry-after": formatdate(now + 30, usegmt=True)}, now=now) == pytest.approx(
        30, abs=1
    )
    assert parse_retry_after({"retry-after": "2.5"}) == 2.5
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


async def test_retry_after_beyond_deadline_gives_up_at_once(client: LlmClient, fake: FakeOpenAI) -> None:
    fake.push(rate_limited(retry_after="30"), Answer("never"))
    started = time.monotonic()
    with pytest.raises(LlmRateLimited):
        await client.chat(MSGS, deadline=deadline(2))
    assert time.monotonic() - started < 1.0
    assert len(fake.requests) == 1


async def test_server_error_and_garbage_are_retried(client: LlmClient, fake: FakeOpenAI) -> None:
    fake.push(server_error(), Garbage(), Answer("终于好了"))
    out = await client.chat(MSGS, deadline=deadline(5))
    assert out.content == "终于好了" and out.attempts == 3


async def test_persistent_5xx_raises_unavailable(
    make_client: Callable[..., LlmClient], fake: FakeOpenAI
) -> None:
    client = make_client(max_attempts=2)
    fake.default = server_error()
    with pytest.raises(LlmUnavailable):
        await client.chat(MSGS, deadline=deadline(5))
    assert len(fake.requests) == 2


async def test_client_error_is_not_retried(make_client: Callable[..., LlmClient], fake: FakeOpenAI) -> None:
    client = make_client(api_key="sk-wrong-key")
    with pytest.raises(LlmRejected) as err:
        await client.chat(MSGS, deadline=deadline(5))
    assert err.value.status == 401
    fake.push(Status(400, "bad request"))
    with pytest.raises(LlmRejected):
        await make_client().chat(MSGS, deadline=deadline(5))
    assert len(fake.requests) == 1  # the 401 never reached the recorder; the 400 once


async def test_hang_times_out_within_the_deadline(
    make_client: Callable[..., LlmClient], fake: FakeOpenAI
) -> None:
    client = make_client(timeout_s=10.0)
    fake.default = Hang(20)
    started = time.monotonic()
    with pytest.raises(LlmTimeout):
        await client.chat(MSGS, deadline=deadline(1.0))
    assert time.monotonic() - started < 1.5


async def test_fake_streams_sse_with_usage(client: LlmClient, fake: FakeOpenAI) -> None:
    # The fake's SSE mode, read with the SDK directly (other contributors stream through it).
    fake.push(Answer("流式回答：第一段，第二段。"))
    sdk = openai.AsyncOpenAI(base_url=client._sdk.base_url, api_key=fake.api_key, max_retries=0, timeout=5)
    try:
        stream = await sdk.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "你好"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        parts: list[str] = []
        usage = None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                usage = chunk.usage
        assert "".join(parts) == "流式回答：第一段，第二段。"
        assert usage is not None and usage.total_tokens > 0
    finally:
        await sdk.close()
