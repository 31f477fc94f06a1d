"""Example chains for the signature catalog, composed from the exact templates of bk-job.md.

Each example is the decisive part of one failed run (plus the usual lines around it), the stage and
fault side the reference implies, and texts from the lines that the filled report must quote.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.diagnosis.records import LogRecord

J = "20026160406"  # taskInstanceId
S = "20031265375"  # stepInstanceId
G = "30000123"  # JOB gse task id
GSE = f"Job:{J}-GseTask:{G}:{S}:0"
AGENT = "020000000052540079809816967513755991"
AGENT2 = "020000000052540079809816967513755992"
TRACE = "84a2e275a062728b9b54aab16dea4289"
BASE_TIME = datetime(2024, 5, 30, 11, 9, 0)


def rec(
    message: str,
    level: str = "INFO",
    *,
    stack: str = "",
    at: float = 0.0,
    logger: str = "c.t.b.j.e.e.executor.GseTaskManager",
    trace_id: str = TRACE,
) -> LogRecord:
    """A parsed record exactly as the engine would log it (file pattern, §1.1)."""
    when = BASE_TIME + timedelta(seconds=at)
    ts = when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}"
    first = f"[{ts}] {level:>5} [job-execute,{trace_id},4f786ec86329458a] 6 --- [job-execute-1] {logger:<40} : {message}"
    return LogRecord(
        raw=f"{first}\n{stack}" if stack else first,
        message=message,
        parsed=True,
        time=when,
        time_text=ts,
        level=level,
        app="job-execute",
        trace_id=trace_id,
        span_id="4f786ec86329458a",
        pid="6",
        thread="job-execute-1",
        logger=logger,
        stack=stack,
    )


def chain(*lines: tuple[str, str] | tuple[str, str, str]) -> list[LogRecord]:
    """(level, message[, stack]) tuples, one second apart."""
    out = []
    for i, line in enumerate(lines):
        level, message = line[0], line[1]
        stack = line[2] if len(line) > 2 else ""
        out.append(rec(message, level, stack=stack, at=float(i)))
    return out


def result_line(
    error_code: int, exit_code: int = 0, status: int = 5, agent: str = AGENT, msg: str = ""
) -> str:
    return (
        f"[{GSE}]: Analyse execute object task result, result: ScriptExecuteObjectTaskResult[agentId={agent}, "
        f"atomicTaskId=0, status={status}, errorCode={error_code}, errorMsg='{msg}', startTime=1717038540000, "
        f"endTime=1717038541000, exitCode={exit_code}, tag='', contentLength=42]"
    )


def openapi_resp(code: int, message: str) -> str:
    return (
        "request-id: 5f1c0a9e2b7d4c3e8f6a1b2c3d4e5f60|OpenAPI: fast_execute_script|uri: /api/v3/fast_execute_script|"
        f'appCode: ops-tool|username: alice|status: 200|resp: {{"result":false,"code":{code},"message":"{message}",'
        f'"data":null,"job_request_id":"{TRACE}"}}|costTag:normal|cost: 35'
    )


STEP_START = ("INFO", f"Start step, stepInstanceId={S}")
SENDING = ("INFO", f"[{GSE}] Sending task to gse server")
STARTED = ("INFO", f"[{GSE}] Start gse task successfully, gseTaskId: GSETASK:20240530110900:1")
FINISH_FAIL = ("INFO", f"Finish gse task, task:{GSE}, executeResult:2")
REFRESH_FAIL = (
    "INFO",
    f"Refresh step according to gse task status, stepInstanceId: {S}, gseTaskStatus: FAIL, batch: 0",
)
REFRESH_ABNORMAL = (
    "INFO",
    f"Refresh step according to gse task status, stepInstanceId: {S}, gseTaskStatus: ABNORMAL_STATE, batch: 0",
)
SERVICE_EXC = "com.tencent.bk.job.common.exception.ServiceException: null\n\tat com.tencent.bk.job.execute.X.y(X.java:1)"
