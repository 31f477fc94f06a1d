"""A failed script step (non-zero exit), as the evidence pipeline would hand it to the model half."""

from __future__ import annotations

from typing import Any

from bot.core.models import DiagnosisReport, Evidence, TimelineEntry

TRACE = "5f0c3a9e8b7d4c2a1e6f0b9d8c7a6e5f"
J, S, G = 20026160406, 20031265375, 88
AGENT = "020000000052540079809816967513755991"
APP_SECRET = "Zk8q-app-secret-3f9a7c1e"
PASSWORD = "Hunter2-db-pass!"
BEARER = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJqb2IifQ.c2lnbmF0dXJl"
APIGW_SECRET = "apigw-inline-secret-77d1"
PEM_BODY = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun"


def _line(ms: int, level: str, thread: str, logger: str, msg: str, span: str = "4f786ec86329458a") -> str:
    return f"[2024-05-30 11:09:{ms // 1000:02d}.{ms % 1000:03d}] {level:>5} [job-execute,{TRACE},{span}] 6 --- [{thread}] {logger:<40} : {msg}"


GSE_KEY = f"Job:{J}-GseTask:{G}:{S}:0"
LINES = [
    _line(
        101,
        "INFO",
        "task.service.job.execute-1",
        "c.t.b.j.e.engine.listener.JobListener",
        f"Handle job event, event: JobEvent[action=1, actionDesc=START, jobInstanceId={J}, eventSource=null, "
        "time=2024-05-30T11:09:00.090], duration: 11ms",
    ),
    _line(
        130,
        "INFO",
        "step.service.job.execute-2",
        "c.t.b.j.e.engine.listener.StepListener",
        f"Start step, stepInstanceId={S}",
    ),
    _line(
        210,
        "INFO",
        "gse.task.service.job.execute-1",
        ".t.b.j.e.e.e.AbstractGseTaskStartCommand",
        f"[{GSE_KEY}] Sending task to gse server",
    ),
    _line(
        245,
        "INFO",
        "gse.task.service.job.execute-1",
        "c.t.b.j.common.esb.sdk.BaseBkApiClient",
        "[BaseBkApiClient] Request|tenantId=default|method=POST|uri=/api/v2/task/extensions/async_execute_script"
        '|reqStr={"bk_username":"admin","agents":[{"agent_id":"' + AGENT + '","user":"root"}]}',
    ),
    _line(
        281,
        "INFO",
        "gse.task.service.job.execute-1",
        ".t.b.j.e.e.e.AbstractGseTaskStartCommand",
        f"[{GSE_KEY}] Start gse task successfully, gseTaskId: GSETASK:20240530110900:1207",
    ),
    _line(
        1320,
        "INFO",
        "result-handle-3",
        "c.t.b.j.e.e.r.ScriptResultHandleTask",
        f"[{GSE_KEY}]: Analyse execute object task result, result: ScriptExecuteObjectTaskResult[agentId={AGENT}, "
        "atomicTaskId=0, status=5, errorCode=0, errorMsg='', startTime=1717038540301, endTime=1717038541299, "
        "exitCode=1, tag='', contentLength=42]",
    ),
    _line(
        1330,
        "INFO",
        "result-handle-3",
        "c.t.b.j.e.e.r.AbstractResultHandleTask",
        f"Finish gse task, task:{GSE_KEY}, executeResult:2",
    ),
    _line(
        1402,
        "INFO",
        "step.service.job.execute-3",
        "c.t.b.j.e.e.l.GseStepEventHandler",
        f"Refresh step according to gse task status, stepInstanceId: {S}, gseTaskStatus: FAIL, batch: 0",
    ),
]
RESULT_LINE = LINES[5]
FINISH_LINE = LINES[6]


def candidate(**overrides: Any) -> DiagnosisReport:
    base: dict[str, Any] = {
        "step_instance_id": S,
        "task_instance_id": J,
        "request_ids": [TRACE],
        "summary": "脚本在 1 台主机上返回非零退出码。",
        "stage": "execution",
        "fault_side": "user",
        "root_cause": "脚本返回码非零（exitCode=1）。",
        "signature": "script_exit_nonzero",
        "evidence": [Evidence(time="2024-05-30 11:09:01.320", text=RESULT_LINE, why="exitCode=1")],
        "timeline": [
            TimelineEntry(phase="initialization", status="ok", time="2024-05-30 11:09:00.130"),
            TimelineEntry(phase="dispatch", status="ok", time="2024-05-30 11:09:00.281"),
            TimelineEntry(
                phase="execution", status="fail", time="2024-05-30 11:09:01.320", note="exitCode=1"
            ),
        ],
        "confidence": 0.85,
        "source": "rules",
        "links": [f"https://job.example.com/biz/2/execute/step/{J}?stepInstanceId={S}"],
        "queries": [f'log: "{S}"'],
    }
    base.update(overrides)
    return DiagnosisReport(**base)


def evidence_text(lines: list[str] | None = None) -> str:
    return "\n".join(LINES if lines is None else lines)


def model_answer(**overrides: Any) -> dict[str, Any]:
    """A well-formed answer that quotes the result line by its message part only."""
    msg = RESULT_LINE.split(" : ", 1)[1]
    base: dict[str, Any] = {
        "summary": f"步骤 {S} 在 1 台主机上执行失败：用户脚本返回码为 1。",
        "stage": "execution",
        "fault_side": "user",
        "root_cause": "用户脚本以退出码 1 结束，GSE 正常返回结果，属于用户脚本问题。",
        "evidence": [
            {"time": "2024-05-30 11:09:01.320", "text": msg, "why": "exitCode=1，errorCode=0：脚本自身失败"},
            {
                "time": None,
                "text": f"Finish gse task, task:{GSE_KEY}, executeResult:2",
                "why": "GSE 任务以失败结束",
            },
        ],
        "actions": {
            "immediate": ["查看主机执行日志中的脚本输出"],
            "root_fix": ["修复脚本"],
            "improvements": [],
        },
        "prevention": ["脚本显式处理错误并返回有意义的退出码"],
        "missing_info": [],
        "confidence": 0.9,
    }
    base.update(overrides)
    return base
