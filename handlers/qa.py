"""Answering a question: exact knowledge first, then the model (when configured), then a fallback."""

from __future__ import annotations

from typing import Protocol

from bot.core.models import IncomingMessage
from handlers import knowledge, texts


class ModelAnswer(Protocol):
    async def __call__(self, question: str, knowledge: str, *, budget_key: str) -> str | None:
        """The model's answer grounded in `knowledge`, or None (no model, timeout, budget spent)."""
        ...


class Answers:
    def __init__(self, model: ModelAnswer | None = None) -> None:
        self.model = model

    async def answer(self, msg: IncomingMessage, question: str) -> str:
        exact = knowledge.answer_code(question) or knowledge.answer_topic(question)
        if exact is not None:
            return exact
        if self.model is not None:
            # The model's tokens are charged to the asking chat's daily budget.
            got = await self.model(
                question, knowledge.knowledge_snippet(), budget_key=f"{msg.channel}:{msg.chat_id}"
            )
            if got:
                return got
        return texts.QA_FALLBACK
