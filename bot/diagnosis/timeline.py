"""The timeline of one run of a step: each phase ok / warn / fail / missing / skipped, with a note
and its events (`phase_events.py`), timed by the phase's last line.

Usage::

    timeline = build_timeline(records, step_instance_id=S)  # [TimelineEntry(phase=..., status=...), ...]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from bot.core.codes import codes
from bot.core.models import PHASES, PhaseStatus, Stage, TimelineEntry
from bot.diagnosis.extract import ScriptResult, parse_gse_finish, parse_script_result, pull_times
from bot.diagnosis.phase_events import phase_events
from bot.diagnosis.phases import Classification, phase_rules, strip_task_prefix
from bot.diagnosis.records import LogRecord
from bot.diagnosis.runs import RunView, select_run

__all__ = ["assign_phases", "build_timeline", "timeline_for"]

_PHASE_INDEX: dict[str, int] = {p: i for i, p in enumerate(PHASES)}
_CALLBACK = _PHASE_INDEX["callback"]


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
                batch = f"批次 {fin.key.batch} " if fin.key is not None and fin.key.batch is not None else ""
                finishes[fin.task] = (
                    f"{batch}GSE 任务结束 executeResult:{fin.execute_result}（{fin.name} {fin.zh}）"
                )
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

    rules = phase_rules()
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
        events = phase_events(view, idx, phase)
        # the phase's end: monotonic across phases where start times are not (see TimelineEntry.time)
        time = next((r.time_text for r in reversed(recs) if r.time_text), None)
        status: PhaseStatus
        note = ""
        if hard or (soft and not failed_before):
            first = view.records[(hard or soft)[0]]
            status = "fail"
            note = "" if phase == "execution" and extra else f"`{_line(first, 160)}`"
        elif recs:
            done = rules.completion.get(phase)
            templates = {c.template for c in cls}
            if done and not templates.intersection(done) and not later_lines(k) and phase != "callback":
                status = "missing"
                starts = [
                    r for r, c in zip(recs, cls, strict=True) if c.template == rules.expected_first[phase]
                ]
                note = f"未见 `{done[0]}`（已有 `{_line((starts or recs)[-1], 80)}`）"
            elif warns:
                status = "warn"
                note = f"`{_line(view.records[warns[0]], 160)}`"
            else:
                status = "ok"  # its milestones are among the events
        elif phase == "callback":
            status, note = "skipped", "未见通知/回调日志（未配置回调或通知时属正常）"
        elif failed_before:
            status = "skipped"
        elif phase == "parameter_check" and any(has[1:]):
            status, note = "ok", "无参数校验日志（在创建作业的请求中）；后续阶段已执行，视为通过"
        else:
            status = "missing"
            seen = f"（已有 `{_line(last_seen, 80)}`）" if last_seen is not None else "（此前无任何日志）"
            note = f"未见 `{rules.expected_first[phase]}`{seen}"
        if extra and status != "missing":
            note = f"{note}；{extra}" if note else extra
        entries.append(TimelineEntry(phase=phase, status=status, time=time, note=note, events=events))
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
