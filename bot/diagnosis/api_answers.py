"""API answers that said ok but carried a failure: the decisive evidence of a failed call.

BK-JOB's API client logs `success=` from the HTTP status (bk-job.md §1.4, `BaseBkApiClient`): a reply
with HTTP 200 whose body has a non-zero `code` and no `data` still logs `success=true`, and the engine
then fails on the missing data (a NullPointerException, `Start gse task fail`, `Handling gse task
event error`, ...). The reply says why; the exception after it is only the consequence.

`failed_answers` finds such replies in a run: answered ok, a non-zero `code`, no `data`, followed by
an error (an ERROR line or an exception) in the same trace, and not superseded by a later good answer from the same uri. One answer
is reported once: the `Response|` line is preferred to the 3.10 `fail:response code!=0` line of the
same gateway request.

Usage::

    for answer in failed_answers(run_records):
        answer.record, answer.call.code, answer.meaning(), answer.consequence
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bot.core.codes import api_error_zh
from bot.diagnosis.extract import ApiCall, parse_api_call
from bot.diagnosis.records import LogRecord

__all__ = ["FOLLOW_LINES", "FailedAnswer", "failed_answers"]

FOLLOW_LINES = 30  # lines of the same trace after an answer in which its consequence must show
_CLIENT_MARK = "BkApiClient]"
_ARG_RE = re.compile(r"\{\d+\}")


@dataclass(frozen=True, slots=True)
class FailedAnswer:
    """One answer logged as ok whose body carried a failure, and the error that followed it."""

    record: LogRecord
    call: ApiCall
    consequence: LogRecord

    def meaning(self) -> str | None:
        """The code's Chinese meaning when the code tables know it (message arguments as "…")."""
        text = api_error_zh(self.call.code)
        return _ARG_RE.sub("…", text) if text else None


def _api_call(rec: LogRecord) -> ApiCall | None:
    if _CLIENT_MARK not in rec.message:
        return None
    return parse_api_call(rec.message)


def _is_error(rec: LogRecord) -> bool:
    """An exception or an error line: what a failed answer leads to (a warning alone is not)."""
    return rec.level == "ERROR" or bool(rec.stack)


def _consequence(records: Sequence[LogRecord], at: int) -> LogRecord | None:
    """The first error after `records[at]` in the same trace (API client lines aside)."""
    trace = records[at].trace_id
    seen = 0
    for rec in records[at + 1 :]:
        if rec.trace_id != trace:
            continue
        seen += 1
        if seen > FOLLOW_LINES:
            return None
        if _CLIENT_MARK in rec.message:
            continue
        if _is_error(rec):
            return rec
    return None


def _is_response_line(call: ApiCall, rec: LogRecord) -> bool:
    return call.client is not None and f"[{call.client}] Response|" in rec.message


def failed_answers(records: Sequence[LogRecord]) -> list[FailedAnswer]:
    """Answers of the run (`records`, time order) that said ok while their body said failure."""
    calls = [_api_call(r) for r in records]
    last_good: dict[str, int] = {}
    for i, call in enumerate(calls):
        if call is not None and call.kind == "response" and call.uri and call.code == 0 and not call.failed:
            last_good[call.uri] = i
    chosen: dict[str, FailedAnswer] = {}
    order: list[str] = []
    for i, call in enumerate(calls):
        if call is None or not call.ok_but_failed:
            continue
        if call.uri is not None and last_good.get(call.uri, -1) > i:
            continue  # a later call to the same api answered well: this one did not decide anything
        consequence = _consequence(records, i)
        if consequence is None:
            continue
        key = call.bk_api_request_id or f"#{i}"
        answer = FailedAnswer(records[i], call, consequence)
        held = chosen.get(key)
        if held is None:
            chosen[key] = answer
            order.append(key)
        elif _is_response_line(call, records[i]) and not _is_response_line(held.call, held.record):
            chosen[key] = answer
    return [chosen[k] for k in order]
