"""Built-in BK-JOB knowledge for private-chat questions, answered exactly without a model.

Status and error codes come from the code tables (bot.core.codes). General questions get a
short, fixed answer for the common topics (`config/topics.toml`): every topic is scored against
the question (its header says how), the best one answers, two that tie answer together. Anything
else goes to the model when one is configured (the caller decides), grounded in
`knowledge_snippet()`.
"""

from __future__ import annotations

import functools
import re
import tomllib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.core.codes import codes
from bot.core.resources import data_file

_CODE = re.compile(r"(?<![\d.])(-?\d{1,7})(?![\d.])")
# A number right after these words is a script's exit code, not a BK-JOB code.
_EXIT_BEFORE = re.compile(r"(?i)(?:exit\s*code|exitcode|退出码|返回码|返回值|exit)\s*[=:：是为]?\s*\Z")
# The question is about what a code means (not "310 怎么办", which a topic answers better).
_ASKS_MEANING = re.compile(
    r"(?i)状态码|错误码|返回码|错误代码|状态值|\bcode\b|什么意思|啥意思|含义|意思是|代表|表示|是什么|是啥|"
    r"\bmean(?:s|ing)?\b|\bwhat\s+is\b"
)
_CODES_IN_GENERAL = re.compile(r"(?i)状态码|错误码|状态值|status\s*codes?|error\s*codes?|有哪些状态|什么状态")

_TopicText = Annotated[str, Field(min_length=1)]

STRONG, WEAK = 2, 1  # what one matching regex adds to a topic's score
MAX_COMBINED = 2  # topics answered together when they tie


class TopicsError(ValueError):
    """The topics file is unreadable or a topic is invalid (the message names it)."""


def _compile_all(values: list[str]) -> list[str]:
    for value in values:
        try:
            re.compile(value, re.I)
        except re.error as exc:
            raise ValueError(f"invalid regex {value!r}: {exc}") from None
    return values


class _TopicSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    title: _TopicText
    strong: Annotated[list[_TopicText], Field(min_length=1)]
    weak: list[_TopicText] = Field(default_factory=list)
    answer: _TopicText

    _strong = field_validator("strong")(_compile_all)
    _weak = field_validator("weak")(_compile_all)


@dataclass(frozen=True)
class Topic:
    """One common question: how to recognise it and its fixed answer."""

    id: str
    title: str
    strong: tuple[re.Pattern[str], ...]
    weak: tuple[re.Pattern[str], ...]
    answer: str

    def score(self, question: str) -> int:
        """How well `question` (normalised) fits: 0 unless one strong or two weak regexes match."""
        strong = sum(1 for p in self.strong if p.search(question))
        weak = sum(1 for p in self.weak if p.search(question))
        return STRONG * strong + WEAK * weak if strong or weak >= 2 else 0


def load_topics(path: Path | None = None) -> tuple[Topic, ...]:
    """Read and validate the Q&A topics (default: the packaged topics.toml), patterns compiled."""
    target = path if path is not None else data_file("config", "topics.toml")
    try:
        data = tomllib.loads(target.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TopicsError(f"{target}: cannot read topics: {exc}") from exc
    entries = data.get("topic")
    if set(data) != {"topic"} or not isinstance(entries, list) or not entries:
        raise TopicsError(f"{target}: expected only [[topic]] entries, found {sorted(data) or 'nothing'}")
    out: list[Topic] = []
    for n, entry in enumerate(entries, start=1):
        try:
            spec = _TopicSpec.model_validate(entry)
        except ValidationError as exc:
            fields = "; ".join(
                f"field {'.'.join(str(p) for p in e['loc']) or '<entry>'!r}: {e['msg']}" for e in exc.errors()
            )
            raise TopicsError(f"{target}: topic #{n}: {fields}") from None
        if any(t.id == spec.id for t in out):
            raise TopicsError(f"{target}: topic #{n}: id {spec.id!r} is used twice")
        out.append(
            Topic(
                id=spec.id,
                title=spec.title,
                strong=tuple(re.compile(p, re.I) for p in spec.strong),
                weak=tuple(re.compile(p, re.I) for p in spec.weak),
                answer=spec.answer,
            )
        )
    return tuple(out)


@functools.cache
def topics() -> tuple[Topic, ...]:
    """The packaged topics, read on first use; cached for good since packaged data never changes at run time."""
    return load_topics()


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def answer_code(question: str) -> str | None:
    """Exact answers for the status/error codes a question names, or None."""
    wants_host = bool(re.search(r"主机|host|ip", question, re.I))
    wants_gse = bool(re.search(r"gse|error_?code|错误码", question, re.I))
    c = codes()
    lines: list[str] = []
    for m in _CODE.finditer(question):
        if _EXIT_BEFORE.search(question, 0, m.start()):
            continue  # "exit code 1": the script's own code
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


_NAMES_A_CODE = re.compile(r"(?i)状态码|错误码|错误代码|状态值|\bcode\b")


def unknown_code(question: str) -> int | None:
    """The one code a question asks about by name ("状态码 313 是什么意思"), for a question that
    `answer_code` found no table entry for: the caller checks that first.

    Answered as unknown, never handed to the model: an invented meaning costs the bot its users' trust."""
    if not _NAMES_A_CODE.search(question):
        return None
    asked = [m for m in _CODE.finditer(question) if not _EXIT_BEFORE.search(question, 0, m.start())]
    return int(asked[0].group(1)) if len(asked) == 1 else None


def asks_meaning(question: str) -> bool:
    """The question asks what a code means ("状态码 310 是什么意思", a bare "310？")."""
    rest = _CODE.sub("", question)
    return bool(_ASKS_MEANING.search(question)) or len(re.sub(r"[\W_]+", "", rest)) <= 2


def rank_topics(question: str, table: Sequence[Topic] | None = None) -> list[Topic]:
    """The topics `question` fits, best first (ties keep file order)."""
    text = _normalise(question)
    scored = [(t.score(text), i, t) for i, t in enumerate(topics() if table is None else table)]
    return [t for score, _i, t in sorted(scored, key=lambda s: (-s[0], s[1])) if score > 0]


def answer_topic(question: str, table: Sequence[Topic] | None = None) -> str | None:
    """The fixed answer of the best topic; topics tied for best are answered together."""
    table = topics() if table is None else table
    ranked = rank_topics(question, table)
    if not ranked:
        return None
    text = _normalise(question)
    best = ranked[0].score(text)
    tied = [t for t in ranked if t.score(text) == best][:MAX_COMBINED]
    if len(tied) == 1:
        return tied[0].answer
    return "\n\n".join(f"【{t.title}】\n{t.answer}" for t in tied)


def answer_codes_in_general(question: str) -> str | None:
    """Codes in general ("状态码有哪些"): the job/step statuses, and how to ask about one code."""
    if not _CODES_IN_GENERAL.search(question) or _CODE.search(question):
        return None
    c = codes()
    run = "；".join(f"{k} {v}" for k, v in sorted(c.run_status.zh.items()))
    return f"作业/步骤状态：{run}。\n主机状态和接口错误码较多，发具体数字给我解释，例如「状态码 310 是什么意思」。"


def offline_titles() -> list[str]:
    """What the bot answers without a model, for the fallback and the help."""
    return [t.title for t in topics()]


def knowledge_snippet() -> str:
    """Compact reference text handed to the model for Q&A grounding."""
    c = codes()
    host = "；".join(f"{k} {v}" for k, v in sorted(c.host_status.zh.items()))
    run = "；".join(f"{k} {v}" for k, v in sorted(c.run_status.zh.items()))
    api = "；".join(f"{k} {v}" for k, v in sorted(c.api_error.zh.items()))
    common = "\n".join(f"【{t.title}】{t.answer}" for t in topics())
    return f"作业/步骤状态：{run}\n主机状态：{host}\n接口错误码：{api}\n常见问题：\n{common}"
