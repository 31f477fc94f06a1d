"""Built-in BK-JOB knowledge for private-chat questions, answered exactly without a model.

Status and error codes come from the code tables (bot.core.codes). General questions get a
short, fixed answer for the common topics (`config/topics.toml`); anything else goes to the model
when one is configured (the caller decides), grounded in `knowledge_snippet()`.
"""

from __future__ import annotations

import functools
import re
import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.core.codes import codes
from bot.core.resources import data_file

_CODE = re.compile(r"(?<![\d.])(-?\d{1,7})(?![\d.])")

_TopicText = Annotated[str, Field(min_length=1)]


class TopicsError(ValueError):
    """The topics file is unreadable or a topic is invalid (the message names it)."""


class _TopicSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: _TopicText
    answer: _TopicText

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value, re.I)
        except re.error as exc:
            raise ValueError(f"invalid regex {value!r}: {exc}") from None
        return value


def load_topics(path: Path | None = None) -> tuple[tuple[re.Pattern[str], str], ...]:
    """Read and validate the Q&A topics (default: the packaged topics.toml), patterns compiled."""
    target = path if path is not None else data_file("config", "topics.toml")
    try:
        data = tomllib.loads(target.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TopicsError(f"{target}: cannot read topics: {exc}") from exc
    entries = data.get("topic")
    if set(data) != {"topic"} or not isinstance(entries, list) or not entries:
        raise TopicsError(f"{target}: expected only [[topic]] entries, found {sorted(data) or 'nothing'}")
    out: list[tuple[re.Pattern[str], str]] = []
    for n, entry in enumerate(entries, start=1):
        try:
            spec = _TopicSpec.model_validate(entry)
        except ValidationError as exc:
            fields = "; ".join(
                f"field {'.'.join(str(p) for p in e['loc']) or '<entry>'!r}: {e['msg']}" for e in exc.errors()
            )
            raise TopicsError(f"{target}: topic #{n}: {fields}") from None
        out.append((re.compile(spec.pattern, re.I), spec.answer))
    return tuple(out)


@functools.cache
def topics() -> tuple[tuple[re.Pattern[str], str], ...]:
    """The packaged topics, read on first use; cached for good since packaged data never changes at run time."""
    return load_topics()


def answer_code(question: str) -> str | None:
    """Exact answers for the status/error codes a question names, or None."""
    wants_host = bool(re.search(r"主机|host|ip", question, re.I))
    wants_gse = bool(re.search(r"gse|error_?code|错误码", question, re.I))
    c = codes()
    lines: list[str] = []
    for m in _CODE.finditer(question):
        code = int(m.group(1))
        found: list[str] = []
        if code in c.api_error.zh or code in c.apigw_error.zh:
            name = c.api_error.name.get(code) or c.apigw_error.name.get(code, "")
            text = re.sub(r"\{\d\}", "…", c.api_error_zh(code) or "")
            found.append(f"接口错误码 {code}（{name}）：{text}")
        host_status, run_status = c.host_status, c.run_status
        if code in host_status.zh and (wants_host or code >= 100 or code not in run_status.zh):
            found.append(f"主机执行状态 {code}（{host_status.name.get(code, '')}）：{host_status.zh[code]}")
        if code in run_status.zh and not wants_host and code < 100:
            found.append(f"作业/步骤状态 {code}（{run_status.name.get(code, '')}）：{run_status.zh[code]}")
        if code in c.gse.error_to_host_status and (wants_gse or not found):
            host = c.gse.error_to_host_status[code]
            found.append(f"GSE error_code {code}：对应主机状态 {host} {host_status.zh.get(host, '')}")
        lines.extend(found)
    return "\n".join(dict.fromkeys(lines)) if lines else None


def answer_topic(question: str) -> str | None:
    for pattern, text in topics():
        if pattern.search(question):
            return text
    return None


def knowledge_snippet() -> str:
    """Compact reference text handed to the model for Q&A grounding."""
    c = codes()
    host = "；".join(f"{k} {v}" for k, v in sorted(c.host_status.zh.items()))
    run = "；".join(f"{k} {v}" for k, v in sorted(c.run_status.zh.items()))
    api = "；".join(f"{k} {v}" for k, v in sorted(c.api_error.zh.items()))
    common = "\n".join(text for _p, text in topics())
    return f"作业/步骤状态：{run}\n主机状态：{host}\n接口错误码：{api}\n常见问题：\n{common}"
