"""The model's search words become a BkLog query on the install's own fields (BKLOG__LOG_FIELD and
BKLOG__TRACE_FIELD), ANDed with the step's ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bot.clients.bklog import LogLayout
from bot.diagnosis.collector import Collected
from bot.diagnosis.llm_step import ToolScope
from tests.diagnosis.signatures.chains import BASE_TIME, rec

WINDOW = (datetime(2024, 5, 30, 11), datetime(2024, 5, 30, 12))
TRACE = "7d9369e51255ad96c215a9b3e2ed97fc"


def test_the_default_layout_searches_the_log_field() -> None:
    scope = ToolScope(WINDOW, ("20031265375",), (TRACE,))
    assert scope.query("errorCode 117") == (
        f'(log: "errorCode" AND log: "117") AND (log: "20031265375" OR log: "{TRACE}")'
    )


def test_a_json_layout_searches_its_message_field_and_its_trace_field() -> None:
    scope = ToolScope(
        WINDOW, ("20031265375",), (TRACE,), LogLayout(log_field="message", trace_field="traceId")
    )
    assert scope.query('"Agent 异常"') == (
        f'(message: "Agent 异常") AND (message: "20031265375" OR traceId: "{TRACE}")'
    )
    assert scope.query("   ") is None


def test_the_search_window_is_the_runs_own_span_when_the_window_is_utc() -> None:
    """Engine times are wall clock in BkLog's zone; a window from BK-JOB's step times is UTC.
    Stamping the engine times with UTC moved the span by eight hours and lost it."""
    run = [rec("Start step", at=0.0), rec("Finish step", at=60.0)]  # BASE_TIME, Asia/Shanghai
    started = BASE_TIME.replace(tzinfo=ZoneInfo("Asia/Shanghai"))
    window = (started.astimezone(UTC) - timedelta(days=1), started.astimezone(UTC) + timedelta(days=1))
    collected = Collected(records=run, step_instance_id=20031265375, window=window)
    scope = ToolScope.of(collected, time_zone="Asia/Shanghai")
    assert scope is not None
    low, high = scope.window
    assert low == started - timedelta(minutes=10)
    assert high == started + timedelta(seconds=60, minutes=10)
