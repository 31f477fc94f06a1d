"""A group scoped to one business (CHAT__GROUP_SCOPES) gets reports only of its own steps; BK-JOB
(the sandbox gateway, over HTTP) decides whose step it is."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.devtools.evaluate import SANDBOX_APP
from bot.devtools.sandbox.bkjob import FakeJobInstance, FakeStep, create_bkjob_app
from tests.integration.conversation.conftest import MakeRig
from tests.integration.conversation.harness import GROUP, HEADER, step_searches

OURS = (20026188230, 20031290017)  # script_exit_code_1: job instance, step (business 2)
THEIRS = (20026160406, 20031265375)  # agent_offline_117 (business 3)


async def _rig(
    make_rig: MakeRig, backend: tuple[str, str], aiohttp_server: Any, *, middlewares: tuple[Any, ...] = ()
) -> Any:
    code, secret, user = SANDBOX_APP
    jobs = [
        FakeJobInstance(
            OURS[0], "ours", create_time=1, status=4, bk_scope_id="2", steps=[FakeStep(OURS[1], "s")]
        ),
        FakeJobInstance(
            THEIRS[0], "theirs", create_time=1, status=4, bk_scope_id="3", steps=[FakeStep(THEIRS[1], "s")]
        ),
    ]
    app = create_bkjob_app(jobs, app_code=code, app_secret=secret, system_apps=[code])
    app.middlewares.extend(middlewares)
    bkjob = await aiohttp_server(app)
    return await make_rig(
        backend,
        bkjob={
            "base_url": str(bkjob.make_url("")),
            "use_system_api": True,  # the sandbox gateway verifies users, as BK-JOB's does
            "app_code": code,
            "app_secret": secret,
            "username": user,
        },
        chat={"group_scopes": {GROUP: "biz:2"}},
    )


async def test_a_scoped_group_gets_no_report_of_another_business(
    make_rig: MakeRig, backend: tuple[str, str], aiohttp_server: Any
) -> None:
    rig = await _rig(make_rig, backend, aiohttp_server)
    await rig.say(f"帮忙看下 {THEIRS[1]}")
    (msg,) = await rig.wait_count(1)
    assert msg[0] == GROUP and "不属于本群的业务（biz:2）" in msg[1]
    assert not msg[1].startswith(HEADER) and "Agent" not in msg[1]  # no evidence, no cause
    await rig.say(f"详情 {THEIRS[1]}")  # the stored report is not handed out either
    msgs = await rig.wait_count(2)
    assert "不属于本群的业务" in msgs[-1][1] and not msgs[-1][1].startswith(HEADER)
    # its own business's step is reported as usual
    await rig.say(f"帮忙看下 {OURS[1]}")
    (report,) = await rig.wait_reports(1)
    assert report[0][1].startswith(f"{HEADER}stepInstanceId={OURS[1]}")


async def test_a_link_into_another_business_is_refused_before_any_analysis(
    make_rig: MakeRig, backend: tuple[str, str], aiohttp_server: Any
) -> None:
    rig = await _rig(make_rig, backend, aiohttp_server)
    link = f"https://job.example.com/biz/3/execute/step/{THEIRS[0]}?stepInstanceId={THEIRS[1]}"
    await rig.say(f"帮忙看下 {link}")
    (msg,) = await rig.wait_count(1)
    assert "不属于本群的业务" in msg[1]
    assert step_searches(rig.bklog, THEIRS[1]) == 0


async def test_a_passing_bkjob_error_is_not_remembered_as_another_business(
    make_rig: MakeRig, backend: tuple[str, str], aiohttp_server: Any
) -> None:
    failing = [True]  # until BK-JOB recovers

    @web.middleware
    async def internal_error(request: web.Request, handler: Any) -> web.StreamResponse:
        if "get_job_instance_status" in request.path and failing:
            return web.json_response(
                {"result": False, "code": 1240002, "message": "内部服务器异常", "data": None}
            )
        return await handler(request)

    rig = await _rig(make_rig, backend, aiohttp_server, middlewares=(internal_error,))
    await rig.say(f"帮忙看下 {OURS[1]}")
    (msg,) = await rig.wait_count(1)
    assert "暂时无法确认" in msg[1] and not msg[1].startswith(HEADER)  # unproven: no evidence shown
    failing.clear()
    await rig.say(f"详情 {OURS[1]}")  # BK-JOB answers again: its own step is shown
    msgs = await rig.wait_count(2)
    assert msgs[-1][1].startswith(f"{HEADER}stepInstanceId={OURS[1]}")


async def test_a_job_link_into_another_business_names_none_of_its_steps(
    make_rig: MakeRig, backend: tuple[str, str], aiohttp_server: Any
) -> None:
    rig = await _rig(make_rig, backend, aiohttp_server)
    await rig.say(f"帮忙看下 https://job.example.com/biz/3/execute/task/{THEIRS[0]}")
    (msg,) = await rig.wait_count(1)
    assert f"taskInstanceId={THEIRS[0]} 不属于本群的业务（biz:2）" in msg[1]
    assert str(THEIRS[1]) not in msg[1]  # its failed step was not looked up
