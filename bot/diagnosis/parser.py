"""Parse BK-JOB engine log records (bk-job.md §1.1) into `LogRecord`s; de-duplicate and order them.

Accepted first-line variants (all yield `parsed=True`):

* file pattern ``[2024-05-30 11:09:00.240]  INFO [job-execute,<trace>,<span>] 6 --- [thread] logger : msg``
  (``%5p`` right-aligned level, empty MDC ``[job-execute,,]``, lite app ``job-assemble``);
* console pattern up to 3.12: no brackets around the timestamp, ``[%15.15t]`` padded/truncated thread;
* master console pattern: brackets, full thread; the ``[app,trace,span]`` block and the PID are optional
  (plain Spring Boot console) and a 4th Sleuth field (``,true``) is tolerated.

Continuation lines (stack trace, multi-line message) go to `LogRecord.stack`. ANSI colour codes, CRLF
and a BOM are removed; bytes are decoded as UTF-8 with replacement. A record whose first line does not
match is kept with ``parsed=False`` (time and level are still filled when the line starts with them).

Usage::

    records = order(dedupe(parse_documents(hit["_source"] for hit in hits)))
    records = parse_text(open("logs.txt").read())
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.clients.bklog import LogLayout
from bot.diagnosis.records import LogRecord

DEFAULT_LAYOUT = LogLayout()
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")

__all__ = [
    "RECORD_START_RE",
    "clean_text",
    "dedupe",
    "order",
    "parse_documents",
    "parse_record",
    "parse_text",
    "source_rank",
    "split_records",
]

_TS = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:[.,]\d{1,9})?"
_LEVELS = r"TRACE|DEBUG|INFO|WARN|WARNING|ERROR|FATAL"

# A record starts at a line led by a timestamp, bracketed or not (the BkLog multiline rule).
RECORD_START_RE = re.compile(r"^\[?\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", re.MULTILINE)

_HEAD_RE = re.compile(
    rf"^(?:\[(?P<ts1>{_TS})\]|(?P<ts2>{_TS}))\s+(?P<level>{_LEVELS})\s+"
    r"(?:\[(?P<app>[^,\[\]]*),(?P<trace>[^,\[\]\s]*),(?P<span>[^,\[\]\s]*)(?:,[^\]]*)?\]\s+)?"
    r"(?:(?P<pid>\d+)\s+)?---\s+\[(?P<thread>[^\]]*)\]\s+(?P<logger>\S+)\s*:(?: (?P<msg>.*)|$)"
)
# Timestamp and level but an unknown remainder: keep parsed=False, still usable for ordering.
_PARTIAL_RE = re.compile(rf"^\[?(?P<ts>{_TS})\]?\s+(?:(?P<level>{_LEVELS})\b)?")
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


# --------------------------------------------------------------------------- text


def clean_text(text: str | bytes) -> str:
    """Decode (UTF-8, replacement), strip ANSI colour codes and a BOM, normalise line ends to ``\\n``."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", errors="replace")
    if "\x1b" in text:
        text = _ANSI_RE.sub("", text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.lstrip("\ufeff")


def split_records(text: str | bytes) -> list[str]:
    """Split raw multi-record text into record texts (first line + continuation lines).

    Lines before the first timestamp-led line form a record of their own (kept, parsed later as
    ``parsed=False``); blank lines between records are dropped.
    """
    text = clean_text(text)
    starts = [m.start() for m in RECORD_START_RE.finditer(text)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    starts.append(len(text))
    out: list[str] = []
    for a, b in itertools.pairwise(starts):
        chunk = text[a:b].strip("\n")
        if chunk.strip():
            out.append(chunk)
    return out


def _parse_time(ts: str) -> datetime | None:
    # Hand-rolled: strptime costs several times more and this runs once per record.
    try:
        frac = ts[20:] if len(ts) > 20 else ""
        micro = int((frac + "000000")[:6]) if frac else 0
        return datetime(
            int(ts[0:4]), int(ts[5:7]), int(ts[8:10]), int(ts[11:13]), int(ts[14:16]), int(ts[17:19]), micro
        )
    except ValueError:
        return None


def parse_record(text: str | bytes, source: Mapping[str, Any] | None = None) -> LogRecord:
    """Parse one record (first line + continuation lines). Never raises; never drops the record.

    `source` is the BkLog document (`_source`) it came from; it is kept on the record without `log`.
    """
    text = clean_text(text).strip("\n")
    first, _, stack = text.partition("\n")
    src = {k: v for k, v in source.items() if k != "log"} if source else {}
    m = _HEAD_RE.match(first)
    if m is None:
        p = _PARTIAL_RE.match(first)
        ts = p.group("ts") if p else None
        return LogRecord(
            raw=text,
            message=first,
            parsed=False,
            time=_parse_time(ts) if ts else None,
            time_text=ts,
            level=_norm_level(p.group("level")) if p else None,
            stack=stack,
            source=src,
        )
    ts = m.group("ts1") or m.group("ts2")
    thread = m.group("thread")
    return LogRecord(
        raw=text,
        message=m.group("msg") or "",
        parsed=True,
        time=_parse_time(ts),
        time_text=ts,
        level=_norm_level(m.group("level")),
        app=m.group("app") or None,
        trace_id=(m.group("trace") or "").lower() or None,
        span_id=(m.group("span") or "").lower() or None,
        pid=m.group("pid"),
        thread=thread.strip() if thread is not None else None,
        logger=m.group("logger"),
        stack=stack,
        source=src,
    )


def _norm_level(level: str | None) -> str | None:
    if level == "WARNING":
        return "WARN"
    return level


def parse_text(text: str | bytes, source: Mapping[str, Any] | None = None) -> list[LogRecord]:
    """Parse raw text holding any number of records (e.g. a scenario `logs.txt`)."""
    return [parse_record(chunk, source) for chunk in split_records(text)]


def parse_documents(docs: Iterable[Mapping[str, Any]], layout: LogLayout = DEFAULT_LAYOUT) -> list[LogRecord]:
    """Parse BkLog `_source` documents (`log`, `path`, `serverIp`, `dtEventTimeStamp`, ...).

    A document normally holds one record; when its line field holds several (no multiline rule on
    the collector), each becomes its own record carrying the same source fields. With a trace
    field in the layout, a record whose line carries no traceId takes the document's.
    """
    out: list[LogRecord] = []
    for doc in docs:
        log = doc.get(layout.log_field)
        if log is None:
            continue
        if not isinstance(log, str | bytes):
            log = str(log)
        chunks = split_records(log)
        if not chunks:
            continue
        # parse_record keeps the document's other fields on the record (the line itself it drops)
        source = doc if layout.log_field == "log" else {k: v for k, v in doc.items() if k != layout.log_field}
        records = [parse_record(chunk, source) for chunk in chunks]
        trace = _trace_of(doc, layout)
        if trace:
            records = [r if r.trace_id else dataclasses.replace(r, trace_id=trace) for r in records]
        out.extend(records)
    return out


def _trace_of(doc: Mapping[str, Any], layout: LogLayout) -> str | None:
    if not layout.trace_field:
        return None
    value = doc.get(layout.trace_field)
    text = str(value).strip().lower() if value is not None else ""
    return text if _TRACE_ID.match(text) else None


# --------------------------------------------------------------------------- dedupe


def source_rank(source: Mapping[str, Any]) -> int:
    """How much a record's copy is preferred when the same record arrives several times (lower wins).

    Main log file (execute.log / job.log) 0, other engine files 1, error.log 2, stdout or unknown 3.
    """
    path = str(source.get("path") or "")
    if not path or source.get("stream") or "/containers/" in path or "/pods/" in path:
        return 3
    name = path.rsplit("/", 1)[-1]
    if name in ("execute.log", "job.log"):
        return 0
    if name == "error.log":
        return 2
    return 1


def _dedupe_key(rec: LogRecord) -> tuple[Any, ...] | None:
    msg = rec.message if rec.parsed else rec.first_line
    norm = " ".join(msg.split())
    if rec.time_text is not None:
        return (rec.time_text, rec.trace_id, norm)
    src = rec.source
    if not src:
        return None  # identical timeless lines without any document identity may be genuine repeats
    return (
        None,
        src.get("serverIp"),
        src.get("path"),
        src.get("gseIndex"),
        src.get("iterationIndex"),
        str(src.get("dtEventTimeStamp")),
        norm,
    )


def _distinct_docs(a: LogRecord, b: LogRecord) -> bool:
    """True when a and b are two different documents of the same file (a genuine repeat, not a copy)."""
    sa, sb = a.source, b.source
    if not sa or not sb or sa.get("path") != sb.get("path") or sa.get("serverIp") != sb.get("serverIp"):
        return False
    ia = (sa.get("gseIndex"), sa.get("iterationIndex"))
    ib = (sb.get("gseIndex"), sb.get("iterationIndex"))
    return ia != (None, None) and ib != (None, None) and ia != ib


def dedupe(records: Iterable[LogRecord]) -> list[LogRecord]:
    """Drop copies of the same record (execute.log, error.log, stdout, or a doc returned twice).

    Key: timestamp text + traceId + whitespace-normalised first-line message. The first occurrence keeps
    its position; its content is replaced by a later copy from a preferred source (see `source_rank`).
    """
    out: list[LogRecord] = []
    seen: dict[tuple[Any, ...], int] = {}
    for rec in records:
        key = _dedupe_key(rec)
        if key is None:
            out.append(rec)
            continue
        idx = seen.get(key)
        if idx is None:
            seen[key] = len(out)
            out.append(rec)
            continue
        kept = out[idx]
        if _distinct_docs(kept, rec):
            out.append(rec)
            continue
        if (source_rank(rec.source), not rec.parsed) < (source_rank(kept.source), not kept.parsed):
            out[idx] = rec
    return out


# --------------------------------------------------------------------------- order


def _event_ms(rec: LogRecord) -> int | None:
    v = rec.source.get("dtEventTimeStamp") if rec.source else None
    if v is None:
        return None
    try:
        n = int(float(v))
    except (TypeError, ValueError):
        return None
    if n > 10**14:  # microseconds
        n //= 1000
    elif n < 10**11:  # seconds
        n *= 1000
    return n


def _utc_naive(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None)


def _clock_offset(records: Sequence[LogRecord]) -> timedelta | None:
    """Engine local time minus BkLog's epoch, learnt from records that carry both (median, 15 min grid)."""
    samples: list[float] = []
    for rec in records:
        if rec.time is not None:
            ms = _event_ms(rec)
            if ms is not None:
                samples.append((rec.time - _utc_naive(ms)).total_seconds())
                if len(samples) >= 64:
                    break
    if not samples:
        return None
    quarter = 900.0
    return timedelta(seconds=round(statistics.median(samples) / quarter) * quarter)


def order(records: Sequence[LogRecord]) -> list[LogRecord]:
    """Stable sort by time.

    A record without a time goes by its BkLog `dtEventTimeStamp` (shifted to engine local time with
    the offset the other records show) or, failing that, stays right after its input predecessor
    (before its successor when it leads the input).
    """
    n = len(records)
    if n < 2:
        return list(records)
    offset: timedelta | None = None
    offset_known = False
    keys: list[datetime | None] = [None] * n
    for i, rec in enumerate(records):
        if rec.time is not None:
            keys[i] = rec.time
            continue
        ms = _event_ms(rec)
        if ms is None:
            continue
        if not offset_known:
            offset, offset_known = _clock_offset(records), True
        if offset is not None:
            keys[i] = _utc_naive(ms) + offset
    # Neighbour position for the rest: inherit the predecessor's key, or the successor's at the start.
    prev: datetime | None = None
    for i in range(n):
        if keys[i] is None:
            keys[i] = prev
        else:
            prev = keys[i]
    nxt: datetime | None = None
    for i in range(n - 1, -1, -1):
        if keys[i] is None:
            keys[i] = nxt
        else:
            nxt = keys[i]
    floor = datetime.min
    idx = sorted(range(n), key=lambda i: (keys[i] or floor, i))
    return [records[i] for i in idx]
