"""The message router: an explicit, ordered list of handlers; the first that takes a message wins.

Order (DESIGN "Ask or answer?"): access policy → non-text messages → commands → id-bearing
messages → a message cut to the length limit without an id → follow-ups to a question the bot asked →
feedback on a report → greetings → a failure without an id → questions → chatter.
In groups the bot only reacts when @-mentioned, or to the follow-up it asked that same sender for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from bot.core.models import IncomingMessage
from handlers import knowledge, texts
from handlers.context import HandlerContext
from handlers.ids import ExtractedIds, IdRef, extract_ids
from handlers.intent import Command, classify, is_greeting, parse_command, parse_feedback
from handlers.policy import AccessPolicy
from handlers.service import turn_key
from handlers.state import Ask
from handlers.timehint import TimeWindow, time_window

log = structlog.get_logger(__name__)


@dataclass
class Turn:
    """One message with what the router already worked out about it."""

    msg: IncomingMessage
    ctx: HandlerContext
    ids: ExtractedIds
    command: Command | None
    ask: Ask | None  # the pending question the bot asked this sender, if any
    force_allowed: bool = False  # the policy lets this `重新分析` skip the report cache

    @property
    def addressed(self) -> bool:
        return self.msg.mentioned or not self.msg.is_group


Handler = Callable[[Turn], Awaitable[bool]]


def _named_window(turn: Turn, text: str, at: datetime) -> TimeWindow | None:
    """The BkLog window a time in `text` names ("昨天下午3点"), read in BkLog's time zone as of `at`."""
    chat = turn.ctx.settings.chat
    try:
        now = at.astimezone(ZoneInfo(turn.ctx.settings.bklog.time_zone))
    except (ZoneInfoNotFoundError, ValueError):
        return None  # a broken zone fails the analysis loudly elsewhere; a hint is optional
    return time_window(
        text,
        now=now,
        before=timedelta(seconds=chat.time_hint_before_s),
        after=timedelta(seconds=chat.time_hint_after_s),
    )


async def _analyse_refs(
    turn: Turn, refs: Sequence[IdRef], *, force: bool = False, window: TimeWindow | None = None
) -> None:
    ctx, msg = turn.ctx, turn.msg
    for i, ref in enumerate(refs):
        if ref.kind == "task_only":
            if await ctx.refuse_outside(msg, ref):  # before BK-JOB names a step of that business
                continue
            resolved = await ctx.resolve_task_only(ref)
            if resolved is None:
                await ctx.set_ask(msg, Ask(reason="which_step", task=ref.task_instance_id))
                await ctx.say(msg, texts.ASK_WHICH_STEP.format(task=ref.task_instance_id), kind="question")
                continue
            ref = resolved
        await ctx.start_analysis(
            msg, ref, force=force and i == 0, window=window
        )  # one forced run per message
    if turn.ids.over_limit:
        await ctx.say(
            msg,
            texts.OVER_LIMIT.format(limit=ctx.settings.chat.max_ids_per_message, more=turn.ids.over_limit),
            kind="notice",
        )


async def handle_unsupported(turn: Turn) -> bool:
    """An image, file or voice addressed to the bot: say once what it can read."""
    if turn.msg.content != "unsupported":
        return False
    if turn.addressed:
        await turn.ctx.say(turn.msg, texts.UNSUPPORTED_TYPE, kind="notice")
    return True


async def handle_command(turn: Turn) -> bool:
    cmd, ctx, msg = turn.command, turn.ctx, turn.msg
    if cmd is None or (not turn.addressed and not (turn.ask and cmd.name == "cancel")):
        return False
    if cmd.name == "help":
        await ctx.say(msg, texts.HELP)
    elif cmd.name == "cancel":
        await ctx.say(msg, texts.CANCELLED if await ctx.clear_ask(msg) else texts.NOTHING_TO_CANCEL)
    elif cmd.name == "status":
        await ctx.say(msg, await ctx.status_text(msg))
    elif cmd.name == "reanalyze":
        ids = extract_ids(cmd.arg, max_ids=ctx.settings.chat.max_ids_per_message)
        if not ids.refs:
            await ctx.say(msg, texts.REANALYZE_NEED_ID)
        else:
            await ctx.clear_ask(msg)
            if not turn.force_allowed:
                limit = ctx.settings.chat.reanalyze_per_hour
                await ctx.say(msg, texts.REANALYZE_LIMITED.format(limit=limit), kind="notice")
            forced = Turn(msg, ctx, ids, None, None)
            window = _named_window(forced, cmd.arg, msg.received_at)
            await _analyse_refs(forced, ids.refs, force=turn.force_allowed, window=window)
    elif cmd.name == "detail":
        ids = extract_ids(cmd.arg, max_ids=1)
        ref = ids.refs[0] if ids.refs else None
        full = await ctx.full_report(msg, ref)
        if full is not None:
            text, markdown = full
            await ctx.say(msg, text, kind="report", markdown=markdown)
        elif ref is None:
            await ctx.say(msg, texts.DETAIL_NEED_ID)
        else:
            what = ref.step_instance_id or ref.request_id or ref.task_instance_id
            await ctx.say(msg, texts.DETAIL_NOT_FOUND.format(what=what))
    return True


async def handle_ids(turn: Turn) -> bool:
    has_ids = bool(turn.ids.refs)
    # In a group, a message without @ counts only as the follow-up the bot asked this sender for.
    if not has_ids or not (turn.addressed or turn.ask):
        return False
    window = _named_window(turn, turn.msg.text, turn.msg.received_at)
    if window is None and turn.ask is not None and turn.ask.text:
        # "昨天下午3点的作业挂了" → "20031265375": the time came with the question the bot asked.
        asked_at = datetime.fromtimestamp(turn.ask.at, UTC) if turn.ask.at else turn.msg.received_at
        window = _named_window(turn, turn.ask.text, asked_at)
    await turn.ctx.clear_ask(turn.msg)
    await _analyse_refs(turn, turn.ids.refs, window=window)
    return True


async def handle_truncated(turn: Turn) -> bool:
    """A message cut to the length limit with no id in what was kept: say why nothing happens."""
    if not turn.msg.truncated or turn.ids.refs or not (turn.addressed or turn.ask):
        return False
    limit = turn.ctx.settings.chat.max_text_chars
    await turn.ctx.say(turn.msg, texts.TEXT_TRUNCATED.format(limit=limit), kind="notice")
    return True


async def handle_followup(turn: Turn) -> bool:
    if turn.ask is None or not turn.addressed:
        return False
    # Asked for an id, got none: remind once more (the question stays open until its TTL).
    if turn.ids.uuid_seen:
        await turn.ctx.say(turn.msg, texts.UUID_HINT, kind="question")
    elif classify(turn.msg.text) == "question":
        return False  # a real question: answer it, keep waiting for the id
    else:
        await turn.ctx.say(turn.msg, texts.ASK_STILL_WAITING, kind="question")
    return True


async def handle_feedback(turn: Turn) -> bool:
    fb = parse_feedback(turn.msg.text)
    if fb is None or not turn.addressed:
        return False
    key = await turn.ctx.record_feedback(turn.msg, fb[0], fb[1])
    await turn.ctx.say(turn.msg, texts.FEEDBACK_THANKS if key else texts.FEEDBACK_NO_REPORT)
    return True


async def handle_greeting(turn: Turn) -> bool:
    """Greetings ("你好", "在吗", "你能做什么"): a hello and how to ask for a diagnosis."""
    if not turn.addressed or not is_greeting(turn.msg.text):
        return False
    await turn.ctx.say(turn.msg, texts.HELP)
    return True


async def handle_failure_without_id(turn: Turn) -> bool:
    if not turn.addressed or classify(turn.msg.text) != "failure_without_id":
        return False
    ctx, msg = turn.ctx, turn.msg
    if turn.ids.uuid_seen:
        await ctx.say(msg, texts.UUID_HINT, kind="question")
    await ctx.set_ask(msg, Ask(reason="need_id", text=msg.text[:200]))
    if not msg.is_group:
        question = texts.ASK_FOR_ID_PRIVATE
        if (topic := knowledge.answer_topic(msg.text)) is not None:
            question = texts.ASK_FOR_ID_WITH_TOPIC.format(ask=question, answer=topic)
    elif msg.channel.startswith("wecom"):
        question = texts.ASK_FOR_ID_MENTION_ONLY  # WeCom groups deliver only @-mentions
    else:
        question = texts.ASK_FOR_ID_GROUP
    await ctx.say(msg, question, kind="question")
    return True


async def handle_question(turn: Turn) -> bool:
    if not turn.addressed or classify(turn.msg.text) != "question":
        return False
    await turn.ctx.say(turn.msg, await turn.ctx.answer_question(turn.msg, turn.msg.text))
    return True


async def handle_chatter(turn: Turn) -> bool:
    if not turn.addressed:
        return False
    if turn.ids.uuid_seen:
        await turn.ctx.say(turn.msg, texts.UUID_HINT)
    elif not turn.msg.text.strip():
        await turn.ctx.say(turn.msg, texts.CHATTER_HINT)
    else:
        await turn.ctx.say(turn.msg, await turn.ctx.answer_question(turn.msg, turn.msg.text))
    return True


DEFAULT_HANDLERS: tuple[tuple[str, Handler], ...] = (
    ("unsupported", handle_unsupported),
    ("command", handle_command),
    ("ids", handle_ids),
    ("truncated", handle_truncated),
    ("followup", handle_followup),
    ("feedback", handle_feedback),
    ("greeting", handle_greeting),
    ("failure_without_id", handle_failure_without_id),
    ("question", handle_question),
    ("chatter", handle_chatter),
)


class Router:
    def __init__(
        self, policy: AccessPolicy, handlers: Sequence[tuple[str, Handler]] = DEFAULT_HANDLERS
    ) -> None:
        self.policy = policy
        self.handlers = list(handlers)

    async def dispatch(self, msg: IncomingMessage, ctx: HandlerContext) -> str:
        """Route one message; returns the name of the handler that took it ("ignored" if none)."""
        limit = ctx.settings.chat.max_text_chars
        if len(msg.text) > limit:  # before any parsing: no parser ever sees more than the limit
            msg = msg.model_copy(update={"text": msg.text[:limit], "truncated": True})
        ask = await ctx.turn_ask(msg)
        if msg.is_group and not msg.mentioned and ask is None:
            return "ignored"  # group chatter not addressed to the bot: not even rate-limited
        refusal = await self.policy.check(msg, turn=turn_key(msg))
        if refusal is not None:
            if refusal:
                await ctx.say(msg, refusal, kind="notice")
            return "refused"
        command = parse_command(msg.text)
        turn = Turn(
            msg=msg,
            ctx=ctx,
            ids=extract_ids(msg.text, max_ids=ctx.settings.chat.max_ids_per_message),
            command=command,
            ask=ask,
            force_allowed=(
                command is not None
                and command.name == "reanalyze"
                and (msg.mentioned or not msg.is_group)
                and await self.policy.allow_forced(msg, turn=turn_key(msg))
            ),
        )
        for name, handler in self.handlers:
            if await handler(turn):
                log.info("message_routed", handler=name)
                return name
        return "ignored"
