"""Daily token budgets (whole bot and per chat) in Redis, spent by the model step of real analyses."""

from __future__ import annotations

from bot.core.models import AnalysisJob, ChatTarget, Requester
from bot.core.store import Store
from bot.diagnosis.llm_step import budget_key_of, budget_scope
from bot.llm.budget import BUDGET_NOTICE, TokenBudget
from tests.integration.llm_pipeline.conftest import Rig
from tests.integration.llm_pipeline.helpers import QuotingModel


def budget_for(store: Store, *, daily: int = 0, chat: int = 0) -> TokenBudget:
    return TokenBudget(store.redis, prefix=store.prefix, daily_limit=daily, chat_daily_limit=chat)


async def test_exhausted_daily_budget_gives_rules_and_one_notice(rig: Rig, store: Store) -> None:
    budget = budget_for(store, daily=1000)
    await budget.add("运维群", 1000)
    rig.fake.default = QuotingModel()

    report = await rig.analyze(budget=budget)

    assert report.source == "rules"
    assert report.notices.count(BUDGET_NOTICE) == 1
    assert rig.fake.requests == []  # no model call at all
    assert rig.metric("job_doctor_llm_fallbacks_total", reason="budget_exhausted") == 1


async def test_per_chat_budget_only_stops_that_chat(rig: Rig, store: Store) -> None:
    budget = budget_for(store, daily=10_000_000, chat=500)
    rig.fake.default = QuotingModel()
    spent = Requester(target=ChatTarget(channel="worktool", chat_id="支付运维群"), sender_id="u1")
    fresh = Requester(target=ChatTarget(channel="worktool", chat_id="存储运维群"), sender_id="u2")
    spent_key = budget_key_of(AnalysisJob(request_key="step:1", requesters=[spent]))
    fresh_key = budget_key_of(AnalysisJob(request_key="step:1", requesters=[fresh, spent]))
    assert spent_key != fresh_key
    await budget.add(spent_key, 500)

    with budget_scope(spent_key):
        blocked = await rig.analyze(budget=budget)
    with budget_scope(fresh_key):
        allowed = await rig.analyze(budget=budget)

    assert blocked.source == "rules" and BUDGET_NOTICE in blocked.notices
    assert allowed.source == "llm"
    assert len(rig.fake.requests) == 1
    total, chat = await budget.used(fresh_key)
    assert chat > 0 and total == 500 + chat  # the call was charged to that chat and to the day
    assert (await budget.used(spent_key))[1] == 500


async def test_tokens_of_a_diagnosis_are_charged_until_the_budget_stops_it(rig: Rig, store: Store) -> None:
    budget = budget_for(store, daily=10_000_000, chat=1)
    rig.fake.default = QuotingModel()

    with budget_scope("console:console-group"):
        first = await rig.analyze(budget=budget)
        second = await rig.analyze(budget=budget)

    assert first.source == "llm"  # budget had room: one call, its tokens charged
    assert second.source == "rules" and BUDGET_NOTICE in second.notices
    assert len(rig.fake.requests) == 1
