"""Extractors on reference lines (bk-job.md §1.3-§1.5, §2.1-§2.5)."""

from __future__ import annotations

import pytest

from bot.core.codes import codes
from bot.diagnosis import extract as x
from bot.diagnosis.parser import parse_record
from tests.diagnosis.chains import AGENT, G, J, S, T, file_line, gse_source, key, result_line


@pytest.mark.parametrize(
    ("message", "task", "step"),
    [
        (f"Start task, taskInstanceId={J}", J, None),
        (f"Evict job, taskInstanceId: {J}, gseTask: x", J, None),
        (
            f"Task instance status is stopping, stop executing the step! taskInstanceId:{J}, stepInstanceId:{S}",
            J,
            S,
        ),
        (f"Handle job event error, jobInstanceId={J}", J, None),
        (f"Start step, stepInstanceId={S}", None, S),
        (
            f"Refresh step according to gse task status, stepInstanceId: {S}, gseTaskStatus: FAIL, batch: 0",
            None,
            S,
        ),
        (f"Handling step event error,stepInstanceId:{S}", None, S),
        (f"GseTaskManager is not active, reject! stepInstanceId: {S}", None, S),
        (f"Begin to prepare source files for step, stepInstance: {S}", None, S),
        (f"StepInstance {S} already enter a final state:3", None, S),
        (f"taskInstance {J} evicted", J, None),
        (
            f"Callback using json body failed, use form data to retry. TaskInstanceId={J}, statusCode=500",
            J,
            None,
        ),
        (f"Manual mode for rolling step[{S}], pause and wait for user confirmation", None, S),
    ],
)
def test_id_separator_variants(message: str, task: int | None, step: int | None) -> None:
    ids = x.ids_in_text(message)
    assert (ids.task, ids.step) == (task, step)


def test_ids_from_gse_task_prefix_with_and_without_batch() -> None:
    ids = x.ids_in_text(f"[{key(2)}] Sending task to gse server")
    assert (ids.task, ids.gse_task, ids.step, ids.execute_count, ids.batch) == (J, G, S, 2, None)
    ids = x.ids_in_text(f"[{key(1, batch=3)}]: Start pull gse task result, times: 4")
    assert (ids.execute_count, ids.batch) == (1, 3)
    k = x.parse_gse_key(f"Finish gse task, task:{key(1, batch=3)}, executeResult:2")
    assert k is not None and (
        k.task_instance_id,
        k.gse_task_id,
        k.step_instance_id,
        k.execute_count,
        k.batch,
    ) == (J, G, S, 1, 3)


def test_ids_from_result_handle_names_and_step_key() -> None:
    ids = x.ids_in_text(f"Handle delivered task: ScriptTaskResultHandle-{J}-{S}")
    assert (ids.task, ids.step) == (J, S)
    ids = x.ids_in_text(f"Handle delivered task: FileTaskResultHandle-{J}-{S}")
    assert (ids.task, ids.step) == (J, S)
    ids = x.ids_in_text(f"Found not alive tasks, notAliveTaskIds : [gse_task:{S}:2:1]")
    assert (ids.step, ids.execute_count, ids.batch) == (S, 2, 1)
    ids = x.ids_in_text(f"[{S}_1]: ThirdFilePrepareTask failed")
    assert (ids.step, ids.execute_count) == (S, 1)
    ids = x.ids_in_text(f"[{S}]:File a.txt not exists in project bkjob repo localupload")
    assert (ids.step, ids.execute_count) == (S, None)
    ids = x.ids_in_text(f"Fail to get running lock, lockKey: job:running:gse:task:{G}")
    assert ids.gse_task == G


def test_gse_native_task_id_is_not_jobs_gse_task_id() -> None:
    ids = x.ids_in_text(f"[{key()}] Start gse task successfully, gseTaskId: 123456789")
    assert ids.gse_task == G
    assert x.ids_in_text("Start gse task successfully, gseTaskId: 123456789").gse_task is None
    start = x.parse_gse_start(f"[{key()}] Start gse task successfully, gseTaskId: GSETASK:20240530:1")
    assert start is not None and start.ok and start.gse_native_task_id == "GSETASK:20240530:1"
    assert start.key is not None and start.key.gse_task_id == G


def test_job_event_with_event_source() -> None:
    msg = (
        f"Handle job event, event: JobEvent[action=4, actionDesc=REFRESH, jobInstanceId={J}, "
        f"eventSource=EventSource(sourceType=STEP, jobInstanceId={J}, stepInstanceId={S}, executeCount=null, "
        "batch=null, gseTaskId=null), time=2024-05-30T11:09:00.240123], duration: 7ms"
    )
    ev = x.parse_event(msg)
    assert ev is not None and ev.kind == "JobEvent" and ev.verb == "handle" and ev.duration_ms == 7
    assert (ev.action, ev.action_desc, ev.job_instance_id) == (4, "REFRESH", J)
    assert ev.source is not None and ev.source.source_type == "STEP" and ev.source.step_instance_id == S
    assert ev.source.execute_count is None
    assert ev.time == "2024-05-30T11:09:00.240123"
    ids = x.ids_in_text(msg)
    assert (ids.task, ids.step, ids.execute_count) == (J, S, None)


def test_step_event_310_and_312_forms() -> None:
    e312 = (
        f"Begin to dispatch step event, event: StepEvent[action=14, actionDesc=REFRESH, jobInstanceId={J}, "
        f"stepInstanceId={S}, batch=null, source={gse_source(1)}, time=2024-05-30T11:09:00.2]"
    )
    e310 = (
        f"Handle step event: StepEvent[action=14, actionDesc=REFRESH, stepInstanceId={S}, batch=null, "
        f"source={gse_source(1)}, time=2024-05-30T11:09:00.2], duration: 9ms"
    )
    a, b = x.parse_event(e312), x.parse_event(e310)
    assert a is not None and b is not None
    assert a.verb == "dispatch" and b.verb == "handle"
    assert a.job_instance_id == J and b.job_instance_id is None  # 3.10 prints no jobInstanceId
    assert a.step_instance_id == b.step_instance_id == S
    assert a.batch is None
    assert b.source is not None and (b.source.gse_task_id, b.source.execute_count, b.source.batch) == (
        G,
        1,
        0,
    )
    for msg in (e312, e310):
        ids = x.ids_in_text(msg)
        assert (ids.task, ids.step, ids.gse_task, ids.execute_count) == (J, S, G, 1)


def test_gse_task_event_310_and_312_forms() -> None:
    e312 = (
        f"Handle gse task event: GseTaskEvent[action=1, actionDesc=START, gseTaskId={G}, jobInstanceId={J}, "
        f"stepInstanceId={S}, executeCount=2, batch=0, requestId='3f2c1b0e-1a2b-4c5d-8e9f-0a1b2c3d4e5f', "
        "source=null, time=2024-05-30T11:09:00.2], duration: 5ms"
    )
    e310 = (
        f"Handling gse task event error, event:GseTaskEvent[action=1, actionDesc=START, gseTaskId={G}, "
        "requestId='3f2c1b0e-1a2b-4c5d-8e9f-0a1b2c3d4e5f', source=null, time=2024-05-30T11:09:00.2]"
    )
    a, b = x.parse_event(e312), x.parse_event(e310)
    assert a is not None and b is not None
    assert (a.gse_task_id, a.job_instance_id, a.step_instance_id, a.execute_count, a.batch) == (G, J, S, 2, 0)
    assert a.request_id == "3f2c1b0e-1a2b-4c5d-8e9f-0a1b2c3d4e5f" and a.source is None
    assert (b.gse_task_id, b.step_instance_id, b.verb) == (G, None, "error")
    assert x.ids_in_text(e310).gse_task == G


def test_script_result_exit_code_256_is_exit_1() -> None:
    res = x.parse_script_result(result_line(exit_code=256))
    assert res is not None
    assert res.agent_id == AGENT and res.status == 5 and res.error_code == 0 and res.error_msg == ""
    assert res.exit_code == 256 and res.exit_code_normalised == 1
    assert res.host_status == 104 and res.host_status_zh == "脚本返回码非零" and not res.ok
    assert res.key is not None and res.key.step_instance_id == S
    assert res.content_length == 42 and res.tag == ""


@pytest.mark.parametrize(
    ("status", "error_code", "exit_code", "host_status", "zh"),
    [
        (5, 117, 0, 310, "Agent 异常"),
        (5, 122, 0, 311, "用户名不存在"),
        (5, 1326, 0, 312, "用户密码不正确"),
        (5, 120, 0, 303, "执行任务超时"),
        (5, 705, 0, 320, "文件获取失败"),
        (5, 119, 0, 321, "文件超出限制"),
        (5, 710, 0, 329, "文件传输错误"),
        (5, 101, 0, 399, "任务执行出错"),
        (5, 126, 0, 403, "任务强制终止成功"),
        (5, 9999, 0, 0, "未知错误"),
        (3, 0, 0, 102, "脚本执行超时"),
        (4, 0, 0, 103, "脚本执行被终止"),
        (5, 0, 0, 101, "脚本执行失败"),
        (5, 0, 2, 104, "脚本返回码非零"),
        (2, 0, 0, 9, "执行成功"),
        (1, 115, 0, 7, "正在执行"),
    ],
)
def test_gse_error_to_host_status(
    status: int, error_code: int, exit_code: int, host_status: int, zh: str
) -> None:
    res = x.parse_script_result(
        result_line(
            status=status, error_code=error_code, exit_code=exit_code, error_msg="agent offline, it's gone"
        )
    )
    assert res is not None and res.host_status == host_status and res.host_status_zh == zh
    assert res.error_msg == "agent offline, it's gone"


def test_api_response_success_true_with_nonzero_code_in_resp() -> None:
    msg = (
        "[BaseBkApiClient] Response|tenantId=default|bkApiRequestId=6a1f0e2b-77|method=POST|uri=/api/v2/task/"
        'extensions/async_execute_script|success=true|costTime=35|resp={"code":1210001,"result":false,'
        '"message":"GSE | server unavailable","data":null}'
    )
    call = x.parse_api_call(msg)
    assert call is not None
    assert (call.client, call.kind, call.method) == ("BaseBkApiClient", "response", "POST")
    assert call.uri == "/api/v2/task/extensions/async_execute_script" and call.system == "gse"
    assert call.success is True and call.cost_ms == 35 and call.bk_api_request_id == "6a1f0e2b-77"
    assert call.code == 1210001 and call.api_message == "GSE | server unavailable" and call.result is False
    assert call.failed and call.error_zh == "GSE 不可用"


def test_api_request_and_custom_response_variant() -> None:
    req = x.parse_api_call(
        "[BaseBkApiClient] Request|tenantId=default|method=POST|uri=/api/v2/task/extensions/"
        'async_execute_script|reqStr={"a":"b|c"}'
    )
    assert req is not None and req.kind == "request" and req.request_body == '{"a":"b|c"}' and not req.failed
    resp = x.parse_api_call(
        "[BaseBkApiClient] Response|bkApiRequestId=r1|method=POST|uri=/api/v2/task/extensions/"
        'get_execute_script_result|success=false|costTime=5012|resp={"code":0}|'
    )
    assert resp is not None and resp.tenant_id is None and resp.success is False and resp.code == 0
    assert resp.response_body == '{"code":0}' and resp.failed
    ok = x.parse_api_call(
        "[BaseBkApiClient] Response|tenantId=t|bkApiRequestId=r|method=GET|uri=/api/x|"
        'success=true|costTime=3|resp={"code":0,"result":true,"data":[]}'
    )
    assert ok is not None and not ok.failed


def test_api_310_client_lines_and_transport_failures() -> None:
    fail = x.parse_api_call(
        "[AbstractBkApiClient] fail:response code!=0|bkApiRequestId=r2|code=1211002|"
        "message=CMDB API返回数据异常|method=POST|uri=/api/c/compapi/v2/cc/list_biz_hosts/|"
        'reqStr={"bk_biz_id":2}|respStr={"code":1211002,"result":false}'
    )
    assert fail is not None and fail.client == "AbstractBkApiClient" and fail.code == 1211002
    assert fail.request_body == '{"bk_biz_id":2}' and fail.failed and fail.system == "cmdb"
    req310 = x.parse_api_call("[AbstractBkApiClient] Request|method=GET|uri=/api/x|reqStr={}")
    assert req310 is not None and req310.tenant_id is None and req310.uri == "/api/x"
    t = x.parse_api_call("Fail to request api|method=POST|uri=/api/v2/task/extensions/async_execute_script")
    assert t is not None and t.kind == "fail" and t.failed and t.method == "POST"
    blank = x.parse_api_call(
        "[BaseBkApiClient] fail: Response is blank| bkApiRequestId=r3|method=GET|uri=/api/y"
    )
    assert blank is not None and blank.kind == "blank" and blank.bk_api_request_id == "r3" and blank.failed
    assert x.parse_api_call("Start step, stepInstanceId=1") is None


def test_finish_gse_task_execute_result_mapping() -> None:
    for n, name, run_status in [
        (1, "SUCCESS", 3),
        (2, "FAILED", 4),
        (3, "STOP_SUCCESS", 11),
        (6, "RUNNING", 2),
        (7, "SKIPPED", 5),
        (8, "DISCARDED", 14),
        (9, "EXCEPTION", 9),
    ]:
        fin = x.parse_gse_finish(f"Finish gse task, task:{key()}, executeResult:{n}")
        assert fin is not None and fin.name == name and fin.run_status == run_status
        assert fin.key is not None and fin.key.gse_task_id == G
    assert codes().run_status.zh[codes().execute_result.run_status[9]] == "状态异常"


def test_step_refresh_lines() -> None:
    r = x.parse_step_refresh(
        f"Refresh step according to gse task status, stepInstanceId: {S}, "
        "gseTaskStatus: ABNORMAL_STATE, batch: 0"
    )
    assert r is not None and r.step_instance_id == S and r.gse_task_status == "ABNORMAL_STATE"
    assert r.run_status == 9 and r.zh == "状态异常" and r.batch == 0 and not r.ok
    r = x.parse_step_refresh(
        f"Refresh step fail, stepInstanceId: {S}, stepStatus: RUNNING, gseTaskStatus: FAIL"
    )
    assert r is not None and r.failed_refresh and r.step_status == "RUNNING"
    ok = x.parse_step_refresh(
        f"Refresh step according to gse task status, stepInstanceId: {S}, gseTaskStatus: SUCCESS, batch: null"
    )
    assert ok is not None and ok.ok and ok.batch is None


def test_notification_and_callback_lines() -> None:
    n = x.parse_notification(
        'Begin to dispatch notification event:{"operator":"admin","appId":2,'
        f'"resourceExecuteStatus":2,"taskInstanceId":{J},"stepName":"run script"}}'
    )
    assert n is not None and n.failed and n.task_instance_id == J and n.step_name == "run script"
    assert n.status_name == "FAIL"
    cut = x.parse_notification(
        'Begin to dispatch notification event:{"resourceExecuteStatus":1,"taskInstanceId":5,'
    )
    assert cut is not None and cut.resource_execute_status == 1 and cut.task_instance_id == 5
    d = x.parse_callback(
        f'Begin to dispatch job callback event, callback:{{"job_instance_id":{J},"status":4,'
        f'"step_instances":[{{"step_instance_id":{S},"status":4}}]}}'
    )
    assert d is not None and d.kind == "dispatch" and d.task_instance_id == J and d.job_status == 4
    assert d.step_statuses == {S: 4}
    f = x.parse_callback(
        f"Callback using json body failed, use form data to retry. TaskInstanceId={J}, statusCode=500"
    )
    assert f is not None and (f.kind, f.task_instance_id, f.http_status, f.ok) == (
        "json_failed",
        J,
        500,
        False,
    )
    f2 = x.parse_callback("Callback using form data failed, statusCode=502")
    assert f2 is not None and f2.http_status == 502
    res = x.parse_callback(
        f"Callback result: taskInstanceId={J}, postJsonSuccess=true, httpStatusCode=200, result=ok"
    )
    assert res is not None and res.ok
    rej = x.parse_callback(
        f"Callback url rejected by whitelist on egress, taskInstanceId={J}, callbackUrl=http://10.0.0.1/cb"
    )
    assert rej is not None and rej.kind == "rejected" and rej.url == "http://10.0.0.1/cb"


def test_api_error_codes_and_chinese_messages() -> None:
    text = '{"result":false,"code":1244002,"message":"...","job_request_id":"' + T + '"}'
    assert x.api_error_codes(text) == [1244002]
    assert x.api_error_codes("code=1244003|message=x") == [1244003]
    assert x.api_error_codes('"code": 1640001') == [1640001]
    assert x.api_error_zh(1244003, "root") == "账号[root]不存在"
    assert x.api_error_zh(1244019) == "高危脚本，禁止执行"
    assert x.api_error_zh(1640301) == "应用没有访问该网关资源的权限"
    assert x.api_error_zh(1) is None
    assert x.nonzero_codes("errorCode=117, exitCode=0, code=0") == [117]


def test_status_tables_are_complete_and_consistent() -> None:
    assert codes().host_status.zh[310] == "Agent 异常" and codes().host_status.zh[18] == "Agent 未安装"
    assert codes().gse.error_to_host_status[117] == 310
    assert set(codes().host_status.name) <= set(codes().host_status.zh)
    assert set(codes().gse.error_to_host_status.values()) <= set(codes().host_status.zh)
    assert set(codes().run_status.name) <= set(codes().run_status.zh)
    assert (
        x.run_status_zh("ABANDONED") == "被丢弃"
        and x.run_status_zh(4) == "执行失败"
        and x.run_status_zh("9") == "状态异常"
    )
    assert (
        set(codes().execute_result.name)
        == set(codes().execute_result.zh)
        == set(codes().execute_result.run_status)
    )
    assert set(codes().api_error.name) == set(codes().api_error.zh)
    assert codes().step_action.name[14] == "REFRESH" and codes().job_action.name[4] == "REFRESH"
    assert x.normalise_exit_code(256) == 1 and x.normalise_exit_code(3) == 3


def test_ids_in_record_uses_trace_id() -> None:
    rec = parse_record(file_line("2024-05-30 11:09:00.240", "INFO", f"[{key()}] Sending task to gse server"))
    ids = x.ids_in(rec)
    assert ids.trace_id == T and ids.step == S and ids.gse_task == G and ids.execute_count == 0


def test_inherit_respects_levels_and_conflicts() -> None:
    ctx = x.RecordIds(task=J, step=S, gse_task=G, execute_count=1, batch=0, trace_id=T)
    assert x.RecordIds().inherit(ctx) == ctx
    assert x.RecordIds(task=J).inherit(ctx) == x.RecordIds(task=J)  # job-level line keeps its level
    assert x.RecordIds(step=S).inherit(ctx).execute_count == 1
    other = x.RecordIds(step=S + 1).inherit(ctx)
    assert other.step == S + 1 and other.execute_count is None and other.task == J
    assert x.RecordIds(task=J + 1, step=S).inherit(ctx).execute_count is None
    assert x.RecordIds(gse_task=G).inherit(ctx).step == S
    assert x.RecordIds(gse_task=G + 1).inherit(ctx).step is None


# --------------------------------------------------------------------------- crafted lines


@pytest.mark.parametrize(
    ("marker", "parse"),
    [
        ("Finish gse task, task:", x.parse_gse_finish),
        ("Callback using json body failed", x.parse_callback),
    ],
)
def test_repeated_markers_cost_linear_time(marker: str, parse: object) -> None:
    """Both were `marker.*?fields` regexes: 2.3 s / 0.7 s on 64 KB of repeated markers."""
    import time

    assert callable(parse)
    line = marker * (128 * 1024 // len(marker))
    start = time.perf_counter()
    assert parse(line) is None
    assert time.perf_counter() - start < 0.5
    # the fields after the first marker are still found, as before
    assert parse(line + ", executeResult:3, TaskInstanceId=7, statusCode=500") is not None


def test_finish_line_fields_unchanged() -> None:
    fin = x.parse_gse_finish("[x] Finish gse task, task:Job:1-GseTask:2:3:0, executeResult:-1 more")
    assert fin is not None and fin.task == "Job:1-GseTask:2:3:0" and fin.execute_result == -1
    assert x.parse_gse_finish("Finish gse task, task:a\n, executeResult:1") is None  # one line only
