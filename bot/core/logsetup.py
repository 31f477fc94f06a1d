"""structlog configuration: JSON lines for `serve`, readable console for `demo`/a tty.

Every event passes the redaction processor, so a secret that slips into an event (a log line
quoted from BkLog, an exception text, a URL) is masked before it is written.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, TextIO

import structlog

from bot.core.models import IncomingMessage
from bot.core.redact import Redactor


def _redaction_processor(redactor: Redactor) -> structlog.types.Processor:
    def process(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in list(event.items()):
            if isinstance(value, str | dict | list | tuple):
                event[key] = redactor.redact_obj(value)
            elif isinstance(value, BaseException):
                event[key] = redactor.redact(repr(value))
        return event

    return process


def configure_logging(
    *, json_lines: bool, level: str = "INFO", redactor: Redactor | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog and the stdlib root logger once, from the entry point."""
    redactor = redactor or Redactor()
    out = stream or sys.stderr
    level_no = logging.getLevelName(level.upper())
    if not isinstance(level_no, int):
        level_no = logging.INFO
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redaction_processor(redactor),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Libraries (aiohttp, redis, openai) log through stdlib; keep them quiet and on the same stream.
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_StdlibRedactFilter(redactor))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class _StdlibRedactFilter(logging.Filter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._redactor.redact(record.getMessage())
        record.args = None
        return True


@contextmanager
def message_context(msg: IncomingMessage, **extra: Any) -> Iterator[None]:
    """Bind channel/chat/user (and any ids) to every log event while a message is handled."""
    with structlog.contextvars.bound_contextvars(
        channel=msg.channel, chat=msg.chat_id, user=msg.sender_id, **extra
    ):
        yield
