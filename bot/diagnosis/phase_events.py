"""What happened inside each phase of a run: a few timed events, and the run's time span.

A phase can hold hundreds of lines (a long result poll, a host result per target). Its events are
at most `MAX_PHASE_EVENTS` of them, chosen by what they tell: failures first, then warnings, then
the phase's milestones (start, sent to GSE, GSE task started or finished, host results, outcomes,
callback). Repetitive lines are one event with a count (``拉取结果 12 次``, ``共 3 条``); a rolling
step's batches stay apart (``[批次 2]``). The chosen events are listed in time order; each is the
log message without its task prefix, cut after a separator where one is near, so a value (a
secret among them) is dropped whole rather than cut in two. Secrets are masked with the whole
report afterwards (`bot.diagnosis.llm_step.scrub_report`).

Usage::

    events = phase_events(view, indices, "result_polling")  # [TimelineEvent(time=..., text=...), ...]
    span = run_span(view)                                     # RunSpan(start=..., end=..., seconds=...)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bot.core.models import MAX_PHASE_EVENTS, RunSpan, TimelineEvent
from bot.diagnosis.extract import parse_gse_finish, parse_kv, parse_script_result, pull_times
from bot.diagnosis.extract.kv import bracket_end
from bot.diagnosis.phases import Classification, phase_rules, strip_task_prefix
from bot.diagnosis.records import LogRecord
from bot.diagnosis.runs import RunView

__all__ = ["MAX_EVENT_CHARS", "phase_events", "run_span"]

MAX_EVENT_CHARS = 160

# Lines that show a phase going through, beyond the milestones of `config/phases.toml`.
_EXTRA_MILESTONES = frozenset(
    {
        "Retry-fail for step",
        "Retry-all for step",
        "Sending task to gse server",
        "Start gse task successfully",
        "Analyse execute object task result",
        "AnalyseExecuteResult->",
        "Finish gse task",
        "Callback result:",
        "Handle callback",
    }
)
_R_FAIL, _R_WARN, _R_MILESTONE, _R_INFO = 0, 1, 2, 3

_LONG_ID = re.compile(r"\d{5,}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{16,}")
_ANY_DIGITS = re.compile(r"\d+")
_CUT_AT = re.compile(r"[\s,;|&]")


def _short(text: str, limit: int = MAX_EVENT_CHARS) -> str:
    """`text` on one line in at most `limit` characters, cut after a separator when one is near."""
    text = text.replace("\n", " ").replace("`", "'")
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    cuts = [m.end() for m in _CUT_AT.finditer(head)]
    if cuts and cuts[-1] >= limit // 2:
        head = head[: cuts[-1]].rstrip()
    return head + "…"


def _clock(time_text: str | None) -> str:
    """``HH:MM:SS.mmm`` of a logged time (the date dropped), or ``?``."""
    if not time_text:
        return "?"
    return time_text[11:] if len(time_text) > 11 and time_text[10] == " " else time_text


def _message(rec: LogRecord) -> str:
    return strip_task_prefix(rec.message if rec.parsed else rec.first_line)


_HOST_RESULT = "Analyse execute object task result"
_RESULT_OPEN = "ScriptExecuteObjectTaskResult["
_RESULT_FIELDS = ("agentId", "status", "errorCode", "errorMsg", "exitCode")


def _host_result(msg: str) -> str:
    """A host result with the fields that tell (as logged), without the bookkeeping ones
    (atomicTaskId, startTime, endTime, tag, contentLength) and without empty ones."""
    start = msg.find(_RESULT_OPEN)
    if start == -1:
        return msg
    head = msg[:start].rstrip().removesuffix("result:").rstrip(" ,:")
    bracket = start + len(_RESULT_OPEN) - 1
    kv = parse_kv(msg[bracket + 1 : bracket_end(msg, bracket) - 1])
    shown = [f"{k}={v}" for k in _RESULT_FIELDS if (v := kv.get(k)) is not None and v not in ("''", "null")]
    return f"{head}: " + ", ".join(shown)


@dataclass
class _Group:
    """Records of one kind within a phase (one event), in time order."""

    members: list[int]  # indices into the run's records
    rank: int


def _rank(cls: Classification, milestones: frozenset[str]) -> int:
    if cls.consequence and cls.severity != "info":
        return _R_MILESTONE  # an outcome decided earlier (`Finish gse task`, `Refresh step …`)
    if cls.severity == "fail":
        return _R_FAIL
    if cls.severity == "warn":
        return _R_WARN
    if cls.template is not None and cls.template in milestones:
        return _R_MILESTONE
    return _R_INFO


def _kind(view: RunView, i: int) -> str:
    rec, cls, ids = view.records[i], view.classes[i], view.ids[i]
    msg = _message(rec)
    where = f"{ids.batch}:{ids.gse_task}"  # a rolling step's batches are events of their own
    if pull_times(msg) is not None:
        return f"pull:{where}"
    # informational repeats differ only in numbers; failures keep their short codes apart
    # (errorCode=117 and errorCode=122 are two findings)
    pattern = _ANY_DIGITS if cls.severity == "info" else _LONG_ID
    return f"{where}:{cls.severity}:{pattern.sub('#', msg)[:200]}"


def _milestones(phase: str) -> frozenset[str]:
    rules = phase_rules()
    names = set(rules.milestones.get(phase, ())) | set(rules.completion.get(phase, ()))
    return frozenset(names | _EXTRA_MILESTONES)


def _text(view: RunView, group: _Group, batches: bool) -> str:
    first = view.records[group.members[0]]
    last = view.records[group.members[-1]]
    msg = _message(first)
    lead = tail = ""
    batch = view.ids[group.members[0]].batch
    if batches and batch is not None:
        lead = f"[批次 {batch}] "
    times = [t for i in group.members if (t := pull_times(view.records[i].message)) is not None]
    if times:
        cut = msg.find(", times:")
        lo, hi = min(times), max(times)
        msg = (msg[:cut] if cut != -1 else msg) + (f", times: {lo}–{hi}" if hi > lo else f", times: {hi}")
        tail = f"（拉取结果 {hi} 次，末次 {_clock(last.time_text)}）" if hi > lo else f"（拉取结果 {hi} 次）"
    else:
        if (fin := parse_gse_finish(msg)) is not None:
            tail = f"（{fin.name} {fin.zh}）"
        elif view.classes[group.members[0]].template == _HOST_RESULT and (res := parse_script_result(msg)):
            msg = _host_result(msg)
            if res.finished:
                lead += f"{res.host_status} {res.host_status_zh}："
        if len(group.members) > 1:
            until = f"，至 {_clock(last.time_text)}" if last.time_text != first.time_text else ""
            tail += f"（共 {len(group.members)} 条{until}）"
    return lead + _short(msg, max(MAX_EVENT_CHARS - len(lead) - len(tail), 40)) + tail


def phase_events(view: RunView, indices: Sequence[int], phase: str) -> list[TimelineEvent]:
    """At most `MAX_PHASE_EVENTS` events of one phase (`indices` into the run's records, in time order).

    Failures, warnings and milestones only; a phase that has none of them shows its first and last
    kind of line, so what was seen of it is still there.
    """
    milestones = _milestones(phase)
    groups: dict[str, _Group] = {}
    for i in indices:
        key = _kind(view, i)
        rank = _rank(view.classes[i], milestones)
        g = groups.get(key)
        if g is None:
            groups[key] = _Group([i], rank)
        else:
            g.members.append(i)
            g.rank = min(g.rank, rank)
    telling = [g for g in groups.values() if g.rank < _R_INFO]
    if telling:
        # the most telling first; among equals the earlier, so the phase's start is kept
        chosen = sorted(telling, key=lambda g: (g.rank, g.members[0]))[:MAX_PHASE_EVENTS]
    else:
        plain = list(groups.values())
        chosen = plain[:1] + plain[-1:] if len(plain) > 1 else plain
    chosen.sort(key=lambda g: g.members[0])
    batches = len({b for i in indices if (b := view.ids[i].batch) is not None}) > 1
    return [
        TimelineEvent(time=view.records[g.members[0]].time_text, text=_text(view, g, batches)) for g in chosen
    ]


def run_span(view: RunView) -> RunSpan | None:
    """First and last line of the run (as logged) and the seconds between; None without timed lines."""
    timed = [(r.time, r.time_text) for r in view.records if r.time is not None and r.time_text]
    if not timed:
        return None
    (t0, start), (t1, end) = timed[0], timed[-1]
    return RunSpan(start=start, end=end, seconds=round(max(0.0, (t1 - t0).total_seconds()), 3))
