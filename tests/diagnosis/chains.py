"""Engine log fixtures composed from the exact templates of bk-job.md §1.1, §1.4, §1.6 and §7."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

J = 20026160406  # taskInstanceId
S = 20031265375  # stepInstanceId
G = 30001  # JOB's gse task id
T = "84a2e275a062728b9b54aab16dea4289"
T2 = "9f8db07dd48f9515d284a0c3e0146e14"
AGENT = "020000000052540079809816967513755991"

L_JOB = "c.t.b.j.e.engine.listener.JobListener"
L_STEP = "c.t.b.j.e.engine.listener.StepListener"
L_GSEL = "c.t.b.j.e.e.listener.GseTaskListener"
L_HANDLER = "c.t.b.j.e.e.l.GseStepEventHandler"
L_MGR = "c.t.b.j.e.e.executor.GseTaskManager"
L_START = ".t.b.j.e.e.e.AbstractGseTaskStartCommand"
L_ARH = "c.t.b.j.e.e.r.AbstractResultHandleTask"
L_SRH = "c.t.b.j.e.e.r.ScriptResultHandleTask"
L_RHM = "c.t.b.j.e.e.result.ResultHandleManager"
L_DISP = "b.j.e.e.l.e.TaskExecuteMQEventDispatcher"
L_API = "c.t.b.j.common.esb.sdk.BaseBkApiClient"
L_SVC = "c.t.b.j.e.s.impl.TaskExecuteServiceImpl"


def file_line(
    ts: str,
    level: str,
    msg: str,
    *,
    trace: str = T,
    span: str = "4f786ec86329458a",
    thread: str = "main",
    logger: str = L_JOB,
    app: str = "job-execute",
) -> str:
    """`[%d] %5p [app,trace,span] PID --- [%t] %-40.40logger{39} : %m` (file pattern)."""
    return (
        f"[{ts}] {level:>5} [{app},{trace},{span if trace else ''}] 6 --- [{thread}] {logger:<40.40} : {msg}"
    )


def console_line(
    ts: str,
    level: str,
    msg: str,
    *,
    trace: str = T,
    span: str = "4f786ec86329458a",
    thread: str = "main",
    logger: str = L_JOB,
) -> str:
    """≤3.12 console pattern: no brackets around the date, `[%15.15t]` thread."""
    t = thread[-15:]
    return f"{ts} {level:>5} [job-execute,{trace},{span}] 6 --- [{t:>15}] {logger:<40.40} : {msg}"


def key(execute_count: int = 0, batch: int | None = None, step: int = S, gse: int = G) -> str:
    k = f"Job:{J}-GseTask:{gse}:{step}:{execute_count}"
    return k + (f":{batch}" if batch else "")


def step_event_312(action: int, desc: str, *, source: str = "null", step: int = S) -> str:
    return (
        f"StepEvent[action={action}, actionDesc={desc}, jobInstanceId={J}, stepInstanceId={step}, "
        f"batch=null, source={source}, time=2024-05-30T11:09:00.120456]"
    )


def gse_source(execute_count: int = 0, gse: int = G) -> str:
    return (
        f"EventSource(sourceType=GSE_TASK, jobInstanceId={J}, stepInstanceId={S}, "
        f"executeCount={execute_count}, batch=0, gseTaskId={gse})"
    )


def gse_event_312(execute_count: int = 0, gse: int = G) -> str:
    return (
        f"GseTaskEvent[action=1, actionDesc=START, gseTaskId={gse}, jobInstanceId={J}, stepInstanceId={S}, "
        f"executeCount={execute_count}, batch=0, requestId='3f2c1b0e-1a2b-4c5d-8e9f-0a1b2c3d4e5f', "
        f"source=null, time=2024-05-30T11:09:00.2]"
    )


def result_line(
    execute_count: int = 0,
    *,
    agent: str = AGENT,
    status: int = 5,
    error_code: int = 0,
    error_msg: str = "",
    exit_code: int = 1,
) -> str:
    return (
        f"[{key(execute_count)}]: Analyse execute object task result, result: ScriptExecuteObjectTaskResult["
        f"agentId={agent}, atomicTaskId=0, status={status}, errorCode={error_code}, errorMsg='{error_msg}', "
        f"startTime=1717038541000, endTime=1717038542000, exitCode={exit_code}, tag='', contentLength=42]"
    )


@dataclass
class Chain:
    """Accumulates file-pattern lines with increasing timestamps."""

    start: datetime = datetime(2024, 5, 30, 11, 9, 0, 100000)
    step_ms: int = 7
    lines: list[str] = field(default_factory=list)
    _n: int = 0

    def ts(self) -> str:
        t = self.start + timedelta(milliseconds=self.step_ms * self._n)
        self._n += 1
        return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}"

    def add(self, level: str, msg: str, *, stack: str = "", **kw: str) -> str:
        line = file_line(self.ts(), level, msg, **kw)
        if stack:
            line += "\n" + stack
        self.lines.append(line)
        return line

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def run_prologue(c: Chain, execute_count: int = 0, *, trace: str = T, retry: bool = False) -> None:
    """Job/step start up to the GSE task event (§1.6)."""
    if not retry:
        c.add(
            "INFO",
            f"Start task, taskInstanceId={J}",
            logger=L_SVC,
            thread="http-nio-19802-exec-3",
            trace=trace,
        )
        ev = (
            f"JobEvent[action=1, actionDesc=START, jobInstanceId={J}, eventSource=null, "
            f"time=2024-05-30T11:09:00.101]"
        )
        c.add(
            "INFO",
            f"Begin to dispatch job event, event: {ev}",
            logger=L_DISP,
            thread="http-nio-19802-exec-3",
            trace=trace,
        )
        c.add(
            "INFO",
            f"Handle job event, event: {ev}, duration: 12ms",
            logger=L_JOB,
            thread="task.service.job.execute-1",
            trace=trace,
        )
        sev = step_event_312(1, "START")
    else:
        sev = step_event_312(3, "RETRY_FAIL")
    c.add(
        "INFO",
        f"Begin to dispatch step event, event: {sev}",
        logger=L_DISP,
        thread="task.service.job.execute-1",
        trace=trace,
    )
    c.add(
        "INFO",
        f"Handle step event: {sev}, duration: 8ms",
        logger=L_STEP,
        thread="step.service.job.execute-2",
        trace=trace,
    )
    if retry:
        c.add(
            "INFO",
            f"Retry-fail for step, stepInstanceId={S}",
            logger=L_HANDLER,
            thread="step.service.job.execute-2",
            trace=trace,
        )
    c.add(
        "INFO",
        f"Start step, stepInstanceId={S}",
        logger=L_HANDLER,
        thread="step.service.job.execute-2",
        trace=trace,
    )
    gev = gse_event_312(execute_count)
    c.add(
        "INFO",
        f"Begin to dispatch gse task event, event: {gev}",
        logger=L_DISP,
        thread="step.service.job.execute-2",
        trace=trace,
    )
    c.add(
        "INFO",
        f"Handle gse task event: {gev}, duration: 5ms",
        logger=L_GSEL,
        thread="gse.task.service.job.execute-4",
        trace=trace,
    )


def dispatch_ok(c: Chain, execute_count: int = 0, *, trace: str = T) -> None:
    th = "gse.task.service.job.execute-4"
    c.add(
        "INFO", f"[{key(execute_count)}] Sending task to gse server", logger=L_START, thread=th, trace=trace
    )
    c.add(
        "INFO",
        "[BaseBkApiClient] Request|tenantId=default|method=POST|uri=/api/v2/task/extensions/"
        'async_execute_script|reqStr={"agents":[{"bk_agent_id":"' + AGENT + '"}]}',
        logger=L_API,
        thread=th,
        trace=trace,
    )
    c.add(
        "INFO",
        "[BaseBkApiClient] Response|tenantId=default|bkApiRequestId=6a1f0e2b|method=POST|uri=/api/v2/"
        'task/extensions/async_execute_script|success=true|costTime=35|resp={"code":0,"result":true,'
        '"message":"success","data":{"result":{"task_id":"GSETASK:20240530110900:1"}}}',
        logger=L_API,
        thread=th,
        trace=trace,
    )
    c.add(
        "INFO",
        f"[{key(execute_count)}] Start gse task successfully, gseTaskId: GSETASK:20240530110900:1",
        logger=L_START,
        thread=th,
        trace=trace,
    )


def polling(
    c: Chain,
    execute_count: int = 0,
    *,
    pulls: int = 3,
    trace: str = T,
    results: list[str] | None = None,
    execute_result: int = 2,
) -> None:
    th = "job-execute-result-handle-1"
    c.add(
        "INFO", f"Handle delivered task: ScriptTaskResultHandle-{J}-{S}", logger=L_RHM, thread=th, trace=trace
    )
    for n in range(1, pulls + 1):
        c.add(
            "INFO",
            f"[{key(execute_count)}]: Start pull gse task result, times: {n}",
            logger=L_ARH,
            thread=th,
            trace=trace,
        )
        if n < pulls:
            c.add(
                "INFO",
                f"[{key(execute_count)}] Analyse gse task result -> notFinishedTargetExecuteObjectGseKeys="
                f"[1:{AGENT}], analyseFinishedTargetExecuteObjectGseKeys=[]",
                logger=L_SRH,
                thread=th,
                trace=trace,
            )
    for r in results if results is not None else [result_line(execute_count)]:
        c.add("INFO", r, logger=L_SRH, thread=th, trace=trace)
    c.add(
        "INFO",
        f"[{key(execute_count)}]: Deal target agent finished| executeObjectGseKey=1:{AGENT}| "
        "startTime:1717038541000, endTime:1717038542000, executeObjectTask:{...}",
        logger=L_SRH,
        thread=th,
        trace=trace,
    )
    c.add(
        "INFO",
        f"[{key(execute_count)}] Analyse gse task result -> notFinishedTargetExecuteObjectGseKeys=[], "
        f"analyseFinishedTargetExecuteObjectGseKeys=[1:{AGENT}]",
        logger=L_SRH,
        thread=th,
        trace=trace,
    )
    c.add(
        "INFO",
        f"Finish gse task, task:{key(execute_count)}, executeResult:{execute_result}",
        logger=L_ARH,
        thread=th,
        trace=trace,
    )


def refresh_and_notify(c: Chain, execute_count: int = 0, *, status: str = "FAIL", trace: str = T) -> None:
    sev = step_event_312(14, "REFRESH", source=gse_source(execute_count))
    th = "job-execute-result-handle-1"
    c.add("INFO", f"Begin to dispatch step event, event: {sev}", logger=L_DISP, thread=th, trace=trace)
    c.add(
        "INFO",
        f"Handle step event: {sev}, duration: 9ms",
        logger=L_STEP,
        thread="step.service.job.execute-3",
        trace=trace,
    )
    c.add(
        "INFO",
        f"Refresh step according to gse task status, stepInstanceId: {S}, gseTaskStatus: {status}, batch: 0",
        logger=L_HANDLER,
        thread="step.service.job.execute-3",
        trace=trace,
    )
    jev = (
        f"JobEvent[action=4, actionDesc=REFRESH, jobInstanceId={J}, eventSource=EventSource(sourceType=STEP, "
        f"jobInstanceId={J}, stepInstanceId={S}, executeCount=null, batch=null, gseTaskId=null), "
        "time=2024-05-30T11:09:05.1]"
    )
    c.add(
        "INFO",
        f"Begin to dispatch job event, event: {jev}",
        logger=L_DISP,
        thread="step.service.job.execute-3",
        trace=trace,
    )
    c.add(
        "INFO",
        f"Handle job event, event: {jev}, duration: 7ms",
        logger=L_JOB,
        thread="task.service.job.execute-2",
        trace=trace,
    )
    c.add(
        "INFO",
        'Begin to dispatch notification event:{"operator":"admin","appId":2,"resourceType":1,'
        f'"resourceExecuteStatus":2,"taskInstanceId":{J},"taskInstanceName":"demo","stepName":"run script"}}',
        logger=L_DISP,
        thread="task.service.job.execute-2",
        trace=trace,
    )


def failed_script_chain(pulls: int = 3) -> Chain:
    """§7 scenario 6: script exits 1 (logged as the raw wait status 256)."""
    c = Chain()
    run_prologue(c)
    dispatch_ok(c)
    polling(c, pulls=pulls, results=[result_line(exit_code=256)])
    refresh_and_notify(c)
    return c


GSE_STACK = (
    "com.tencent.bk.job.common.exception.InternalException: Request bk open api error\n"
    "\tat com.tencent.bk.job.common.esb.sdk.BaseBkApiClient.doRequest(BaseBkApiClient.java:210)\n"
    "\tat com.tencent.bk.job.common.gse.v2.GseV2ApiClient.asyncExecuteScript(GseV2ApiClient.java:88)\n"
    "\tat com.tencent.bk.job.execute.engine.executor.ScriptGseTaskStartCommand.startGseTask(X.java:1)\n"
    "\tat com.tencent.bk.job.execute.engine.executor.GseTaskManager.startTask(GseTaskManager.java:120)\n"
    "Caused by: java.net.SocketTimeoutException: Read timed out\n"
    "\tat java.base/java.net.SocketInputStream.socketRead0(Native Method)\n"
    "\t... 42 more"
)
