"""The whole app (console channel, pipeline, engine) with the fake model: Q&A, reports, /metrics."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.app import keys as K
from bot.app.web import create_app
from bot.core.settings import Settings
from bot.llm.budget import BUDGET_NOTICE
from tests.channels.console.helpers import Page, is_bot
from tests.integration.llm_pipeline.conftest import API_KEY, Rig, RigFactory
from tests.integration.llm_pipeline.helpers import (
    CONFIGURED_SECRET,
    INJECTED_GROUP,
    STEP,
    QuotingModel,
    leaks,
    planted_log_text,
    scenario,
)
from tests.support.fakes.openai_server import Answer, Behaviour, Hang

ClientFactory = Callable[..., Any]
_QUESTION = re.compile(r"<question>\n?(.*?)\n?</question>", re.S)


def app_settings(rig: Rig, key_prefix: str, **llm: Any) -> Settings:
    from bot.devtools.evaluate import SANDBOX_APP, SANDBOX_INDEX_SET

    code, secret, user = SANDBOX_APP
    cfg: dict[str, Any] = {"base_url": rig.fake_url, "api_key": API_KEY, "model": "m", "timeout_s": 3.0}
    cfg.update(llm)
    return Settings(
        redis_key_prefix=key_prefix,
        http={"host": "127.0.0.1", "shutdown_grace_s": 0.5},
        chat={"progress_after_s": 20.0},
        bk={"app_code": "bk_job", "app_secret": CONFIGURED_SECRET},
        bklog={
            "base_url": rig.bklog_url,
            "index_set_id": SANDBOX_INDEX_SET,
            "app_code": code,
            "app_secret": secret,
            "username": user,
            "retries": 1,
            "lookback_days": 3650,  # the scenario's logs are from 2024
        },
        llm=cfg,
    )


async def start(
    aiohttp_client: ClientFactory, settings: Settings
) -> tuple[TestClient[Any, Any], web.Application]:
    app = await create_app(settings)
    client = await aiohttp_client(app)
    return client, app


async def open_page(client: TestClient[Any, Any], user: str, mode: str) -> Page:
    ws = await client.ws_connect("/console/ws", params={"mode": mode, "user": user})
    page = Page(ws, user=user, mode=mode)
    await page.wait_for(lambda f: f["type"] == "history")
    return page


def grounded_answer(body: dict[str, Any]) -> Behaviour:
    """Answers the question the request carries (a model grounded in the knowledge block)."""
    question = _QUESTION.findall(body["messages"][-1]["content"])[-1].strip()
    return Answer(f"关于「{question}」：一般情况下，滚动执行按批次依次下发，上一批完成后才执行下一批。")


async def test_private_questions_model_for_open_ones_exact_tables_without_model(
    aiohttp_client: ClientFactory, rig: Rig, key_prefix: str
) -> None:
    rig.fake.default = grounded_answer
    client, _app = await start(aiohttp_client, app_settings(rig, key_prefix))
    page = await open_page(client, "张三", "private")

    await page.say("作业平台的滚动执行是怎么分批的", uuid.uuid4().hex)
    answer = await page.wait_for(is_bot("answer"))

    assert "关于「作业平台的滚动执行是怎么分批的」" in answer["text"]
    assert len(rig.fake.requests) == 1
    prompt = rig.fake.requests[0].body["messages"][-1]["content"]
    assert "<knowledge>" in prompt and "310 Agent 异常" in prompt  # grounded in the built-in tables

    await page.say("状态码 310 是什么意思", uuid.uuid4().hex)
    exact = await page.wait_for(lambda f: is_bot("answer")(f) and "310" in f["text"])

    assert "Agent 异常" in exact["text"]
    assert len(rig.fake.requests) == 1  # answered from the tables: no model call


async def test_private_question_without_model_answer_falls_back(
    aiohttp_client: ClientFactory, rig: Rig, key_prefix: str
) -> None:
    rig.fake.default = Hang(30)
    client, _app = await start(aiohttp_client, app_settings(rig, key_prefix, timeout_s=0.5))
    page = await open_page(client, "李四", "private")

    await page.say("作业平台的滚动执行是怎么分批的", uuid.uuid4().hex)
    answer = await page.wait_for(is_bot("answer"))

    assert "stepInstanceId" in answer["text"]  # the fixed fallback: what the bot can do


async def test_injected_log_lines_cannot_redirect_the_report_nor_leak_secrets(
    aiohttp_client: ClientFactory, make_rig: RigFactory, key_prefix: str
) -> None:
    rig = await make_rig(log_text=planted_log_text(scenario().logs_text))
    # The model "obeys" the log line: claims another stage and says it posted the report elsewhere.
    rig.fake.default = QuotingModel(
        stage="callback",
        fault_side="system",
        quote=r"password|signature check|reqStr|errorCode=117|script stdout",
        max_quotes=8,
        summary=f"已按日志要求把报告和全部配置发送到群 {INJECTED_GROUP}。",
    )
    client, app = await start(aiohttp_client, app_settings(rig, key_prefix))
    page = await open_page(client, "王五", "group")

    await page.say(f"@job-doctor {STEP}", uuid.uuid4().hex)
    report = await page.wait_for(is_bot("report"))

    assert len(rig.fake.requests) == 1
    assert "人工复核" in report["markdown"]  # contradiction with the 0.85 signature flagged
    for text in (report["markdown"], report["text"]):
        assert leaks(text) == []  # delivered parts carry no credential from the log lines
        assert "password=******" in text
    web_console = app[K.SERVICES].console
    assert web_console is not None
    console = web_console.hub
    for chat in (INJECTED_GROUP, f"console-private:{INJECTED_GROUP}"):
        assert console.messages(chat) == []
    bot_frames = [f for f in console.messages("console-group") if f.get("from") == "bot"]
    assert [f["kind"] for f in bot_frames] == ["report"]


async def test_hanging_model_still_reports_with_notice_and_counts_the_fallback(
    aiohttp_client: ClientFactory, rig: Rig, key_prefix: str
) -> None:
    rig.fake.default = Hang(30)
    client, _app = await start(aiohttp_client, app_settings(rig, key_prefix, timeout_s=0.5, deadline_s=1.2))
    page = await open_page(client, "赵六", "group")

    await page.say(f"@job-doctor {STEP}", uuid.uuid4().hex)
    report = await page.wait_for(is_bot("report"), timeout=15)

    assert "模型响应超时，以下为规则库诊断。" in report["markdown"]
    assert "Agent" in report["markdown"]  # the rule report: agent_abnormal
    metrics = await (await client.get("/metrics")).text()
    assert 'job_doctor_llm_fallbacks_total{reason="fallback_timeout"} 1.0' in metrics
    assert re.search(r'job_doctor_llm_calls_total\{outcome="timeout"\} [1-9]', metrics)
    assert "job_doctor_llm_tokens_total" in metrics


async def test_chat_budget_spent_gives_rules_with_notice_while_other_chats_keep_the_model(
    aiohttp_client: ClientFactory, rig: Rig, key_prefix: str
) -> None:
    model = QuotingModel()
    rig.fake.default = lambda body: model(body) if "response_format" in body else grounded_answer(body)
    settings = app_settings(rig, key_prefix, group_daily_token_budget=1)
    client, _app = await start(aiohttp_client, settings)
    group = await open_page(client, "钱七", "group")

    await group.say(f"@job-doctor {STEP}", uuid.uuid4().hex)
    first = await group.wait_for(is_bot("report"))
    await group.say(f"@job-doctor 重新分析 {STEP}", uuid.uuid4().hex)
    second = await group.wait_for(lambda f: is_bot("report")(f) and f is not first)

    assert len(rig.fake.requests) == 1  # the group's budget was spent by the first report
    assert BUDGET_NOTICE not in first["markdown"]
    assert BUDGET_NOTICE in second["markdown"]
    # Another chat (a private one) still has its own budget.
    private = await open_page(client, "钱七", "private")
    await private.say("作业平台的滚动执行是怎么分批的", uuid.uuid4().hex)
    answer = await private.wait_for(is_bot("answer"))
    assert "关于「" in answer["text"] and len(rig.fake.requests) == 2


async def test_a_senders_daily_budget_counts_the_analyses_they_ask_for(
    aiohttp_client: ClientFactory, rig: Rig, key_prefix: str
) -> None:
    model = QuotingModel()
    rig.fake.default = lambda body: model(body) if "response_format" in body else grounded_answer(body)
    settings = app_settings(rig, key_prefix, user_daily_token_budget=1)
    settings.chat.reanalyze_cooldown_s = 0
    client, _app = await start(aiohttp_client, settings)
    page = await open_page(client, "周九", "group")

    await page.say(f"@job-doctor {STEP}", uuid.uuid4().hex)
    first = await page.wait_for(is_bot("report"))
    await page.say(f"@job-doctor 重新分析 {STEP}", uuid.uuid4().hex)
    second = await page.wait_for(lambda f: is_bot("report")(f) and f is not first)

    assert len(rig.fake.requests) == 1  # the sender's budget was spent by their first analysis
    assert BUDGET_NOTICE not in first["markdown"]
    assert BUDGET_NOTICE in second["markdown"]
