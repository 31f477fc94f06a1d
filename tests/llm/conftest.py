from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from pytest_aiohttp import AiohttpServer

from bot.llm.client import LlmClient, RecordingObserver
from bot.llm.prompts import PromptLibrary
from tests.support.fakes.openai_server import FakeOpenAI


@pytest.fixture
def fake() -> FakeOpenAI:
    return FakeOpenAI(api_key="sk-fake-0123456789abcdef")


@pytest.fixture
def observer() -> RecordingObserver:
    return RecordingObserver()


@pytest.fixture
async def make_client(
    aiohttp_server: AiohttpServer, fake: FakeOpenAI, observer: RecordingObserver
) -> AsyncIterator[Callable[..., LlmClient]]:
    server = await aiohttp_server(fake.app())
    made: list[LlmClient] = []

    def make(**kw: object) -> LlmClient:
        params: dict[str, object] = {
            "base_url": str(server.make_url("/v1")),
            "api_key": fake.api_key,
            "model": "fake-model",
            "timeout_s": 5.0,
            "backoff_s": 0.05,
            "observer": observer,
        }
        params.update(kw)
        client = LlmClient(**params)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield make
    for c in made:
        await c.aclose()


@pytest.fixture
async def client(make_client: Callable[..., LlmClient]) -> LlmClient:
    return make_client()


@pytest.fixture
def prompts() -> PromptLibrary:
    return PromptLibrary()
