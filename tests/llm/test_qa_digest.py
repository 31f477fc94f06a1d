"""Private-chat Q&A and the digest paragraph: answers, and None whenever the caller must fall back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.llm.client import LlmClient
from bot.llm.diagnose import answer_question, summarize_digest
from bot.llm.prompts import PromptLibrary
from tests.support.fakes.openai_server import Answer, FakeOpenAI, Hang, Status

KNOWLEDGE = "下发阶段：Sending task to gse server → Start gse task successfully；失败常见于 GSE 接口异常。"


async def test_qa_answer(client: LlmClient, fake: FakeOpenAI, prompts: PromptLibrary) -> None:
    fake.push(Answer("下发阶段失败一般是 GSE 接口异常或目标 Agent 不可用。"))
    text = await answer_question(client, prompts, "下发阶段失败一般是什么原因", KNOWLEDGE, deadline_s=3)
    assert text == "下发阶段失败一般是 GSE 接口异常或目标 Agent 不可用。"
    assert KNOWLEDGE in fake.requests[0].body["messages"][1]["content"]


async def test_qa_falls_back(
    make_client: Callable[..., LlmClient], fake: FakeOpenAI, prompts: PromptLibrary
) -> None:
    client = make_client(max_attempts=1)
    fake.push(Answer("Dispatch failures are usually GSE problems."), Status(500, "boom"), Answer("   "))
    for _ in range(3):
        assert await answer_question(client, prompts, "下发失败原因", KNOWLEDGE, deadline_s=3) is None
    fake.push(Hang(10))
    assert await answer_question(client, prompts, "下发失败原因", KNOWLEDGE, deadline_s=0.5) is None


async def test_digest_summary(client: LlmClient, fake: FakeOpenAI, prompts: PromptLibrary) -> None:
    fake.push(Answer("今天共 5 个失败步骤，主要是脚本返回码非零（3 次），建议优先检查部署脚本。"))
    groups: list[dict[str, Any]] = [
        {"signature": "script_exit_nonzero", "stage": "execution", "fault_side": "user", "count": 3},
        {"signature": None, "stage": "dispatch", "fault_side": "third_party", "count": 2},
    ]
    text = await summarize_digest(
        client, prompts, date="2024-05-30", total_failed_steps=5, groups=groups, deadline_s=3
    )
    assert text is not None and "脚本" in text
    user = fake.requests[0].body["messages"][1]["content"]
    assert "script_exit_nonzero" in user and "未匹配特征" in user and "共 5 个失败步骤" in user
