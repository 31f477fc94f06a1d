"""Typed extractors over one engine record's message, one module per record family.

Every extractor takes a message (or a `LogRecord`) and returns a frozen dataclass or ``None`` when the
line is not of its kind; none raises. Codes are explained with the tables of `bot.core.codes`.

Usage::

    ids = ids_in(record)                     # RecordIds(task=…, step=…, gse_task=…, execute_count=…, …)
    res = parse_script_result(record.message)  # res.host_status == 310, res.host_status_zh == "Agent 异常"
"""

from __future__ import annotations

from bot.core.codes import api_error_zh, host_status_for, normalise_exit_code, run_status_zh
from bot.diagnosis.extract.api import ApiCall, api_error_codes, nonzero_codes, parse_api_call
from bot.diagnosis.extract.callbacks import CallbackInfo, Notification, parse_callback, parse_notification
from bot.diagnosis.extract.events import EngineEvent, EventSource, parse_event, parse_event_source
from bot.diagnosis.extract.gse import (
    GseStart,
    GseTaskFinish,
    StepRefresh,
    parse_gse_finish,
    parse_gse_start,
    parse_step_refresh,
    pull_times,
)
from bot.diagnosis.extract.hosts import ScriptResult, parse_script_result
from bot.diagnosis.extract.ids import GseTaskKey, RecordIds, ids_in, ids_in_text, parse_gse_key
from bot.diagnosis.extract.kv import parse_kv

__all__ = [
    "ApiCall",
    "CallbackInfo",
    "EngineEvent",
    "EventSource",
    "GseStart",
    "GseTaskFinish",
    "GseTaskKey",
    "Notification",
    "RecordIds",
    "ScriptResult",
    "StepRefresh",
    "api_error_codes",
    "api_error_zh",
    "host_status_for",
    "ids_in",
    "ids_in_text",
    "nonzero_codes",
    "normalise_exit_code",
    "parse_api_call",
    "parse_callback",
    "parse_event",
    "parse_event_source",
    "parse_gse_finish",
    "parse_gse_key",
    "parse_gse_start",
    "parse_kv",
    "parse_notification",
    "parse_script_result",
    "parse_step_refresh",
    "pull_times",
    "run_status_zh",
]
