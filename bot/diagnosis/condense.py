"""Condense a step's log chain into evidence for one model call, within a token budget.

`condense` picks the run to diagnose (latest executeCount unless told), builds its timeline, keeps the
decisive records whole (`key_lines`), folds repetitive lines into counted groups and renders `text`.
When the text would exceed the budget it drops, in this order: generic info chain lines, other info
lines (farthest from a key line first), collapsed groups, stack frames beyond the first two of a trace;
a backfill pass then restores what still fits, most valuable first. A key line is never cut; if key
lines alone exceed the budget, repeated key lines of one kind keep their first two and last instance,
and what still does not fit is reported with ``over_budget=True`` rather than cut.

Tokens are estimated conservatively (`estimate_tokens`: 3 ASCII chars or 1 CJK char per token).

Usage::

    c = condense(records, step_instance_id=S, token_budget=6000)
    prompt_evidence, timeline, earlier = c.text, c.timeline, c.earlier_runs
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bot.core.codes import codes, run_status_zh
from bot.core.models import PHASE_STATUS_ICON, STAGE_ZH, RunSpan, TimelineEntry
from bot.diagnosis.extract import (
    nonzero_codes,
    parse_callback,
    parse_gse_finish,
    parse_notification,
    parse_script_result,
    parse_step_refresh,
    pull_times,
)
from bot.diagnosis.parser import dedupe, order
from bot.diagnosis.phase_events import run_span
from bot.diagnosis.phases import Classification, classify, strip_task_prefix
from bot.diagnosis.records import LogRecord
from bot.diagnosis.runs import RunView, attribute, select_run
from bot.diagnosis.timeline import assign_phases, timeline_for

__all__ = ["CollapsedGroup", "Condensed", "RunSummary", "condense", "estimate_tokens"]

COLLAPSE_MIN = 3  # a template seen this often among non-key lines becomes one counted line
KEY_REPEAT_KEEP = 3  # repeated key lines of one kind keep first 2 + last 1 when over budget
MAX_INFO_LINE = 400  # non-key lines are shortened to this many characters
STACK_KEEP_FRAMES = 2

_DIGITS_RE = re.compile(r"\d+")


def _char_cost(text: str) -> tuple[int, int]:
    """(ASCII chars, other chars)."""
    if text.isascii():
        return len(text), 0
    other = sum(1 for ch in text if ord(ch) > 127)
    return len(text) - other, other


def _tokens(ascii_chars: int, other_chars: int) -> int:
    # Conservative: ~3 ASCII chars per token (log lines are id- and hex-heavy), 1 token per CJK char.
    return math.ceil(ascii_chars / 3 + other_chars)


def estimate_tokens(text: str) -> int:
    """Conservative token estimate (ASCII ≈ 3 chars/token, CJK and other non-ASCII ≈ 1 char/token)."""
    return _tokens(*_char_cost(text))


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One executeCount of the step."""

    execute_count: int
    records: int
    first_time: str | None
    last_time: str | None
    outcome: str | None  # RunStatus name from the last refresh/finish line, e.g. FAIL
    first_error: str | None
    diagnosed: bool
    line: str  # one line in Chinese, for the report's earlier_runs


@dataclass(frozen=True, slots=True)
class CollapsedGroup:
    """Repeated non-key lines of one template (numbers ignored), shown as one counted line."""

    template: str
    count: int
    first: LogRecord
    last: LogRecord
    text: str  # e.g. "×37 [Job:…]: Start pull gse task result (times 1..37)"


@dataclass(frozen=True, slots=True)
class Condensed:
    step_instance_id: int | None
    execute_count: int | None
    task_instance_id: int | None
    request_ids: list[str]  # traceIds of the diagnosed run, in order of appearance
    runs: list[RunSummary]
    timeline: list[TimelineEntry]
    key_lines: list[LogRecord]  # every decisive record of the run, whole, in time order
    collapsed: list[CollapsedGroup]
    counts: dict[str, dict[str, int]]
    text: str
    tokens: int
    over_budget: bool  # key lines alone did not fit the budget (they were kept whole anyway)
    records: list[LogRecord] = field(default_factory=list)  # the diagnosed run's records (time order)
    span: RunSpan | None = None  # first → last line of the diagnosed run

    @property
    def earlier_runs(self) -> list[str]:
        return [r.line for r in self.runs if not r.diagnosed]


# --------------------------------------------------------------------------- key lines


def _is_key(rec: LogRecord, cls: Classification) -> bool:
    if cls.severity != "info" or rec.stack:
        return True
    if not rec.parsed:
        return False
    msg = rec.message
    tpl = cls.template
    if tpl == "Analyse execute object task result":
        return True
    if tpl == "Finish gse task":
        fin = parse_gse_finish(msg)
        return fin is not None and fin.execute_result != 1
    if tpl == "Refresh step according to gse task status":
        ref = parse_step_refresh(msg)
        return ref is not None and not ref.ok
    if tpl == "Begin to dispatch notification event":
        note = parse_notification(msg)
        return note is not None and note.failed
    if tpl == "Begin to dispatch job callback event":
        cb = parse_callback(msg)
        return cb is not None and cb.job_status in codes().run_status.failed
    if "ode" in msg and nonzero_codes(msg):
        return True
    return False


def _kind_key(rec: LogRecord) -> str:
    return _DIGITS_RE.sub("#", strip_task_prefix(rec.message if rec.parsed else rec.first_line))[:200]


# --------------------------------------------------------------------------- runs summary


def _run_summary(
    c: int, recs: Sequence[LogRecord], classes: Sequence[Classification | None], diagnosed: bool
) -> RunSummary:
    outcome: str | None = None
    first_error: str | None = None
    for r, known in zip(recs, classes, strict=True):
        if not r.parsed:
            continue
        ref = parse_step_refresh(r.message)
        if ref is not None and ref.gse_task_status:
            outcome = ref.gse_task_status
        elif (fin := parse_gse_finish(r.message)) is not None and outcome is None:
            outcome = {1: "SUCCESS", 2: "FAIL", 3: "STOP_SUCCESS", 8: "ABANDONED", 9: "ABNORMAL_STATE"}.get(
                fin.execute_result
            )
        if first_error is None:
            cls = known or classify(r)
            if cls.severity == "fail" and not cls.consequence:
                res = parse_script_result(r.message)
                if res is not None:
                    first_error = (
                        f"主机 {res.agent_id} {res.host_status} {res.host_status_zh}"
                        f"（exitCode={res.exit_code_normalised}, errorCode={res.error_code}）"
                    )
                else:
                    first_error = strip_task_prefix(r.message)
    times = [r.time_text for r in recs if r.time_text]
    first, last = (times[0], times[-1]) if times else (None, None)
    parts = [f"executeCount={c}：{first or '?'} – {last or '?'}，{len(recs)} 条日志"]
    if outcome:
        parts.append(f"结果 {outcome}（{run_status_zh(outcome) or outcome}）")
    else:
        parts.append("结果未知")
    if first_error:
        err = first_error if len(first_error) <= 160 else first_error[:159] + "…"
        parts.append(f"首个错误：{err}")
    if diagnosed:
        parts.append("本次诊断")
    return RunSummary(c, len(recs), first, last, outcome, first_error, diagnosed, "；".join(parts))


# --------------------------------------------------------------------------- rendering


@dataclass(slots=True)
class _Item:
    pos: int  # record index in the run (ordering)
    sub: int  # 0 first line, 1 stack
    tier: int  # drop order; _NEVER is never dropped
    lines: list[str]  # rendered when kept
    cost: tuple[int, int]
    distance: int = 0  # records to the nearest key record (farther lines are dropped first)
    short: list[str] = field(default_factory=list)  # rendered when dropped
    short_cost: tuple[int, int] = (0, 0)
    omitted: int = 0  # lines that dropping removes (for the note)
    dropped: bool = False


_T_CHAIN, _T_INFO, _T_GROUP, _T_STACK, _NEVER = 0, 1, 2, 3, 9


def _cost(lines: Iterable[str]) -> tuple[int, int]:
    a = o = 0
    for line in lines:
        x, y = _char_cost(line)
        a += x + 1  # newline
        o += y
    return a, o


def _stack_item(pos: int, stack: str) -> _Item:
    """The stack as one item; dropping it keeps the exception line, the first frames after it and every
    `Caused by:` line, in their original order, with a placeholder for each gap."""
    lines = stack.split("\n")
    short: list[str] = []
    gap = omitted = 0
    for i, line in enumerate(lines):
        s = line.lstrip()
        keep = (
            i == 0
            or s.startswith(("Caused by:", "Suppressed:"))
            or (i <= STACK_KEEP_FRAMES and s.startswith("at "))
        )
        if not keep:
            gap += 1
            continue
        if gap:
            short.append(f"\t... 省略 {gap} 行堆栈")
            omitted, gap = omitted + gap, 0
        short.append(line)
    if gap:
        short.append(f"\t... 省略 {gap} 行堆栈")
        omitted += gap
    if not omitted:
        return _Item(pos, 1, _NEVER, lines, _cost(lines))
    return _Item(pos, 1, _T_STACK, lines, _cost(lines), short=short, short_cost=_cost(short), omitted=omitted)


def _time_fmt(rec: LogRecord, same_day: bool) -> str:
    t = rec.time_text
    if t is None:
        return ""
    return t[11:] if same_day else t


def _render_record(rec: LogRecord, alias: dict[str, str], same_day: bool, key: bool) -> str:
    mark = "*" if key else " "
    if not rec.parsed:
        return f"{mark} {rec.first_line}"
    tid = alias.get(rec.trace_id or "", "-")
    return f"{mark} {_time_fmt(rec, same_day)} {rec.level or '?':<5} {tid} {rec.message}"


def _shorten(line: str, limit: int) -> str:
    return line if len(line) <= limit else f"{line[:limit]}…(+{len(line) - limit} 字符)"


def _group_text(recs: Sequence[LogRecord]) -> str:
    first, last = recs[0], recs[-1]
    msg = first.message if first.parsed else first.first_line
    times = [t for r in recs if (t := pull_times(r.message)) is not None]
    if times:
        i = msg.find(", times:")
        base = msg[:i] if i != -1 else msg
        return f"×{len(recs)} {base} (times {min(times)}..{max(times)})"
    last_msg = last.message if last.parsed else last.first_line
    text = f"×{len(recs)} {msg}"
    if last_msg != msg:
        text += f"（末条：{last_msg}）"
    return _shorten(text, MAX_INFO_LINE)


def _distances(n: int, key_pos: Sequence[int]) -> list[int]:
    """Distance (in records) from each position to the nearest key record."""
    big = n + 1
    dist = [big] * n
    last = -big
    keys = set(key_pos)
    for i in range(n):
        if i in keys:
            last = i
        dist[i] = i - last
    last = 2 * big
    for i in range(n - 1, -1, -1):
        if i in keys:
            last = i
        dist[i] = min(dist[i], last - i)
    return dist


def condense(
    records: Sequence[LogRecord],
    *,
    step_instance_id: int | None,
    execute_count: int | None = None,
    token_budget: int = 6000,
) -> Condensed:
    """Condensed evidence for the run `execute_count` (default: latest) of step `step_instance_id`.

    `records` may come straight from the collector: they are de-duplicated and ordered here (cheap and
    idempotent). `token_budget` bounds `text` (see `estimate_tokens`) unless key lines alone exceed it.
    """
    chain = order(dedupe(records))
    ids = attribute(chain)
    view: RunView = select_run(chain, step_instance_id, execute_count, ids=ids)
    recs, classes = view.records, view.classes
    n = len(recs)
    timeline = timeline_for(view)
    phases = assign_phases(classes)

    # runs summary
    summaries: list[RunSummary] = []
    known = dict(zip(view.indices, classes, strict=True))
    for c, idx in view.run_indices.items():
        run_recs = [chain[i] for i in idx]
        summaries.append(_run_summary(c, run_recs, [known.get(i) for i in idx], c == view.execute_count))

    # key lines and collapsible repeats
    is_key = [_is_key(r, c) for r, c in zip(recs, classes, strict=True)]
    key_pos = [i for i in range(n) if is_key[i]]
    kinds: dict[str, list[int]] = {}
    for i in range(n):
        if not is_key[i]:
            kinds.setdefault(_kind_key(recs[i]), []).append(i)
    group_of: dict[int, list[int]] = {}  # first member -> members
    grouped: set[int] = set()
    for members in kinds.values():
        if len(members) >= COLLAPSE_MIN:
            group_of[members[0]] = members
            grouped.update(members)
    collapsed = [
        CollapsedGroup(
            template=_kind_key(recs[m[0]]),
            count=len(m),
            first=recs[m[0]],
            last=recs[m[-1]],
            text=_group_text([recs[i] for i in m]),
        )
        for _, m in sorted(group_of.items())
    ]

    # counts
    level = Counter(r.level or "UNPARSED" for r in recs)
    phase_count = Counter[str](p or "chain" for p in phases)
    sev = Counter[str](c.severity for c in classes)
    counts: dict[str, dict[str, int]] = {
        "level": dict(level),
        "phase": dict(phase_count),
        "severity": dict(sev),
        "total": {
            "chain": len(chain),
            "run": n,
            "key": len(key_pos),
            "collapsed": sum(g.count for g in collapsed),
        },
    }

    # rendering context
    dates = {r.time_text[:10] for r in recs if r.time_text}
    same_day = len(dates) <= 1
    alias = {t: f"T{i + 1}" for i, t in enumerate(view.trace_ids)}

    header = _header(view, summaries, timeline, counts, alias, dates, same_day)
    header_cost = _cost(header)

    dist = _distances(n, key_pos)
    items: list[_Item] = []
    for i in range(n):
        rec = recs[i]
        if is_key[i]:
            line = _render_record(rec, alias, same_day, True)
            items.append(_Item(i, 0, _NEVER, [line], _cost([line])))
            if rec.stack:
                items.append(_stack_item(i, rec.stack))
        elif i in group_of:
            members = group_of[i]
            g = _group_text([recs[j] for j in members])
            t0, t1 = _time_fmt(recs[members[0]], same_day), _time_fmt(recs[members[-1]], same_day)
            line = f"  {t0}–{t1} {recs[i].level or '?':<5} {alias.get(recs[i].trace_id or '', '-')} {g}"
            items.append(_Item(i, 0, _T_GROUP, [line], _cost([line]), dist[i], omitted=1))
        elif i not in grouped:
            line = _shorten(_render_record(rec, alias, same_day, False), MAX_INFO_LINE)
            tier = _T_CHAIN if phases[i] is None else _T_INFO
            items.append(_Item(i, 0, tier, [line], _cost([line]), dist[i], omitted=1))

    reserve = _cost(["（已省略：000000 条普通日志，000000 组重复日志，000000 行堆栈；重复关键行 000000 条）"])
    fixed = (header_cost[0] + reserve[0], header_cost[1] + reserve[1])
    items, omitted_key = _fit(items, fixed, token_budget, recs, key_pos, alias, same_day)

    body: list[str] = []
    dropped_lines = dropped_groups = dropped_frames = 0
    for it in sorted(items, key=lambda it: (it.pos, it.sub)):
        if it.dropped:
            body.extend(it.short)
            if it.tier == _T_STACK:
                dropped_frames += it.omitted
            elif it.tier == _T_GROUP:
                dropped_groups += 1
            else:
                dropped_lines += 1
            continue
        body.extend(it.lines)
    tail_note: list[str] = []
    if dropped_lines or dropped_groups or dropped_frames or omitted_key:
        tail_note.append(
            f"（已省略：{dropped_lines} 条普通日志，{dropped_groups} 组重复日志，{dropped_frames} 行堆栈；"
            f"重复关键行 {omitted_key} 条）"
        )
    text = "\n".join([*header, *body, *tail_note])
    tokens = estimate_tokens(text)
    return Condensed(
        step_instance_id=step_instance_id,
        execute_count=view.execute_count,
        task_instance_id=view.task_instance_id,
        request_ids=view.trace_ids,
        runs=summaries,
        timeline=timeline,
        key_lines=[recs[i] for i in key_pos],
        collapsed=collapsed,
        counts=counts,
        text=text,
        tokens=tokens,
        over_budget=tokens > token_budget,
        records=list(recs),
        span=run_span(view),
    )


def _fit(
    items: list[_Item],
    fixed: tuple[int, int],
    budget: int,
    recs: Sequence[LogRecord],
    key_pos: Sequence[int],
    alias: dict[str, str],
    same_day: bool,
) -> tuple[list[_Item], int]:
    """Mark items dropped until the text fits; returns the items and the number of folded key lines.

    Drop order: generic info lines, other info lines (farthest from a key line first), collapsed groups,
    then stack tails (largest first). A backfill pass then restores dropped items, most valuable first,
    wherever they still fit. Accounting is incremental, so this is linear after one sort.
    """
    a = fixed[0] + sum(it.cost[0] for it in items)
    o = fixed[1] + sum(it.cost[1] for it in items)
    if _tokens(a, o) <= budget:
        return items, 0
    omitted_key = 0
    floor_a = fixed[0] + sum(it.cost[0] if it.tier == _NEVER else it.short_cost[0] for it in items)
    floor_o = fixed[1] + sum(it.cost[1] if it.tier == _NEVER else it.short_cost[1] for it in items)
    if _tokens(floor_a, floor_o) > budget:
        items, omitted_key = _fold_key_repeats(items, recs, key_pos, alias, same_day)
        a = fixed[0] + sum(it.cost[0] for it in items)
        o = fixed[1] + sum(it.cost[1] for it in items)
    droppable = sorted(
        (it for it in items if it.tier != _NEVER),
        key=lambda it: (it.tier, -it.cost[0] if it.tier == _T_STACK else -it.distance, it.pos),
    )
    dropped: list[_Item] = []
    for it in droppable:
        if _tokens(a, o) <= budget:
            break
        it.dropped = True
        dropped.append(it)
        a += it.short_cost[0] - it.cost[0]
        o += it.short_cost[1] - it.cost[1]
    for it in reversed(dropped):
        na = a + it.cost[0] - it.short_cost[0]
        no = o + it.cost[1] - it.short_cost[1]
        if _tokens(na, no) <= budget:
            it.dropped = False
            a, o = na, no
    return items, omitted_key


def _fold_key_repeats(
    items: list[_Item],
    recs: Sequence[LogRecord],
    key_pos: Sequence[int],
    alias: dict[str, str],
    same_day: bool,
) -> tuple[list[_Item], int]:
    """Keep the first two and the last of each kind of repeated key line; one counted line for the rest."""
    kinds: dict[str, list[int]] = {}
    for i in key_pos:
        kinds.setdefault(_kind_key(recs[i]), []).append(i)
    omit: set[int] = set()
    notes: list[_Item] = []
    for members in kinds.values():
        if len(members) <= KEY_REPEAT_KEEP:
            continue
        middle = members[2:-1]
        omit.update(middle)
        rec = recs[middle[0]]
        line = (
            f"* … 同类关键行另有 {len(middle)} 条（{_time_fmt(rec, same_day)} – "
            f"{_time_fmt(recs[middle[-1]], same_day)}），示例见上下行"
        )
        notes.append(_Item(middle[0], 0, _NEVER, [line], _cost([line])))
    kept = [it for it in items if it.pos not in omit]
    return kept + notes, len(omit)


def _header(
    view: RunView,
    summaries: Sequence[RunSummary],
    timeline: Sequence[TimelineEntry],
    counts: dict[str, dict[str, int]],
    alias: dict[str, str],
    dates: set[str],
    same_day: bool,
) -> list[str]:
    ids = [f"stepInstanceId={view.step_instance_id}"]
    if view.execute_count is not None:
        ids.append(f"executeCount={view.execute_count}")
    if view.task_instance_id is not None:
        ids.append(f"taskInstanceId={view.task_instance_id}")
    out = ["# 证据 " + " ".join(ids)]
    if same_day and dates:
        out.append(f"日期 {next(iter(dates))}（下列时间为引擎本地时间）")
    if alias:
        out.append("traceId：" + "，".join(f"{a}={t}" for t, a in alias.items()))
    if summaries:
        out.append("## 运行")
        out.extend(f"- {s.line}" for s in summaries)
    out.append("## 时间线（各阶段最后一行日志的时间）")
    for e in timeline:
        icon = PHASE_STATUS_ICON.get(e.status, "")
        out.append(f"- {STAGE_ZH.get(e.phase, e.phase)} {icon}{e.status} {e.time or ''} {e.note}".rstrip())
    lv = " ".join(f"{k}={v}" for k, v in sorted(counts["level"].items()))
    ph = " ".join(f"{k}={v}" for k, v in counts["phase"].items())
    tot = counts["total"]
    out.append("## 统计")
    out.append(
        f"本次运行 {tot['run']} 条（全链路 {tot['chain']} 条，关键 {tot['key']} 条）；级别 {lv}；阶段 {ph}"
    )
    out.append("## 日志（按时间；* 为关键行，×N 为合并的重复行）")
    return out
