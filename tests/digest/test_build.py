"""Building the digest over real HTTP: sandbox BK-JOB + sandbox BkLog serving scenario logs."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from bot.app.services import build_bkjob, build_bklog
from bot.core.settings import Settings
from bot.core.store import Store, open_store
from bot.devtools.sandbox import FAULTS, REQUESTS, gateway_error
from bot.devtools.sandbox.bklog import recorded_queries
from bot.digest.build import DigestBuilder, digest_analyzer
from bot.digest.collect import DigestWindow
from bot.digest.history import DigestHistory, HistoryDay
from bot.digest.models import Digest
from bot.digest.render import render_markdown, render_text
from bot.digest.throttle import TokenBucket
from tests.digest.conftest import Serve
from tests.digest.world import (
    ACCESS_TOKEN,
    AGENT_OFFLINE,
    SCRIPT_EXIT,
    SCRIPT_EXIT_MULTI,
    WEB_URL,
    World,
    before,
    fire_at,
    ms,
    world_settings,
)

FIRE = fire_at("2025-03-10")


async def build(
    settings: Settings,
    session: aiohttp.ClientSession,
    *,
    store: Store | None = None,
    page_size: int = 500,
    record: bool = False,
    window: DigestWindow | None = None,
    **kw: Any,
) -> Digest:
    bkjob = build_bkjob(settings, session)
    assert bkjob is not None
    builder = DigestBuilder(
        settings,
        bkjob=bkjob,
        analyzer=digest_analyzer(settings, build_bklog(settings, session), **kw),
        history=DigestHistory(store) if store is not None else None,
        page_size=page_size,
    )
    return await builder.build(window or DigestWindow.before(FIRE), record_history=record)


def list_calls(app: web.Application) -> list[dict[str, str]]:
    return [r.query for r in app[REQUESTS] if r.path.endswith("/get_job_instance_list")]


def step_id_searches(bklog: web.Application, step: int) -> int:
    return sum(1 for q in recorded_queries(bklog) if re.fullmatch(rf'log:\s*"?{step}"?', q.strip()))


async def test_window_is_the_24h_before_the_fire_time(serve: Serve, session: aiohttp.ClientSession) -> None:
    w = World()
    too_old = w.add_bare(biz=2, at=before(FIRE, hours=24, milliseconds=1))
    first_in = w.add_bare(biz=2, at=before(FIRE, hours=24))
    late = w.add_bare(biz=2, at=before(FIRE, milliseconds=1), status=9)
    next_day = w.add_bare(biz=2, at=FIRE, status=14)
    bkjob = w.bkjob_app()
    settings = world_settings(bkjob_url=await serve(bkjob), bklog_url=await serve(w.bklog_app()), biz_ids=[2])

    digest = await build(settings, session)

    listed = {e.job_instance_id for g in digest.groups for e in g.examples}
    assert listed == {first_in.job_instance_id, late.job_instance_id}
    assert too_old.job_instance_id not in listed and next_day.job_instance_id not in listed
    assert digest.total_failed_jobs == 2 and digest.total_failed_steps == 2
    calls = list_calls(bkjob)
    assert sorted(c["status"] for c in calls) == ["14", "4", "9"]  # one status per call
    assert {(c["create_time_start"], c["create_time_end"]) for c in calls} == {
        (str(ms(before(FIRE, hours=24))), str(ms(FIRE) - 1))
    }
    body = digest.contract_json()
    assert body["window"] == {"start": "2025-03-09T09:00:00+08:00", "end": "2025-03-10T09:00:00+08:00"}
    assert body["date"] == "2025-03-10"


async def test_groups_by_signature_and_unmatched_by_stage_and_side(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    w = World()
    a = w.add_scenario(SCRIPT_EXIT, biz=2, at=before(FIRE, hours=3), job_name="发布-web")
    b = w.add_scenario(SCRIPT_EXIT, biz=2, at=before(FIRE, hours=4), job_name="发布-api", fresh_ids=True)
    c = w.add_scenario(SCRIPT_EXIT_MULTI, biz=5, at=before(FIRE, hours=5), job_name="巡检")
    agent = w.add_scenario(AGENT_OFFLINE, biz=5, at=before(FIRE, hours=6), job_name="装机")
    bare = [w.add_bare(biz=2, at=before(FIRE, hours=h)) for h in (7, 8)]
    bklog = w.bklog_app()
    settings = world_settings(
        bkjob_url=await serve(w.bkjob_app()), bklog_url=await serve(bklog), biz_ids=[2, 5]
    )

    digest = await build(settings, session)

    assert [g.count for g in digest.groups] == [3, 2, 1]
    script, unmatched, agent_group = digest.groups
    assert (script.signature, script.stage, script.fault_side) == ("script_exit_nonzero", "execution", "user")
    assert script.title == "脚本返回码非零" and script.action
    assert {e.job_instance_id for e in script.examples} == {j.job_instance_id for j in (a, b, c)}
    ex = next(e for e in script.examples if e.job_instance_id == a.job_instance_id)
    assert ex.name == "发布-web" and ex.bk_biz_id == 2
    assert (
        ex.link
        == f"{WEB_URL}/biz/2/execute/step/{a.job_instance_id}?stepInstanceId={a.steps[1].step_instance_id}"
    )
    assert (agent_group.signature, agent_group.fault_side) == ("agent_abnormal", "environment")
    assert unmatched.signature is None and (unmatched.stage, unmatched.fault_side) == ("unknown", "unknown")
    assert {e.job_instance_id for e in unmatched.examples} == {j.job_instance_id for j in bare}
    assert {(p.bk_biz_id, p.failed_jobs, p.failed_steps) for p in digest.per_biz} == {(2, 4, 4), (5, 2, 2)}
    # Each failed step analysed exactly once; the successful step of each job never.
    for job in (a, b, c, agent):
        assert step_id_searches(bklog, job.steps[1].step_instance_id) == 1
        assert step_id_searches(bklog, job.steps[0].step_instance_id) == 0
    text = render_text(digest)
    assert "脚本返回码非零 ×3" in text and "阶段：执行" in text and "责任方：环境问题" in text
    assert ex.link in text and "失败作业 6 个，失败步骤 6 个" in text
    assert f"]({ex.link})" in render_markdown(digest)


async def test_reads_every_page_of_every_status(serve: Serve, session: aiohttp.ClientSession) -> None:
    w = World()
    made = {
        status: [w.add_bare(biz=2, at=before(FIRE, minutes=10 * i + status), status=status) for i in range(5)]
        for status in (4, 9, 14)
    }
    bkjob = w.bkjob_app()
    settings = world_settings(bkjob_url=await serve(bkjob), bklog_url=await serve(w.bklog_app()), biz_ids=[2])

    digest = await build(settings, session, page_size=2)

    assert digest.total_failed_jobs == 15 and digest.total_failed_steps == 15
    assert sum(g.count for g in digest.groups) == 15
    pages = sorted((c["status"], int(c["start"]), c["length"]) for c in list_calls(bkjob))
    assert pages == sorted((str(s), start, "2") for s in made for start in (0, 2, 4))


async def test_bkjob_errors_are_named_and_the_rest_reported(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    w = World()
    ok = w.add_scenario(SCRIPT_EXIT, biz=2, at=before(FIRE, hours=2))
    w.add_bare(biz=3, at=before(FIRE, hours=2))
    broken = w.add_bare(biz=2, at=before(FIRE, hours=3))
    bkjob = w.bkjob_app()

    @web.middleware
    async def faults(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.query.get("bk_scope_id") == "3":
            return gateway_error(403, 1640301, "APP_NO_PERMISSION", "App has no permission to the resource")
        if request.query.get("job_instance_id") == str(broken.job_instance_id):
            return web.json_response({"result": False, "code": 1650200, "message": "bad gateway"}, status=502)
        return await handler(request)

    bkjob.middlewares.append(faults)
    bkjob[FAULTS].rate_limit(times=1, reset_s=0)  # the first call is throttled once: retried
    settings = world_settings(
        bkjob_url=await serve(bkjob), bklog_url=await serve(w.bklog_app()), biz_ids=[2, 3]
    )

    digest = await build(settings, session)

    assert "业务 3：无权限读取（1640301）" in digest.problems
    assert any(f"作业 {broken.job_instance_id}" in p and "1650200" in p for p in digest.problems)
    assert digest.total_failed_jobs == 2  # both of business 2, the unreadable one included
    assert [g.signature for g in digest.groups] == ["script_exit_nonzero"]
    assert digest.groups[0].examples[0].job_instance_id == ok.job_instance_id
    text = render_text(digest)
    assert "业务 3：无权限读取（1640301）" in text and "· 业务 3：未能读取" in text
    assert [(b.bk_biz_id, b.readable, b.failed_jobs) for b in digest.per_biz] == [(2, True, 2), (3, False, 0)]
    assert not digest.empty


async def test_failed_analyses_are_counted_not_fatal(serve: Serve, session: aiohttp.ClientSession) -> None:
    w = World()
    w.add_scenario(SCRIPT_EXIT, biz=2, at=before(FIRE, hours=2))
    w.add_scenario(AGENT_OFFLINE, biz=2, at=before(FIRE, hours=3))
    dead = web.Application()  # BkLog answers 500 to everything

    async def down(_request: web.Request) -> web.Response:
        return web.Response(status=500, text="down")

    dead.router.add_route("*", "/{tail:.*}", down)
    settings = world_settings(bkjob_url=await serve(w.bkjob_app()), bklog_url=await serve(dead), biz_ids=[2])

    digest = await build(settings, session)

    assert digest.total_failed_steps == 2 and digest.analysis_failed == 2 and digest.groups == []
    assert "2 个步骤分析失败" in render_text(digest)


async def test_new_versus_recurring_from_history(serve: Serve, session: aiohttp.ClientSession) -> None:
    w = World()
    w.add_scenario(SCRIPT_EXIT, biz=2, at=before(FIRE, hours=2))
    w.add_scenario(AGENT_OFFLINE, biz=2, at=before(FIRE, hours=3))
    settings = world_settings(
        bkjob_url=await serve(w.bkjob_app()), bklog_url=await serve(w.bklog_app()), biz_ids=[2]
    )
    store = open_store("", prefix="hist:")
    try:
        history = DigestHistory(store)
        await history.record("2025-03-08", HistoryDay(groups=["sig:script_exit_nonzero"], failed_steps=4))
        await history.record(
            "2025-02-01", HistoryDay(groups=["sig:agent_abnormal"], failed_steps=1)
        )  # too old

        digest = await build(settings, session, store=store, record=True)

        assert digest.new_signatures == ["agent_abnormal"] and digest.new_groups == ["sig:agent_abnormal"]
        by_sig = {g.signature: g for g in digest.groups}
        assert by_sig["script_exit_nonzero"].seen_days == 1 and not by_sig["script_exit_nonzero"].new
        assert [t.failed_steps for t in digest.trend] == [None, None, None, None, 4, None, 2]
        assert (await history.previous("2025-03-11", days=1))["2025-03-10"].groups == [
            g.key for g in digest.groups
        ]
        assert "🆕 新出现" in render_text(digest)
    finally:
        await store.close()


async def test_no_history_means_nothing_is_called_new(serve: Serve, session: aiohttp.ClientSession) -> None:
    w = World()
    w.add_scenario(SCRIPT_EXIT, biz=2, at=before(FIRE, hours=2))
    settings = world_settings(
        bkjob_url=await serve(w.bkjob_app()), bklog_url=await serve(w.bklog_app()), biz_ids=[2]
    )
    store = open_store("", prefix="nohist:")
    try:
        digest = await build(settings, session, store=store)
    finally:
        await store.close()
    assert digest.history_days == 0 and digest.new_signatures == []
    assert "暂无历史记录" in render_text(digest)


async def test_empty_day(serve: Serve, session: aiohttp.ClientSession) -> None:
    w = World()
    w.add_bare(biz=2, at=before(FIRE, hours=30))  # outside the window
    settings = world_settings(
        bkjob_url=await serve(w.bkjob_app()), bklog_url=await serve(w.bklog_app()), biz_ids=[2]
    )

    digest = await build(settings, session)

    assert digest.empty and digest.total_failed_jobs == 0 and digest.groups == []
    assert "昨日无失败作业" in render_text(digest) and "昨日无失败作业" in render_markdown(digest)


async def test_bklog_query_rate_is_capped(serve: Serve, session: aiohttp.ClientSession) -> None:
    w = World()
    for i in range(4):
        w.add_scenario(SCRIPT_EXIT, biz=2, at=before(FIRE, hours=1 + i), fresh_ids=True)
    bklog = w.bklog_app()
    settings = world_settings(bkjob_url=await serve(w.bkjob_app()), bklog_url=await serve(bklog), biz_ids=[2])

    started = time.perf_counter()
    digest = await build(settings, session, queries_per_s=5.0)
    elapsed = time.perf_counter() - started

    queries = len(recorded_queries(bklog))
    assert digest.stats.bklog_queries == queries and queries >= 8
    # A bucket of 5 tokens refilling at 5/s: the queries beyond the burst wait their turn.
    assert elapsed >= (queries - 5) / 5.0 - 0.05
    assert len({g.signature for g in digest.groups}) == 1 and digest.groups[0].count == 4


async def test_token_bucket_spaces_acquisitions() -> None:
    bucket = TokenBucket(50.0, burst=1)
    started = time.perf_counter()
    await asyncio.gather(*(bucket.acquire() for _ in range(11)))
    assert time.perf_counter() - started >= 10 / 50.0 - 0.02


async def test_contract_json_shape(serve: Serve, session: aiohttp.ClientSession) -> None:
    w = World()
    w.add_scenario(SCRIPT_EXIT, biz=2, at=before(FIRE, hours=2))
    w.add_bare(biz=2, at=before(FIRE, hours=3))
    settings = world_settings(
        bkjob_url=await serve(w.bkjob_app()), bklog_url=await serve(w.bklog_app()), biz_ids=[2]
    )

    body = (await build(settings, session)).contract_json()

    required = {"date", "window", "total_failed_jobs", "total_failed_steps", "groups", "new_signatures"}
    assert required <= set(body)
    assert set(body["window"]) == {"start", "end"}
    for group in body["groups"]:
        assert {"signature", "stage", "fault_side", "count", "examples"} <= set(group)
        for ex in group["examples"]:
            assert {"bk_biz_id", "job_instance_id", "step_instance_id", "name"} <= set(ex)
            assert isinstance(ex["job_instance_id"], int) and isinstance(ex["name"], str)
    assert [g["signature"] for g in body["groups"]] == ["script_exit_nonzero", None]
    assert isinstance(body["new_signatures"], list)


# --------------------------------------------------------------------------- BK-JOB access modes


async def _access_world(serve: Serve) -> tuple[World, str, str]:
    w = World()
    w.add_scenario(SCRIPT_EXIT, biz=2, at=before(FIRE, hours=3), job_name="发布-web")
    return w, await serve(w.bkjob_app()), await serve(w.bklog_app())


async def test_digest_reads_bk_job_through_the_system_apis(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    """The gateway refuses an unverified user; the app-only system APIs need only the app's grant."""
    _world, bkjob_url, bklog_url = await _access_world(serve)
    settings = world_settings(bkjob_url=bkjob_url, bklog_url=bklog_url, biz_ids=[2])
    assert settings.bkjob.use_system_api
    digest = await build(settings, session)
    assert digest.total_failed_jobs == 1 and not digest.problems
    assert [g.signature for g in digest.groups] == ["script_exit_nonzero"]


async def test_digest_reads_bk_job_with_a_users_access_token(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    _world, bkjob_url, bklog_url = await _access_world(serve)
    settings = world_settings(
        bkjob_url=bkjob_url,
        bklog_url=bklog_url,
        biz_ids=[2],
        bkjob={"use_system_api": False},
        bk={"access_token": ACCESS_TOKEN},
    )
    digest = await build(settings, session)
    assert digest.total_failed_jobs == 1 and not digest.problems
    assert [g.signature for g in digest.groups] == ["script_exit_nonzero"]


async def test_digest_with_an_unverified_user_says_how_to_get_access(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    _world, bkjob_url, bklog_url = await _access_world(serve)
    settings = world_settings(
        bkjob_url=bkjob_url, bklog_url=bklog_url, biz_ids=[2], bkjob={"use_system_api": False}
    )
    digest = await build(settings, session)
    assert digest.total_failed_jobs == 0 and not digest.groups
    problems = "\n".join(digest.problems)
    assert "1640001" in problems
    assert "JOB_DOCTOR_BKJOB__USE_SYSTEM_API" in problems and "JOB_DOCTOR_BK__ACCESS_TOKEN" in problems
