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

from bot.core.codes import api_error_zh, codes, host_status_for, normalise_exit_code, run_status_zh
from bot.diagnosis.records import LogRecord

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
        return codes().host_status.name.get(self.host_status, str(self.host_status))

    @property
    def host_status_zh(self) -> str:
        return codes().host_status.zh.get(self.host_status, "未知状态")

    @property
    def gse_status_name(self) -> str | None:
        return codes().gse.atomic_status.name.get(self.status, "ERROR") if self.status is not None else None

    @property
    def ok(self) -> bool:
        return self.host_status in codes().host_status.ok

    @property
    def finished(self) -> bool:
        return self.host_status not in codes().host_status.pending


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
        return codes().execute_result.name.get(self.execute_result, str(self.execute_result))

    @property
    def zh(self) -> str:
        return codes().execute_result.zh.get(self.execute_result, "未知")

    @property
    def run_status(self) -> int | None:
        return codes().execute_result.run_status.get(self.execute_result)

    @property
    def ok(self) -> bool:
        return self.execute_result in codes().execute_result.ok


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
        return codes().run_status.by_name.get(self.gse_task_status or "")

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
        return codes().notify_execute_status.name.get(s, str(s)) if s is not None else None

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
