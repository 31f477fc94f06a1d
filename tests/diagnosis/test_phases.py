"""Classification, runs and timelines on chains composed from the reference templates (§1.4, §1.6, §7)."""

from __future__ import annotations

from bot.core.models import PHASES, TimelineEntry
from bot.diagnosis.parser import dedupe, order, parse_record, parse_text
from bot.diagnosis.phases import classify
from bot.diagnosis.records import LogRecord
from bot.diagnosis.runs import attribute, latest_run, runs, select_run
from bot.diagnosis.timeline import build_timeline
from tests.diagnosis.chains import (
    GSE_STACK,
    L_API,
    L_DISP,
    L_HANDLER,
    L_JOB,
    L_MGR,
    L_START,
    T2,
    Chain,
    J,
    S,
    T,
    dispatch_ok,
    failed_script_chain,
    file_line,
    key,
    polling,
    refresh_and_notify,
    result_line,
    run_prologue,
)


def _records(c: Chain) -> list[LogRecord]:
    return order(dedupe(parse_text(c.text())))


def _status(tl: list[TimelineEntry]) -> dict[str, str]:
    return {e.phase: e.status for e in tl}


def _msg(msg: str, level: str = "INFO", logger: str = L_JOB) -> LogRecord:
    return parse_record(file_line("2024-05-30 11:09:00.240", level, msg, logger=logger))


def test_classify_by_template_not_logger() -> None:
    for logger in (L_START, L_JOB, "x.y.Whatever"):
        c = classify(_msg(f"[{key()}] Sending task to gse server", logger=logger))
        assert (c.phase, c.severity) == ("dispatch", "info")
    cases = {
        f"[{key()}] Start gse task successfully, gseTaskId: X": ("dispatch", "info"),
        f"[{key()}] Start gse task fail, response: GseTaskResponse(errorCode=1, errorMessage=x, gseTaskId=null)": (
            "dispatch",
            "fail",
        ),
        "Script gse task target agent is empty, can not execute! Set gse task status fail": (
            "dispatch",
            "fail",
        ),
        f"[{key()}]: Start pull gse task result, times: 3": ("result_polling", "info"),
        f"[{key()}]: Execution result log always empty!": ("result_polling", "fail"),
        f"[{key()}]: result handle error.": ("result_polling", "fail"),
        f"[{key()}]: Task execution timeout! runDuration: 3900123ms, timeout: 3600s": ("execution", "fail"),
        result_line(error_code=117): ("execution", "fail"),
        result_line(status=2, exit_code=0): ("execution", "info"),
        f"Finish gse task, task:{key()}, executeResult:1": ("result_polling", "info"),
        f"Finish gse task, task:{key()}, executeResult:9": ("result_polling", "fail"),
        "System account is not exist, appId=2, accountAlias=root": ("parameter_check", "fail"),
        "Found hosts not in target app: 2!": ("parameter_check", "warn"),
        "ResourceQuotaLimit-runningJob exceed resource scope quota limit, resourceScope: biz:2": (
            "parameter_check",
            "fail",
        ),
        f"[{S}]: ThirdFilePrepareTask failed": ("initialization", "fail"),
        f"[{S}]:File a.txt not exists in project bkjob repo localupload": ("initialization", "fail"),
        "Callback using form data failed, statusCode=500": ("callback", "fail"),
        f"Callback result: taskInstanceId={J}, postJsonSuccess=true, httpStatusCode=200, result=ok": (
            "callback",
            "info",
        ),
        'Begin to dispatch notification event:{"resourceExecuteStatus":2}': ("callback", "info"),
        "[BaseBkApiClient] Response|tenantId=d|bkApiRequestId=r|method=POST|uri=/api/v2/task/extensions/"
        'async_execute_script|success=true|costTime=3|resp={"code":1210001}': ("dispatch", "fail"),
        "[BaseBkApiClient] Response|bkApiRequestId=r|method=POST|uri=/api/v2/task/extensions/get_execute_script_result"
        '|success=true|costTime=3|resp={"code":0}|': ("result_polling", "info"),
        "Fail to request api|method=POST|uri=/api/v2/task/extensions/async_execute_script": (
            "dispatch",
            "fail",
        ),
    }
    for msg, want in cases.items():
        c = classify(_msg(msg))
        assert (c.phase, c.severity) == want, msg


def test_generic_chain_lines_have_no_phase() -> None:
    c = classify(
        _msg(f"Refresh step according to gse task status, stepInstanceId: {S}, gseTaskStatus: FAIL, batch: 0")
    )
    assert c.phase is None and c.severity == "fail" and c.consequence
    c = classify(
        _msg(
            f"Handle job event, event: JobEvent[action=1, actionDesc=START, jobInstanceId={J}, "
            "eventSource=null, time=2024-05-30T11:09:00.101], duration: 12ms"
        )
    )
    assert c.phase is None and c.severity == "info"
    c = classify(_msg(f"Handling step event error,stepInstanceId:{S}", level="ERROR"))
    assert c.phase is None and c.severity == "fail" and c.floor == "initialization"
    # unknown lines go by level; unparsed lines are kept as generic info
    assert classify(_msg("something odd", level="ERROR")).severity == "fail"
    assert classify(_msg("something odd", level="WARN")).severity == "warn"
    assert classify(parse_record("garbage")).phase is None


def test_attribute_inherits_ids_within_thread_and_trace() -> None:
    recs = _records(failed_script_chain())
    ids = attribute(recs)
    api = [i for i, r in enumerate(recs) if r.message.startswith("[BaseBkApiClient]")]
    assert api and all(ids[i].step == S and ids[i].execute_count == 0 for i in api)
    refresh = next(i for i, r in enumerate(recs) if r.message.startswith("Refresh step according"))
    assert ids[refresh].step == S and ids[refresh].execute_count == 0
    # a job-level line does not take a step from its thread's context
    start = next(i for i, r in enumerate(recs) if r.message.startswith("Start task"))
    assert ids[start].task == J and ids[start].step is None


def test_timeline_normal_failed_chain() -> None:
    recs = _records(failed_script_chain(pulls=5))
    tl = build_timeline(recs, S)
    assert [e.phase for e in tl] == list(PHASES)
    assert _status(tl) == {
        "parameter_check": "ok",
        "initialization": "ok",
        "dispatch": "ok",
        "execution": "fail",
        "result_polling": "ok",
        "callback": "ok",
    }
    ex = next(e for e in tl if e.phase == "execution")
    assert ex.time is not None and ex.time.startswith("2024-05-30 11:09:")
    assert "104 脚本返回码非零" in ex.note and "exitCode=1" in ex.note
    rp = next(e for e in tl if e.phase == "result_polling")
    assert "拉取结果 5 次" in rp.note and "executeResult:2" in rp.note


def test_timeline_chain_stops_after_sending_task() -> None:
    c = Chain()
    run_prologue(c)
    c.add(
        "INFO",
        f"[{key()}] Sending task to gse server",
        logger=L_START,
        thread="gse.task.service.job.execute-4",
    )
    c.add(
        "INFO",
        "[BaseBkApiClient] Request|tenantId=default|method=POST|uri=/api/v2/task/extensions/"
        "async_execute_script|reqStr={}",
        logger=L_API,
        thread="gse.task.service.job.execute-4",
    )
    tl = build_timeline(_records(c), S)
    st = _status(tl)
    assert st["dispatch"] == "missing"
    assert st["execution"] == st["result_polling"] == st["callback"] == "skipped"
    assert st["initialization"] == "ok"
    note = next(e.note for e in tl if e.phase == "dispatch")
    assert note == "未见 `Start gse task successfully`（已有 `Sending task to gse server`）"


def test_timeline_chain_stops_after_start_step() -> None:
    c = Chain()
    run_prologue(c)
    c.lines = c.lines[:-2]  # no gse task event
    tl = build_timeline(_records(c), S)
    st = _status(tl)
    assert st["dispatch"] == "missing" and st["execution"] == "skipped"
    note = next(e.note for e in tl if e.phase == "dispatch")
    assert note.startswith("未见 `Sending task to gse server`（已有 `Start step, stepInstanceId=")


def test_timeline_dispatch_failure_scenario_8() -> None:
    c = Chain()
    run_prologue(c)
    th = "gse.task.service.job.execute-4"
    c.add("INFO", f"[{key()}] Sending task to gse server", logger=L_START, thread=th)
    c.add(
        "WARN",
        "Fail to request api|method=POST|uri=/api/v2/task/extensions/async_execute_script",
        logger=L_API,
        thread=th,
        stack=GSE_STACK,
    )
    c.add(
        "ERROR",
        f"Handling gse task event error, event:GseTaskEvent[action=1, actionDesc=START, gseTaskId=30001, "
        f"jobInstanceId={J}, stepInstanceId={S}, executeCount=0, batch=0, requestId='3f2c', source=null, time=x]",
        logger=L_MGR,
        thread=th,
        stack=GSE_STACK,
    )
    c.add(
        "INFO",
        f"Refresh step according to gse task status, stepInstanceId: {S}, gseTaskStatus: ABNORMAL_STATE, "
        "batch: 0",
        logger=L_HANDLER,
        thread="step.service.job.execute-3",
    )
    c.add(
        "INFO",
        'Begin to dispatch notification event:{"resourceExecuteStatus":2,"taskInstanceId":'
        f'{J},"stepName":"s"}}',
        logger=L_DISP,
        thread="task.service.job.execute-2",
    )
    tl = build_timeline(_records(c), S)
    st = _status(tl)
    assert st["dispatch"] == "fail"
    assert st["execution"] == st["result_polling"] == "skipped"
    assert st["callback"] == "ok"
    d = next(e for e in tl if e.phase == "dispatch")
    assert "Fail to request api" in d.note


def test_timeline_result_handle_error_fails_polling() -> None:
    c = Chain()
    run_prologue(c)
    dispatch_ok(c)
    th = "job-execute-result-handle-1"
    c.add("INFO", f"[{key()}]: Start pull gse task result, times: 1", thread=th)
    c.add("ERROR", f"[{key()}]: result handle error.", thread=th, stack=GSE_STACK)
    c.add("INFO", f"Finish gse task, task:{key()}, executeResult:9", thread=th)
    refresh_and_notify(c, status="ABNORMAL_STATE")
    st = _status(build_timeline(_records(c), S))
    assert st["result_polling"] == "fail"
    assert st["execution"] == "missing"  # no host result line was logged
    assert st["dispatch"] == "ok"


def _retried_chain() -> Chain:
    c = failed_script_chain()
    c.start = c.start.replace(minute=20)  # retry 11 minutes later, new request → new traceId
    c._n = 0
    run_prologue(c, 1, trace=T2, retry=True)
    dispatch_ok(c, 1, trace=T2)
    polling(c, 1, trace=T2, results=[result_line(1, status=2, exit_code=0)], execute_result=1)
    refresh_and_notify(c, 1, status="SUCCESS", trace=T2)
    return c


def test_runs_and_latest_run_of_retried_step() -> None:
    recs = _records(_retried_chain())
    r = runs(recs, S)
    assert sorted(r) == [0, 1]
    assert latest_run(recs, S) == 1
    assert any(x.message.startswith("Retry-fail for step") for x in r[1])
    assert any(x.message.startswith("Start step") for x in r[1]) and any(
        x.message.startswith("Start step") for x in r[0]
    )
    assert all(x.trace_id == T2 for x in r[1])
    assert any(x.message.startswith("Refresh step according") and "FAIL" in x.message for x in r[0])
    view = select_run(recs, S)
    assert view.execute_count == 1 and view.trace_ids == [T2] and view.task_instance_id == J


def test_timeline_retried_step_diagnoses_latest_run() -> None:
    recs = _records(_retried_chain())
    latest = _status(build_timeline(recs, S))
    assert latest["execution"] == "ok" and latest["result_polling"] == "ok"
    assert latest["parameter_check"] == "ok"  # inferred: the retry has no creation lines
    first = _status(build_timeline(recs, S, execute_count=0))
    assert first["execution"] == "fail"


def test_pending_retry_without_gse_task_forms_next_run() -> None:
    c = failed_script_chain()
    c.add(
        "INFO",
        f"Retry-fail for step, stepInstanceId={S}",
        logger=L_HANDLER,
        thread="step.service.job.execute-2",
    )
    c.add(
        "ERROR",
        f"Handling step event error,stepInstanceId:{S}",
        logger=L_HANDLER,
        thread="step.service.job.execute-2",
        stack="java.lang.NullPointerException: null\n\tat a.b(C.java:1)",
    )
    recs = _records(c)
    assert sorted(runs(recs, S)) == [0, 1]
    tl = build_timeline(recs, S)
    st = _status(tl)
    assert st["initialization"] == "fail" and st["dispatch"] == "skipped"


def test_timeline_parameter_check_failure_without_step() -> None:
    c = Chain()
    th = "http-nio-19802-exec-3"
    c.add("WARN", "System account is not exist, appId=2, accountAlias=root", thread=th)
    c.add(
        "WARN",
        "Handle NotFoundException, uri: /esb/api/v3/fast_execute_script",
        thread=th,
        stack="com.tencent.bk.job.common.exception.NotFoundException: null\n\tat a.b(C.java:1)",
    )
    tl = build_timeline(_records(c), None)
    st = _status(tl)
    assert st["parameter_check"] == "fail"
    assert all(st[p] == "skipped" for p in PHASES[1:])


def test_timeline_without_records() -> None:
    tl = build_timeline([], S)
    assert tl[0].status == "missing" and "未找到" in tl[0].note
    assert all(e.status == "skipped" for e in tl[1:])


def test_other_steps_lines_are_not_in_the_run() -> None:
    c = failed_script_chain()
    other = S + 7
    c.add(
        "INFO", f"Start step, stepInstanceId={other}", logger=L_HANDLER, thread="step.service.job.execute-3"
    )
    c.add(
        "ERROR",
        f"[Job:{J}-GseTask:999:{other}:0]: result handle error.",
        thread="job-execute-result-handle-2",
    )
    view = select_run(_records(c), S)
    assert all(str(other) not in r.message for r in view.records)
    assert view.trace_ids == [T]


def test_v310_console_chain_runs_and_timeline() -> None:
    """3.10.x: StepEvent without jobInstanceId, GseTaskEvent with only gseTaskId, `[AbstractBkApiClient]`,
    logged to stdout with the console pattern (15-char threads)."""
    from tests.diagnosis.chains import G, console_line

    ts = iter(f"2024-05-30 11:09:0{i // 100}.{i % 100:03d}" for i in range(1000))

    def add(level: str, msg: str, thread: str) -> str:
        return console_line(next(ts), level, msg, thread=thread)

    sev = f"StepEvent[action=1, actionDesc=START, stepInstanceId={S}, batch=null, source=null, time=2024-05-30T11:09]"
    gev = (
        f"GseTaskEvent[action=1, actionDesc=START, gseTaskId={G}, requestId='3f2c1b0e-1a2b-4c5d-8e9f-0a1b2c3d4e5f', "
        "source=null, time=2024-05-30T11:09:00.2]"
    )
    ref = (
        f"StepEvent[action=14, actionDesc=REFRESH, stepInstanceId={S}, batch=null, source=EventSource(sourceType="
        f"GSE_TASK, jobInstanceId={J}, stepInstanceId={S}, executeCount=0, batch=0, gseTaskId={G}), time=x]"
    )
    lines = [
        add("INFO", f"Handle step event: {sev}, duration: 8ms", "step.service.job.execute-2"),
        add("INFO", f"Start step, stepInstanceId={S}", "step.service.job.execute-2"),
        add("INFO", f"Handle gse task event: {gev}, duration: 5ms", "gse.task.service.job.execute-4"),
        add("INFO", f"[{key()}] Sending task to gse server", "gse.task.service.job.execute-4"),
        add(
            "INFO",
            "[AbstractBkApiClient] Request|method=POST|uri=/api/v2/task/extensions/async_execute_script|reqStr={}",
            "gse.task.service.job.execute-4",
        ),
        add(
            "WARN",
            "[AbstractBkApiClient] fail:response code!=0|bkApiRequestId=r|code=1210001|message=GSE down|"
            'method=POST|uri=/api/v2/task/extensions/async_execute_script|reqStr={}|respStr={"code":1210001}',
            "gse.task.service.job.execute-4",
        ),
        add("ERROR", f"Handling gse task event error, event:{gev}", "gse.task.service.job.execute-4")
        + "\ncom.tencent.bk.job.common.esb.exception.BkOpenApiException: null\n\tat a.b(C.java:1)",
        add("INFO", f"Handle step event: {ref}, duration: 9ms", "step.service.job.execute-3"),
        add(
            "INFO",
            f"Refresh step according to gse task status, stepInstanceId: {S}, gseTaskStatus: ABNORMAL_STATE, "
            "batch: 0",
            "step.service.job.execute-3",
        ),
    ]
    recs = order(dedupe(parse_text("\n".join(lines))))
    assert all(r.parsed for r in recs)
    ids = attribute(recs)
    api = [i for i, r in enumerate(recs) if "AbstractBkApiClient" in r.message]
    assert all(ids[i].step == S and ids[i].execute_count == 0 for i in api)
    assert sorted(runs(recs, S)) == [0]
    st = _status(build_timeline(recs, S))
    assert st["dispatch"] == "fail" and st["execution"] == "skipped" and st["initialization"] == "ok"
