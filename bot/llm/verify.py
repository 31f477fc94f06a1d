"""Check the model's quotes against what was collected.

A quote counts only if it is a substantial part of one collected line (after normalising both
sides); the report then carries the COLLECTED line, exactly and whole, never the model's copy.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bot.core.models import Evidence
from bot.llm.schema import ModelEvidence

# `[ts] LEVEL [app,trace,span] PID --- [thread] logger : ` (file pattern; also the console form
# without brackets around the timestamp).
_PREFIX = re.compile(
    r"^\[?(?P<ts>\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d{1,6})?)\]?\s+"
    r"(?P<level>TRACE|DEBUG|INFO|WARN|WARNING|ERROR|FATAL)\s+"
    r"\[(?P<app>[^,\]]*),(?P<trace>[0-9a-fA-F]*),(?P<span>[0-9a-fA-F]*)[^\]]*\]\s+"
    r"(?P<pid>\S+)\s+---\s+\[(?P<thread>[^\]]*)\]\s+(?P<logger>\S+)\s*:\s?"
)
_WS = re.compile(r"\s+")
_HEX = re.compile(r"(?<![0-9A-Za-z])[0-9A-Fa-f]{6,}(?![0-9A-Za-z])")
_ELLIPSIS = re.compile(r"\.{3,}|…+")
_QUOTES = "\"'`“”‘’「」"
# The prompt's data-block tags (`<logs>`, `<knowledge>`, `<question>`) are escaped wherever data is
# rendered; normalising applies the same escape to both sides, so either form of a quote matches.
_DATA_TAG = re.compile(r"<(\s*/?\s*(?:logs|knowledge|question)\b)", re.I)

MIN_QUOTE_CHARS = 20


def escape_data(text: str) -> str:
    """Neutralise anything that could open or close one of the prompt's data blocks."""
    return _DATA_TAG.sub(r"&lt;\1", text)


def strip_prefix(line: str) -> str:
    m = _PREFIX.match(line.strip())
    return line.strip()[m.end() :] if m else line.strip()


def normalise(text: str) -> str:
    text = escape_data(text.strip().strip(_QUOTES))
    text = strip_prefix(text)
    text = _HEX.sub(lambda m: m.group(0).lower(), text)
    return _WS.sub(" ", text).strip()


@dataclass(frozen=True)
class _Line:
    raw: str
    norm: str
    time: str | None
    level: str | None
    logger: str | None
    trace_id: str | None


@dataclass
class VerifyResult:
    verified: list[Evidence] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # the model's quotes that were not found

    @property
    def quoted(self) -> int:
        return len(self.verified) + len(self.dropped)


def _index(collected: Sequence[str], prepare: Callable[[str], str] | None) -> list[_Line]:
    out: list[_Line] = []
    for record in collected:
        for physical in record.splitlines():
            if not physical.strip():
                continue
            m = _PREFIX.match(physical.strip())
            shown = prepare(physical) if prepare else physical
            out.append(
                _Line(
                    raw=physical,
                    norm=normalise(shown),
                    time=m.group("ts") if m else None,
                    level=m.group("level") if m else None,
                    logger=m.group("logger") if m else None,
                    trace_id=(m.group("trace").lower() or None) if m else None,
                )
            )
    return out


def _matches(segments: list[str], norm: str) -> bool:
    pos = 0
    for seg in segments:
        found = norm.find(seg, pos)
        if found < 0:
            return False
        pos = found + len(seg)
    return True


def _same_time(quoted: str, logged: str | None) -> bool:
    if len(quoted) < 8 or not logged:
        return False
    quoted = quoted.replace("T", " ")
    return quoted in logged or logged in quoted


def verify_evidence(
    quotes: Sequence[ModelEvidence],
    collected: Sequence[str],
    *,
    prepare: Callable[[str], str] | None = None,
    min_chars: int = MIN_QUOTE_CHARS,
) -> VerifyResult:
    """Keep the quotes found in `collected`, as the collected lines themselves.

    `prepare` is applied to collected lines before comparing (the scrubber: the model saw scrubbed
    lines, so it quotes `******` where the log had a secret); the evidence text is still the
    collected line. A quote may leave out the log prefix, and may elide with `...`/`…`, but the
    parts it keeps must total at least `min_chars` characters unless it is the whole message.
    """
    lines = _index(collected, prepare)
    result = VerifyResult()
    used: set[int] = set()
    for quote in quotes:
        segments = [s for s in (normalise(p) for p in _ELLIPSIS.split(quote.text)) if s]
        kept = sum(len(s) for s in segments)
        hits: list[int] = []
        for i, line in enumerate(lines):
            if not segments or not _matches(segments, line.norm):
                continue
            whole = len(segments) == 1 and segments[0] == line.norm
            if kept >= min_chars or whole:
                hits.append(i)
        if not hits:
            result.dropped.append(quote.text)
            continue
        # Several lines can hold the same text (repeated polls): prefer the one at the quoted time.
        qtime = (quote.time or "").strip()
        chosen = next((i for i in hits if _same_time(qtime, lines[i].time)), hits[0])
        if chosen in used:
            continue
        used.add(chosen)
        line = lines[chosen]
        result.verified.append(
            Evidence(
                time=line.time,
                level=line.level,
                logger=line.logger,
                trace_id=line.trace_id,
                text=line.raw,
                why=quote.why,
            )
        )
    return result
