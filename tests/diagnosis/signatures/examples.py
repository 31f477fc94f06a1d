"""One example chain per catalog signature: the records, the stage and fault side the reference
implies, and texts from the lines that the filled report must quote (built from chains.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.diagnosis.records import LogRecord
from tests.diagnosis.signatures.chains import (
    AGENT,
    AGENT2,
    FINISH_FAIL,
    GSE,
    REFRESH_ABNORMAL,
    REFRESH_FAIL,
    SENDING,
    SERVICE_EXC,
    STARTED,
    STEP_START,
    G,
    J,
    S,
    chain,
    openapi_resp,
    result_line,
)


@dataclass(frozen=True)
class Example:
    records: list[LogRecord]
    stage: str
    fault_side: str
    quotes: tuple[str, ...] = ()  # texts from the lines that the cause must quote verbatim
    values: dict[str, str] = field(default_factory=dict)  # expected placeholder values


EXAMPLES: dict[str, Example] = {
    "host_not_in_business": Example(
        chain(
            (
                "WARN",
                "Contains hosts not in app, check white host config. notInAppHosts: [0:10.0.0.1, 0:10.0.0.2], "
                "whileHostAllowActions: {}",
            ),
            ("WARN", "Found hosts not in target app: 2!"),
            ("WARN", "The following hosts are invalid, hosts=[0:10.0.0.1, 0:10.0.0.2]"),
            (
                "ERROR",
                "Handle FailedPreconditionException, uri: /esb/api/v3/fast_execute_script",
                "com.tencent.bk.job.common.exception.FailedPreconditionException: null",
            ),
        ),
        "parameter_check",
        "user",
        ("0:10.0.0.1, 0:10.0.0.2", "1244002", "/esb/api/v3/fast_execute_script"),
        {"host_count": "2"},
    ),
    "execute_object_not_exist": Example(
        chain(
            ("WARN", "The following execute object are not exist, invalidExecuteObjects=[HOST:101, HOST:102]")
        ),
        "parameter_check",
        "user",
        ("[HOST:101, HOST:102]", "1244030"),
    ),
    "account_not_exist": Example(
        chain(
            ("WARN", "System account is not exist, appId=2, accountAlias=root"),
            ("ERROR", "Handle NotFoundException, uri: /esb/api/v3/fast_execute_script", SERVICE_EXC),
        ),
        "parameter_check",
        "user",
        ("root", "1244003", "/esb/api/v3/fast_execute_script"),
    ),
    "account_no_permission": Example(
        chain(("INFO", openapi_resp(1244004, "没有账号[root]的权限"))),
        "parameter_check",
        "user",
        ("root", "1244004"),
    ),
    "permission_denied": Example(
        chain(
            ("WARN", "Handle PermissionDeniedException"),
            ("INFO", openapi_resp(1238001, "用户(alice)权限不足，请前往权限中心确认并申请补充后重试")),
        ),
        "parameter_check",
        "user",
        ("alice", "1238001"),
    ),
    "running_job_quota_exceeded": Example(
        chain(
            ("WARN", "ResourceQuotaLimit-runningJob exceed resource scope quota limit, resourceScope: biz:2")
        ),
        "parameter_check",
        "user",
        ("resource scope", "resourceScope: biz:2"),
    ),
    "dangerous_script_forbidden": Example(
        chain(("WARN", "Script match dangerous rule, checkResult: [line 3: rm -rf / (FATAL)]")),
        "parameter_check",
        "user",
        ("[line 3: rm -rf / (FATAL)]", "1244019"),
    ),
    "local_file_expired": Example(
        chain(
            (
                "INFO",
                openapi_resp(
                    1244023, "本地文件/2024/05/a.tar.gz在后台不存在，可能过期被定时清除(默认过期时间为7天)"
                ),
            )
        ),
        "parameter_check",
        "user",
        ("/2024/05/a.tar.gz", "1244023"),
    ),
    "cmdb_request_failed": Example(
        chain(
            (
                "WARN",
                'Fail to request CMDB data|method=POST|uri=/api/c/compapi/v2/cc/list_biz_hosts/|queryParams=null|body={"bk_biz_id":2}',
                "com.tencent.bk.job.common.exception.InternalCmdbException: null",
            )
        ),
        "parameter_check",
        "third_party",
        ("/api/c/compapi/v2/cc/list_biz_hosts/",),
    ),
    "invalid_agent_id_hosts": Example(
        chain(("WARN", "Contains invalid agent id host, appId: 2, invalidHosts: [0:10.0.0.9]")),
        "parameter_check",
        "environment",
        ("[0:10.0.0.9]", "18"),
        {"host_status_zh": "Agent 未安装"},
    ),
    "api_error_response": Example(
        chain(("INFO", openapi_resp(1241002, "请求参数不合法"))),
        "parameter_check",
        "user",
        ("1241002", "请求参数不合法"),
    ),
    "api_error_third_party": Example(
        chain(
            ("ERROR", "Handle InternalException, uri: /esb/api/v3/fast_execute_script", SERVICE_EXC),
            ("INFO", openapi_resp(1216001, "第三方 API 请求错误")),
        ),
        "parameter_check",
        "third_party",
        ("1216001", "/esb/api/v3/fast_execute_script"),
    ),
    "local_file_not_in_repo": Example(
        chain(
            ("INFO", f"Begin to prepare source files for step, stepInstance: {S}"),
            ("WARN", f"[{S}_0]:File /localupload/2024/a.tar.gz not exists in project bkjob repo localupload"),
            ("WARN", f"[{S}_0]:LocalFilePrepareTask failed"),
            (
                "INFO",
                f"Begin to dispatch job event, event: JobEvent[action=4, actionDesc=REFRESH, jobInstanceId={J}]",
            ),
        ),
        "initialization",
        "user",
        ("/localupload/2024/a.tar.gz", "bkjob", "localupload"),
    ),
    "local_file_prepare_failed": Example(
        chain(
            ("WARN", f"[{S}_0]:Fail to download /localupload/2024/a.tar.gz to /data/job/local/a.tar.gz"),
            ("WARN", f"[{S}_0]:LocalFilePrepareTask failed"),
        ),
        "initialization",
        "third_party",
        (f"{S}_0", "/localupload/2024/a.tar.gz"),
    ),
    "third_file_prepare_failed": Example(
        chain(
            ("INFO", f"Begin to prepare source files for step, stepInstance: {S}"),
            ("WARN", f"[{S}_0]: ThirdFilePrepareTask failed"),
        ),
        "initialization",
        "third_party",
        (f"{S}_0",),
    ),
    "third_file_task_failed": Example(
        chain(
            ("INFO", f"Begin to prepare source files for step, stepInstance: {S}"),
            (
                "INFO",
                f"[{S}_0]: fileSourceTaskId=9f2c41ab07d34e58a1c6b7e0d5f31a29,status=FAILED,"
                "message=release/app.tgz|0|Access Denied. (Status Code: 403; Error Code: AccessDenied)",
            ),
            ("WARN", f"[{S}_0]: ThirdFilePrepareTask failed"),
        ),
        "initialization",
        "third_party",
        ("release/app.tgz", "Access Denied. (Status Code: 403; Error Code: AccessDenied)"),
        {"file_task_id": "9f2c41ab07d34e58a1c6b7e0d5f31a29", "file_task_status": "FAILED"},
    ),
    "third_file_task_failed_silently": Example(
        chain(
            ("INFO", f"Begin to prepare source files for step, stepInstance: {S}"),
            (
                "INFO",
                f"[{S}_0]: fileSourceTaskId=9f2c41ab07d34e58a1c6b7e0d5f31a29,status=FAILED,message=release/app.tgz|0|",
            ),
            ("WARN", f"[{S}_0]: ThirdFilePrepareTask failed"),
        ),
        "initialization",
        "third_party",
        ("9f2c41ab07d34e58a1c6b7e0d5f31a29", "release/app.tgz"),
        {"file_task_status": "FAILED"},
    ),
    "file_prepare_timeout": Example(
        chain(
            ("WARN", f"[{S}_0]: batchTaskId=ft-123 timeout 3600s"),
            ("WARN", f"[{S}_0]: prepareTask timeout"),
        ),
        "initialization",
        "third_party",
        ("3600", f"{S}_0"),
    ),
    "file_worker_unavailable": Example(
        chain(("INFO", openapi_resp(1260005, "无法匹配到有效接入点，请检查文件源配置"))),
        "initialization",
        "third_party",
        ("1260005",),
    ),
    "file_worker_request_failed": Example(
        chain(
            (
                "ERROR",
                "Fail to startFileSourceBatchDownloadTask, req=BatchTaskReq(fileSourceId=3), "
                "resp=InternalResponse(code=1260007, errorMsg=bucket not found)",
            )
        ),
        "initialization",
        "third_party",
        ("InternalResponse(code=1260007, errorMsg=bucket not found)", "1260007"),
    ),
    "rolling_batch_empty": Example(
        chain(STEP_START, ("ERROR", "Empty batch for rolling step. Start step fail")),
        "initialization",
        "user",
    ),
    "step_event_error": Example(
        chain(("ERROR", f"Handling step event error,stepInstanceId:{S}", SERVICE_EXC)),
        "initialization",
        "system",
        (S, "com.tencent.bk.job.common.exception.ServiceException: null"),
    ),
    "job_event_error": Example(
        chain(
            ("ERROR", f"Handle job event error, jobInstanceId={J}", "java.lang.NullPointerException: null")
        ),
        "initialization",
        "system",
        (J, "java.lang.NullPointerException: null"),
    ),
    "target_agent_empty": Example(
        chain(
            STEP_START,
            ("WARN", "Script gse task target agent is empty, can not execute! Set gse task status fail"),
            REFRESH_FAIL,
        ),
        "dispatch",
        "environment",
        ("Script", S),
    ),
    "source_agent_empty": Example(
        chain(
            STEP_START,
            ("WARN", "File gse task source agent is empty, can not execute! Set gse task status fail"),
        ),
        "dispatch",
        "environment",
        (S,),
    ),
    "file_account_null": Example(
        chain(STEP_START, SENDING, ("ERROR", "Start gse task fail, account is null!")),
        "dispatch",
        "user",
        (S,),
    ),
    "gse_start_failed_response": Example(
        chain(
            SENDING,
            (
                "ERROR",
                f"[{GSE}] Start gse task fail, response: GseTaskResponse(errorCode=1, "
                "errorMessage=script content is empty, gseTaskId=null)",
            ),
        ),
        "dispatch",
        "third_party",
        ("script content is empty", "12"),
        {"host_status_zh": "任务下发失败"},
    ),
    "gse_dispatch_api_failure": Example(
        chain(
            SENDING,
            (
                "WARN",
                "Fail to request api|method=POST|uri=/api/v2/task/extensions/async_execute_script",
                "java.net.SocketTimeoutException: Read timed out",
            ),
            (
                "ERROR",
                f"Handling gse task event error, event:GseTaskEvent[action=1, actionDesc=START, gseTaskId={G}, "
                f"jobInstanceId={J}, stepInstanceId={S}, executeCount=0, batch=0, "
                "requestId='3f2c9a1e-1b2c-4d5e-8f90-1234567890ab', source=null, time=2024-05-30T11:09:00.240123]",
                "com.tencent.bk.job.common.exception.InternalException: null",
            ),
            REFRESH_ABNORMAL,
        ),
        "dispatch",
        "third_party",
        ("/api/v2/task/extensions/async_execute_script", S),
    ),
    "dispatch_no_response": Example(
        chain(STEP_START, SENDING, ("INFO", "Refresh task keepalive info start...")),
        "dispatch",
        "unknown",
        (GSE,),
    ),
    "gse_task_event_error": Example(
        chain(
            (
                "ERROR",
                f"Handling gse task event error, event:GseTaskEvent[action=1, actionDesc=START, gseTaskId={G}]",
                "java.lang.NullPointerException: null",
            ),
        ),
        "dispatch",
        "system",
        ("java.lang.NullPointerException: null",),
    ),
    "running_lock_failed": Example(
        chain(("ERROR", f"Fail to get running lock, lockKey: job:running:gse:task:{G}")),
        "dispatch",
        "system",
        (f"job:running:gse:task:{G}",),
    ),
    "job_evicted_at_start": Example(
        chain(("WARN", f"Evict job, taskInstanceId: {J}, gseTask: GseTaskDTO(id={G})")),
        "dispatch",
        "system",
        (J, "14"),
    ),
    "agent_abnormal": Example(
        chain(STARTED, ("INFO", result_line(117, msg="agent not alive")), FINISH_FAIL, REFRESH_FAIL),
        "execution",
        "environment",
        (AGENT, "117", "310", "agent not alive"),
        {"host_status": "310", "host_status_zh": "Agent 异常", "host": AGENT, "host_count": "1"},
    ),
    "os_user_not_exist": Example(
        chain(STARTED, ("INFO", result_line(122)), FINISH_FAIL, REFRESH_FAIL),
        "execution",
        "environment",
        (AGENT, "122", "311"),
        {"host_status_zh": "用户名不存在"},
    ),
    "os_user_password_wrong": Example(
        chain(STARTED, ("INFO", result_line(1326)), FINISH_FAIL, REFRESH_FAIL),
        "execution",
        "environment",
        (AGENT, "1326", "312"),
        {"host_status_zh": "用户密码不正确"},
    ),
    "gse_task_timeout": Example(
        chain(STARTED, ("INFO", result_line(120)), FINISH_FAIL, REFRESH_FAIL),
        "execution",
        "environment",
        (AGENT, "120", "303"),
    ),
    "file_source_unreadable": Example(
        chain(STARTED, ("INFO", result_line(104, msg="file not exist")), FINISH_FAIL, REFRESH_FAIL),
        "execution",
        "user",
        ("104", "320", "file not exist"),
    ),
    "file_size_exceeded": Example(
        chain(STARTED, ("INFO", result_line(119)), FINISH_FAIL, REFRESH_FAIL),
        "execution",
        "user",
        ("119", "321"),
    ),
    "file_transfer_error": Example(
        chain(STARTED, ("INFO", result_line(701)), FINISH_FAIL, REFRESH_FAIL),
        "execution",
        "environment",
        ("701", "329"),
    ),
    "gse_task_error": Example(
        chain(STARTED, ("INFO", result_line(105)), FINISH_FAIL, REFRESH_FAIL),
        "execution",
        "third_party",
        (AGENT, "105", "399"),
    ),
    "gse_unknown_error_code": Example(
        chain(STARTED, ("INFO", result_line(999)), FINISH_FAIL, REFRESH_FAIL),
        "execution",
        "third_party",
        (AGENT, "999"),
        {"host_status": "0", "host_status_zh": "未知错误"},
    ),
    "script_exit_nonzero": Example(
        chain(STARTED, ("INFO", result_line(0, exit_code=256)), FINISH_FAIL, REFRESH_FAIL),
        "execution",
        "user",
        (AGENT, "exitCode=256", "104"),
        {"exit_code": "1", "exit_code_raw": "256", "host_status_zh": "脚本返回码非零"},
    ),
    "script_timeout": Example(
        chain(STARTED, ("INFO", result_line(0, status=3)), FINISH_FAIL, REFRESH_FAIL),
        "execution",
        "user",
        (AGENT, "102"),
        {"host_status_zh": "脚本执行超时"},
    ),
    "task_execution_timeout": Example(
        chain(
            STARTED,
            ("WARN", f"[{GSE}]: Task execution timeout! runDuration: 3900123ms, timeout: 3600s"),
            REFRESH_FAIL,
        ),
        "execution",
        "user",
        ("3900", "3600"),
        {"run_duration_s": "3900", "host_status": "15"},
    ),
    "agent_id_mismatch": Example(
        chain(
            STARTED,
            (
                "WARN",
                f"[{GSE}] No execute object task found for executeObjectGseKey 1:{AGENT2}. result: "
                f"ScriptExecuteObjectTaskResult[agentId={AGENT2}, atomicTaskId=0, status=2]",
            ),
            ("WARN", f"[{GSE}]: Execution result log always empty!"),
            REFRESH_FAIL,
        ),
        "result_polling",
        "environment",
        (f"1:{AGENT2}",),
    ),
    "execution_result_always_empty": Example(
        chain(
            STARTED,
            ("INFO", f"[{GSE}]: Start pull gse task result, times: 30"),
            ("INFO", f"[{GSE}] Analyse gse task result, result is empty!"),
            ("WARN", f"[{GSE}]: Execution result log always empty!"),
            REFRESH_FAIL,
        ),
        "result_polling",
        "third_party",
        ("15", S),
    ),
    "result_handle_error": Example(
        chain(
            STARTED,
            (
                "INFO",
                "[BaseBkApiClient] Response|bkApiRequestId=7a1b|method=POST|uri=/api/v2/task/extensions/"
                "get_execute_script_result|success=false|costTime=30001|resp=null|",
            ),
            (
                "ERROR",
                f"[{GSE}]: result handle error.",
                "com.tencent.bk.job.common.esb.exception.BkOpenApiException: null",
            ),
            ("INFO", f"Finish gse task, task:{GSE}, executeResult:9"),
            REFRESH_ABNORMAL,
        ),
        "result_polling",
        "third_party",
        ("/api/v2/task/extensions/get_execute_script_result", "BkOpenApiException"),
    ),
    "result_analyse_error": Example(
        chain(
            (
                "ERROR",
                f"[{GSE}]: analyse gse task result error.",
                "java.lang.IllegalStateException: bad result",
            )
        ),
        "result_polling",
        "system",
        ("java.lang.IllegalStateException: bad result",),
    ),
    "result_handle_lock_failed": Example(
        chain(("ERROR", f"Fail to get result handle lock, lockKey: job:result:handle:{G}")),
        "result_polling",
        "system",
        (f"job:result:handle:{G}",),
    ),
    "job_evicted_during_polling": Example(
        chain(STARTED, ("INFO", f"taskInstance {J} evicted")),
        "result_polling",
        "system",
        (J, "14"),
    ),
    "file_result_object_not_found": Example(
        chain(("ERROR", f"Src file not found, sourceAgentId: {AGENT}, filePath:/data/release/app.tar.gz")),
        "result_polling",
        "system",
        (AGENT, "/data/release/app.tar.gz"),
    ),
    "step_refresh_unexpected_status": Example(
        chain(
            (
                "ERROR",
                f"Refresh step fail because of unexpected gse task status. stepInstanceId: {S}, gseTaskStatus: RUNNING",
            )
        ),
        "result_polling",
        "system",
        (S, "RUNNING"),
    ),
    "step_failed_unexplained": Example(
        chain(STARTED, FINISH_FAIL, REFRESH_FAIL),
        "execution",
        "unknown",
        (S, "FAIL"),
        {"gse_task_status_zh": "执行失败", "execute_result_zh": "失败"},
    ),
    "step_abnormal_state": Example(
        chain(STARTED, REFRESH_ABNORMAL),
        "result_polling",
        "system",
        (S, "ABNORMAL_STATE"),
        {"gse_task_status_zh": "状态异常"},
    ),
    "step_abandoned": Example(
        chain(
            STARTED,
            (
                "INFO",
                f"Refresh step according to gse task status, stepInstanceId: {S}, gseTaskStatus: ABANDONED, batch: 0",
            ),
        ),
        "result_polling",
        "system",
        (S, "ABANDONED"),
    ),
    "callback_whitelist_rejected": Example(
        chain(
            (
                "INFO",
                f'Begin to dispatch job callback event, callback:{{"job_instance_id":{J},"status":3,"step_instances":[]}}',
            ),
            (
                "WARN",
                f"Callback url rejected by whitelist on egress, taskInstanceId={J}, callbackUrl=http://10.1.2.3:8080/job/cb",
            ),
        ),
        "callback",
        "user",
        (J, "http://10.1.2.3:8080/job/cb"),
    ),
    "callback_http_failed": Example(
        chain(
            (
                "INFO",
                f"Handle callback, taskInstanceId: {J}, callbackDTO: JobCallbackDTO(id={J}, "
                "callbackUrl=http://ops.example.com/job/cb, status=4)",
            ),
            (
                "WARN",
                f"Callback using json body failed, use form data to retry. TaskInstanceId={J}, statusCode=500",
            ),
            ("WARN", "Callback using form data failed, statusCode=500"),
        ),
        "callback",
        "user",
        (J, "500", "http://ops.example.com/job/cb"),
    ),
    "callback_url_invalid": Example(
        chain(("WARN", "Invalid callbackUrl: htp:/broken-url")),
        "callback",
        "user",
        ("htp:/broken-url",),
    ),
}
