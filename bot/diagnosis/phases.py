"""Phase and severity of each engine record, the runs of a step, and the timeline of one run.

Classification goes by message template (bk-job.md §1.4, §2.6), never by logger. A record is put in
one of the phases of `bot.core.models.PHASES`, or in none (``phase=None``) when it is a generic chain line
(event dispatch/handling, step refresh, API calls to other systems) whose phase depends on where the
chain was; the timeline then places its warnings and failures by context.

Usage::

    view = select_run(records, step_instance_id=S)          # latest executeCount of step S
    timeline = build_timeline(records, step_instance_id=S)  # [TimelineEntry(phase=..., status=...), ...]
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from bot.core.codes import codes
from bot.core.models import PHASES, PhaseStatus, Stage, TimelineEntry
from bot.diagnosis.extract import (
    RecordIds,
    ScriptResult,
    ids_in,
    parse_api_call,
    parse_callback,
    parse_event,
    parse_gse_finish,
    parse_script_result,
    parse_step_refresh,
    pull_times,
)
from bot.diagnosis.records import LogRecord

__all__ = [
    "SEVERITY_RANK",
    "Classification",
    "RunView",
    "Severity",
    "assign_phases",
    "attribute",
    "build_timeline",
    "classify",
    "latest_run",
    "runs",
    "select_run",
    "strip_task_prefix",
    "timeline_for",
]

Severity = Literal["fail", "warn", "info"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warn": 1, "fail": 2}
_LEVEL_SEVERITY: dict[str, Severity] = {"ERROR": "fail", "FATAL": "fail", "WARN": "warn"}
_PHASE_INDEX: dict[str, int] = {p: i for i, p in enumerate(PHASES)}
_CALLBACK = _PHASE_INDEX["callback"]


@dataclass(frozen=True, slots=True)
class Classification:
    """What a record says about the run.

    `consequence` marks lines that report an outcome decided earlier (`Finish gse task`,
    `Refresh step according to gse task status`): they fail their phase only when no earlier phase
    failed. `floor` is the lowest phase a context-placed line (phase None) can belong to.
    """

    phase: Stage | None
    severity: Severity
    consequence: bool = False
    template: str | None = None  # the matched template prefix; None when classified by level only
    floor: Stage | None = None


_Resolved = tuple[Stage | None, Severity, bool]


@dataclass(frozen=True, slots=True)
class _Template:
    match: str | re.Pattern[str]  # prefix of the message (after a leading `[...]` tag) or a regex
    phase: Stage | None
    severity: Severity
    consequence: bool = False
    floor: Stage | None = None
    resolve: Callable[[str], _Resolved] | None = None
    first_word: str = ""


# --------------------------------------------------------------------------- resolvers


def _api_phase(uri: str | None) -> Stage | None:
    u = uri or ""
    if "async_execute_script" in u or "async_transfer_file" in u:
        return "dispatch"
    if "get_execute_script_result" in u or "get_transfer_file_result" in u:
        return "result_polling"
    if "async_terminate" in u:
        return "execution"
    return None


def _resolve_api(message: str) -> _Resolved:
    call = parse_api_call(message)
    if call is None:
        return None, "info", False
    phase = _api_phase(call.uri)
    if call.failed:
        return phase, "fail", False
    if call.kind == "null_data":
        return phase, "warn", False
    return phase, "info", False


def _resolve_host_result(message: str) -> _Resolved:
    res = parse_script_result(message)
    if res is None or res.ok or not res.finished:
        return "execution", "info", False
    return "execution", "fail", False


def _resolve_finish(message: str) -> _Resolved:
    fin = parse_gse_finish(message)
    if fin is None or fin.execute_result in (1, 6, 7):
        return "result_polling", "info", False
    if fin.execute_result == 3:
        return "result_polling", "warn", True
    return "result_polling", "fail", True


def _resolve_refresh(message: str) -> _Resolved:
    ref = parse_step_refresh(message)
    if ref is None or ref.gse_task_status in ("SUCCESS", "SKIPPED", "IGNORE_ERROR"):
        return None, "info", False
    if ref.gse_task_status in ("STOP_SUCCESS", "RUNNING"):
        return None, "warn", True
    return None, "fail", True


def _resolve_refresh_unsupported(message: str) -> _Resolved:
    return None, ("fail" if "taskStatus=" in message else "warn"), False


def _resolve_callback_result(message: str) -> _Resolved:
    cb = parse_callback(message)
    return "callback", ("info" if cb is None or cb.ok else "fail"), False


_I: Severity = "info"
_W: Severity = "warn"
_F: Severity = "fail"

_TEMPLATES: tuple[_Template, ...] = (
    # ---- parameter check (task creation, TaskExecuteServiceImpl / TaskInstanceExecuteObjectProcessor)
    _Template("Begin to execute fast task", "parameter_check", _I),
    _Template("Create task instance for task", "parameter_check", _I),
    _Template("Save taskInstance successfully", "parameter_check", _I),
    _Template("Start task, taskInstanceId", "parameter_check", _I),
    _Template("Contains hosts not in app", "parameter_check", _W),
    _Template("Found hosts not in target app", "parameter_check", _W),
    _Template("The following hosts are invalid", "parameter_check", _W),
    _Template("The following execute object are not exist", "parameter_check", _W),
    _Template("Contains invalid agent id host", "parameter_check", _W),
    _Template("System account is not exist", "parameter_check", _F),
    _Template("Account is empty!", "parameter_check", _F),
    _Template("DB account is not exist", "parameter_check", _F),
    _Template("ResourceQuotaLimit-", "parameter_check", _F),
    _Template("Script match dangerous rule", "parameter_check", _F),
    _Template("Handle FailedPreconditionException", "parameter_check", _F),
    _Template("Handle NotFoundException", "parameter_check", _F),
    _Template("Handle InvalidParamException", "parameter_check", _F),
    _Template("Handle MissingParameterException", "parameter_check", _F),
    _Template("Handle PermissionDeniedException", "parameter_check", _F),
    _Template("Handle InternalException", "parameter_check", _F),
    _Template("Handle ServiceException", "parameter_check", _F),
    # ---- initialization (job/step start, variables, file preparation)
    _Template("Start step,", "initialization", _I),
    _Template("Start rolling step,", "initialization", _I),
    _Template("Retry-fail for step", "initialization", _I),
    _Template("Retry-all for step", "initialization", _I),
    _Template("Empty batch for rolling step", "initialization", _F),
    _Template("Unsupported step instance run status for starting step", "initialization", _W),
    _Template("Unsupported job instance run status for starting job", "initialization", _F),
    _Template("Compute step input variable", "initialization", _I),
    _Template("Origin script param", "initialization", _I),
    _Template("Parse imported attributes", "initialization", _I),
    _Template("Manual mode for rolling step", "initialization", _I),
    _Template("Begin to prepare source files for step", "initialization", _I),
    _Template("prepareTask finished", "initialization", _I),
    _Template("prepareTask timeout", "initialization", _F),
    _Template("prepareTask exception", "initialization", _F),
    _Template("ThirdFilePrepareTask failed", "initialization", _F),
    _Template("LocalFilePrepareTask failed", "initialization", _F),
    _Template(re.compile(r"File .+ not exists in project"), "initialization", _F, first_word="File"),
    _Template("Fail to download ", "initialization", _F),
    _Template(re.compile(r"batchTaskId=\S* timeout"), "initialization", _F, first_word="batchTaskId"),
    _Template("Fail to startFileSourceBatchDownloadTask", "initialization", _F),
    # ---- dispatch to GSE (GseTaskManager, *GseTaskStartCommand)
    _Template("Sending task to gse server", "dispatch", _I),
    _Template("Start gse task successfully", "dispatch", _I),
    _Template("Gse Task had already started!", "dispatch", _I),
    _Template("Start gse task fail", "dispatch", _F),
    _Template("Start gse task slow", "dispatch", _W),
    _Template("GseTaskManager-> start gse task is slow", "dispatch", _W),
    _Template("Handling gse task event error", "dispatch", _F),
    _Template("Error gse task action", "dispatch", _F),
    _Template("Fail to get running lock", "dispatch", _F),
    _Template("Evict job", "dispatch", _F),
    _Template("Task instance status is stopping", "dispatch", _W),
    _Template("GseTaskManager is not active", "dispatch", _W),
    _Template("No match GseTaskStartCommand", "dispatch", _F),
    _Template("Script gse task target agent is empty", "dispatch", _F),
    _Template("File gse task target agent is empty", "dispatch", _F),
    _Template("File gse task source agent is empty", "dispatch", _F),
    _Template("Some agents have no custom password", "dispatch", _I),
    # ---- execution on hosts
    _Template("Analyse execute object task result", "execution", _I, resolve=_resolve_host_result),
    _Template("Deal target agent finished", "execution", _I),
    _Template("Deal source agent finished", "execution", _I),
    _Template("No execute object task found for executeObjectGseKey", "execution", _W),
    _Template("Unexpected target executeObjectGseKey", "execution", _W),
    _Template("Task execution timeout!", "execution", _F),
    _Template("Gse task contains invalid execute object", "execution", _F),
    _Template("Deal unfinished agent result", "execution", _W),
    _Template("Skip task, set unfinished ip task status to unknown", "execution", _W),
    _Template("Analyse file result", "execution", _I),
    _Template("Analyse Agent task finished!", "execution", _I),
    _Template("AnalyseExecuteResult->", "execution", _I),
    _Template("Stop gse script task", "execution", _W),
    _Template("Stop gse file task", "execution", _W),
    _Template("Terminate gse task failed!", "execution", _W),
    _Template("Terminate gse task response success!", "execution", _I),
    # ---- result polling (ResultHandleManager, *ResultHandleTask)
    _Template("Handle delivered task", "result_polling", _I),
    _Template("Start pull gse task result", "result_polling", _I),
    _Template("Analyse gse task result", "result_polling", _I),
    _Template("InitFileResultHandleTask|", "result_polling", _I),
    _Template("Execution result log always empty!", "result_polling", _F),
    _Template("analyse gse task result error.", "result_polling", _F),
    _Template("result handle error.", "result_polling", _F),
    _Template("Fail to get result handle lock", "result_polling", _F),
    _Template(re.compile(r"taskInstance \d+ evicted"), "result_polling", _F, first_word="taskInstance"),
    _Template("Finish gse task", "result_polling", _I, resolve=_resolve_finish),
    _Template("AbstractResultHandleTask-> handle task result is slow", "result_polling", _W),
    _Template("Src file not found", "result_polling", _F),
    _Template("Src execute object not found", "result_polling", _F),
    _Template("Target execute object not found", "result_polling", _F),
    _Template("ResultHandleTask-onStop start", "result_polling", _W),
    _Template("Receive gse task result handle task resume event", "result_polling", _I),
    _Template("Found not alive tasks", "result_polling", _W),
    # ---- callback / notification
    _Template("Begin to dispatch notification event", "callback", _I),
    _Template("Begin to dispatch job callback event", "callback", _I),
    _Template("Handle callback", "callback", _I),
    _Template("Callback url rejected by whitelist", "callback", _F),
    _Template("Callback using json body failed", "callback", _W),
    _Template("Callback using form data failed", "callback", _F),
    _Template("Callback result:", "callback", _I, resolve=_resolve_callback_result),
    _Template("Invalid callbackUrl", "callback", _F),
    _Template("Callback request failed", "callback", _F),
    _Template("Begin to send msg", "callback", _I),
    # ---- generic chain lines (placed by context)
    _Template("Begin to dispatch", None, _I),
    _Template("Dispatch ", None, _I),
    _Template("Handle job event error", None, _F, floor="initialization"),
    _Template("Handle job event", None, _I),
    _Template("Handle step event", None, _I),
    _Template("Handle gse task event", None, _I),
    _Template("Handling step event error", None, _F, floor="initialization"),
    _Template("Finish step instance safely caught exception", None, _F, floor="initialization"),
    _Template("Unhandled step event", None, _F, floor="initialization"),
    _Template("Invalid job action", None, _F, floor="initialization"),
    _Template("Unsupported job instance run status for stop task", None, _W, floor="initialization"),
    _Template(
        "Unsupported job instance run status for refresh task",
        None,
        _W,
        floor="initialization",
        resolve=_resolve_refresh_unsupported,
    ),
    _Template("Refresh step according to gse task status", None, _I, resolve=_resolve_refresh),
    _Template("Refresh step fail", None, _F, floor="initialization"),
    _Template("Rolling task is not exist", None, _F, floor="initialization"),
    _Template("Ignore error for", None, _I),
    _Template("Skip step", None, _W),
    _Template("Force stop step", None, _W),
    _Template("Next step", None, _I),
    _Template("Continue file push step", None, _I),
    _Template("Clear file step", None, _I),
    _Template(
        re.compile(r"StepInstance \d+ already enter a final state"), None, _I, first_word="StepInstance"
    ),
    # ---- API client lines (phase from the uri: GSE dispatch / result pull, else by context)
    _Template("Request|", None, _I, resolve=_resolve_api),
    _Template("Response|", None, _I, resolve=_resolve_api),
    _Template("fail:response code!=0", None, _F, resolve=_resolve_api),
    _Template("fail: Response is blank", None, _F, resolve=_resolve_api),
    _Template("warn: response data is null", None, _W, resolve=_resolve_api),
    _Template("Fail to request api", None, _F, resolve=_resolve_api),
    _Template("Fail to request CMDB data", None, _F),
    _Template("SlowBkApiRequest", None, _W),
    _Template("Bk Api authorization header is missing", None, _F),
)

_TAG_RE = re.compile(r"^\[[^\]\s]*\]:?\s*")  # any leading tag, for template matching
_TASK_TAG_RE = re.compile(r"^\[(?:Job:[^\]\s]*|\d+(?:_\d+)?)\]:?\s*")  # GSE task key or step key
_WORD_RE = re.compile(r"[A-Za-z]\w*")


def _index_templates() -> dict[str, tuple[_Template, ...]]:
    index: dict[str, list[_Template]] = {}
    for t in _TEMPLATES:
        word = t.first_word
        if not word and isinstance(t.match, str):
            m = _WORD_RE.match(t.match)
            word = m.group(0) if m else ""
        index.setdefault(word, []).append(t)
    return {k: tuple(v) for k, v in index.items()}


_BY_FIRST_WORD: dict[str, tuple[_Template, ...]] = _index_templates()


def strip_task_prefix(message: str) -> str:
    """The message without a leading `[Job:<task>-GseTask:…]:` or `[<step>[_<n>]]:` tag (for display)."""
    m = _TASK_TAG_RE.match(message)
    return message[m.end() :] if m else message


def _find_template(message: str) -> _Template | None:
    m = _TAG_RE.match(message)
    body = message[m.end() :] if m else message
    m = _WORD_RE.match(body)
    if m is None:
        return None
    for t in _BY_FIRST_WORD.get(m.group(0), ()):
        if isinstance(t.match, str):
            if body.startswith(t.match):
                return t
        elif t.match.match(body):
            return t
    return None


def _template_name(t: _Template) -> str:
    return t.match if isinstance(t.match, str) else t.match.pattern


def classify(record: LogRecord) -> Classification:
    """Phase and severity of one record from its message template; unknown lines go by log level."""
    level_sev: Severity = _LEVEL_SEVERITY.get(record.level or "", "info")
    if not record.parsed:
        return Classification(None, level_sev)
    t = _find_template(record.message)
    if t is None:
        return Classification(None, level_sev)
    phase, sev, consequence = t.phase, t.severity, t.consequence
    if t.resolve is not None:
        phase, sev, consequence = t.resolve(record.message)
    if SEVERITY_RANK[level_sev] > SEVERITY_RANK[sev]:
        sev = level_sev
    return Classification(phase, sev, consequence, _template_name(t), t.floor)


# --------------------------------------------------------------------------- ids and runs


def attribute(records: Sequence[LogRecord]) -> list[RecordIds]:
    """Ids of every record, completed from context.

    A parsed record without (some) ids inherits them from the last record of the same thread and
    trace that had ids (e.g. `[BaseBkApiClient]` lines inside a GSE dispatch); an unparsed record
    inherits from the record before it. Records must be in time order.
    """
    ctx: dict[tuple[str | None, str | None], RecordIds] = {}
    out: list[RecordIds] = []
    prev: RecordIds | None = None
    for rec in records:
        own = ids_in(rec)
        if not rec.parsed:
            ids = own.inherit(prev)
        else:
            key = (rec.trace_id, rec.thread)
            c = ctx.get(key)
            if c is not None and own.step is not None and _is_run_boundary(rec.message):
                # a (re)start of the step opens a new run: the thread's old executeCount is stale
                c = RecordIds(task=c.task, step=c.step, trace_id=c.trace_id)
            ids = own.inherit(c)
            if not own.empty:
                ctx[key] = ids
        out.append(ids)
        prev = ids
    return out


_BOUNDARY_PREFIXES = ("Start step,", "Start rolling step,", "Retry-fail for step", "Retry-all for step")
_BOUNDARY_STEP_ACTIONS = frozenset({1, 3, 7})  # START, RETRY_FAIL, RETRY_ALL


def _is_run_boundary(message: str) -> bool:
    if message.startswith(_BOUNDARY_PREFIXES):
        return True
    if "StepEvent[" in message:
        ev = parse_event(message)
        return ev is not None and ev.kind == "StepEvent" and ev.action in _BOUNDARY_STEP_ACTIONS
    return False


def _run_indices(
    records: Sequence[LogRecord], ids: Sequence[RecordIds], step_id: int
) -> dict[int, list[int]]:
    """Indices of the step's records per executeCount.

    Lines of the step without an executeCount (step events, `Start step`, `Refresh step ...`) join the
    run in progress; after a run boundary (start/retry of the step) they wait for the next executeCount
    seen, or, if none follows, form the run after the last one seen.
    """
    out: dict[int, list[int]] = {}
    pending: list[int] = []
    current: int | None = None
    after_boundary = False
    for i, rec in enumerate(records):
        rid = ids[i]
        if rid.step != step_id:
            continue
        if rid.execute_count is not None:
            c = rid.execute_count
            if pending:
                out.setdefault(c, []).extend(pending)
                pending.clear()
            out.setdefault(c, []).append(i)
            current = c
            after_boundary = False
            continue
        if rec.parsed and _is_run_boundary(rec.message):
            after_boundary = True
        if after_boundary or current is None:
            pending.append(i)
        else:
            out[current].append(i)
    if pending:
        c = 0 if current is None else current + 1
        out.setdefault(c, []).extend(pending)
    for v in out.values():
        v.sort()
    return dict(sorted(out.items()))


def runs(records: Sequence[LogRecord], step_id: int) -> dict[int, list[LogRecord]]:
    """The step's records grouped by executeCount (0 = first run, +1 per retry), in time order.

    `records` must be de-duplicated and ordered (`parser.dedupe`, `parser.order`).
    """
    idx = _run_indices(records, attribute(records), step_id)
    return {c: [records[i] for i in v] for c, v in idx.items()}


def latest_run(records: Sequence[LogRecord], step_id: int) -> int | None:
    """The executeCount diagnosed by default: the latest run of the step (None when it has no lines)."""
    r = runs(records, step_id)
    return max(r) if r else None


@dataclass(frozen=True, slots=True)
class RunView:
    """The records of one run of a step: its own lines plus the chain lines around it
    (task creation before the first run, job events, notification/callback after it)."""

    step_instance_id: int | None
    execute_count: int | None
    records: list[LogRecord]
    ids: list[RecordIds]
    classes: list[Classification]
    run_counts: dict[int, int]  # records per executeCount of the step (all runs)
    run_indices: dict[int, list[int]] = field(default_factory=dict)  # into the chain's record list
    task_instance_id: int | None = None
    indices: list[int] = field(default_factory=list)  # chain index of each of `records`

    @property
    def trace_ids(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.records:
            if r.trace_id:
                seen.setdefault(r.trace_id, None)
        return list(seen)


def select_run(
    records: Sequence[LogRecord],
    step_instance_id: int | None,
    execute_count: int | None = None,
    *,
    ids: Sequence[RecordIds] | None = None,
) -> RunView:
    """The run to diagnose: `execute_count` when given, else the latest run of the step.

    Without a step id (or when no line names the step), every record is the run. `records` must be
    de-duplicated and ordered.
    """
    ids = list(ids) if ids is not None else attribute(records)
    run_idx = _run_indices(records, ids, step_instance_id) if step_instance_id is not None else {}
    run_counts = {c: len(v) for c, v in run_idx.items()}
    if not run_idx:
        counts = [i.execute_count for i in ids if i.execute_count is not None]
        chosen = execute_count if execute_count is not None else (max(counts) if counts else None)
        keep = list(range(len(records)))
    else:
        chosen = execute_count if execute_count is not None else max(run_idx)
        if chosen not in run_idx:
            keep = []
        else:
            own = set(run_idx[chosen])
            tasks = Counter(ids[i].task for i in own if ids[i].task is not None)
            task = tasks.most_common(1)[0][0] if tasks else None
            start = 0 if chosen == min(run_idx) else min(own)
            later = [c for c in run_idx if c > chosen]
            end = min(run_idx[min(later)]) if later else len(records)
            keep = [
                i
                for i in range(start, end)
                if i in own or (ids[i].step is None and (task is None or ids[i].task in (None, task)))
            ]
    recs = [records[i] for i in keep]
    kept_ids = [ids[i] for i in keep]
    tasks = Counter(i.task for i in kept_ids if i.task is not None)
    return RunView(
        step_instance_id=step_instance_id,
        execute_count=chosen,
        records=recs,
        ids=kept_ids,
        classes=[classify(r) for r in recs],
        run_counts=run_counts,
        run_indices=run_idx,
        task_instance_id=tasks.most_common(1)[0][0] if tasks else None,
        indices=keep,
    )


# --------------------------------------------------------------------------- timeline


def assign_phases(classes: Sequence[Classification]) -> list[Stage | None]:
    """Phase of each record with context-placed lines resolved.

    A generic line that is a warning or failure goes to the furthest phase reached so far (or, before
    any phased line, the next one), never below its floor; generic info lines stay None.
    """
    n = len(classes)
    nxt: list[int] = [-1] * n
    following = -1
    for i in range(n - 1, -1, -1):
        nxt[i] = following
        p = classes[i].phase
        if p is not None:
            following = _PHASE_INDEX[p]
    out: list[Stage | None] = []
    reached = -1
    for i, c in enumerate(classes):
        if c.phase is not None:
            reached = max(reached, _PHASE_INDEX[c.phase])
            out.append(c.phase)
            continue
        if c.severity == "info":
            out.append(None)
            continue
        base = reached if reached >= 0 else nxt[i]
        floor = _PHASE_INDEX[c.floor] if c.floor is not None else 0
        if base < 0:
            base = _PHASE_INDEX["initialization"]
        out.append(PHASES[min(max(base, floor), _CALLBACK)])
    return out


# what a phase is expected to show first, and (for some) the line that completes it
_EXPECTED_FIRST: dict[str, str] = {
    "parameter_check": "Start task, taskInstanceId=…",
    "initialization": "Start step, stepInstanceId=…",
    "dispatch": "Sending task to gse server",
    "execution": "Analyse execute object task result",
    "result_polling": "Start pull gse task result",
    "callback": "Begin to dispatch notification event",
}
_COMPLETION: dict[str, tuple[str, ...]] = {
    "dispatch": ("Start gse task successfully", "Gse Task had already started!"),
    "result_polling": ("Finish gse task",),
}


# lines that best show a phase went through, most telling first
_MILESTONES: dict[str, tuple[str, ...]] = {
    "parameter_check": ("Start task, taskInstanceId", "Save taskInstance successfully"),
    "initialization": ("Start step,", "Start rolling step,", "Begin to prepare source files for step"),
    "dispatch": (
        "Start gse task successfully",
        "Gse Task had already started!",
        "Sending task to gse server",
    ),
    "result_polling": ("Finish gse task", "Start pull gse task result"),
    "callback": ("Begin to dispatch job callback event", "Begin to dispatch notification event"),
}


def _milestone(phase: str, recs: Sequence[LogRecord], cls: Sequence[Classification]) -> LogRecord:
    for name in _MILESTONES.get(phase, ()):
        for r, c in zip(reversed(recs), reversed(cls), strict=True):
            if c.template == name:
                return r
    return recs[-1]


def _short(text: str, limit: int = 120) -> str:
    text = text.replace("`", "'")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _line(rec: LogRecord, limit: int = 120) -> str:
    return _short(strip_task_prefix(rec.message if rec.parsed else rec.first_line), limit)


def _host_summary(recs: Sequence[LogRecord]) -> str:
    table = codes().host_status
    latest: dict[str, ScriptResult] = {}
    for r in recs:
        res = parse_script_result(r.message)
        if res is not None:
            latest[res.agent_id or r.message] = res
    if not latest:
        return ""
    counts = Counter(res.host_status for res in latest.values())
    parts: list[str] = []
    for code, n in counts.most_common():
        detail = ""
        if code == 104:
            exits = sorted({str(r.exit_code_normalised) for r in latest.values() if r.host_status == code})
            detail = f"（exitCode={'/'.join(exits)}）"
        elif code not in table.ok | table.pending:
            errs = sorted({str(r.error_code) for r in latest.values() if r.host_status == code})
            detail = f"（errorCode={'/'.join(errs)}）"
        parts.append(f"{code} {table.zh.get(code, '未知状态')} ×{n}{detail}")
    return f"主机结果 {len(latest)} 台：" + "，".join(parts)


def _phase_note(phase: str, recs: Sequence[LogRecord]) -> str:
    parts: list[str] = []
    if phase == "execution":
        s = _host_summary(recs)
        if s:
            parts.append(s)
    if phase == "result_polling":
        times = [t for r in recs if (t := pull_times(r.message)) is not None]
        if times:
            parts.append(f"拉取结果 {max(times)} 次")
        finishes: dict[str, str] = {}  # one per GSE task (rolling steps have one per batch)
        for r in recs:
            fin = parse_gse_finish(r.message)
            if fin is not None:
                finishes[fin.task] = f"`{_line(r)}`（{fin.name} {fin.zh}）"
        shown = list(finishes.values())[-3:]
        if len(finishes) > len(shown):
            shown.insert(0, f"共 {len(finishes)} 个 GSE 任务结束，末 {len(shown)} 个：")
        parts.extend(shown)
    note = "；".join(parts)
    return note if len(note) <= 400 else note[:399] + "…"


def timeline_for(view: RunView) -> list[TimelineEntry]:
    """The timeline of a selected run (see `build_timeline`)."""
    phases = assign_phases(view.classes)
    buckets: dict[str, list[int]] = {p: [] for p in PHASES}
    for i, p in enumerate(phases):
        if p is not None:
            buckets[p].append(i)
    has = [bool(buckets[p]) for p in PHASES]
    if not view.records:
        note = "未找到该步骤这次运行的日志"
        return [
            TimelineEntry(phase=p, status="missing" if k == 0 else "skipped", note=note if k == 0 else "")
            for k, p in enumerate(PHASES)
        ]

    def later_lines(k: int) -> bool:
        return any(has[j] for j in range(k + 1, _CALLBACK))

    entries: list[TimelineEntry] = []
    failed_before = False
    last_seen: LogRecord | None = None  # last record of an earlier phase, for "已有 …"
    for k, phase in enumerate(PHASES):
        idx = buckets[phase]
        recs = [view.records[i] for i in idx]
        cls = [view.classes[i] for i in idx]
        hard = [i for i in idx if view.classes[i].severity == "fail" and not view.classes[i].consequence]
        soft = [i for i in idx if view.classes[i].severity == "fail" and view.classes[i].consequence]
        warns = [i for i in idx if view.classes[i].severity == "warn"]
        extra = _phase_note(phase, recs)
        status: PhaseStatus
        time: str | None = None
        note = ""
        if hard or (soft and not failed_before):
            first = view.records[(hard or soft)[0]]
            status, time = "fail", first.time_text
            note = "" if phase == "execution" and extra else f"`{_line(first, 160)}`"
        elif recs:
            time = recs[0].time_text
            done = _COMPLETION.get(phase)
            templates = {c.template for c in cls}
            if done and not templates.intersection(done) and not later_lines(k) and phase != "callback":
                status = "missing"
                starts = [r for r, c in zip(recs, cls, strict=True) if c.template == _EXPECTED_FIRST[phase]]
                note = f"未见 `{done[0]}`（已有 `{_line((starts or recs)[-1], 80)}`）"
            elif warns:
                status = "warn"
                note = f"`{_line(view.records[warns[0]], 160)}`"
            else:
                status = "ok"
                note = "" if extra else f"`{_line(_milestone(phase, recs, cls), 100)}`"
        elif phase == "callback":
            status, note = "skipped", "未见通知/回调日志（未配置回调或通知时属正常）"
        elif failed_before:
            status = "skipped"
        elif phase == "parameter_check" and any(has[1:]):
            status, note = "ok", "无参数校验日志（在创建作业的请求中）；后续阶段已执行，视为通过"
        else:
            status = "missing"
            seen = f"（已有 `{_line(last_seen, 80)}`）" if last_seen is not None else "（此前无任何日志）"
            note = f"未见 `{_EXPECTED_FIRST[phase]}`{seen}"
        if extra and status != "missing":
            note = f"{note}；{extra}" if note else extra
        entries.append(TimelineEntry(phase=phase, status=status, time=time, note=note))
        if status == "fail" or (status == "missing" and not later_lines(k)):
            failed_before = True
        if recs:
            last_seen = recs[-1]
    return entries


def build_timeline(
    records: Sequence[LogRecord], step_instance_id: int | None, execute_count: int | None = None
) -> list[TimelineEntry]:
    """Phase-by-phase timeline of one run (default: the latest executeCount) of a step.

    Status per phase: ``fail`` (a failure line; outcome lines such as `Finish gse task … executeResult:2`
    count only when no earlier phase failed), ``warn``, ``ok``, ``missing`` (expected lines absent — the
    note says which line, e.g. 未见 `Start gse task successfully`（已有 `Sending task to gse server`）)
    or ``skipped`` (after the failure, and callback when there is none). `records` must be de-duplicated
    and ordered.
    """
    return timeline_for(select_run(records, step_instance_id, execute_count))
