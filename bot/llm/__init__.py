"""The language-model half of a diagnosis: client, prompts, schema, verification, scrubbing, budget."""

from bot.llm.budget import BUDGET_NOTICE, TokenBudget
from bot.llm.client import CallEvent, CallObserver, LlmClient, LlmError
from bot.llm.diagnose import (
    LlmResult,
    QuestionModel,
    ToolBox,
    answer_question,
    llm_diagnose,
    summarize_digest,
)
from bot.llm.prompts import PromptLibrary
from bot.llm.scrub import Scrubber, SecretLeak

__all__ = [
    "BUDGET_NOTICE",
    "CallEvent",
    "CallObserver",
    "LlmClient",
    "LlmError",
    "LlmResult",
    "PromptLibrary",
    "QuestionModel",
    "Scrubber",
    "SecretLeak",
    "TokenBudget",
    "ToolBox",
    "answer_question",
    "llm_diagnose",
    "summarize_digest",
]
