"""The model's search words become a BkLog query on the install's own fields (BKLOG__LOG_FIELD and
BKLOG__TRACE_FIELD), ANDed with the step's ids."""

from __future__ import annotations

from datetime import datetime

from bot.clients.bklog import LogLayout
from bot.diagnosis.llm_step import ToolScope

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
