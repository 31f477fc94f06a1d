from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.clients.bkjob import BkJobClient, InstanceNotFound, UserNotVerified
from bot.clients.gateway import ApiCredentials, GatewayAuthError, GatewayRateLimited, auth_headers
from bot.devtools.sandbox import FAULTS, REQUESTS
from bot.devtools.sandbox.bkjob import FakeHost, FakeJobInstance, FakeStep, create_bkjob_app
from tests.clients.conftest import APP_CODE, APP_SECRET, CREDS

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
T0 = datetime(2024, 5, 30, 0, 0, tzinfo=UTC)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def dataset(n: int = 45) -> list[FakeJobInstance]:
    jobs = [
        FakeJobInstance(
            job_instance_id=1000 + i,
            name=f"job-{i}",
            create_time=ms(T0 + timedelta(minutes=i)),
            status=4 if i % 3 == 0 else 3,
        )
        for i in range(n)
    ]
    failed = FakeStep(
        step_instance_id=20031265375,
        name="run script",
        status=4,
        create_time=ms(T0),
        start_time=ms(T0 + timedelta(seconds=1)),
        end_time=ms(T0 + timedelta(seconds=9)),
        total_time=8000,
        hosts=[
            FakeHost(
                bk_host_id=1,
                ip="10.0.0.1",
                bk_agent_id="0200aa",
                status=104,
                exit_code=1,
                log_content="boom\n",
                start_time=ms(T0),
                end_time=ms(T0 + timedelta(seconds=8)),
            ),
            FakeHost(bk_host_id=2, ip="10.0.0.2", bk_agent_id="0200bb", status=9, log_content="ok\n"),
            FakeHost(bk_host_id=3, ip="10.0.0.3", bk_agent_id="0200cc", status=310),
        ],
    )
    jobs.append(
        FakeJobInstance(
            job_instance_id=20026160406,
            name="deploy",
            create_time=ms(T0),
            start_time=ms(T0),
            end_time=ms(T0 + timedelta(seconds=10)),
            total_time=10000,
            status=4,
            bk_scope_id="2",
            steps=[failed],
        )
    )
    return jobs


async def setup(
    aiohttp_server: ServerFactory,
    session: aiohttp.ClientSession,
    *,
    legacy: bool = False,
    gateway: dict[str, Any] | None = None,
    jobs: list[FakeJobInstance] | None = None,
    **kw: Any,
) -> tuple[BkJobClient, web.Application]:
    # By default the gateway exempts the test app from user verification (the API is under test);
    # `gateway` replaces that with other access rules.
    access = gateway if gateway is not None else {"exempt_apps": [APP_CODE]}
    app = create_bkjob_app(
        dataset() if jobs is None else jobs,
        app_code=APP_CODE,
        app_secret=APP_SECRET,
        legacy_list_keys=legacy,
        **access,
    )
    server = await aiohttp_server(app)
    args: dict[str, Any] = {
        "base_url": str(server.make_url("")),
        "credentials": CREDS,
        "timeout_s": 5,
        "retries": 2,
        "backoff_base_s": 0.01,
    }
    args.update(kw)
    return BkJobClient(session, **args), app


@pytest.mark.parametrize("legacy", [False, True])
async def test_list_reads_every_page_both_key_shapes(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession, legacy: bool
) -> None:
    c, app = await setup(aiohttp_server, session, legacy=legacy)
    items = await c.get_job_instance_list(
        2, create_time_start=T0 - timedelta(hours=1), create_time_end=T0 + timedelta(days=1), page_size=20
    )
    assert len(items) == 46
    assert {i.job_instance_id for i in items} == {1000 + i for i in range(45)} | {20026160406}
    first = next(i for i in items if i.job_instance_id == 1003)
    assert (first.status, first.type, first.name) == (4, 0, "job-3")
    assert first.create_time == T0 + timedelta(minutes=3)
    reqs = app[REQUESTS]
    assert [(r.query["start"], r.query["length"]) for r in reqs] == [("0", "20"), ("20", "20"), ("40", "20")]
    assert reqs[0].query["create_time_start"] == str(ms(T0 - timedelta(hours=1)))
    assert "status" not in reqs[0].query


async def test_list_status_filter(aiohttp_server: ServerFactory, session: aiohttp.ClientSession) -> None:
    c, app = await setup(aiohttp_server, session)
    failed = await c.get_job_instance_list(
        "2", create_time_start=T0, create_time_end=T0 + timedelta(hours=2), status=4
    )
    assert {i.job_instance_id for i in failed} == {1000 + i for i in range(0, 45, 3)} | {20026160406}
    assert all(r.query["status"] == "4" for r in app[REQUESTS])


async def test_list_rejects_over_30_days_client_side(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    c, app = await setup(aiohttp_server, session)
    with pytest.raises(ValueError, match="30 days"):
        await c.get_job_instance_list(2, create_time_start=T0, create_time_end=T0 + timedelta(days=31))
    assert app[REQUESTS] == []
    # and the sample server enforces the rule itself
    server = await aiohttp_server(
        create_bkjob_app(dataset(), app_code=APP_CODE, app_secret=APP_SECRET, exempt_apps=[APP_CODE])
    )
    url = server.make_url("/api/v3/get_job_instance_list")
    params = {
        "bk_scope_type": "biz",
        "bk_scope_id": "2",
        "create_time_start": str(ms(T0)),
        "create_time_end": str(ms(T0 + timedelta(days=31))),
    }
    async with session.get(url, params=params, headers=auth_headers(ApiCredentials(*CREDS))) as resp:
        body = await resp.json()
    assert body["code"] == 1241002 and body["result"] is False and body["job_request_id"]


async def test_job_instance_status(aiohttp_server: ServerFactory, session: aiohttp.ClientSession) -> None:
    c, app = await setup(aiohttp_server, session)
    st = await c.get_job_instance_status(2, 20026160406)
    assert st.finished and st.job_instance.status == 4 and st.job_instance.name == "deploy"
    assert st.job_instance.end_time == T0 + timedelta(seconds=10)
    step = st.step(20031265375)
    assert step is not None and step.status == 4 and step.total_time_ms == 8000
    assert [(h.ip, h.status, h.exit_code) for h in step.host_results] == [
        ("10.0.0.1", 104, 1),
        ("10.0.0.2", 9, 0),
        ("10.0.0.3", 310, 0),
    ]
    assert step.host_results[0].end_time == T0 + timedelta(seconds=8)
    q = app[REQUESTS][0].query
    assert q == {
        "bk_scope_type": "biz",
        "bk_scope_id": "2",
        "job_instance_id": "20026160406",
        "return_ip_result": "true",
    }


async def test_step_status_groups(aiohttp_server: ServerFactory, session: aiohttp.ClientSession) -> None:
    c, _ = await setup(aiohttp_server, session)
    st = await c.get_step_instance_status(2, 20026160406, 20031265375)
    assert [(g.result_type, g.host_size) for g in st.groups] == [(9, 1), (104, 1), (310, 1)]
    bad = next(g for g in st.groups if g.result_type == 310)
    assert bad.result_type_desc == "Agent 异常" and bad.hosts[0].bk_agent_id == "0200cc"
    assert len(st.hosts) == 3


async def test_instance_not_found(aiohttp_server: ServerFactory, session: aiohttp.ClientSession) -> None:
    c, app = await setup(aiohttp_server, session)
    with pytest.raises(InstanceNotFound) as info:
        await c.get_job_instance_status(2, 42)
    assert info.value.code == 1244006 and "作业实例不存在" in info.value.message
    with pytest.raises(InstanceNotFound) as info2:
        await c.get_step_instance_status(2, 20026160406, 5)
    assert info2.value.code == 1244007
    with pytest.raises(InstanceNotFound):  # right id, wrong business
        await c.get_job_instance_status(3, 20026160406)
    assert len(app[REQUESTS]) == 3  # never retried


async def test_ip_logs(aiohttp_server: ServerFactory, session: aiohttp.ClientSession) -> None:
    c, app = await setup(aiohttp_server, session)
    logs = await c.batch_get_job_instance_ip_log(
        2, 20026160406, 20031265375, host_ids=[1], ips=[(0, "10.0.0.2")]
    )
    assert logs.log_type == 1
    assert {(x.ip, x.log_content) for x in logs.script_logs} == {("10.0.0.1", "boom\n"), ("10.0.0.2", "ok\n")}
    # BK-JOB ignores ip_list beside host_id_list: one call for each
    bodies = [r.body for r in app[REQUESTS]]
    assert [b.get("host_id_list") for b in bodies] == [[1], None]
    assert [b.get("ip_list") for b in bodies] == [None, [{"bk_cloud_id": 0, "ip": "10.0.0.2"}]]


async def test_rate_limit_then_success(aiohttp_server: ServerFactory, session: aiohttp.ClientSession) -> None:
    c, app = await setup(aiohttp_server, session)
    app[FAULTS].rate_limit(times=2, reset_s=0)
    st = await c.get_job_instance_status(2, 20026160406)
    assert st.job_instance.job_instance_id == 20026160406 and len(app[REQUESTS]) == 3
    app[FAULTS].rate_limit(times=3, reset_s=0)
    with pytest.raises(GatewayRateLimited):
        await c.get_job_instance_status(2, 20026160406)


async def test_user_identity_required(aiohttp_server: ServerFactory, session: aiohttp.ClientSession) -> None:
    c, app = await setup(aiohttp_server, session, credentials=(APP_CODE, APP_SECRET, ""))
    with pytest.raises(GatewayAuthError, match="user authentication failed"):
        await c.get_job_instance_status(2, 20026160406)
    assert len(app[REQUESTS]) == 1


# --------------------------------------------------------------------------- access modes


async def test_bare_username_is_refused_and_the_error_names_the_ways_out(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """BK-JOB's public APIs need a verified user: the gateway refuses `bk_username` alone."""
    c, app = await setup(aiohttp_server, session, gateway={})
    with pytest.raises(UserNotVerified) as info:
        await c.get_job_instance_status(2, 20026160406)
    err = info.value
    assert err.code == 1640001 and err.http_status == 400
    text = str(err)
    assert "exempt app job-doctor" in text
    assert "JOB_DOCTOR_BKJOB__USE_SYSTEM_API=true" in text and "JOB_DOCTOR_BK__ACCESS_TOKEN" in text
    assert len(app[REQUESTS]) == 1  # an auth error is not retried


async def test_access_token_is_a_verified_user(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    token = "user-token-0123456789abcdef"
    creds = ApiCredentials(APP_CODE, APP_SECRET, access_token=token)
    c, app = await setup(
        aiohttp_server, session, gateway={"access_tokens": {token: "ops"}}, credentials=creds
    )
    status = await c.get_job_instance_status(2, 20026160406)
    assert status.job_instance.job_instance_id == 20026160406
    sent = app[REQUESTS][0].auth
    assert sent == {"bk_app_code": APP_CODE, "bk_app_secret": APP_SECRET, "access_token": token}
    assert token not in repr(creds)
    # a token the gateway does not know is refused as such (not mistaken for a missing user)
    bad = ApiCredentials(APP_CODE, APP_SECRET, access_token="expired")
    c2, _ = await setup(aiohttp_server, session, gateway={"access_tokens": {token: "ops"}}, credentials=bad)
    with pytest.raises(GatewayAuthError, match="access_token is invalid"):
        await c2.get_job_instance_status(2, 20026160406)


async def test_system_api_needs_no_user_but_the_app_grant(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    c, app = await setup(aiohttp_server, session, gateway={"system_apps": [APP_CODE]}, system_api=True)
    status = await c.get_step_instance_status(2, 20026160406, 20031265375)
    assert {g.result_type for g in status.groups} == {9, 104, 310}
    assert app[REQUESTS][0].path == "/api/v3/system/get_step_instance_status"
    assert await c.probe() == "system APIs answer"
    ungranted, _ = await setup(aiohttp_server, session, gateway={}, system_api=True)
    with pytest.raises(GatewayAuthError) as info:
        await ungranted.probe()
    assert info.value.code == 1640301


async def test_probe_counts_a_bk_job_answer_as_reachable(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    c, app = await setup(aiohttp_server, session)
    assert await c.probe() == "API gateway answers"  # 作业实例不存在: BK-JOB answered
    assert len(app[REQUESTS]) == 1


async def test_scope_type_travels_with_every_call(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    jobs = dataset()
    jobs[-1].bk_scope_type, jobs[-1].bk_scope_id = "biz_set", "9991001"
    c, app = await setup(aiohttp_server, session, jobs=jobs)
    with pytest.raises(InstanceNotFound):  # looked up as business 9991001: another app
        await c.get_job_instance_status(9991001, 20026160406)
    status = await c.get_job_instance_status(9991001, 20026160406, bk_scope_type="biz_set")
    assert status.job_instance.job_instance_id == 20026160406
    assert app[REQUESTS][-1].query["bk_scope_type"] == "biz_set"


# --------------------------------------------------------------------------- the list's start limit


def crowded(n: int) -> list[FakeJobInstance]:
    """`n` failed job instances, one per second."""
    return [
        FakeJobInstance(
            job_instance_id=500_000 + i,
            name=f"crowd-{i}",
            create_time=ms(T0 + timedelta(seconds=i)),
            status=4,
        )
        for i in range(n)
    ]


async def test_list_beyond_the_start_limit_is_read_in_time_slices(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A server with `startLimitEnabled` refuses start > 1000 (1241010): 3500 rows in one window are
    read by splitting the window, every row once, no page past the limit."""
    c, app = await setup(aiohttp_server, session, jobs=crowded(3500))
    items = await c.get_job_instance_list(
        2, create_time_start=T0, create_time_end=T0 + timedelta(hours=2), status=4, page_size=500
    )
    assert sorted(i.job_instance_id for i in items) == [500_000 + i for i in range(3500)]
    starts = [int(r.query["start"]) for r in app[REQUESTS]]
    assert max(starts) <= 1000
    assert all(r.body is None or "code" not in r.body for r in app[REQUESTS])


async def test_a_lower_start_limit_met_on_the_way_keeps_what_was_read(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A server whose limit is lower than the client assumes answers 1241010 mid-way: the rest of
    the window is read by halves and the pages already read are kept."""
    app = create_bkjob_app(
        crowded(900), app_code=APP_CODE, app_secret=APP_SECRET, start_limit=300, exempt_apps=[APP_CODE]
    )
    server = await aiohttp_server(app)
    c = BkJobClient(session, base_url=str(server.make_url("")), credentials=CREDS, timeout_s=5, retries=0)
    items = await c.get_job_instance_list(
        2, create_time_start=T0, create_time_end=T0 + timedelta(hours=2), page_size=200
    )
    assert sorted(i.job_instance_id for i in items) == [500_000 + i for i in range(900)]
    served = [r for r in app[REQUESTS] if int(r.query["start"]) <= 300]
    assert len(served) < len(app[REQUESTS])  # the limit was met (and refused) on the way
