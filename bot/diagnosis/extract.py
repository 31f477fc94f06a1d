"""Typed extractors over one engine record's message, and BK-JOB's status/error tables as data.

Every extractor takes a message (or a `LogRecord`) and returns a frozen dataclass or ``None`` when the
line is not of its kind; none raises. The tables follow bk-job.md §1.3 and §2.1-§2.5 and are meant to
be imported by anything that must explain a code without a model (e.g. "状态码 310 是什么意思").

Usage::

    ids = ids_in(record)                     # RecordIds(task=…, step=…, gse_task=…, execute_count=…, …)
    res = parse_script_result(record.message)  # res.host_status == 310, res.host_status_zh == "Agent 异常"
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from bot.diagnosis.records import LogRecord

# =========================================================================== tables

# §2.1 RunStatusEnum (task / step / GSE task status)
RUN_STATUS_NAME: dict[int, str] = {
    1: "BLANK",
    2: "RUNNING",
    3: "SUCCESS",
    4: "FAIL",
    5: "SKIPPED",
    6: "IGNORE_ERROR",
    7: "WAITING_USER",
    8: "TERMINATED",
    9: "ABNORMAL_STATE",
    10: "STOPPING",
    11: "STOP_SUCCESS",
    13: "CONFIRM_TERMINATED",
    14: "ABANDONED",
    15: "ROLLING_WAITING",
}
RUN_STATUS_ZH: dict[int, str] = {
    1: "等待执行",
    2: "正在执行",
    3: "执行成功",
    4: "执行失败",
    5: "跳过",
    6: "忽略错误",
    7: "等待确认",
    8: "手动结束",
    9: "状态异常",
    10: "强制终止中",
    11: "强制终止成功",
    12: "强制终止失败",  # in API docs only, not in the enum
    13: "确认终止",
    14: "被丢弃",
    15: "滚动等待",
}
RUN_STATUS_BY_NAME: dict[str, int] = {name: code for code, name in RUN_STATUS_NAME.items()}
RUN_STATUS_FINAL: frozenset[int] = frozenset({3, 4, 5, 6, 8, 9, 11, 13, 14})
# Statuses that end a job as failed (DESIGN digest: 4 执行失败, 9 状态异常, 14 被丢弃)
RUN_STATUS_FAILED: frozenset[int] = frozenset({4, 9, 14})
TASK_TYPE_ZH: dict[int, str] = {0: "作业执行", 1: "脚本执行", 2: "文件分发"}
STEP_TYPE_ZH: dict[int, str] = {1: "脚本", 2: "文件分发", 3: "人工确认", 4: "SQL"}
LAUNCH_MODE_ZH: dict[int, str] = {1: "页面执行", 2: "API调用", 3: "定时执行"}

# §2.2 ExecuteObjectTaskStatusEnum (per-host status, API field `status` of a host result)
HOST_STATUS_NAME: dict[int, str] = {
    0: "UNKNOWN_ERROR",
    1: "AGENT_ERROR",
    2: "INVALID_EXECUTE_OBJECT",
    3: "LAST_SUCCESS",
    5: "WAITING",
    7: "RUNNING",
    9: "SUCCESS",
    11: "FAILED",
    12: "SUBMIT_FAILED",
    13: "TASK_TIMEOUT",
    15: "LOG_ERROR",
    16: "GSE_SCRIPT_TIMEOUT",
    17: "GSE_FILE_TIMEOUT",
    18: "AGENT_NOT_INSTALLED",
    101: "SCRIPT_FAILED",
    102: "SCRIPT_TIMEOUT",
    103: "SCRIPT_TERMINATE",
    104: "SCRIPT_NOT_ZERO_EXIT_CODE",
    202: "COPYFILE_FAILED",
    203: "COPYFILE_SOURCE_FILE_NOT_EXIST",
    301: "FILE_ERROR_UNCLASSIFIED",
    303: "GSE_TIMEOUT",
    310: "GSE_AGENT_ERROR",
    311: "GSE_USER_ERROR",
    312: "GSE_USER_PWD_ERROR",
    320: "GSE_FILE_ERROR",
    321: "GSE_FILE_SIZE_EXCEED",
    329: "GSE_FILE_TASK_ERROR",
    399: "GSE_TASK_ERROR",
    403: "GSE_TASK_TERMINATE_SUCCESS",
    404: "GSE_TASK_TERMINATE_FAILED",
    500: "UNKNOWN",
}
HOST_STATUS_ZH: dict[int, str] = {
    0: "未知错误",
    1: "Agent 异常",
    2: "无效执行对象",
    3: "上次已成功",
    5: "等待执行",
    7: "正在执行",
    9: "执行成功",
    11: "任务失败",
    12: "任务下发失败",
    13: "任务超时",
    15: "任务日志错误",
    16: "GSE 脚本任务超时",
    17: "GSE 文件任务超时",
    18: "Agent 未安装",
    101: "脚本执行失败",
    102: "脚本执行超时",
    103: "脚本执行被终止",
    104: "脚本返回码非零",
    202: "文件拷贝失败",
    203: "源文件不存在",
    301: "文件任务错误（未分类）",
    303: "执行任务超时",
    310: "Agent 异常",
    311: "用户名不存在",
    312: "用户密码不正确",
    320: "文件获取失败",
    321: "文件超出限制",
    329: "文件传输错误",
    399: "任务执行出错",
    403: "任务强制终止成功",
    404: "任务强制终止失败",
    500: "未知状态",
}
HOST_STATUS_OK: frozenset[int] = frozenset({3, 9})
HOST_STATUS_PENDING: frozenset[int] = frozenset({5, 7})

# §2.3 GSE atomic task status and error_code
GSE_ATOMIC_STATUS_NAME: dict[int, str] = {
    0: "UNSTART",
    1: "RUNNING",
    2: "SUCCESS",
    3: "TIMEOUT",
    4: "DISCARD",
    5: "FAIL",
}
GSE_ERROR_FINISHED = 0
GSE_ERROR_RUNNING = 115
GSE_ERROR_TERMINATE = 126
GSE_ERROR_TO_HOST_STATUS: dict[int, int] = {
    117: 310,
    120: 303,
    122: 311,
    1326: 312,
    119: 321,
    126: 403,
    **dict.fromkeys((104, 123, 127, 705, 706, 708, 709), 320),
    **dict.fromkeys((701, 702, 703, 704, 707, 710), 329),
    **dict.fromkeys((101, 102, 103, 105, 106, 107, 108, 109, 111, 112, 114, 118), 399),
}

# §2.4 GseTaskExecuteResult in `Finish gse task, task:{}, executeResult:{}`
EXECUTE_RESULT: dict[int, str] = {
    1: "SUCCESS",
    2: "FAILED",
    3: "STOP_SUCCESS",
    6: "RUNNING",
    7: "SKIPPED",
    8: "DISCARDED",
    9: "EXCEPTION",
}
EXECUTE_RESULT_ZH: dict[int, str] = {
    1: "成功",
    2: "失败",
    3: "强制终止成功",
    6: "执行中",
    7: "跳过",
    8: "被丢弃",
    9: "异常",
}
EXECUTE_RESULT_TO_RUN_STATUS: dict[int, int] = {1: 3, 2: 4, 3: 11, 6: 2, 7: 5, 8: 14, 9: 9}

# §2.5 API error codes (ESB/APIGW `code`); `{n}` are message arguments
API_ERROR_NAME: dict[int, str] = {
    1210001: "GSE_ERROR",
    1210002: "GSE_API_DATA_ERROR",
    1211001: "CMDB_UNREACHABLE_SERVER",
    1211002: "CMDB_API_DATA_ERROR",
    1216001: "API_ERROR",
    1238001: "PERMISSION_DENIED",
    1240002: "INTERNAL_ERROR",
    1241001: "MISSING_PARAM",
    1241002: "ILLEGAL_PARAM",
    1241010: "ILLEGAL_PARAM_WITH_PARAM_NAME_AND_REASON",
    1243052: "IP_NOT_EXIST_IN_CMDB",
    1243053: "HOST_ID_NOT_EXIST_IN_CMDB",
    1244002: "HOST_INVALID",
    1244003: "ACCOUNT_NOT_EXIST",
    1244004: "ACCOUNT_NO_PERMISSION",
    1244005: "STARTUP_TASK_FAIL",
    1244006: "TASK_INSTANCE_NOT_EXIST",
    1244007: "STEP_INSTANCE_NOT_EXIST",
    1244017: "OBTAIN_HOST_FAIL",
    1244019: "DANGEROUS_SCRIPT_FORBIDDEN_EXECUTION",
    1244020: "TASK_INSTANCE_QUERY_TIME_SPAN_MORE_THAN_30_DAYS",
    1244021: "FILE_TASKS_EXCEEDS_LIMIT",
    1244022: "SCRIPT_TASK_TARGET_SERVER_EXCEEDS_LIMIT",
    1244023: "LOCAL_FILE_NOT_EXIST_IN_BACKEND",
    1244025: "TASK_ABANDONED",
    1244028: "STEP_TARGET_EXECUTE_OBJECT_EMPTY",
    1244029: "STEP_SOURCE_EXECUTE_OBJECT_EMPTY",
    1244030: "EXECUTE_OBJECT_NOT_EXIST",
    1244032: "RUNNING_JOB_EXCEED_RESOURCE_SCOPE_QUOTA_LIMIT",
    1244033: "RUNNING_JOB_EXCEED_APP_QUOTA_LIMIT",
    1244034: "RUNNING_JOB_EXCEED_SYSTEM_QUOTA_LIMIT",
    1244036: "TASK_HISTORY_QUERY_RANGE_TOO_LARGE",
    1244037: "TASK_FILE_SOURCE_HOST_NOT_EXIST",
    1260001: "FILE_SOURCE_NOT_EXIST",
    1260005: "CAN_NOT_FIND_AVAILABLE_FILE_WORKER",
    1260007: "FAIL_TO_REQUEST_FILE_WORKER_START_FILE_SOURCE_DOWNLOAD_TASK",
}
API_ERROR_ZH: dict[int, str] = {
    1210001: "GSE 不可用",
    1210002: "GSE 数据异常：{0}",
    1211001: "CMDB 服务不可用",
    1211002: "CMDB API返回数据异常",
    1216001: "第三方 API 请求错误",
    1238001: "用户({0})权限不足，请前往权限中心确认并申请补充后重试",
    1240002: "内部服务器异常",
    1241001: "请求参数缺失",
    1241002: "请求参数不合法",
    1241010: "请求参数[{0}]不合法，原因：{1}",
    1243052: "IP（含管控区域ID）在 CMDB 中不存在：{0}",
    1243053: "主机ID在 CMDB 中不存在：{0}",
    1244002: "主机无效，请检查源或目标主机是否存在于配置平台的业务[{0}]下；"
    "另外，主机需跨业务执行请联系作业平台管理员将其添加到主机白名单。无效的{1}台主机：[{2}]",
    1244003: "账号[{0}]不存在",
    1244004: "没有账号[{0}]的权限",
    1244005: "启动作业失败",
    1244006: "作业实例不存在",
    1244007: "作业步骤实例不存在",
    1244017: "获取主机失败",
    1244019: "高危脚本，禁止执行",
    1244020: "作业执行历史查询时间范围必须小于30天",
    1244021: "文件任务数量超过限制：{0}",
    1244022: "脚本任务目标服务器数量超过限制：{0}",
    1244023: "本地文件{0}在后台不存在，可能过期被定时清除(默认过期时间为{1}天)，可重新上传后重试",
    1244025: "任务被丢弃",
    1244028: "步骤 [{0}] 的目标执行对象为空",
    1244029: "步骤 [{0}] 的源文件执行对象为空",
    1244030: "作业引用的执行对象不存在。不存在的执行对象个数:{0},执行对象列表[{1}]",
    1244032: "当前执行的作业总量超过业务配额限制",
    1244033: "当前执行的作业总量超过应用配额限制",
    1244034: "当前执行的作业总量超过系统配额限制",
    1244036: "当前业务下任务量较大，允许的复杂查询最大时间范围为：{0}天",
    1244037: "文件源主机[{0}]不存在CMDB中，请检查job-file-worker服务所在K8S节点是否安装当前环境的Agent",
    1260001: "文件源不存在：{0}",
    1260005: "无法匹配到有效接入点，请检查文件源配置",
    1260007: "接入点响应异常：StartFileSourceDownloadTask，详情：{0}",
}
# API gateway level errors (bk-job.md §4); the Chinese is our description, not a platform text.
APIGW_ERROR_NAME: dict[int, str] = {
    1640001: "INVALID_ARGS",
    1640301: "APP_NO_PERMISSION",
    1640401: "API_NOT_FOUND",
    1642902: "RATE_LIMIT_RESTRICTION",
    1642903: "RATE_LIMIT_RESTRICTION",
    1650200: "BAD_GATEWAY",
    1650401: "REQUEST_BACKEND_TIMEOUT",
}
APIGW_ERROR_ZH: dict[int, str] = {
    1640001: "网关参数或认证信息无效（bk_app_code/bk_app_secret 或用户认证）",
    1640301: "应用没有访问该网关资源的权限",
    1640401: "网关 API 不存在",
    1642902: "网关请求频率超限",
    1642903: "网关请求频率超限",
    1650200: "网关后端服务异常（Bad Gateway）",
    1650401: "网关请求后端超时",
}

# §1.3 action / source enums
JOB_ACTION: dict[int, str] = {
    1: "START",
    2: "STOP",
    3: "RESTART",
    4: "REFRESH",
    6: "NEXT_STEP",
    7: "CALLBACK",
}
STEP_ACTION: dict[int, str] = {
    1: "START",
    2: "SKIP",
    3: "RETRY_FAIL",
    4: "STOP",
    5: "IGNORE_ERROR",
    6: "NEXT_STEP",
    7: "RETRY_ALL",
    8: "CONFIRM_TERMINATE",
    9: "CONFIRM_RESTART",
    10: "CONFIRM_CONTINUE",
    11: "CONTINUE_FILE_PUSH",
    12: "CLEAR",
    13: "RESUME",
    14: "REFRESH",
    15: "PREPARE_FILE",
}
GSE_TASK_ACTION: dict[int, str] = {1: "START", 2: "STOP"}
EVENT_SOURCE_TYPE: dict[int, str] = {1: "JOB", 2: "STEP", 3: "GSE_TASK"}
# `resourceExecuteStatus` in the notification JSON
NOTIFY_EXECUTE_STATUS: dict[int, str] = {1: "SUCCESS", 2: "FAIL"}
# §5 GSE 2.0 agent `status_code`; JOB treats an agent as alive only when it is 2
AGENT_STATE_ZH: dict[int, str] = {
    -2: "未找到",
    -1: "查询失败",
    0: "初始安装",
    1: "启动中",
    2: "运行中",
    3: "有损状态",
    4: "繁忙状态",
    5: "升级中",
    6: "停止中",
    7: "解除安装",
}


def run_status_zh(code: int | str | None) -> str | None:
    """Chinese for a RunStatusEnum code or name (``4`` / ``"FAIL"`` → ``执行失败``)."""
    if code is None:
        return None
    if isinstance(code, str):
        c = RUN_STATUS_BY_NAME.get(code.strip().upper())
        if c is None:
            c = int(code) if code.strip().isdigit() else None
        code = c
    return RUN_STATUS_ZH.get(code) if code is not None else None


def api_error_zh(code: int | None, *args: object) -> str | None:
    """Chinese message for a BK-JOB API error or gateway code; placeholders filled when args are given."""
    if code is None:
        return None
    text = API_ERROR_ZH.get(code) or APIGW_ERROR_ZH.get(code)
    if text is None:
        return None
    if args:
        try:
            return text.format(*args)
        except (IndexError, KeyError):
            return text
    return text


def normalise_exit_code(exit_code: int | None) -> int | None:
    """GSE may report the raw wait status: ``256`` means ``exit 1`` (§2.3)."""
    if exit_code is None:
        return None
    return exit_code // 256 if exit_code >= 256 else exit_code


def host_status_for(status: int | None, error_code: int | None, exit_code: int | None) -> int:
    """Per-host status JOB derives from a GSE script result (`ScriptResultHandleTask.analyseAgentResult`)."""
    if error_code not in (None, GSE_ERROR_FINISHED, GSE_ERROR_RUNNING):
        return GSE_ERROR_TO_HOST_STATUS.get(error_code, 0)
    if error_code == GSE_ERROR_RUNNING or status == 1:
        return 7
    if status == 0:
        return 5
    if status == 2:
        return 9
    if status == 3:
        return 102
    if status == 4:
        return 103
    code = normalise_exit_code(exit_code)
    return 104 if code not in (None, 0) else 101


# =========================================================================== helpers


def _int(v: str | None) -> int | None:
    if v is None:
        return None
    v = v.strip().strip("'\"")
    if not v or v == "null":
        return None
    try:
        return int(v)
    except ValueError:
        return None


def _str(v: str | None) -> str | None:
    if v is None:
        return None
    v = v.strip()
    if v == "null":
        return None
    if len(v) >= 2 and v[0] == v[-1] == "'":
        return v[1:-1]
    return v


# Only these characters matter to the toString scanners; jumping between them keeps the scan cheap.
_SPECIAL_RE = re.compile(r"[\[\](){}',]")
_QUOTE_END = frozenset(",)]}")


def _balanced(text: str, start: int) -> int:
    """Index just past the bracket that closes the one at `start` (or len(text) when unclosed).

    A single quote opens a quoted value only right after `=`, and closes only before a separator or a
    closing bracket, so messages such as `errorMsg='it's down'` stay whole.
    """
    depth = 0
    quote = False
    n = len(text)
    for m in _SPECIAL_RE.finditer(text, start):
        ch = m.group()
        i = m.start()
        if quote:
            if ch == "'" and (i + 1 == n or text[i + 1] in _QUOTE_END):
                quote = False
        elif ch == "'":
            quote = i > 0 and text[i - 1] == "="
        elif ch in "[({":
            depth += 1
        elif ch in "])}":
            depth -= 1
            if depth <= 0:
                return i + 1
    return n


def parse_kv(body: str) -> dict[str, str]:
    """Split a Java toString body ``a=1, b='x, y', c=Obj(d=2, e=3)`` into raw string values.

    Nested brackets and single-quoted values are kept whole; the caller converts the values.
    """
    depth = 0
    quote = False
    start = 0
    n = len(body)
    parts: list[str] = []
    for m in _SPECIAL_RE.finditer(body):
        ch = m.group()
        i = m.start()
        if quote:
            if ch == "'" and (i + 1 == n or body[i + 1] in _QUOTE_END):
                quote = False
        elif ch == "'":
            quote = i > 0 and body[i - 1] == "="
        elif ch in "[({":
            depth += 1
        elif ch in "])}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    parts.append(body[start:])
    out: dict[str, str] = {}
    for part in parts:
        k, eq, value = part.partition("=")
        k = k.strip()
        if eq and k:
            out[k] = value
    return out


# =========================================================================== identifiers


@dataclass(frozen=True, slots=True)
class GseTaskKey:
    """`Job:<task>-GseTask:<gse>:<step>:<executeCount>[:<batch>]` (batch only for rolling steps)."""

    task_instance_id: int
    gse_task_id: int
    step_instance_id: int
    execute_count: int
    batch: int | None
    text: str


_GSE_KEY_RE = re.compile(r"Job:(\d+)-GseTask:(\d+):(\d+):(\d+)(?::(\d+))?")


def parse_gse_key(text: str) -> GseTaskKey | None:
    m = _GSE_KEY_RE.search(text)
    if m is None:
        return None
    return GseTaskKey(
        int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4)), _int(m.group(5)), m.group(0)
    )


@dataclass(frozen=True, slots=True)
class RecordIds:
    """Business ids a record carries (any of them may be unknown)."""

    task: int | None = None
    step: int | None = None
    gse_task: int | None = None
    execute_count: int | None = None
    batch: int | None = None
    trace_id: str | None = None

    @property
    def empty(self) -> bool:
        return (
            self.task is None
            and self.step is None
            and self.gse_task is None
            and self.execute_count is None
            and self.batch is None
        )

    def inherit(self, ctx: RecordIds | None) -> RecordIds:
        """Fill unknown ids from a context record (same thread and trace) when they do not conflict.

        A record keeps its own level of detail: a task-only line (job event) takes no step from the
        context, and a step or GSE-task line takes the run ids only from a context of the same step
        or GSE task.
        """
        if ctx is None:
            return self
        if self.empty:
            return replace(ctx, trace_id=self.trace_id or ctx.trace_id)
        if self.task is not None and ctx.task is not None and self.task != ctx.task:
            return self
        task = self.task if self.task is not None else ctx.task
        job_level = self.step is None and self.gse_task is None and self.execute_count is None
        same_step = self.step is None or ctx.step == self.step
        same_gse = (
            self.gse_task is None
            or ctx.gse_task == self.gse_task
            or (ctx.gse_task is None and self.step is not None)
        )
        if job_level or not same_step or not same_gse:
            return replace(self, task=task)
        return RecordIds(
            task=task,
            step=self.step if self.step is not None else ctx.step,
            gse_task=self.gse_task if self.gse_task is not None else ctx.gse_task,
            execute_count=self.execute_count if self.execute_count is not None else ctx.execute_count,
            batch=self.batch if self.batch is not None else ctx.batch,
            trace_id=self.trace_id or ctx.trace_id,
        )


# Id forms other than the GSE task key; the last group of each alternative names it (`m.lastgroup`).
_IDS_RE = re.compile(
    r"(?:Script|File)TaskResultHandle-(?P<hj>\d+)-(?P<hs>\d+)"
    r"|gse_task:(?P<rs>\d+):(?P<rc>\d+):(?P<rb>\d+)"
    r"|job:(?:running:gse:task|result:handle):(?P<lg>\d+)"
    r"|taskInstance (?P<ej>\d+) evicted"
    r"|StepInstance (?P<fs>\d+) already"
    r"|stepInstance: (?P<ps2>\d+)"
    r"|(?:^|step)\[(?P<sk>\d+)(?:_(?P<skc>\d+))?\]"
    r"|\bgseTaskId=(?P<gid>\d+)"
    r"|\b(?P<key>jobInstanceId|taskInstanceId|TaskInstanceId|stepInstanceId|executeCount|batch|job_instance_id)"
    r"\"?\s*[=:]\s*\"?(?P<val>\d+)"
)
_KEY_FIELD = {
    "jobInstanceId": "task",
    "taskInstanceId": "task",
    "TaskInstanceId": "task",
    "job_instance_id": "task",
    "stepInstanceId": "step",
    "executeCount": "execute_count",
    "batch": "batch",
}


def ids_in_text(message: str, trace_id: str | None = None) -> RecordIds:
    """Ids found in a message: GSE task key, result-handle names, event toStrings, `key=value` forms.

    The GSE task key `Job:<task>-GseTask:<gse>:<step>:<n>[:<batch>]` wins over other forms; then the
    named forms (result handle, lock keys, step keys); `key=value` fields come last. GSE's own task id
    (`Start gse task successfully, gseTaskId: X`) is not JOB's gse task id and is not taken.
    """
    found: dict[str, int] = {}
    m = _GSE_KEY_RE.search(message)
    if m is not None:
        found["task"], found["gse_task"] = int(m.group(1)), int(m.group(2))
        found["step"], found["execute_count"] = int(m.group(3)), int(m.group(4))
        if m.group(5) is not None:
            found["batch"] = int(m.group(5))
    if len(found) < 4:
        weak: dict[str, int] = {}  # key=value forms, used only where nothing better was found
        for m in _IDS_RE.finditer(message):
            last = m.lastgroup
            strong: tuple[tuple[str, str | None], ...]
            if last == "val":
                weak.setdefault(_KEY_FIELD[m.group("key")], int(m.group("val")))
                continue
            if last == "gid":
                weak.setdefault("gse_task", int(m.group("gid")))
                continue
            if last == "hs":
                strong = (("task", m.group("hj")), ("step", m.group("hs")))
            elif last == "rb":
                strong = (("step", m.group("rs")), ("execute_count", m.group("rc")), ("batch", m.group("rb")))
            elif last == "lg":
                strong = (("gse_task", m.group("lg")),)
            elif last == "ej":
                strong = (("task", m.group("ej")),)
            elif last == "fs":
                strong = (("step", m.group("fs")),)
            elif last == "ps2":
                strong = (("step", m.group("ps2")),)
            else:  # sk / skc
                strong = (("step", m.group("sk")), ("execute_count", m.group("skc")))
            for fld, value in strong:
                if value is not None:
                    found.setdefault(fld, int(value))
        for fld, v in weak.items():
            found.setdefault(fld, v)
    return RecordIds(
        task=found.get("task"),
        step=found.get("step"),
        gse_task=found.get("gse_task"),
        execute_count=found.get("execute_count"),
        batch=found.get("batch"),
        trace_id=trace_id,
    )


def ids_in(record: LogRecord) -> RecordIds:
    """Ids a record carries itself (first line only; stack frames hold none). See `phases.attribute` for
    ids inherited from the surrounding records of the same thread."""
    return ids_in_text(record.message, record.trace_id)


# =========================================================================== events


@dataclass(frozen=True, slots=True)
class EventSource:
    """`EventSource(sourceType=…, jobInstanceId=…, stepInstanceId=…, executeCount=…, batch=…, gseTaskId=…)`"""

    source_type: str | None
    job_instance_id: int | None
    step_instance_id: int | None
    execute_count: int | None
    batch: int | None
    gse_task_id: int | None


@dataclass(frozen=True, slots=True)
class EngineEvent:
    """A `JobEvent[...]`, `StepEvent[...]` or `GseTaskEvent[...]` toString (3.10 and 3.12+ forms)."""

    kind: str  # JobEvent | StepEvent | GseTaskEvent
    action: int | None
    action_desc: str | None
    job_instance_id: int | None
    step_instance_id: int | None
    gse_task_id: int | None
    execute_count: int | None
    batch: int | None
    request_id: str | None  # GseTaskEvent idempotency UUID, not a trace id
    time: str | None
    source: EventSource | None
    # what the line says about it: dispatch / dispatched / handle / error / unhandled / None
    verb: str | None = None
    duration_ms: int | None = None
    fields: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


_EVENT_RE = re.compile(r"\b(JobEvent|StepEvent|GseTaskEvent)\[")
_SOURCE_RE = re.compile(r"EventSource\(")
_DURATION_RE = re.compile(r"duration: (-?\d+)ms")
_VERBS: tuple[tuple[str, str], ...] = (
    ("Begin to dispatch", "dispatch"),
    ("Dispatch ", "dispatched"),
    ("Handling ", "error"),
    ("Handle ", "handle"),
    ("Unhandled ", "unhandled"),
)


def parse_event_source(text: str) -> EventSource | None:
    m = _SOURCE_RE.search(text)
    if m is None:
        return None
    end = _balanced(text, m.end() - 1)
    kv = parse_kv(text[m.end() : end - 1])
    return EventSource(
        source_type=_str(kv.get("sourceType")),
        job_instance_id=_int(kv.get("jobInstanceId")),
        step_instance_id=_int(kv.get("stepInstanceId")),
        execute_count=_int(kv.get("executeCount")),
        batch=_int(kv.get("batch")),
        gse_task_id=_int(kv.get("gseTaskId")),
    )


def parse_event(message: str) -> EngineEvent | None:
    """The first engine event toString in a message, with what the line does with it."""
    m = _EVENT_RE.search(message)
    if m is None:
        return None
    end = _balanced(message, m.end() - 1)
    kv = parse_kv(message[m.end() : end - 1])
    src_text = kv.get("source") or kv.get("eventSource")
    source = parse_event_source(src_text) if src_text else None
    verb = None
    head = message[: m.start()]
    for prefix, name in _VERBS:
        if head.startswith(prefix):
            verb = name
            break
    d = _DURATION_RE.search(message, end)
    return EngineEvent(
        kind=m.group(1),
        action=_int(kv.get("action")),
        action_desc=_str(kv.get("actionDesc")),
        job_instance_id=_int(kv.get("jobInstanceId")),
        step_instance_id=_int(kv.get("stepInstanceId")),
        gse_task_id=_int(kv.get("gseTaskId")),
        execute_count=_int(kv.get("executeCount")),
        batch=_int(kv.get("batch")),
        request_id=_str(kv.get("requestId")),
        time=_str(kv.get("time")),
        source=source,
        verb=verb,
        duration_ms=int(d.group(1)) if d else None,
        fields=kv,
    )


# =========================================================================== host results


@dataclass(frozen=True, slots=True)
class ScriptResult:
    """`ScriptExecuteObjectTaskResult[...]` from `Analyse execute object task result` (one host)."""

    agent_id: str | None
    atomic_task_id: int | None
    status: int | None  # GSE atomic status (GSE_ATOMIC_STATUS_NAME)
    error_code: int | None  # GSE error_code
    error_msg: str | None
    start_time: str | None
    end_time: str | None
    exit_code: int | None  # as logged (may be a raw wait status, 256 = exit 1)
    tag: str | None
    content_length: int | None
    key: GseTaskKey | None

    @property
    def exit_code_normalised(self) -> int | None:
        return normalise_exit_code(self.exit_code)

    @property
    def host_status(self) -> int:
        return host_status_for(self.status, self.error_code, self.exit_code)

    @property
    def host_status_name(self) -> str:
        return HOST_STATUS_NAME.get(self.host_status, str(self.host_status))

    @property
    def host_status_zh(self) -> str:
        return HOST_STATUS_ZH.get(self.host_status, "未知状态")

    @property
    def gse_status_name(self) -> str | None:
        return GSE_ATOMIC_STATUS_NAME.get(self.status, "ERROR") if self.status is not None else None

    @property
    def ok(self) -> bool:
        return self.host_status in HOST_STATUS_OK

    @property
    def finished(self) -> bool:
        return self.host_status not in HOST_STATUS_PENDING


_SCRIPT_RESULT_RE = re.compile(r"ScriptExecuteObjectTaskResult\[")


def parse_script_result(message: str) -> ScriptResult | None:
    m = _SCRIPT_RESULT_RE.search(message)
    if m is None:
        return None
    end = _balanced(message, m.end() - 1)
    kv = parse_kv(message[m.end() : end - 1])
    return ScriptResult(
        agent_id=_str(kv.get("agentId")),
        atomic_task_id=_int(kv.get("atomicTaskId")),
        status=_int(kv.get("status")),
        error_code=_int(kv.get("errorCode")),
        error_msg=_str(kv.get("errorMsg")),
        start_time=_str(kv.get("startTime")),
        end_time=_str(kv.get("endTime")),
        exit_code=_int(kv.get("exitCode")),
        tag=_str(kv.get("tag")),
        content_length=_int(kv.get("contentLength")),
        key=parse_gse_key(message[: m.start()]),
    )


# =========================================================================== API client lines


@dataclass(frozen=True, slots=True)
class ApiCall:
    """A `[BaseBkApiClient]`/`[AbstractBkApiClient]` line or a `Fail to request ...` line (§1.4)."""

    client: str | None  # BaseBkApiClient | AbstractBkApiClient | None
    kind: str  # request | response | fail | blank | null_data
    method: str | None
    uri: str | None
    tenant_id: str | None = None
    bk_api_request_id: str | None = None
    success: bool | None = None  # from HTTP status only: a 200 with code!=0 still logs success=true
    cost_ms: int | None = None
    code: int | None = None  # `code` of the response envelope
    api_message: str | None = None
    result: bool | None = None
    request_body: str | None = None
    response_body: str | None = None

    @property
    def system(self) -> str:
        """gse / cmdb / iam / ... from the uri (best effort)."""
        uri = (self.uri or "").lower()
        if "/task/extensions/" in uri or "/cluster/" in uri or "gse" in uri:
            return "gse"
        for name in ("cmdb", "iam", "paas", "usermanage", "bklog", "artifactory"):
            if name in uri:
                return name
        if "search_biz_inst_topo" in uri or "list_biz_hosts" in uri or "find_host" in uri:
            return "cmdb"
        return "other"

    @property
    def failed(self) -> bool:
        """The call went wrong: transport failure, HTTP failure, or a non-zero `code` in the reply."""
        if self.kind in ("fail", "blank"):
            return True
        if self.kind != "response":
            return False
        return self.success is False or self.result is False or (self.code is not None and self.code != 0)

    @property
    def error_zh(self) -> str | None:
        return api_error_zh(self.code)


_API_RE = re.compile(
    r"^(?:\[(?P<client>BaseBkApiClient|AbstractBkApiClient)\]\s*)?"
    r"(?P<kind>Request|Response|fail:response code!=0|fail: Response is blank|warn: response data is null"
    r"|Fail to request api|Fail to request CMDB data)\|"
)
_API_KIND = {
    "Request": "request",
    "Response": "response",
    "fail:response code!=0": "response",
    "fail: Response is blank": "blank",
    "warn: response data is null": "null_data",
    "Fail to request api": "fail",
    "Fail to request CMDB data": "fail",
}
_API_HEADER_KEYS = frozenset(
    {"tenantId", "bkApiRequestId", "method", "uri", "success", "costTime", "code", "message"}
)
_API_BODY_KEYS = ("reqStr", "resp", "respStr", "queryParams", "body")
_RESP_CODE_RE = re.compile(r'"code"\s*:\s*"?(-?\d+)')
_RESP_MSG_RE = re.compile(r'"message"\s*:\s*"((?:[^"\\]|\\.)*)"')
_RESP_RESULT_RE = re.compile(r'"result"\s*:\s*(true|false)')


def _key_at(text: str, key: str) -> tuple[int, int] | None:
    """(start of the field, start of its value) for `key=` at the start of text or after a `|`."""
    if text.startswith(key + "="):
        return 0, len(key) + 1
    i = text.find("|" + key + "=")
    return None if i == -1 else (i, i + len(key) + 2)


def _split_api_fields(rest: str) -> tuple[dict[str, str], dict[str, str]]:
    """Header `k=v|k=v` fields and the free-form payload fields (JSON that may contain `|`)."""
    found = sorted((pos[0], pos[1], key) for key in _API_BODY_KEYS if (pos := _key_at(rest, key)) is not None)
    head = rest[: found[0][0]] if found else rest
    header: dict[str, str] = {}
    last: str | None = None
    for seg in head.split("|"):
        k, eq, v = seg.strip().partition("=")
        if eq and k in _API_HEADER_KEYS:
            header[k] = v
            last = k
        elif last is not None and seg:  # a `|` inside the previous value
            header[last] += "|" + seg
    body: dict[str, str] = {}
    for j, (_, value_at, key) in enumerate(found):
        stop = found[j + 1][0] if j + 1 < len(found) else len(rest)
        body[key] = rest[value_at:stop]
    return header, body


def _envelope(text: str | None) -> tuple[int | None, str | None, bool | None]:
    """`code`, `message`, `result` of a JSON reply (regex fallback when the JSON is cut or invalid)."""
    if not text:
        return None, None, None
    text = text.strip()
    if text.endswith("|"):
        text = text[:-1]
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            code, message, res = data.get("code"), data.get("message"), data.get("result")
            return (
                _int(str(code)) if code is not None else None,
                str(message) if message is not None else None,
                res if isinstance(res, bool) else None,
            )
    c = _RESP_CODE_RE.search(text)
    mm = _RESP_MSG_RE.search(text)
    r = _RESP_RESULT_RE.search(text)
    msg: str | None = None
    if mm is not None:
        try:
            msg = str(json.loads('"' + mm.group(1) + '"'))
        except ValueError:
            msg = mm.group(1)
    return (int(c.group(1)) if c else None, msg, (r.group(1) == "true") if r else None)


def parse_api_call(message: str) -> ApiCall | None:
    m = _API_RE.match(message)
    if m is None:
        return None
    header, body = _split_api_fields(message[m.end() :])
    kind = _API_KIND[m.group("kind")]
    resp = body.get("resp") if "resp" in body else body.get("respStr")
    code, api_msg, result = _envelope(resp)
    if "code" in header:
        code = _int(header["code"])
    if "message" in header and api_msg is None:
        api_msg = header["message"]
    success_text = header.get("success")
    success = None if success_text is None else success_text.strip().lower() == "true"
    if m.group("kind") == "fail:response code!=0":
        success = success if success is not None else True
    return ApiCall(
        client=m.group("client"),
        kind=kind,
        method=_str(header.get("method")),
        uri=_str(header.get("uri")),
        tenant_id=_str(header.get("tenantId")),
        bk_api_request_id=_str(header.get("bkApiRequestId")),
        success=success,
        cost_ms=_int(header.get("costTime")),
        code=code,
        api_message=api_msg,
        result=result,
        request_body=body.get("reqStr") if "reqStr" in body else body.get("body"),
        response_body=resp.rstrip("|") if resp is not None else None,
    )


# =========================================================================== GSE task lifecycle


@dataclass(frozen=True, slots=True)
class GseStart:
    """`Start gse task successfully, gseTaskId: X` / `Start gse task fail, response: GseTaskResponse(...)`."""

    ok: bool
    key: GseTaskKey | None
    gse_native_task_id: str | None = None  # GSE's own task id (not JOB's numeric gse task id)
    error_code: int | None = None
    error_message: str | None = None


_GSE_START_OK_RE = re.compile(r"Start gse task successfully, gseTaskId: (\S+)")
_GSE_START_FAIL_RE = re.compile(r"Start gse task fail(?:, response: (.*)|, account is null!)")
_GSE_RESPONSE_RE = re.compile(r"GseTaskResponse\(")


def parse_gse_start(message: str) -> GseStart | None:
    m = _GSE_START_OK_RE.search(message)
    if m is not None:
        return GseStart(ok=True, key=parse_gse_key(message[: m.start()]), gse_native_task_id=m.group(1))
    m = _GSE_START_FAIL_RE.search(message)
    if m is None:
        return None
    key = parse_gse_key(message[: m.start()])
    resp = m.group(1)
    if resp is None:
        return GseStart(ok=False, key=key, error_message="account is empty")
    r = _GSE_RESPONSE_RE.search(resp)
    if r is None:
        return GseStart(ok=False, key=key, error_message=resp)
    kv = parse_kv(resp[r.end() : _balanced(resp, r.end() - 1) - 1])
    return GseStart(
        ok=False,
        key=key,
        gse_native_task_id=_str(kv.get("gseTaskId")),
        error_code=_int(kv.get("errorCode")),
        error_message=_str(kv.get("errorMessage")),
    )


@dataclass(frozen=True, slots=True)
class GseTaskFinish:
    """`Finish gse task, task:<key>, executeResult:N` (§2.4)."""

    task: str
    key: GseTaskKey | None
    execute_result: int

    @property
    def name(self) -> str:
        return EXECUTE_RESULT.get(self.execute_result, str(self.execute_result))

    @property
    def zh(self) -> str:
        return EXECUTE_RESULT_ZH.get(self.execute_result, "未知")

    @property
    def run_status(self) -> int | None:
        return EXECUTE_RESULT_TO_RUN_STATUS.get(self.execute_result)

    @property
    def ok(self) -> bool:
        return self.execute_result in (1, 7)


_FINISH_RE = re.compile(r"Finish gse task, task:(.*?), executeResult:(-?\d+)")


def parse_gse_finish(message: str) -> GseTaskFinish | None:
    m = _FINISH_RE.search(message)
    if m is None:
        return None
    return GseTaskFinish(task=m.group(1), key=parse_gse_key(m.group(1)), execute_result=int(m.group(2)))


@dataclass(frozen=True, slots=True)
class StepRefresh:
    """`Refresh step according to gse task status, …` and the two `Refresh step fail…` lines."""

    step_instance_id: int | None
    gse_task_status: str | None  # enum name, e.g. FAIL / ABNORMAL_STATE
    batch: int | None
    failed_refresh: bool = False  # the refresh itself failed (engine error)
    step_status: str | None = None

    @property
    def run_status(self) -> int | None:
        return RUN_STATUS_BY_NAME.get(self.gse_task_status or "")

    @property
    def zh(self) -> str | None:
        return run_status_zh(self.gse_task_status)

    @property
    def ok(self) -> bool:
        return not self.failed_refresh and self.gse_task_status == "SUCCESS"


_REFRESH_RE = re.compile(
    r"Refresh step according to gse task status, stepInstanceId: (\d+), gseTaskStatus: (\w+), batch: (\w+)"
)
_REFRESH_FAIL1_RE = re.compile(
    r"Refresh step fail because of unexpected gse task status\. stepInstanceId: (\d+), gseTaskStatus: (\w+)"
)
_REFRESH_FAIL2_RE = re.compile(
    r"Refresh step fail, stepInstanceId: (\d+), stepStatus: (\w+), gseTaskStatus: (\w+)"
)


def parse_step_refresh(message: str) -> StepRefresh | None:
    m = _REFRESH_RE.search(message)
    if m is not None:
        return StepRefresh(int(m.group(1)), m.group(2), _int(m.group(3)))
    m = _REFRESH_FAIL1_RE.search(message)
    if m is not None:
        return StepRefresh(int(m.group(1)), m.group(2), None, failed_refresh=True)
    m = _REFRESH_FAIL2_RE.search(message)
    if m is not None:
        return StepRefresh(int(m.group(1)), m.group(3), None, failed_refresh=True, step_status=m.group(2))
    return None


# =========================================================================== notify / callback


def _json_after(message: str, marker: str) -> tuple[dict[str, Any] | None, str | None]:
    i = message.find(marker)
    if i == -1:
        return None, None
    text = message[i + len(marker) :].strip()
    try:
        data = json.loads(text)
    except ValueError:
        return None, text
    return (data if isinstance(data, dict) else None), text


def _json_int(data: dict[str, Any] | None, text: str | None, key: str) -> int | None:
    if data is not None:
        v = data.get(key)
        if isinstance(v, bool) or v is None:
            return None
        return v if isinstance(v, int) else _int(str(v))
    if text:
        m = re.search(r'"' + re.escape(key) + r'"\s*:\s*(-?\d+)', text)
        return int(m.group(1)) if m else None
    return None


@dataclass(frozen=True, slots=True)
class Notification:
    """`Begin to dispatch notification event:{json}` (`resourceExecuteStatus` 1 SUCCESS, 2 FAIL)."""

    resource_execute_status: int | None
    task_instance_id: int | None
    step_name: str | None
    data: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def status_name(self) -> str | None:
        s = self.resource_execute_status
        return NOTIFY_EXECUTE_STATUS.get(s, str(s)) if s is not None else None

    @property
    def failed(self) -> bool:
        return self.resource_execute_status == 2


def parse_notification(message: str) -> Notification | None:
    marker = "Begin to dispatch notification event:"
    if marker not in message:
        return None
    data, text = _json_after(message, marker)
    step_name = data.get("stepName") if data else None
    if step_name is None and text:
        m = re.search(r'"stepName"\s*:\s*"((?:[^"\\]|\\.)*)"', text)
        step_name = m.group(1) if m else None
    return Notification(
        resource_execute_status=_json_int(data, text, "resourceExecuteStatus"),
        task_instance_id=_json_int(data, text, "taskInstanceId"),
        step_name=str(step_name) if step_name is not None else None,
        data=data or {},
    )


@dataclass(frozen=True, slots=True)
class CallbackInfo:
    """A callback line (`CallbackListener`) or the callback dispatch (§1.4)."""

    # dispatch | handle | json_failed | form_failed | result | rejected | invalid_url | request_failed
    kind: str
    task_instance_id: int | None = None
    http_status: int | None = None
    job_status: int | None = None  # `status` in the callback JSON (RunStatusEnum)
    ok: bool | None = None
    url: str | None = None
    step_statuses: dict[int, int] = field(default_factory=dict, compare=False, hash=False)


_CB_JSON_FAILED_RE = re.compile(r"Callback using json body failed.*?TaskInstanceId=(\d+), statusCode=(\d+)")
_CB_FORM_FAILED_RE = re.compile(r"Callback using form data failed, statusCode=(\d+)")
_CB_RESULT_RE = re.compile(
    r"Callback result: taskInstanceId=(\d+), postJsonSuccess=(\w+), httpStatusCode=(-?\d+|null)"
)
_CB_REJECTED_RE = re.compile(
    r"Callback url rejected by whitelist on egress, taskInstanceId=(\d+), callbackUrl=(\S+)"
)
_CB_HANDLE_RE = re.compile(r"Handle callback, taskInstanceId: (\d+)")
_CB_INVALID_RE = re.compile(r"Invalid callbackUrl: ?(\S*)")
_CB_REQFAIL_RE = re.compile(r"Callback request failed, callbackUrl=([^,\s]+)")


def parse_callback(message: str) -> CallbackInfo | None:
    if "allback" not in message:
        return None
    if "Begin to dispatch job callback event, callback:" in message:
        data, text = _json_after(message, "callback:")
        steps: dict[int, int] = {}
        if data is not None:
            for item in data.get("step_instances") or data.get("step_instance_list") or []:
                if isinstance(item, dict):
                    sid, st = _int(str(item.get("step_instance_id"))), _int(str(item.get("status")))
                    if sid is not None and st is not None:
                        steps[sid] = st
        return CallbackInfo(
            kind="dispatch",
            task_instance_id=_json_int(data, text, "job_instance_id"),
            job_status=_json_int(data, text, "status"),
            step_statuses=steps,
        )
    m = _CB_JSON_FAILED_RE.search(message)
    if m:
        return CallbackInfo("json_failed", int(m.group(1)), int(m.group(2)), ok=False)
    m = _CB_FORM_FAILED_RE.search(message)
    if m:
        return CallbackInfo("form_failed", http_status=int(m.group(1)), ok=False)
    m = _CB_RESULT_RE.search(message)
    if m:
        http = _int(m.group(3))
        ok = http is not None and 200 <= http < 300
        return CallbackInfo("result", int(m.group(1)), http, ok=ok)
    m = _CB_REJECTED_RE.search(message)
    if m:
        return CallbackInfo("rejected", int(m.group(1)), ok=False, url=m.group(2))
    m = _CB_HANDLE_RE.search(message)
    if m:
        return CallbackInfo("handle", int(m.group(1)))
    m = _CB_INVALID_RE.search(message)
    if m:
        return CallbackInfo("invalid_url", ok=False, url=m.group(1) or None)
    m = _CB_REQFAIL_RE.search(message)
    if m:
        return CallbackInfo("request_failed", ok=False, url=m.group(1))
    return None


# =========================================================================== misc


_PULL_RE = re.compile(r"Start pull gse task result, times: (\d+)")


def pull_times(message: str) -> int | None:
    """N of `[<key>]: Start pull gse task result, times: N`."""
    m = _PULL_RE.search(message)
    return int(m.group(1)) if m else None


# `code` fields in key=value, JSON or prose forms; only 7-digit BK-JOB / gateway codes count.
_CODE_RE = re.compile(r"""(?:"code"|\bcode|\berrorCode|\berror_code)"?\s*[=:]\s*"?(1[26]\d{5})\b""")
_ANY_CODE_RE = re.compile(r"""(?:"code"|\bcode|\berrorCode|\berror_code)"?\s*[=:]\s*"?(-?\d+)""")


def api_error_codes(text: str) -> list[int]:
    """BK-JOB (12xxxxx) and gateway (16xxxxx) error codes that appear as a `code` in the text, in order."""
    out: list[int] = []
    for m in _CODE_RE.finditer(text):
        c = int(m.group(1))
        if c not in out:
            out.append(c)
    return out


def nonzero_codes(text: str) -> list[int]:
    """Every non-zero `code`/`errorCode`/`error_code` value in the text (any width), in order."""
    out: list[int] = []
    for m in _ANY_CODE_RE.finditer(text):
        c = int(m.group(1))
        if c != 0 and c not in out:
            out.append(c)
    return out
