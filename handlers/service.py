"""The engine side of a conversation: what handlers can do (`handlers.context.HandlerContext`).

It turns a handler's intent into durable effects: replies through the outbox, analysis jobs
on the queue (single-flight per step), conversation state with a TTL, feedback.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import datetime

import structlog
from pydantic import ValidationError

from bot.core.metrics import Metrics
from bot.core.models import AnalysisJob, ChatTarget, IncomingMessage, Reply, ReplyKind, Requester, Window
from bot.core.scope import Scope, parse_scope, scope_of
from bot.core.settings import Settings
from bot.core.store import Store
from bot.core.tasks import TaskTracker
from bot.delivery.queue import JobQueue
from bot.delivery.render import render_markdown, render_text
from bot.delivery.reports import ReportStore, StoredReport
from bot.delivery.send import Delivery, DeliveryFailed, delivery_key
from bot.diagnosis.locate import StepLocator
from handlers import texts
from handlers.ids import IdRef
from handlers.qa import Answers
from handlers.replies import ReportReplies, scope_refusal
from handlers.state import TURN_MEMORY_S, Ask
from handlers.timehint import TimeWindow

log = structlog.get_logger(__name__)


def request_key(ref: IdRef, window: TimeWindow | None = None) -> str:
    """The single-flight and report-cache key: a window the asker named is part of it, so a report
    built from one window is never handed out as the answer for another."""
    if ref.kind == "request":
        key = f"req:{ref.request_id}"
    else:
        key = f"step:{ref.step_instance_id}"
        key = key if ref.execute_count is None else f"{key}:ec{ref.execute_count}"
    return key if window is None else f"{key}:{window.key}"


def describe(ref: IdRef, window: TimeWindow | None = None, now: datetime | None = None) -> str:
    if ref.kind == "request":
        what = f"request_id={ref.request_id}"
    else:
        ec = texts.RETRY_RUN.format(n=ref.execute_count) if ref.execute_count else ""
        what = f"stepInstanceId={ref.step_instance_id}{ec}"
    if window is None:
        return what
    span = window.describe(now or window.until)
    return what + texts.WINDOW_NOTE.format(hint=window.text, window=span)


def covers(searched: Window | None, window: TimeWindow) -> bool:
    """Whether a report's BkLog window holds all of `window` (its lines would have been found)."""
    if searched is None:
        return False
    try:
        start, end = datetime.fromisoformat(searched.start), datetime.fromisoformat(searched.end)
    except ValueError:
        return False
    if start.tzinfo is None or end.tzinfo is None:
        return False
    return start <= window.since and window.until <= end


def turn_key(msg: IncomingMessage) -> str:
    """Stable per accepted message, so re-processing it after a crash re-uses the same outbox keys."""
    return delivery_key(msg.channel, msg.chat_id, msg.sender_id, msg.received_at.isoformat(), msg.text)


class ConversationService:
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        delivery: Delivery,
        jobs: JobQueue,
        reports: ReportStore,
        metrics: Metrics,
        tasks: TaskTracker,
        answers: Answers,
        replies: ReportReplies,
        locator: StepLocator | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.delivery = delivery
        self.jobs = jobs
        self.reports = reports
        self.metrics = metrics
        self.tasks = tasks
        self.answers = answers
        self.replies = replies
        self.locator = locator

    # ---- replies

    async def say(
        self, msg: IncomingMessage, text: str, *, kind: ReplyKind = "answer", markdown: str = ""
    ) -> None:
        # Keyed by the message and what is said (not by a counter): re-processing the same inbox
        # entry after a crash re-uses the same outbox keys, so nothing goes out twice.
        key = delivery_key(turn_key(msg), kind, text)
        reply = Reply(
            target=ChatTarget.of(msg),
            kind=kind,
            mention=[msg.sender_name or msg.sender_id] if msg.is_group else [],
            text=text,
            markdown=markdown or text,
        )
        # DeliveryFailed (DeliveryBusy too) propagates: the inbox entry is then not acknowledged and
        # the message is handled again after the claim timeout; every effect of a turn is keyed by
        # the turn, so what already happened is not done twice and only the lost reply goes out.
        await self.delivery.send(reply, key)

    # ---- analyses

    async def start_analysis(
        self, msg: IncomingMessage, ref: IdRef, *, force: bool = False, window: TimeWindow | None = None
    ) -> None:
        key = request_key(ref, window)
        requester = Requester(
            target=ChatTarget.of(msg),
            sender_id=msg.sender_id,
            sender_name=msg.sender_name,
            sender_key=msg.sender_key,
        )
        # A turn handled again (a reply of it was not delivered) does not ask for the analysis twice.
        started = self.store.key("started", turn_key(msg), key)
        if await self.store.exists(started):
            return
        if await self.refuse_outside(msg, ref):
            return
        cooldown = self.settings.chat.reanalyze_cooldown_s
        if force and cooldown > 0 and not await self.store.claim(self.store.key("forced", key), cooldown):
            force = False  # forced moments ago (by anyone): that run's report is fresh enough
        if not force:
            fresh = await self._fresh_report(ref, window)
            if fresh is not None:
                await self.replies.send_report(requester, fresh.request_key, f"cached:{turn_key(msg)}")
                await self.store.set_json(started, 1, ttl_s=TURN_MEMORY_S)
                return
        scope = scope_of(ref.bk_scope_type, ref.bk_scope_id) or self.chat_scope(msg)
        job = AnalysisJob(
            request_key=key,
            step_instance_id=ref.step_instance_id if ref.kind != "request" else None,
            request_id=ref.request_id,
            task_instance_id=ref.task_instance_id,
            execute_count=ref.execute_count,
            bk_scope_type=scope.type if scope else None,
            bk_scope_id=scope.id if scope else None,
            # the first asker: whose chat and sender budgets the model calls of this analysis spend
            requesters=[requester],
            force=force,
            since=window.since if window else None,
            until=window.until if window else None,
        )
        result = await self.jobs.submit(job, requester)
        await self.store.set_json(started, 1, ttl_s=TURN_MEMORY_S)
        if result.queued:
            self.metrics.jobs_queued.inc()
        log.info("analysis_requested", request_key=key, queued=result.queued, entry=result.entry_id)
        self.tasks.spawn(
            self._progress_later(msg, requester, result.entry_id, describe(ref, window, msg.received_at)),
            name=f"progress:{key}",
            daemon=True,  # a progress note is not worth holding up a shutdown for
        )

    async def _fresh_report(self, ref: IdRef, window: TimeWindow | None) -> StoredReport | None:
        """A fresh report that answers this request: its own, or for a named window, the usual
        report of the same step when the window it searched holds the named one."""
        fresh = await self.reports.get_fresh(request_key(ref, window))
        if fresh is None and window is not None:
            usual = await self.reports.get_fresh(request_key(ref))
            if usual is not None and covers(usual.report.window, window):
                return usual
        return fresh

    async def _progress_later(
        self, msg: IncomingMessage, requester: Requester, entry_id: str, what: str
    ) -> None:
        """One progress message per request, only if the report is not there in time."""
        await asyncio.sleep(self.settings.chat.progress_after_s)
        if await self.store.exists(self.store.key("done", entry_id)):
            return
        claimed = await self.store.claim(
            self.store.key("progress", entry_id, requester.target.chat_id, requester.sender_id), 3600
        )
        if claimed:
            try:
                await self.say(msg, texts.PROGRESS.format(what=what), kind="progress")
            except DeliveryFailed as exc:  # a progress note is not worth a retry: the report follows
                log.warning("progress_not_delivered", error=str(exc))

    def chat_scope(self, msg: IncomingMessage) -> Scope | None:
        """The business configured for this chat (CHAT__GROUP_SCOPES, by name or id), if any."""
        scopes = self.settings.chat.group_scopes
        if not msg.is_group or not scopes:
            return None
        raw = scopes.get(msg.chat_name) or scopes.get(msg.chat_id)
        return parse_scope(raw) if raw else None

    async def refuse_outside(self, msg: IncomingMessage, ref: IdRef) -> bool:
        """A link into another business than the chat's: say so (and nothing of it) and return True."""
        gate, target = self.replies.gate, ChatTarget.of(msg)
        if gate is None or not gate.link_outside(target, ref):
            return False
        own = gate.scope_of(target)
        if ref.kind == "task_only":
            what = f"taskInstanceId={ref.task_instance_id}"
            text = texts.OUT_OF_SCOPE.format(what=what, scope=f"{own[0]}:{own[1]}" if own else "")
        else:
            text = scope_refusal("outside", request_key(ref), f"{own[0]}:{own[1]}" if own else "")
        await self.say(msg, text, kind="notice")
        return True

    async def resolve_task_only(self, ref: IdRef) -> IdRef | None:
        if self.locator is None or ref.task_instance_id is None or ref.bk_scope_id is None:
            return None
        try:
            step = await self.locator.single_failed_step(
                ref.bk_scope_type or "biz", ref.bk_scope_id, ref.task_instance_id
            )
        except Exception as exc:  # BK-JOB trouble must not break the conversation
            log.warning("resolve_task_failed", error=type(exc).__name__)
            return None
        if step is None:
            return None
        return IdRef(
            kind="step",
            step_instance_id=step,
            task_instance_id=ref.task_instance_id,
            bk_scope_type=ref.bk_scope_type,
            bk_scope_id=ref.bk_scope_id,
            source=ref.source,
        )

    # ---- conversation state

    def _ask_key(self, msg: IncomingMessage) -> str:
        return self.store.key("ask", msg.channel, msg.chat_id, msg.sender_id)

    async def get_ask(self, msg: IncomingMessage) -> Ask | None:
        data = await self.store.get_json(self._ask_key(msg))
        try:
            return Ask.model_validate(data) if isinstance(data, dict) else None
        except ValidationError:
            return None

    async def turn_ask(self, msg: IncomingMessage) -> Ask | None:
        """The ask as this turn first saw it. A turn handled again (one of its replies was not
        delivered) must read as it did the first time, though that try already cleared the ask:
        otherwise a follow-up without @ becomes group chatter and is dropped. Recorded only for
        turns that may act (addressed, or with an ask), so group chatter costs no write."""
        seen_key = self.store.key("turn-ask", turn_key(msg))
        seen = await self.store.get_json(seen_key)
        if isinstance(seen, dict):
            try:
                return Ask.model_validate(seen["ask"]) if seen.get("ask") else None
            except ValidationError:
                return None
        ask = await self.get_ask(msg)
        if ask is not None or msg.mentioned or not msg.is_group:
            snapshot = {"ask": ask.model_dump() if ask else None}
            await self.store.set_json(seen_key, snapshot, ttl_s=TURN_MEMORY_S)
        return ask

    async def set_ask(self, msg: IncomingMessage, ask: Ask) -> None:
        stamped = ask.model_copy(update={"at": time.time()})
        await self.store.set_json(
            self._ask_key(msg), stamped.model_dump(), ttl_s=self.settings.chat.ask_ttl_s
        )

    async def clear_ask(self, msg: IncomingMessage) -> bool:
        return bool(await self.store.delete(self._ask_key(msg)))

    # ---- reports, status, questions, feedback

    async def full_report(self, msg: IncomingMessage, ref: IdRef | None) -> tuple[str, str] | None:
        latest = await self.reports.latest_for(msg)
        if ref is None or ref.kind == "task_only":
            key = latest
        else:
            key = request_key(ref)
            if latest is not None and latest.startswith(f"{key}:w"):
                key = latest  # the asker's own report of that id was for a window they named
        if key is None:
            return None
        stored = await self.reports.get(key)
        if stored is None:
            return None
        refusal = await self.replies.refusal(ChatTarget.of(msg), key, stored.report)
        if refusal is not None:
            return refusal, refusal
        # Markdown of its own, never the plain text: log lines and host output go in code fences
        # there, so a line a script printed cannot mention anyone or carry a link. The channel
        # splits it into parts; nothing is shortened.
        whole = render_markdown(stored.report, max_bytes=sys.maxsize).text
        return render_text(stored.report), whole

    async def status_text(self, msg: IncomingMessage) -> str:
        depth = await self.jobs.depth()
        lines = [texts.STATUS_QUEUE.format(depth=depth)]
        if await self.get_ask(msg):
            lines.append(texts.STATUS_WAITING)
        latest = await self.reports.latest_for(msg)
        if latest:
            stored = await self.reports.get(latest)
            if stored is not None:
                when = time.strftime("%H:%M:%S", time.localtime(stored.finished_at))
                lines.append(texts.STATUS_LATEST.format(key=latest, when=when))
        return "\n".join(lines)

    async def answer_question(self, msg: IncomingMessage, question: str) -> str:
        """The answer to `question`, once per turn: a turn handled again (its reply was not
        delivered) sends the same answer instead of asking the model, and paying, once more."""
        kept = self.store.key("answer", turn_key(msg))
        known = await self.store.get_json(kept)
        if isinstance(known, str):
            return known
        answer = await self.answers.answer(msg, question)
        await self.store.set_json(kept, answer, ttl_s=TURN_MEMORY_S)
        return answer

    async def record_feedback(self, msg: IncomingMessage, verdict: str, note: str) -> str | None:
        key = await self.reports.latest_for(msg)
        if key is None:
            return None
        if await self.store.claim(self.store.key("feedback-turn", turn_key(msg)), TURN_MEMORY_S):
            await self.reports.add_feedback(key, msg, verdict, note)  # once per turn, however often handled
        return key
