"""Engine event toStrings: `JobEvent[...]`, `StepEvent[...]`, `GseTaskEvent[...]` and their `EventSource(...)`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bot.diagnosis.extract.kv import as_int, as_str, bracket_end, parse_kv


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
    end = bracket_end(text, m.end() - 1)
    kv = parse_kv(text[m.end() : end - 1])
    return EventSource(
        source_type=as_str(kv.get("sourceType")),
        job_instance_id=as_int(kv.get("jobInstanceId")),
        step_instance_id=as_int(kv.get("stepInstanceId")),
        execute_count=as_int(kv.get("executeCount")),
        batch=as_int(kv.get("batch")),
        gse_task_id=as_int(kv.get("gseTaskId")),
    )


def parse_event(message: str) -> EngineEvent | None:
    """The first engine event toString in a message, with what the line does with it."""
    m = _EVENT_RE.search(message)
    if m is None:
        return None
    end = bracket_end(message, m.end() - 1)
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
        action=as_int(kv.get("action")),
        action_desc=as_str(kv.get("actionDesc")),
        job_instance_id=as_int(kv.get("jobInstanceId")),
        step_instance_id=as_int(kv.get("stepInstanceId")),
        gse_task_id=as_int(kv.get("gseTaskId")),
        execute_count=as_int(kv.get("executeCount")),
        batch=as_int(kv.get("batch")),
        request_id=as_str(kv.get("requestId")),
        time=as_str(kv.get("time")),
        source=source,
        verb=verb,
        duration_ms=int(d.group(1)) if d else None,
        fields=kv,
    )
