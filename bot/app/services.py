"""Build the analysis services from settings (clients, catalog, templates, analyzer)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime

import aiohttp
from aiohttp import web

from bot.clients.bkjob import BkJobClient
from bot.clients.bklog import BkLogClient, load_query_templates
from bot.clients.gse import GseClient
from bot.core.metrics import Metrics
from bot.core.settings import Settings
from bot.diagnosis.pipeline import Analyzer, ModelStep
from bot.diagnosis.signatures import load_catalog


def build_bklog(settings: Settings, session: aiohttp.ClientSession) -> BkLogClient | None:
    cfg = settings.bklog
    if cfg.base_url is None or cfg.index_set_id is None:
        return None
    return BkLogClient(
        session,
        base_url=str(cfg.base_url),
        index_set_id=cfg.index_set_id,
        credentials=settings.credentials_for(cfg),
        tenant_id=settings.bk.tenant_id,
        time_zone=cfg.time_zone,
        timeout_s=cfg.timeout_s,
        retries=cfg.retries,
        page_size=cfg.page_size,
        max_pages=cfg.max_pages,
        response_shape=cfg.response_shape,
    )


def build_bkjob(settings: Settings, session: aiohttp.ClientSession) -> BkJobClient | None:
    cfg = settings.bkjob
    if cfg.base_url is None:
        return None
    return BkJobClient(
        session,
        base_url=str(cfg.base_url),
        credentials=settings.credentials_for(cfg),
        tenant_id=settings.bk.tenant_id,
        timeout_s=cfg.timeout_s,
        retries=cfg.retries,
    )


def build_gse(settings: Settings, session: aiohttp.ClientSession) -> GseClient | None:
    cfg = settings.gse
    if cfg.base_url is None:
        return None
    return GseClient(
        session,
        base_url=str(cfg.base_url),
        api_version=cfg.api_version,
        credentials=settings.credentials_for(cfg),
        tenant_id=settings.bk.tenant_id,
        timeout_s=cfg.timeout_s,
    )


def build_analyzer(
    settings: Settings,
    session: aiohttp.ClientSession,
    *,
    metrics: Metrics | None = None,
    model_step: ModelStep | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Analyzer:
    return Analyzer(
        settings,
        bklog=build_bklog(settings, session),
        templates=load_query_templates(),
        catalog=load_catalog(),
        bkjob=build_bkjob(settings, session),
        gse=build_gse(settings, session),
        metrics=metrics,
        model_step=model_step,
        clock=clock,
    )


# --------------------------------------------------------------------------- app component


def setup_pipeline(app: web.Application) -> None:
    """Analysis services for the runtime: analyzer, optional model step and Q&A, task resolver."""
    app.cleanup_ctx.append(_pipeline_ctx)


async def _pipeline_ctx(app: web.Application) -> AsyncIterator[None]:
    from bot.app import keys as K
    from bot.app.runtime import ANALYZE, MODEL_ANSWER, RESOLVE_TASK
    from bot.core.models import AnalysisJob, DiagnosisReport, IncomingMessage
    from bot.diagnosis.llm_step import (
        budget_key_of,
        budget_scope,
        make_model_step,
        metrics_observer,
        scrub_report,
    )
    from bot.llm.budget import TokenBudget
    from bot.llm.client import LlmClient
    from bot.llm.diagnose import answer_question
    from bot.llm.prompts import PromptLibrary
    from bot.llm.scrub import Scrubber
    from handlers.ids import IdRef
    from handlers.knowledge import knowledge_snippet

    settings, session, metrics = app[K.SETTINGS], app[K.HTTP], app[K.METRICS]
    scrubber = Scrubber(settings.secret_values())
    llm: LlmClient | None = None
    budget: TokenBudget | None = None
    analyzer = build_analyzer(settings, session, metrics=metrics)
    if settings.llm.enabled:
        llm = LlmClient.from_settings(settings.llm, observer=metrics_observer(metrics))
        prompts = PromptLibrary()
        store = app[K.STORE]
        budget = TokenBudget(
            store.redis,
            prefix=store.prefix,  # keys: <prefix>llm:tokens:<day>[:chat:<chat>]
            daily_limit=settings.llm.daily_token_budget,
            chat_daily_limit=settings.llm.group_daily_token_budget,
            time_zone=settings.digest.time_zone,
        )
        # The model's read-only tools use the analyzer's own clients.
        analyzer.model_step = make_model_step(
            settings,
            llm,
            prompts=prompts,
            scrubber=scrubber,
            bklog=analyzer.bklog,
            gse=analyzer.gse,
            bkjob=analyzer.bkjob,
            metrics=metrics,
            budget=budget,
        )
        client = llm

        qa_budget = budget

        async def model_answer(msg: IncomingMessage, question: str) -> str | None:
            return await answer_question(
                client,
                prompts,
                question,
                knowledge_snippet(),
                settings.llm.timeout_s,
                scrubber=scrubber,
                budget=qa_budget,
                budget_key=f"{msg.channel}:{msg.chat_id}",
            )

        app[MODEL_ANSWER] = model_answer

    async def analyze(job: AnalysisJob) -> DiagnosisReport:
        # The model's tokens are charged to the asking chat's daily budget (and the bot's).
        with budget_scope(budget_key_of(job)):
            report = await analyzer.analyze_job(job)
        # The stored report (详情, console, recent analyses) must not keep a credential quoted from a
        # log line either, with or without a model; delivery masks what goes to chats on top.
        return scrub_report(report, scrubber)

    app[ANALYZE] = analyze
    bkjob = analyzer.bkjob
    if bkjob is not None:
        jobclient = bkjob

        async def resolve(ref: IdRef) -> IdRef | None:
            if ref.task_instance_id is None or ref.bk_scope_id is None:
                return None
            status = await jobclient.get_job_instance_status(ref.bk_scope_id, ref.task_instance_id)
            failed = [s for s in status.steps if s.status in (4, 9, 14)]
            if len(failed) != 1:
                return None  # none or several failed: ask the user which one
            return IdRef(
                kind="step",
                step_instance_id=failed[0].step_instance_id,
                task_instance_id=ref.task_instance_id,
                bk_scope_type=ref.bk_scope_type,
                bk_scope_id=ref.bk_scope_id,
                source=ref.source,
            )

        app[RESOLVE_TASK] = resolve
    yield
    if llm is not None:
        await llm.aclose()
