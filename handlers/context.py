"""What a handler may do. Implemented by `handlers.service.ConversationService`."""

from __future__ import annotations

from typing import Protocol

from bot.core.models import IncomingMessage, ReplyKind
from bot.core.settings import Settings
from handlers.ids import IdRef
from handlers.state import Ask
from handlers.timehint import TimeWindow


class HandlerContext(Protocol):
    settings: Settings

    async def say(
        self, msg: IncomingMessage, text: str, *, kind: ReplyKind = "answer", markdown: str = ""
    ) -> None:
        """Answer in the message's chat (the asker @-mentioned in groups)."""
        ...

    async def start_analysis(
        self, msg: IncomingMessage, ref: IdRef, *, force: bool = False, window: TimeWindow | None = None
    ) -> None:
        """Queue (or join) the analysis of one step / request id for this asker; `window`: the
        BkLog window the asker named instead of the usual one."""
        ...

    async def resolve_task_only(self, ref: IdRef) -> IdRef | None:
        """A job-instance-only link: pick its failed step through BK-JOB when configured."""
        ...

    async def get_ask(self, msg: IncomingMessage) -> Ask | None: ...

    async def refuse_outside(self, msg: IncomingMessage, ref: IdRef) -> bool:
        """Refuse a link into another business than the chat's (said in the chat); True if refused."""
        ...

    async def turn_ask(self, msg: IncomingMessage) -> Ask | None:
        """What the bot was waiting for from this sender when this message was first handled."""
        ...

    async def set_ask(self, msg: IncomingMessage, ask: Ask) -> None: ...

    async def clear_ask(self, msg: IncomingMessage) -> bool: ...

    async def full_report(self, msg: IncomingMessage, ref: IdRef | None) -> tuple[str, str] | None:
        """A recent report whole, as (plain text, markdown): by id, or the asker's latest."""
        ...

    async def status_text(self, msg: IncomingMessage) -> str: ...

    async def answer_question(self, msg: IncomingMessage, question: str) -> str: ...

    async def record_feedback(self, msg: IncomingMessage, verdict: str, note: str) -> str | None:
        """Attach feedback to the asker's latest report; returns the report key or None."""
        ...
