"""The optional one-paragraph model summary of a digest."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bot.digest.models import Digest
from bot.llm.client import LlmClient
from bot.llm.diagnose import summarize_digest
from bot.llm.prompts import PromptLibrary
from bot.llm.scrub import Scrubber

Summarize = Callable[[Digest], Awaitable[str | None]]


def model_summarizer(
    llm: LlmClient, prompts: PromptLibrary, scrubber: Scrubber, *, deadline_s: float
) -> Summarize:
    async def summarize(digest: Digest) -> str | None:
        groups = [
            {
                # the prompt shows `signature`; the Chinese title reads better to the model
                "signature": f"{g.title}（{g.signature}）" if g.signature else None,
                "stage": g.stage,
                "fault_side": g.fault_side,
                "count": g.count,
            }
            for g in digest.groups[:20]
        ]
        return await summarize_digest(
            llm,
            prompts,
            date=digest.date,
            total_failed_steps=digest.total_failed_steps,
            groups=groups,
            deadline_s=deadline_s,
            scrubber=scrubber,
        )

    return summarize
