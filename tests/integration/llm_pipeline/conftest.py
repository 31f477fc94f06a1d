"""The rig: sandbox BkLog + fake OpenAI server over real HTTP, and the real Analyzer with the model step."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from bot.app.services import build_bklog
from bot.clients.bklog import load_query_templates
from bot.core.metrics import Metrics
from bot.core.models import DiagnosisReport
from bot.core.settings import Settings
from bot.devtools.evaluate import SANDBOX_APP, SANDBOX_INDEX_SET, last_timestamp, sandbox_settings
from bot.devtools.sandbox.bklog import create_bklog_app, docs_from_records, recorded_queries
from bot.devtools.scenarios import Scenario
from bot.diagnosis.llm_step import make_model_step, metrics_observer
from bot.diagnosis.pipeline import AnalysisRequest, Analyzer
from bot.diagnosis.signatures import load_catalog
from bot.llm.budget import TokenBudget
from bot.llm.client import LlmClient
from bot.llm.prompts import PromptLibrary
from bot.llm.scrub import Scrubber
from tests.integration.llm_pipeline.helpers import CONFIGURED_SECRET, scenario
from tests.support.fakes.openai_server import FakeOpenAI

API_KEY = "sk-test-0123456789abcdef"


@dataclass
class Rig:
    fake: FakeOpenAI
    fake_url: str  # ends in /v1, as the openai SDK expects
    bklog_app: web.Application
    bklog_url: str
    session: aiohttp.ClientSession
    scenario: Scenario
    docs: list[dict[str, Any]]
    metrics: Metrics = field(default_factory=Metrics)
    clients: list[LlmClient] = field(default_factory=list)

    def settings(self, **llm: Any) -> Settings:
        cfg: dict[str, Any] = {
            "base_url": self.fake_url,
            "api_key": API_KEY,
            "model": "m",
            "timeout_s": 3.0,
            "deadline_s": 8.0,
        }
        cfg.update(llm)
        return sandbox_settings(
            self.bklog_url,
            llm=cfg,
            bk={"app_code": "bk_job", "app_secret": CONFIGURED_SECRET},
        )

    def analyzer(
        self, settings: Settings | None = None, *, budget: TokenBudget | None = None, model: bool = True
    ) -> Analyzer:
        settings = settings or self.settings()
        now = last_timestamp(self.scenario.logs_text) + timedelta(minutes=30)
        step = None
        if model:
            client = LlmClient.from_settings(settings.llm, observer=metrics_observer(self.metrics))
            self.clients.append(client)
            step = make_model_step(
                settings,
                client,
                prompts=PromptLibrary(),
                scrubber=Scrubber(settings.secret_values()),
                bklog=build_bklog(settings, self.session),
                gse=None,
                metrics=self.metrics,
                budget=budget,
            )
        return Analyzer(
            settings,
            bklog=build_bklog(settings, self.session),
            templates=load_query_templates(),
            catalog=load_catalog(),
            metrics=self.metrics,
            model_step=step,
            clock=lambda: now,
        )

    async def analyze(
        self, settings: Settings | None = None, *, budget: TokenBudget | None = None, model: bool = True
    ) -> DiagnosisReport:
        exp = self.scenario.expected
        return await self.analyzer(settings, budget=budget, model=model).analyze(
            AnalysisRequest(step_instance_id=exp.step_instance_id, use_model=model)
        )

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def bklog_queries(self) -> list[str]:
        return recorded_queries(self.bklog_app)


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(aiohttp_server: AiohttpServer) -> AsyncIterator[RigFactory]:
    session = aiohttp.ClientSession()
    made: list[Rig] = []

    async def make(name: str | None = None, *, log_text: str | None = None) -> Rig:
        sc = scenario(name) if name else scenario()
        docs = docs_from_records(log_text if log_text is not None else sc.logs_text)
        code, secret, _user = SANDBOX_APP
        bklog_app = create_bklog_app(docs, app_code=code, app_secret=secret, index_set_id=SANDBOX_INDEX_SET)
        bklog = await aiohttp_server(bklog_app)
        fake = FakeOpenAI(api_key=API_KEY)
        model = await aiohttp_server(fake.app())
        rig = Rig(
            fake=fake,
            fake_url=str(model.make_url("/v1")),
            bklog_app=bklog_app,
            bklog_url=str(bklog.make_url("/")).rstrip("/"),
            session=session,
            scenario=sc,
            docs=docs,
        )
        made.append(rig)
        return rig

    yield make
    for rig in made:
        for client in rig.clients:
            await client.aclose()
    await session.close()


@pytest.fixture
async def rig(make_rig: RigFactory) -> Rig:
    return await make_rig()
