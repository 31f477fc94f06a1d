"""The composition root: every service of job-doctor, built once from `Settings`.

`build_services(settings)` is the one place where clients, the analysis pipeline, the model, the
queues, delivery, the conversation and the channels are put together. `serve` and `demo` (through
`bot.app.web.create_app`), `analyze`, `digest`, `check`, `eval`, `cases` and the benchmarks all use
it; what differs between them is passed as `AppOptions`, never re-wired by hand.

Usage::

    async with build_services(settings) as services:
        report = await services.analyzer.analyze(AnalysisRequest(step_instance_id=...))
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import aiohttp
import structlog

from bot.app.health import Health
from bot.app.probes import register_probes
from bot.channels.base import Endpoint, Ingress
from bot.channels.console import ConsoleChannel, ConsoleWeb, console_access
from bot.channels.wecom import build_wecom_aibot
from bot.channels.wecom.aibot import AibotOptions
from bot.channels.worktool.channel import WorkToolChannel
from bot.channels.worktool.sender import WorkToolSender
from bot.clients.bkjob import BkJobClient
from bot.clients.bklog import BkLogClient, LogLayout, QueryTemplates, load_query_templates
from bot.clients.gse import GseClient
from bot.core.metrics import Metrics
from bot.core.models import AnalysisJob, DiagnosisReport
from bot.core.redact import Redactor
from bot.core.settings import ConfigError, Settings
from bot.core.store import Store, open_store
from bot.core.tasks import TaskTracker
from bot.core.topology import RedisTopology
from bot.delivery.outbox import Outbox
from bot.delivery.port import Channel, ChannelRegistry
from bot.delivery.queue import DeadLetters, Inbox, JobQueue
from bot.delivery.reports import ReportStore
from bot.delivery.send import Delivery
from bot.diagnosis.llm_step import JobAnalyzer, make_model_step, metrics_observer
from bot.diagnosis.locate import StepLocator
from bot.diagnosis.pipeline import Analyzer, ModelStep
from bot.diagnosis.signatures import Catalog, load_catalog
from bot.digest.build import DigestBuilder, digest_analyzer
from bot.digest.history import DigestHistory
from bot.digest.post import DEFAULT_WEBHOOK_BASE_URL, DigestPoster
from bot.digest.schedule import DigestRunner, DigestScheduler, digest_enabled
from bot.digest.summary import Summarize, model_summarizer
from bot.digest.throttle import DEFAULT_BKLOG_QUERIES_PER_S
from bot.llm.budget import TokenBudget
from bot.llm.client import LlmClient
from bot.llm.diagnose import QuestionModel
from bot.llm.prompts import PromptLibrary
from bot.llm.scrub import Scrubber
from handlers.policy import AccessPolicy
from handlers.qa import Answers
from handlers.replies import ReportReplies
from handlers.router import Router
from handlers.scope import ScopeGate
from handlers.service import ConversationService

Analyze = Callable[[AnalysisJob], Awaitable[DiagnosisReport]]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class AppOptions:
    """What a caller may change about the services besides the settings (tools and tests)."""

    # "serve" | "demo" (decides the console's protection) | "cli" (a one-off command: no console)
    mode: str = "serve"
    host: str | None = None  # the listen address, when it does not come from the settings
    analyze: Analyze | None = None  # replaces the analysis of a job (stub reports)
    extra_channels: Sequence[Channel] = ()  # outbound channels that have no settings (benchmarks)
    aibot: AibotOptions | None = None
    samples: Sequence[object] = ()  # ids the console offers as chips (demo)
    console_history: int = 200
    webhook_base_url: str = DEFAULT_WEBHOOK_BASE_URL
    digest_bklog_queries_per_s: float = DEFAULT_BKLOG_QUERIES_PER_S
    probe_timeout_s: float = 3.0
    clock: Callable[[], datetime] | None = None  # the analyzer's "now" (scenario runs)


@dataclass
class Services:
    settings: Settings
    redactor: Redactor
    scrubber: Scrubber
    metrics: Metrics
    tasks: TaskTracker
    health: Health
    http: aiohttp.ClientSession
    store: Store
    # BlueKing and the model
    bklog: BkLogClient | None
    bkjob: BkJobClient | None
    gse: GseClient | None
    llm: LlmClient | None
    budget: TokenBudget | None
    analyzer: Analyzer
    analyze: Analyze
    # durable work
    inbox: Inbox
    jobs: JobQueue
    dead_letters: DeadLetters
    reports: ReportStore
    outbox: Outbox
    channels: ChannelRegistry
    delivery: Delivery
    ingress: Ingress
    # the conversation
    replies: ReportReplies
    conversation: ConversationService
    router: Router
    # inbound channel sides and the digest
    endpoints: list[Endpoint] = field(default_factory=list)
    console: ConsoleWeb | None = None
    digest_builder: DigestBuilder | None = None
    digest_poster: DigestPoster | None = None
    digest_runner: DigestRunner | None = None
    digest_scheduler: DigestScheduler | None = None


def listen_host(settings: Settings, mode: str, host: str | None = None) -> str:
    return host or settings.http.host or ("127.0.0.1" if mode == "demo" else "0.0.0.0")


def log_layout(settings: Settings) -> LogLayout:
    return LogLayout(log_field=settings.bklog.log_field, trace_field=settings.bklog.trace_field)


def query_templates(settings: Settings) -> QueryTemplates:
    """The collector's BkLog queries: packaged, with the operator's file laid over them."""
    try:
        return load_query_templates(
            overrides=settings.bklog.queries_file or None, layout=log_layout(settings)
        )
    except ValueError as exc:
        raise ConfigError(f"invalid setting JOB_DOCTOR_BKLOG__QUERIES_FILE: {exc}") from None


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
        layout=log_layout(settings),
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
        system_api=cfg.use_system_api,
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


def build_worktool_sender(settings: Settings, session: aiohttp.ClientSession) -> WorkToolSender:
    cfg = settings.worktool
    return WorkToolSender(
        session,
        base_url=str(cfg.base_url),
        robot_id=cfg.robot_id,
        timeout_s=cfg.timeout_s,
        requests_per_minute=cfg.requests_per_minute,
        send_interval_s=cfg.send_interval_s,
    )


@contextlib.asynccontextmanager
async def build_services(
    settings: Settings,
    *,
    options: AppOptions | None = None,
    redactor: Redactor | None = None,
    http: aiohttp.ClientSession | None = None,
) -> AsyncIterator[Services]:
    """Every service, ready to use; on exit the model client, the store and the HTTP session
    (unless it was given) are closed. Starting background loops is the app's job."""
    opts = options or AppOptions()
    own_http = http is None
    session = http or aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=30, connect=5), headers={"User-Agent": "job-doctor"}
    )
    store = open_store(RedisTopology.from_settings(settings), prefix=settings.redis_key_prefix)
    llm: LlmClient | None = None
    try:
        redactor = redactor or Redactor(settings.secret_values())
        scrubber = Scrubber(settings.secret_values())
        metrics, tasks = Metrics(), TaskTracker()

        # ---- BlueKing clients, the model, the analysis pipeline
        bklog, bkjob, gse = (
            build_bklog(settings, session),
            build_bkjob(settings, session),
            build_gse(settings, session),
        )
        health = Health(probe_timeout_s=opts.probe_timeout_s)
        register_probes(health, settings, store, session, bklog=bklog, bkjob=bkjob, gse=gse)
        templates, catalog = query_templates(settings), load_catalog()
        model = (
            _model(settings, store, metrics, scrubber, bklog=bklog, gse=gse) if settings.llm.enabled else None
        )
        llm = model.llm if model else None
        analyzer = Analyzer(
            settings,
            bklog=bklog,
            templates=templates,
            catalog=catalog,
            bkjob=bkjob,
            gse=gse,
            metrics=metrics,
            model_step=model.step if model else None,
            clock=opts.clock,
            redactor=redactor,
        )
        analyze: Analyze = opts.analyze or JobAnalyzer(analyzer, scrubber)

        # ---- durable work and delivery
        inbox, jobs = Inbox(store, max_entries=settings.worker.inbox_max_entries), JobQueue(store)
        reports = ReportStore(store, fresh_s=settings.chat.report_cache_s)
        # Entries are reclaimed only after their owner stopped heartbeating for claim_idle_s, so a part
        # still marked "sending" by then belongs to a dead process: recover it (history, then resend).
        outbox = Outbox(store, stale_after_s=min(60.0, settings.worker.claim_idle_s / 2))
        channels = ChannelRegistry()
        delivery = Delivery(channels, outbox, metrics, redactor=redactor)
        ingress = Ingress(inbox, metrics)

        endpoints, console = _channels(settings, opts, channels, session, store, ingress, reports)

        # ---- the conversation
        gate = ScopeGate(settings.chat.group_scopes, bkjob, store) if settings.chat.group_scopes else None
        if gate is not None and bkjob is None:
            # Still used to look bare ids up in the chat's business; nothing can check whose a step is.
            log.warning(
                "group_scopes_not_enforced",
                reason="JOB_DOCTOR_BKJOB__BASE_URL is not set: reports are not limited to a chat's business",
            )
        replies = ReportReplies(reports, delivery, gate)
        conversation = ConversationService(
            settings=settings,
            store=store,
            delivery=delivery,
            jobs=jobs,
            reports=reports,
            metrics=metrics,
            tasks=tasks,
            answers=Answers(model.answer if model else None),
            replies=replies,
            locator=StepLocator(bkjob, failed_statuses=settings.digest.failed_statuses) if bkjob else None,
        )
        router = Router(AccessPolicy(settings.chat, store))

        services = Services(
            settings=settings,
            redactor=redactor,
            scrubber=scrubber,
            metrics=metrics,
            tasks=tasks,
            health=health,
            http=session,
            store=store,
            bklog=bklog,
            bkjob=bkjob,
            gse=gse,
            llm=llm,
            budget=model.budget if model else None,
            analyzer=analyzer,
            analyze=analyze,
            inbox=inbox,
            jobs=jobs,
            dead_letters=DeadLetters(store),
            reports=reports,
            outbox=outbox,
            channels=channels,
            delivery=delivery,
            ingress=ingress,
            replies=replies,
            conversation=conversation,
            router=router,
            endpoints=endpoints,
            console=console,
        )
        if bkjob is not None:
            _add_digest(
                services,
                bkjob,
                templates=templates,
                catalog=catalog,
                summarize=model.summarize if model else None,
                options=opts,
            )
        yield services
    finally:
        if llm is not None:
            await llm.aclose()
        await store.close()
        if own_http:
            await session.close()


@dataclass(frozen=True)
class _Model:
    """The model's parts: one client, one budget, used by the diagnosis, the Q&A and the digest."""

    llm: LlmClient
    budget: TokenBudget
    step: ModelStep
    answer: QuestionModel
    summarize: Summarize


def _model(
    settings: Settings,
    store: Store,
    metrics: Metrics,
    scrubber: Scrubber,
    *,
    bklog: BkLogClient | None,
    gse: GseClient | None,
) -> _Model:
    llm = LlmClient.from_settings(settings.llm, observer=metrics_observer(metrics))
    prompts = PromptLibrary()
    budget = TokenBudget(
        store.redis,
        prefix=store.prefix,  # keys: <prefix>llm:tokens:<day>[:chat:<chat>]
        daily_limit=settings.llm.daily_token_budget,
        chat_daily_limit=settings.llm.group_daily_token_budget,
        user_daily_limit=settings.llm.user_daily_token_budget,
        time_zone=settings.digest.time_zone,
    )
    # The model's read-only tools use the analyzer's own clients.
    step = make_model_step(
        settings,
        llm,
        prompts=prompts,
        scrubber=scrubber,
        bklog=bklog,
        gse=gse,
        metrics=metrics,
        budget=budget,
    )
    return _Model(
        llm=llm,
        budget=budget,
        step=step,
        answer=QuestionModel(llm, prompts, scrubber, settings.llm.timeout_s, budget),
        summarize=model_summarizer(llm, prompts, scrubber, deadline_s=settings.llm.timeout_s),
    )


def _channels(
    settings: Settings,
    opts: AppOptions,
    channels: ChannelRegistry,
    session: aiohttp.ClientSession,
    store: Store,
    ingress: Ingress,
    reports: ReportStore,
) -> tuple[list[Endpoint], ConsoleWeb | None]:
    """Every channel whose settings are there: its sending side in `channels`, its inbound side returned."""
    endpoints: list[Endpoint] = []
    if settings.worktool.robot_id:
        # Sending needs only the robot (the digest posts with it); the callback needs its token too.
        worktool = WorkToolChannel(settings, build_worktool_sender(settings, session), ingress)
        channels.add(worktool)
        if settings.worktool.enabled:
            endpoints.append(worktool)
    aibot = settings.wecom_aibot
    if aibot.http_enabled or aibot.ws_enabled:
        channel, aibot_endpoints = build_wecom_aibot(
            aibot, store=store, http=session, ingress=ingress, options=opts.aibot
        )
        channels.add(channel)
        endpoints.extend(aibot_endpoints)
    console: ConsoleWeb | None = None
    if opts.mode != "cli":
        access = console_access(settings, mode=opts.mode, host=listen_host(settings, opts.mode, opts.host))
        if access is not None:
            hub = ConsoleChannel(history=opts.console_history)
            console = ConsoleWeb(
                hub,
                access=access,
                ingress=ingress,
                reports=reports,
                dedup_window_s=settings.chat.dedup_window_s,
                samples=opts.samples,
                max_text_chars=settings.chat.max_text_chars,
            )
            channels.add(hub)
            endpoints.append(console)
    for extra in opts.extra_channels:
        channels.add(extra)
    return endpoints, console


def _add_digest(
    services: Services,
    bkjob: BkJobClient,
    *,
    templates: QueryTemplates,
    catalog: Catalog,
    summarize: Summarize | None,
    options: AppOptions,
) -> None:
    """The digest's builder and poster (for `digest` and `serve`), and its schedule when it is on."""
    settings = services.settings
    analyzer = digest_analyzer(
        settings,
        services.bklog,
        queries_per_s=options.digest_bklog_queries_per_s,
        templates=templates,
        catalog=catalog,
    )
    history = DigestHistory(services.store)
    services.digest_builder = DigestBuilder(
        settings, bkjob=bkjob, analyzer=analyzer, history=history, summarize=summarize
    )
    services.digest_poster = DigestPoster(
        services.store,
        services.http,
        delivery=services.delivery if settings.worktool.robot_id else None,
        part_max_chars=settings.worktool.part_max_chars,
        webhook_base_url=options.webhook_base_url,
    )
    if digest_enabled(settings):
        build = functools.partial(services.digest_builder.build, record_history=True)
        runner = DigestRunner(settings, services.store, build=build, post=services.digest_poster.post)
        services.digest_runner = runner
        services.digest_scheduler = DigestScheduler(runner, settings)
