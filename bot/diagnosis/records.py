"""The parsed form of one BK-JOB engine log record, shared by parser, collector and rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One log record as BkLog returns it in `log`: a first line plus continuation lines.

    Records that do not match a known pattern are kept with `parsed=False` and the raw text as
    `message`; they are never dropped.
    """

    raw: str  # the whole record text exactly as logged (first line + stack trace)
    message: str  # the message part of the first line (or the whole first line if unparsed)
    parsed: bool = False
    time: datetime | None = None  # naive, in the engine's local time zone
    time_text: str | None = None  # "2024-05-30 11:09:00.240" exactly as logged
    level: str | None = None  # TRACE/DEBUG/INFO/WARN/ERROR
    app: str | None = None  # job-execute / job-assemble
    trace_id: str | None = None  # 32 hex, or None when the MDC was empty
    span_id: str | None = None
    pid: str | None = None
    thread: str | None = None
    logger: str | None = None
    stack: str = ""  # continuation lines (exception + stack frames), "" when none
    # BkLog document fields that came with the record (path, serverIp, dtEventTimeStamp, ...)
    source: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def first_line(self) -> str:
        return self.raw.split("\n", 1)[0]
