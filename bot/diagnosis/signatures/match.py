"""Matching one catalog entry against the records of a step chain.

The chain's record texts are joined once (`ChainIndex`); each regex first finds its candidates with
its pre-filter literals, then runs only on those. Matching is linear in the number of records. The
ids of the step/job are taken from the decisive lines, else from the lines around them, else from
`known` values the caller passes.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from bot.core.models import Actions, Evidence, FaultSide, Stage
from bot.diagnosis.records import LogRecord
from bot.diagnosis.signatures.literals import CompiledPattern
from bot.diagnosis.signatures.schema import Fact, Signature
from bot.diagnosis.signatures.values import derive_values, render, unique

# decisive lines kept per match (first half + last half when there are more); context lines per regex
MAX_DECISIVE_LINES = 40
MAX_CONTEXT_LINES = 3
_SEPARATOR = "\x00"  # joins record texts into one blob; never part of a literal

# Ids pulled from every decisive line, whatever the entry's own regexes capture.
_COMMON_EXTRACTORS: tuple[re.Pattern[str], ...] = (
    re.compile(
        r"(?P<gse_task>Job:(?P<task_instance_id>\d+)-GseTask:(?P<gse_task_id>\d+):"
        r"(?P<step_instance_id>\d+):(?P<execute_count>\d+)(?::(?P<batch>\d+))?)"
    ),
    re.compile(r"\bstepInstanceId(?:=|: ?)(?P<step_instance_id>\d+)"),
    re.compile(r"\b(?:taskInstanceId|TaskInstanceId|jobInstanceId)(?:=|: ?)(?P<task_instance_id>\d+)"),
)
_ID_NAMES = frozenset({"task_instance_id", "step_instance_id"})
NEIGHBOUR_LINES = 200
# Patterns look at the first 8 KB of a record: engine lines that decide a cause are far shorter
# (the corpus's longest is under 2 KB), and a crafted line of repeated markers costs a pattern
# time that grows with its length squared, in a thread that holds the GIL.
MATCH_WINDOW_CHARS = 8192


@dataclass(frozen=True, slots=True)
class SignatureMatch:
    """One catalog entry that fired on a chain, with its decisive lines and filled texts."""

    id: str
    title: str
    stage: Stage
    fault_side: FaultSide
    priority: int
    confidence: float
    records: tuple[LogRecord, ...]  # the decisive lines, whole, in chain order
    context: tuple[LogRecord, ...]  # corroborating lines (all_of/any_of/context), in chain order
    hit_count: int  # decisive lines found (records may keep fewer)
    values: Mapping[str, str]  # placeholder values (captured + derived)
    cause: str
    summary: str
    actions: Actions
    prevention: tuple[str, ...]
    missing_info: tuple[str, ...]
    last_index: int  # position of the latest decisive line in the input
    last_time: datetime | None = field(default=None)
    facts: tuple[Fact, ...] = ()  # live lookups the entry asks for (see the catalog's `facts`)

    def rank(self) -> tuple[int, tuple[int, datetime, int], int]:
        """Sort key: priority, then the latest decisive failure in time, then corroborating lines."""
        when = (1, self.last_time, self.last_index) if self.last_time else (0, datetime.min, self.last_index)
        return (self.priority, when, self.hit_count + len(self.context))

    def evidence(self) -> list[Evidence]:
        """Decisive then corroborating lines as report evidence (text kept whole)."""
        out: list[Evidence] = []
        for rec, why in [(r, self.title) for r in self.records] + [
            (r, f"{self.title}（佐证）") for r in self.context
        ]:
            out.append(
                Evidence(
                    time=rec.time_text,
                    level=rec.level,
                    logger=rec.logger,
                    trace_id=rec.trace_id,
                    text=rec.raw,
                    why=why,
                )
            )
        return out


def _record_text(rec: LogRecord) -> str:
    return f"{rec.message}\n{rec.stack}" if rec.stack else rec.message


class ChainIndex:
    """The chain's record texts joined once; literal lookups are C-speed `str.find` scans."""

    def __init__(self, records: Sequence[LogRecord]) -> None:
        self.records = records
        self.texts = [_record_text(r).replace(_SEPARATOR, " ") for r in records]
        self.starts: list[int] = []
        pos = 0
        for t in self.texts:
            self.starts.append(pos)
            pos += len(t) + 1
        self.blob = _SEPARATOR.join(self.texts)
        self._cache: dict[str, list[int]] = {}

    def candidates(self, literal: str) -> list[int]:
        found = self._cache.get(literal)
        if found is not None:
            return found
        found = []
        blob, starts = self.blob, self.starts
        at = blob.find(literal)
        while at >= 0:
            idx = bisect.bisect_right(starts, at) - 1
            found.append(idx)
            nxt = idx + 1
            if nxt >= len(starts):
                break
            at = blob.find(literal, starts[nxt])
        self._cache[literal] = found
        return found

    def scan(
        self, pattern: CompiledPattern, unless: Sequence[CompiledPattern] = ()
    ) -> list[tuple[int, re.Match[str]]]:
        """Records matching `pattern` and none of `unless` (checked first: they are cheap)."""
        hits: list[tuple[int, re.Match[str]]] = []
        texts = self.texts
        candidates = self.candidates(pattern.literal)
        for need in pattern.filters:
            # further required texts: a substring test is far cheaper than a failing regex
            if len(need.alternatives) == 1:
                alt = need.alternatives[0]
                candidates = [i for i in candidates if alt in texts[i]]
            else:
                candidates = [i for i in candidates if need.found_in(texts[i])]
            if not candidates:
                return []
        for idx in candidates:
            text = texts[idx]
            end = MATCH_WINDOW_CHARS
            if unless and any(u.literal in text and u.regex.search(text, 0, end) for u in unless):
                continue
            m = pattern.regex.search(text, 0, end)
            if m is not None:
                hits.append((idx, m))
        return hits


def _collect(values: dict[str, list[str]], m: re.Match[str]) -> None:
    for name, val in m.groupdict().items():
        if val is not None:
            bucket = values.setdefault(name, [])
            if val not in bucket:
                bucket.append(val)


def _extract_ids(text: str, captured: dict[str, list[str]]) -> None:
    for extractor in _COMMON_EXTRACTORS:
        for m in extractor.finditer(text):
            for name, val in m.groupdict().items():
                if val is not None and name not in captured:
                    captured[name] = [val]


def _keep(indices: list[int], cap: int) -> list[int]:
    if len(indices) <= cap:
        return indices
    half = cap // 2
    return indices[:half] + indices[-(cap - half) :]


def match_one(sig: Signature, index: ChainIndex, known: Mapping[str, str]) -> SignatureMatch | None:
    spec = sig.spec
    decisive: dict[int, re.Match[str]] = {}
    for pat in sig.patterns:
        for idx, m in index.scan(pat, sig.unless):
            decisive.setdefault(idx, m)
    levels = set(spec.require_level)
    hits: list[tuple[int, re.Match[str]]] = []
    for idx in sorted(decisive):
        rec = index.records[idx]
        if levels and rec.level is not None and rec.level not in levels:
            continue
        hits.append((idx, decisive[idx]))
    if not hits:
        return None

    for pat in sig.none_of:
        if index.scan(pat):
            return None
    corroborating: list[tuple[int, re.Match[str]]] = []
    for pat in sig.all_of:
        found = index.scan(pat)
        if not found:
            return None
        corroborating.extend(found[-MAX_CONTEXT_LINES:])
    if sig.any_of:
        found_any = [f for pat in sig.any_of for f in index.scan(pat)[-MAX_CONTEXT_LINES:]]
        if not found_any:
            return None
        corroborating.extend(found_any)
    for pat in sig.context:
        corroborating.extend(index.scan(pat)[-MAX_CONTEXT_LINES:])

    captured: dict[str, list[str]] = {}
    for _, m in hits:
        _collect(captured, m)
    for idx, _ in hits:
        _extract_ids(index.texts[idx], captured)
    for _, m in sorted(corroborating, key=lambda h: h[0]):
        for name, val in m.groupdict().items():
            if val is not None:
                captured.setdefault(name, [])
                if val not in captured[name]:
                    captured[name].append(val)
    trace_ids = unique(index.records[idx].trace_id or "" for idx, _ in hits)
    if trace_ids:
        captured.setdefault("trace_id", trace_ids)
    for name, val in spec.defaults.items():
        captured.setdefault(name, [val])
    for name, val in known.items():
        if val:
            captured.setdefault(name, [val])
    if not _ID_NAMES <= captured.keys():
        # the decisive line may not name the step (e.g. `Start gse task fail, account is null!`):
        # borrow ids from the nearest lines around it, which belong to the same step chain
        first = hits[0][0]
        around = [
            *range(first - 1, max(-1, first - 1 - NEIGHBOUR_LINES), -1),
            *range(first + 1, min(len(index.texts), first + 1 + NEIGHBOUR_LINES)),
        ]
        for idx in around:
            _extract_ids(index.texts[idx], captured)
            if _ID_NAMES <= captured.keys():
                break

    values = derive_values(captured)
    last_idx = hits[-1][0]
    last_rec = index.records[last_idx]
    values.setdefault("count", str(len(hits)))
    if last_rec.time_text:
        values.setdefault("time", last_rec.time_text)
    values.setdefault("title", spec.title)

    decisive_idx = _keep([idx for idx, _ in hits], MAX_DECISIVE_LINES)
    hit_set = {idx for idx, _ in hits}
    context_idx = sorted({idx for idx, _ in corroborating} - hit_set)
    times = [t for idx, _ in hits if (t := index.records[idx].time) is not None]
    return SignatureMatch(
        id=spec.id,
        title=spec.title,
        stage=spec.stage,
        fault_side=spec.fault_side,
        priority=spec.priority,
        confidence=spec.confidence,
        records=tuple(index.records[i] for i in decisive_idx),
        context=tuple(index.records[i] for i in context_idx),
        hit_count=len(hits),
        values=values,
        cause=render(spec.cause, values),
        summary=render(spec.summary, values),
        actions=Actions(
            immediate=[render(t, values) for t in spec.immediate],
            root_fix=[render(t, values) for t in spec.root_fix],
            improvements=[render(t, values) for t in spec.improvements],
        ),
        prevention=tuple(render(t, values) for t in spec.prevention),
        missing_info=tuple(render(t, values) for t in spec.missing_info_hint),
        last_index=last_idx,
        last_time=max(times) if times else None,
        facts=tuple(spec.facts),
    )
