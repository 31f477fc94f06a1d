from __future__ import annotations

import io
import json

import structlog

from bot.core.logsetup import configure_logging, message_context
from bot.core.models import IncomingMessage
from bot.core.redact import Redactor


def _capture(json_lines: bool, secrets: list[str]) -> tuple[io.StringIO, structlog.stdlib.BoundLogger]:
    buf = io.StringIO()
    configure_logging(json_lines=json_lines, level="DEBUG", redactor=Redactor(secrets), stream=buf)
    return buf, structlog.get_logger("test")


def test_json_lines_with_context_and_redaction() -> None:
    buf, log = _capture(True, ["configured-secret-123"])
    msg = IncomingMessage(channel="worktool", chat_id="运维群", is_group=True, sender_id="张三", text="hi")
    with message_context(msg, step_id=20031265375):
        log.info(
            "bklog_line",
            line='reqStr={"password":"p@ss"} X-Bkapi-Authorization: {"bk_app_secret": "abc"}',
            note="uses configured-secret-123 and Authorization: Bearer abcdefghijklmnopqrstu",
            nested={"app_secret": "zzz-top"},
        )
    out = buf.getvalue()
    record = json.loads(out.strip().splitlines()[-1])
    assert record["event"] == "bklog_line"
    assert record["channel"] == "worktool" and record["chat"] == "运维群" and record["user"] == "张三"
    assert record["step_id"] == 20031265375
    for leaked in ("p@ss", "configured-secret-123", "abcdefghijklmnopqrstu", "zzz-top", '"abc"'):
        assert leaked not in out


def test_console_output_is_readable_and_redacted() -> None:
    buf, log = _capture(False, ["another-secret-xyz"])
    log.warning("something", detail="password=hunter22 another-secret-xyz")
    out = buf.getvalue()
    assert "something" in out
    assert "hunter22" not in out and "another-secret-xyz" not in out
    assert not out.lstrip().startswith("{")


def test_redactor_masks_escaped_json_and_keeps_the_rest() -> None:
    r = Redactor(["configured-0123"])
    line = 'reqStr={\\"bk_app_secret\\":\\"abc123\\",\\"stepInstanceId\\":20031265375} configured-0123 exitCode=1'
    out = r(line)
    assert "abc123" not in out and "configured-0123" not in out
    assert "stepInstanceId" in out and "20031265375" in out and "exitCode=1" in out
