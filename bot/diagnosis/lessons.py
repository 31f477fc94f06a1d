"""Two lessons the rule report applies on top of whatever signature matched (texts and the
component table in `config/components.toml`):

1. An API answer logged as ok (`success=true` / `"result":true`) whose body carries a non-zero `code`
   and no `data` is the decisive evidence of the failure: it is quoted first, and the cause says what
   the code means when the code tables know it (`api_answers.py`).
2. When the decisive lines show only that a downstream component (file source access point, CMDB,
   IAM, ...) failed, without its reason, the cause is not settled: the report says the reason is on the
   component's side, keeps its confidence below the "settled" line, and `missing_info` names the
   component and what to collect from it (`components.py`).

Usage::

    lessons = read_lessons(run_records, decisive=match.records)
    evidence = lessons.evidence() + evidence
    cause += lessons.cause_notes(); missing = lessons.missing_info() + missing
    confidence = lessons.confidence(confidence)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.core.models import Evidence
from bot.diagnosis.api_answers import FailedAnswer, failed_answers
from bot.diagnosis.components import ComponentGap, ComponentTable, components, fill
from bot.diagnosis.phases import strip_task_prefix
from bot.diagnosis.records import LogRecord

__all__ = ["Lessons", "read_lessons"]

_CONSEQUENCE_CHARS = 160  # the consequence is named, not quoted: its line is in the evidence already


def _evidence(rec: LogRecord, why: str) -> Evidence:
    return Evidence(
        time=rec.time_text, level=rec.level, logger=rec.logger, trace_id=rec.trace_id, text=rec.raw, why=why
    )


def _short(text: str) -> str:
    first = text.split("\n", 1)[0].strip()
    return first if len(first) <= _CONSEQUENCE_CHARS else first[: _CONSEQUENCE_CHARS - 1] + "…"


def _consequence_name(rec: LogRecord) -> str:
    """The exception class (and message) of a stack, else the line's message."""
    if rec.stack:
        return _short(rec.stack)
    return _short(strip_task_prefix(rec.message))


def _names(gap: ComponentGap) -> dict[str, str]:
    return {"component": gap.component.name, "short": gap.component.short}


@dataclass(frozen=True, slots=True)
class Lessons:
    table: ComponentTable
    answers: tuple[FailedAnswer, ...] = ()
    gaps: tuple[ComponentGap, ...] = ()

    def _values(self, answer: FailedAnswer) -> dict[str, str]:
        texts = self.table.texts
        comp = self.table.for_uri(answer.call.uri)
        meaning = answer.meaning()
        return {
            "component": comp.name if comp is not None else texts.unknown_component,
            "uri": answer.call.uri or "",
            "code": str(answer.call.code),
            "code_note": fill(texts.code_known, {"meaning": meaning}) if meaning else texts.code_unknown,
            "message": answer.call.api_message or texts.no_message,
            "consequence": _consequence_name(answer.consequence),
        }

    def evidence(self) -> list[Evidence]:
        """The answers first (the decisive evidence), then the lines that show a component failed."""
        texts = self.table.texts
        out = [_evidence(a.record, fill(texts.answer_why, self._values(a))) for a in self.answers]
        for gap in self.gaps:
            why = fill(texts.unsettled_why, _names(gap))
            out.extend(_evidence(r, why) for r in gap.failures)
        return out

    def cause_notes(self) -> str:
        """Sentences the root cause gains (each on its own line), or ""."""
        texts = self.table.texts
        notes = [fill(texts.answer_cause, self._values(a)) for a in self.answers]
        for gap in self.gaps:
            failure = (
                _short(strip_task_prefix(gap.failures[0].message)) if gap.failures else gap.component.name
            )
            notes.append(fill(texts.unsettled_cause, {**_names(gap), "failure": failure}))
        return "".join("\n" + n for n in notes)

    def missing_info(self) -> list[str]:
        """What to collect from each component whose reason the engine logs do not show."""
        texts = self.table.texts
        return [
            fill(texts.unsettled_missing, {**_names(gap), "item": item})
            for gap in self.gaps
            for item in gap.collect(texts)
        ]

    def confidence(self, value: float) -> float:
        """A cause that is not settled stays below the settled line."""
        if not self.gaps:
            return value
        return min(value, self.table.texts.unsettled_confidence)


def read_lessons(
    records: Sequence[LogRecord], decisive: Sequence[LogRecord], table: ComponentTable | None = None
) -> Lessons:
    """The lessons that apply to a run (`records`, time order) diagnosed from its `decisive` lines.

    An answer counts when it came no later than a decisive line of its own trace (the failure it
    explains); a component gap when a decisive line says the component failed.
    """
    table = table if table is not None else components()
    latest: dict[str | None, datetime] = {}
    for rec in decisive:
        if rec.time is not None:
            latest[rec.trace_id] = max(rec.time, latest.get(rec.trace_id, rec.time))
    answers = tuple(
        a
        for a in failed_answers(records)
        if a.record in decisive
        or (
            a.record.time is not None
            and a.record.trace_id in latest
            and a.record.time <= latest[a.record.trace_id]
        )
    )
    gaps = tuple(table.unexplained(records, decisive))
    return Lessons(table, answers, gaps)
