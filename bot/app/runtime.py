"""The composition root of the conversation engine, as one aiohttp cleanup context.

Channels (components registered before this one) add themselves to `CHANNELS` and accept
messages into `INBOX`; this context builds the queues, the delivery service, the conversation
service and router, and runs the inbox consumer and the job worker as daemon loops. On
shutdown the loops stop reading, in-flight work gets the grace period, and whatever is
unfinished stays pending in Redis for the next process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from aiohttp import web

from bot.app import keys as K
from bot.core.logsetup import message_context
from bot.core.models import AnalysisJob, DiagnosisReport, IncomingMessage, Reply, Requester
from bot.delivery.outbox import Outbox
from bot.delivery.port import ChannelRegistry
from bot.delivery.queue import Inbox, JobQueue
from bot.delivery.render import render_markdown, render_text, report_header
from bot.delivery.reports import ReportStore
from bot.delivery.send import Delivery, delivery_key
from bot.delivery.worker import InboxConsumer, JobWorker, raise_if_cancelling
from handlers import knowledge
from handlers.ids import IdRef
from handlers.router import Router
from handlers.service import ConversationService

log = structlog.get_logger(__name__)

Analyze = Callable[[AnalysisJob], Awaitable[DiagnosisReport]]
Answer = Callable[[IncomingMessage, str], Awaitable[str | None]]
Resolve = Callable[[IdRef], Awaitable[IdRef | None]]

CHANNELS = web.AppKey("channels", ChannelRegistry)
INBOX = web.AppKey("inbox", Inbox)
JOBS = web.AppKey("jobs", JobQueue)
REPORTS = web.AppKey("reports", ReportStore)
DELIVERY = web.AppKey("delivery", Delivery)
CONVERSATION = web.AppKey("conversation", ConversationService)
ANALYZE: web.AppKey[Analyze] = web.AppKey("analyze")  # set by the pipeline component
MODEL_ANSWER: web.AppKey[Answer] = web.AppKey("model_answer")  # optional: set by the LLM component
RESOLVE_TASK: web.AppKey[Resolve] = web.AppKey("resolve_task")  # optional: when BK-JOB is configured


def report_reply(report: DiagnosisReport, requester: Requester, *, detail_hint: str) -> Reply:
    md = render_markdown(report, detail_hint=detail_hint)
    return Reply(
        target=requester.target,
        kind="report",
        mention=[requester.sender_name or requester.sender_id] if requester.target.is_group else [],
        title=report_header(report),
        markdown=md.text,
        text=render_text(report),
    )


def setup_runtime(app: web.Application) -> None:
    """Register the engine; call after the channel components so their routes exist first."""
    if CHANNELS not in app:
        app[CHANNELS] = ChannelRegistry()
    app.cleanup_ctx.append(_runtime_ctx)


async def _runtime_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, store, metrics, tasks = app[K.SETTINGS], app[K.STORE], app[K.METRICS], app[K.TASKS]
    inbox, jobs = Inbox(store), JobQueue(store)
    reports = ReportStore(store, fresh_s=settings.chat.report_cache_s)
    # Entries are reclaimed only after their owner stopped heartbeating for claim_idle_s, so a part
    # still marked "sending" by then belongs to a dead process: recover it (history, then resend).
    outbox = Outbox(store, stale_after_s=min(60.0, settings.worker.claim_idle_s / 2))
    delivery = Delivery(app[CHANNELS], outbox, metrics, redactor=app[K.REDACTOR])
    app[INBOX], app[JOBS], app[REPORTS], app[DELIVERY] = inbox, jobs, reports, delivery

    async def send_report(requester: Requester, key: str, salt: str) -> None:
        stored = await reports.get(key)
        if stored is None:
            return
        ident = stored.report.step_instance_id or stored.report.request_ids[:1] or key
        hint = f"完整报告：发送「详情 {ident if isinstance(ident, int) else key.split(':', 1)[-1]}」"
        reply = report_reply(stored.report, requester, detail_hint=hint)
        await delivery.send(
            reply, delivery_key("report", key, salt, requester.target.chat_id, requester.sender_id)
        )
        await reports.remember_for(
            requester.target.channel, requester.target.chat_id, requester.sender_id, key
        )

    async def send_failure(requester: Requester, job: AnalysisJob, salt: str) -> None:
        what = job.request_key.split(":", 1)[-1]
        reply = Reply(
            target=requester.target,
            kind="error",
            mention=[requester.sender_name or requester.sender_id] if requester.target.is_group else [],
            text=f"抱歉，{what} 的分析多次尝试后仍未完成（依赖服务可能暂时不可用）。请稍后发送「重新分析 {what}」。",
        )
        reply = reply.model_copy(update={"markdown": reply.text})
        await delivery.send(reply, delivery_key("failure", job.request_key, salt, requester.sender_id))

    model_answer = app.get(MODEL_ANSWER)

    async def answer(msg: IncomingMessage, question: str) -> str:
        exact = knowledge.answer_code(question) or knowledge.answer_topic(question)
        if exact is not None:
            return exact
        if model_answer is not None:
            got = await model_answer(msg, question)
            if got:
                return str(got)
        return knowledge.FALLBACK

    conversation = ConversationService(
        settings=settings,
        store=store,
        delivery=delivery,
        jobs=jobs,
        reports=reports,
        metrics=metrics,
        tasks=tasks,
        answer=answer,
        send_report=send_report,
        resolve_task=app.get(RESOLVE_TASK),
    )
    app[CONVERSATION] = conversation
    router = Router()

    async def handle(msg: IncomingMessage) -> object:
        with message_context(msg):
            return await router.dispatch(msg, conversation)

    async def analyze_missing(job: AnalysisJob) -> DiagnosisReport:
        raise RuntimeError("no analysis pipeline configured")

    consumer = InboxConsumer(inbox, handle, concurrency=8, claim_idle_s=settings.worker.claim_idle_s)
    worker = JobWorker(
        jobs,
        store,
        reports,
        metrics,
        analyze=app.get(ANALYZE) or analyze_missing,
        deliver_report=send_report,
        deliver_failure=send_failure,
        concurrency=settings.worker.concurrency,
        claim_idle_s=settings.worker.claim_idle_s,
        max_attempts=settings.worker.max_attempts,
        timeout_s=settings.llm.deadline_s + 120,
    )
    loops = [
        tasks.spawn(consumer.run(), name="inbox-consumer", daemon=True),
        tasks.spawn(worker.run(), name="job-worker", daemon=True),
        tasks.spawn(_queue_gauge(app), name="queue-gauge", daemon=True),
    ]
    yield
    for loop in loops:
        loop.cancel()
    await asyncio.gather(*loops, return_exceptions=True)
    grace = settings.http.shutdown_grace_s
    await asyncio.gather(consumer.stop(grace), worker.stop(grace))


async def _queue_gauge(app: web.Application) -> None:
    while True:
        raise_if_cancelling()
        try:
            app[K.METRICS].queue_depth.set(await app[JOBS].depth())
        except Exception as exc:  # a metrics poll must never die
            log.debug("queue_gauge_failed", error=type(exc).__name__)
        await asyncio.sleep(5)
