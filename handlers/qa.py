"""Answering a question: exact knowledge first (codes, common topics), then the model (when
configured, grounded in the same knowledge), then a fallback that says what the bot can answer."""

from __future__ import annotations

from typing import Protocol

from bot.core.models import IncomingMessage
from handlers import knowledge, texts


class ModelAnswer(Protocol):
    async def __call__(
        self, question: str, knowledge: str, *, budget_key: str, budget_user: str = ""
    ) -> str | None:
        """The model's answer grounded in `knowledge`, or None (no model, timeout, budget spent)."""
        ...


class Answers:
    def __init__(self, model: ModelAnswer | None = None) -> None:
        self.model = model

    async def answer(self, msg: IncomingMessage, question: str) -> str:
        code = knowledge.answer_code(question)
        if code is not None and knowledge.asks_meaning(question):
            return code
        # "310 怎么办": the topic says what to do; the code table only what 310 is.
        exact = knowledge.answer_topic(question) or code or knowledge.answer_codes_in_general(question)
        if exact is not None:
            return exact
        # `code` is None here (else `exact` was set): the code the question names is in no table
        if (unknown := knowledge.unknown_code(question)) is not None:
            return texts.UNKNOWN_CODE.format(code=unknown)
        if self.model is not None:
            # The model's tokens are charged to the asking chat's daily budget.
            got = await self.model(
                question,
                knowledge.knowledge_snippet(),
                budget_key=f"{msg.channel}:{msg.chat_id}",
                budget_user=f"{msg.channel}:{msg.limit_key}",
            )
            if got:
                return got
        return texts.QA_FALLBACK.format(topics="、".join(knowledge.offline_titles()))
