"""Failure-signature catalog and matcher: the rule brain that diagnoses without a language model.

The catalog (`config/signatures.toml`) is data: each `[[signature]]` names exact BK-JOB engine log
texts (reference bk-job.md §1.4/§2.6/§7) as regexes with named groups, the stage and fault side
they imply, and Chinese templates for the report. This module validates and compiles it once
(`load_catalog`) and matches it against the records of one step chain (`Catalog.match/best`).

Matching semantics of one entry:
- `patterns`: a record whose text (message, plus "\\n" + stack when there is one) matches any of
  them is a *decisive* line, unless its level is known and not in `require_level`, or one of the
  `unless` regexes matches the same record text.
- `all_of` / `any_of`: chain context that must also be present (every / at least one regex
  matches some record); the records found corroborate the match.
- `none_of`: chain context that must be absent (e.g. "sent to GSE" with no answer at all).
- `context`: optional corroborating lines; they add evidence and placeholder values.
Regexes are compiled with `re.MULTILINE` (`$` ends a line, so stacks do not get in the way).

Speed (chains reach 100k lines): every regex run over the whole chain must contain a literal of
at least `MIN_LITERAL_LEN` UTF-8 bytes outside non-literal groups (bytes: CJK text is selective).
`literal_runs` extracts, at load time, every text a match must contain; the longest is searched
for with `str.find` in one joined text of the chain (C speed, linear), the others are substring
tests on those candidates, and only records passing both reach the regex. Matching is linear in
the number of records. The ids of the step/job are taken from the decisive lines, else from the
lines around them, else from `known` values the caller passes.

Usage::

    catalog = load_catalog()                       # once, at start-up
    best = catalog.best(records, known={"step_instance_id": "20031265375"})
"""

from __future__ import annotations

import bisect
import re
import string
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from bot.core.codes import codes
from bot.core.models import Actions, Evidence, FaultSide, Stage
from bot.core.resources import data_file
from bot.diagnosis.records import LogRecord

MIN_LITERAL_LEN = 5
# decisive lines kept per match (first half + last half when there are more); context lines per regex
MAX_DECISIVE_LINES = 40
MAX_CONTEXT_LINES = 3
# how many distinct values a placeholder lists before "等 N 个"
MAX_LISTED_VALUES = 10
_FLAGS = re.MULTILINE
_SEPARATOR = "\x00"  # joins record texts into one blob; never part of a literal


class CatalogError(ValueError):
    """The catalog file is unreadable or an entry is invalid (the message names entry and field)."""


# --------------------------------------------------------------------------- placeholders

# Ids pulled from every decisive line, whatever the entry's own regexes capture.
_COMMON_EXTRACTORS: tuple[re.Pattern[str], ...] = (
    re.compile(
        r"(?P<gse_task>Job:(?P<task_instance_id>\d+)-GseTask:(?P<gse_task_id>\d+):"
        r"(?P<step_instance_id>\d+):(?P<execute_count>\d+)(?::(?P<batch>\d+))?)"
    ),
    re.compile(r"\bstepInstanceId(?:=|: ?)(?P<step_instance_id>\d+)"),
    re.compile(r"\b(?:taskInstanceId|TaskInstanceId|jobInstanceId)(?:=|: ?)(?P<task_instance_id>\d+)"),
)
_ID_NAMES = frozenset({"task_instance_id", "step_instance_id"})
NEIGHBOUR_LINES = 200
_COMMON_NAMES = frozenset(
    {"gse_task", "task_instance_id", "gse_task_id", "step_instance_id", "execute_count", "batch", "trace_id"}
)
# Placeholders `derive_values` may produce besides the captured groups.
DERIVED_NAMES = frozenset(
    {
        "host_status",
        "host_status_zh",
        "exit_code",
        "exit_code_raw",
        "exit_code_note",
        "gse_error_note",
        "api_code",
        "api_error_zh",
        "run_status_zh",
        "gse_task_status_zh",
        "execute_result_zh",
        "run_duration_s",
        "hosts",
        "host",
        "host_count",
        "count",
        "time",
        "title",
    }
)
# What a placeholder shows when the logs did not provide it.
FALLBACKS: dict[str, str] = {
    "hosts": "（日志未列出主机）",
    "host": "<主机>",
    "host_count": "若干",
    "error_msg": "（GSE 未给出错误信息）",
    "count": "0",
    "callback_url": "（日志未记录回调地址）",
    "uri": "（日志未记录接口地址）",
}
DEFAULT_FALLBACK = "未知"

_HOST_KEYS = ("hosts", "agent_id", "execute_object_key", "ip")


def _ints(values: Iterable[str]) -> list[int]:
    out: list[int] = []
    for v in values:
        try:
            out.append(int(v.strip()))
        except ValueError:
            continue
    return out


def _join(values: Sequence[str]) -> str:
    if len(values) <= MAX_LISTED_VALUES:
        return "、".join(values)
    return "、".join(values[:MAX_LISTED_VALUES]) + f" 等 {len(values)} 个"


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v != ""))


def _exit(raw: int) -> int:
    # GSE may report the raw wait status: `exit 1` shows as 256 (§2.3)
    return raw // 256 if raw >= 256 else raw


_ARG_RE = re.compile(r"\{\d+\}")


def derive_values(captured: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Turn captured group values (all distinct values per name, in line order) into placeholders.

    Every captured name is rendered as its values joined with "、". Derived names:
    - `error_code` (GSE atomic error_code) -> `host_status` + `host_status_zh` (§2.3, §2.2); a
      captured/default `host_status` is translated as well;
    - `exit_code` normalised (≥256 → ÷256), `exit_code_raw` as logged, `exit_code_note` explains
      a conversion (empty when none); `gse_error_note` = "（GSE 返回码 c：msg）" from
      `gse_code`/`gse_error_code`/`error_msg` (empty when none);
    - `api_code` -> `api_error_zh` (§2.5, message arguments shown as "…");
    - `run_status` -> `run_status_zh`, `gse_task_status` (enum name) -> `gse_task_status_zh`,
      `execute_result` -> `execute_result_zh`; `run_duration` (ms) -> `run_duration_s`;
    - `hosts`/`host`/`host_count` from `hosts`, `agent_id`, `execute_object_key` or `ip`.
    Names nobody provided are left out; `render` shows a fallback for them.
    """
    out = {name: _join(_unique(vals)) for name, vals in captured.items() if _unique(vals)}
    tables = codes()

    status_codes: list[int] = _ints(captured.get("host_status", ()))
    for code in _ints(captured.get("error_code", ())):
        if code != 0:
            status_codes.append(tables.gse.error_to_host_status.get(code, 0))
    statuses = list(dict.fromkeys(status_codes))
    if statuses:
        out["host_status"] = _join([str(s) for s in statuses])
        out["host_status_zh"] = _join([tables.host_status.zh.get(s, "未知状态") for s in statuses])

    raw_exit = _ints(captured.get("exit_code", ()))
    if raw_exit:
        norm = list(dict.fromkeys(_exit(c) for c in raw_exit))
        out["exit_code"] = _join([str(c) for c in norm])
        out["exit_code_raw"] = _join([str(c) for c in dict.fromkeys(raw_exit)])
        converted = [c for c in dict.fromkeys(raw_exit) if c >= 256]
        if converted:
            pairs = "、".join(f"exitCode={c} 即 {_exit(c)}" for c in converted)
            out["exit_code_note"] = f"（日志中 {pairs}：GSE 报的是原始等待状态，÷256 为真实返回码）"

    api_codes = _ints(captured.get("api_code", ()))
    if api_codes:
        out["api_error_zh"] = _join(
            [_ARG_RE.sub("…", tables.api_error.zh.get(a, "未收录的错误码")) for a in dict.fromkeys(api_codes)]
        )
    run_status = _ints(captured.get("run_status", ()))
    if run_status:
        out["run_status_zh"] = _join(
            [tables.run_status.zh.get(r, "未知状态") for r in dict.fromkeys(run_status)]
        )
    gse_status = _unique(captured.get("gse_task_status", ()))
    if gse_status:
        out["gse_task_status_zh"] = _join(
            [tables.run_status.zh.get(tables.run_status.by_name.get(n, -1), n) for n in gse_status]
        )
    results = _ints(captured.get("execute_result", ()))
    if results:
        out["execute_result_zh"] = _join(
            [tables.execute_result.zh.get(r, "未知") for r in dict.fromkeys(results)]
        )
    gse_codes = _unique([*captured.get("gse_code", ()), *captured.get("gse_error_code", ())])
    msgs = _unique(captured.get("error_msg", ()))
    if gse_codes or msgs:
        detail = "：".join(
            p for p in (f"GSE 返回码 {_join(gse_codes)}" if gse_codes else "", _join(msgs)) if p
        )
        out["gse_error_note"] = f"（{detail}）"
    durations = _ints(captured.get("run_duration", ()))
    if durations:
        out["run_duration_s"] = _join([str(d // 1000) for d in dict.fromkeys(durations)])

    hosts: list[str] = []
    for key in _HOST_KEYS:
        hosts.extend(captured.get(key, ()))
    hosts = _unique(hosts)
    if hosts:
        out.setdefault("hosts", _join(hosts))
        out["host"] = hosts[0]
        if "host_count" not in out and "hosts" not in captured:
            out["host_count"] = str(len(hosts))
    return out


def _fallback(name: str) -> str:
    # `*_note` placeholders are optional asides: absent means nothing to add
    return "" if name.endswith("_note") else FALLBACKS.get(name, DEFAULT_FALLBACK)


class _SafeFormatter(string.Formatter):
    def get_value(self, key: int | str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        name = str(key)
        value = kwargs.get(name)
        if value is None or value == "":
            return _fallback(name)
        return value


_FORMATTER = _SafeFormatter()


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill `{name}` placeholders; a name with no value shows its fallback, never `{name}`."""
    return _FORMATTER.vformat(template, (), values)


def template_fields(template: str) -> list[str]:
    """Placeholder names of a template; raises ValueError for anything but plain `{name}`."""
    names: list[str] = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"placeholder {{{name}}} must be a plain name (no index, format or conversion)")
        names.append(name)
    return names


# --------------------------------------------------------------------------- literal pre-filter

_QUANT_RE = re.compile(r"\{(\d*)(?:,(\d*))?\}")


def _skip_class(pattern: str, i: int) -> int:
    j = i + 1
    if j < len(pattern) and pattern[j] == "^":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    while j < len(pattern):
        if pattern[j] == "\\":
            j += 2
        elif pattern[j] == "]":
            return j + 1
        else:
            j += 1
    return j


_MAX_ALTERNATIVES = 32


def _group_end(pattern: str, i: int) -> int:
    """Index just after the `)` closing the group that opens at `pattern[i]`."""
    depth = 0
    j = i
    while j < len(pattern):
        c = pattern[j]
        if c == "\\":
            j += 2
            continue
        if c == "[":
            j = _skip_class(pattern, j)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return j


def _exact_alternatives(body: str) -> tuple[str, ...] | None:
    """The strings a group body matches when it is only literal text and `|`, else None."""
    alts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body) and not body[i + 1].isalnum():
            cur.append(body[i + 1])
            i += 2
            continue
        if c == "|":
            alts.append("".join(cur))
            cur = []
        elif c in "\\[](){}.^$*+?":
            return None
        else:
            cur.append(c)
        i += 1
    alts.append("".join(cur))
    return tuple(alts)


def _group_body(pattern: str, start: int, end: int) -> str | None:
    """Body of a capturing or non-capturing group; None for lookarounds and inline flags."""
    inner = pattern[start + 1 : end - 1]
    if not inner.startswith("?"):
        return inner
    if inner.startswith("?:"):
        return inner[2:]
    if inner.startswith("?P<"):
        close = inner.find(">")
        return inner[close + 1 :] if close > 0 else None
    return None


def _quantifier(pattern: str, i: int) -> tuple[int, int]:
    """(minimum repeat, length of the quantifier text) of what follows position i."""
    nxt = pattern[i] if i < len(pattern) else ""
    if nxt in ("*", "?"):
        return 0, 1
    if nxt == "+":
        return 1, 1
    if nxt == "{":
        q = _QUANT_RE.match(pattern, i)
        if q is not None and (q.group(1) or q.group(2)):
            return int(q.group(1) or 0), q.end() - i
    return 1, 0


def literal_runs(pattern: str) -> list[tuple[str, ...]]:
    """Texts every match of `pattern` must contain: each run is a tuple of alternatives, one of which
    appears in any match.

    Conservative scan of the regex source: top-level literal characters and groups that are only
    literal alternatives (`(?:Base|Abstract)`, `(?P<code>117)`) form runs; classes, escapes like
    `\\d`, other groups and optional parts break them. A top-level `|` or a case-insensitive/verbose
    flag means nothing is guaranteed.
    """
    if re.compile(pattern).flags & (re.IGNORECASE | re.VERBOSE):
        return []
    runs: list[tuple[str, ...]] = []
    cur: list[str] = [""]
    i = 0
    n = len(pattern)

    def flush() -> None:
        nonlocal cur
        if cur != [""]:
            runs.append(tuple(cur))
        cur = [""]

    def extend(options: Sequence[str]) -> None:
        nonlocal cur
        grown = [a + o for a in cur for o in options]
        if len(grown) > _MAX_ALTERNATIVES:
            flush()
            grown = list(options)
        cur = grown

    while i < n:
        c = pattern[i]
        options: tuple[str, ...] | None
        if c == "\\":
            nxt = pattern[i + 1] if i + 1 < n else ""
            i += 2
            options = (nxt,) if nxt and not nxt.isalnum() else None
        elif c == "[":
            i = _skip_class(pattern, i)
            options = None
        elif c == "(":
            end = _group_end(pattern, i)
            body = _group_body(pattern, i, end)
            options = _exact_alternatives(body) if body is not None else None
            i = end
        elif c == "|":
            return []
        elif c in ".^$*+?)":
            i += 1
            options = None
        elif c == "{" and _quantifier(pattern, i)[1]:
            i += _quantifier(pattern, i)[1]
            options = None
        else:
            i += 1
            options = (c,)
        if options is None or "" in options:
            flush()
            continue
        minimum, qlen = _quantifier(pattern, i)
        if minimum == 0:
            flush()
        elif qlen:
            extend(options)
            flush()
        else:
            extend(options)
        i += qlen
    flush()
    return runs


def _common_affixes(run: tuple[str, ...]) -> list[str]:
    if len(run) == 1:
        return [run[0]]
    return [_common_prefix(run), _common_prefix([a[::-1] for a in run])[::-1]]


def _common_prefix(texts: Sequence[str]) -> str:
    first, last = min(texts), max(texts)
    n = 0
    while n < len(first) and first[n] == last[n]:
        n += 1
    return first[:n]


def required_literal(pattern: str) -> str:
    """The longest single text every match of `pattern` must contain, or ""."""
    return max((a for r in literal_runs(pattern) for a in _common_affixes(r)), key=len, default="")


@dataclass(frozen=True, slots=True)
class AnyOf:
    """A required text with alternatives (`errorCode=104` | `errorCode=123`), tested cheaply."""

    alternatives: tuple[str, ...]
    prefix: str  # common to all alternatives; found once, then the rest is looked up in a set
    rests: frozenset[str]
    rest_lengths: tuple[int, ...]

    @classmethod
    def of(cls, alternatives: tuple[str, ...]) -> AnyOf:
        prefix = _common_prefix(alternatives)
        rests = frozenset(a[len(prefix) :] for a in alternatives)
        return cls(alternatives, prefix, rests, tuple(sorted({len(r) for r in rests})))

    def found_in(self, text: str) -> bool:
        if len(self.alternatives) == 1:
            return self.alternatives[0] in text
        if len(self.prefix) < 3:
            return any(a in text for a in self.alternatives)
        plen = len(self.prefix)
        pos = text.find(self.prefix)
        while pos >= 0:
            start = pos + plen
            for n in self.rest_lengths:
                if text[start : start + n] in self.rests:
                    return True
            pos = text.find(self.prefix, start)
        return False


@dataclass(frozen=True, slots=True)
class CompiledPattern:
    source: str
    regex: re.Pattern[str]
    literal: str  # scanned for in the whole chain
    filters: tuple[AnyOf, ...] = ()  # further required texts, checked before the regex runs


def _scan_literals(pattern: str) -> list[str]:
    """Texts usable as the chain-wide scan for `pattern` (required, long enough), longest first."""
    found = {
        a for r in literal_runs(pattern) for a in _common_affixes(r) if len(a.encode()) >= MIN_LITERAL_LEN
    }
    return sorted(found, key=len, reverse=True)


def _compile(pattern: str, *, need_literal: bool, prefer: Mapping[str, int] | None = None) -> CompiledPattern:
    """Compile one regex with its pre-filter. `prefer` counts how many catalog regexes can use each
    scan literal: a shared literal costs one scan of the chain for all of them."""
    try:
        regex = re.compile(pattern, _FLAGS)
    except re.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from exc
    runs = literal_runs(pattern)
    options = _scan_literals(pattern)
    usage = prefer or {}
    literal = max(options, key=lambda lit: (usage.get(lit, 0), len(lit)), default="")
    # longest (most specific) first, so later checks see few candidates
    filters = tuple(
        AnyOf.of(r) for r in sorted((r for r in runs if r != (literal,)), key=lambda r: -min(map(len, r)))
    )
    if need_literal and not literal:
        raise ValueError(
            f"regex {pattern!r} has no literal text of at least {MIN_LITERAL_LEN} bytes outside "
            "groups, needed as the pre-filter; quote more of the exact log text"
        )
    return CompiledPattern(pattern, regex, literal, filters)


# --------------------------------------------------------------------------- catalog schema


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


StrList = Annotated[list[Annotated[str, Field(min_length=1)]], BeforeValidator(_as_list)]
Level = Literal["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
SignatureStage = Literal[
    "parameter_check", "initialization", "dispatch", "execution", "result_polling", "callback"
]


class SignatureSpec(BaseModel):
    """One `[[signature]]` entry as written in the TOML file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
    title: str = Field(min_length=1)
    stage: SignatureStage
    fault_side: FaultSide
    priority: int
    confidence: float = Field(ge=0.0, le=1.0)
    patterns: StrList = Field(min_length=1)
    require_level: Annotated[list[Level], BeforeValidator(_as_list)] = Field(default_factory=list)
    unless: StrList = Field(default_factory=list)
    all_of: StrList = Field(default_factory=list)
    any_of: StrList = Field(default_factory=list)
    none_of: StrList = Field(default_factory=list)
    context: StrList = Field(default_factory=list)
    defaults: dict[str, str] = Field(default_factory=dict)
    cause: str = Field(min_length=1)
    summary: str = Field(min_length=1)
    immediate: StrList = Field(min_length=1)
    root_fix: StrList = Field(min_length=1)
    improvements: StrList = Field(default_factory=list)
    prevention: StrList = Field(min_length=1)
    missing_info_hint: StrList = Field(default_factory=list)

    @field_validator("patterns", "all_of", "any_of", "none_of", "context")
    @classmethod
    def _scan_regexes(cls, value: list[str]) -> list[str]:
        for p in value:
            _compile(p, need_literal=True)
        return value

    @field_validator("unless")
    @classmethod
    def _check_regexes(cls, value: list[str]) -> list[str]:
        for p in value:
            _compile(p, need_literal=False)
        return value

    @field_validator(
        "cause", "summary", "immediate", "root_fix", "improvements", "prevention", "missing_info_hint"
    )
    @classmethod
    def _templates(cls, value: str | list[str]) -> str | list[str]:
        for t in [value] if isinstance(value, str) else value:
            template_fields(t)
        return value

    def group_names(self) -> set[str]:
        names: set[str] = set()
        for p in (*self.patterns, *self.all_of, *self.any_of, *self.context):
            names.update(re.compile(p).groupindex)
        return names


@dataclass(frozen=True, slots=True)
class Signature:
    spec: SignatureSpec
    patterns: tuple[CompiledPattern, ...]
    unless: tuple[CompiledPattern, ...]
    all_of: tuple[CompiledPattern, ...]
    any_of: tuple[CompiledPattern, ...]
    none_of: tuple[CompiledPattern, ...]
    context: tuple[CompiledPattern, ...]

    @property
    def id(self) -> str:
        return self.spec.id

    @classmethod
    def build(cls, spec: SignatureSpec, prefer: Mapping[str, int] | None = None) -> Signature:
        def scanned(sources: list[str]) -> tuple[CompiledPattern, ...]:
            return tuple(_compile(p, need_literal=True, prefer=prefer) for p in sources)

        return cls(
            spec=spec,
            patterns=scanned(spec.patterns),
            unless=tuple(_compile(p, need_literal=False) for p in spec.unless),
            all_of=scanned(spec.all_of),
            any_of=scanned(spec.any_of),
            none_of=scanned(spec.none_of),
            context=scanned(spec.context),
        )


# --------------------------------------------------------------------------- matching


@dataclass(frozen=True, slots=True)
class SignatureMatch:
    """One catalog entry that fired on a chain, with its decisive lines and filled texts."""

    id: str
    title: str
    stage: Stage
    fault_side: FaultSide
    priority: int
    confidence: float
    records: tuple[LogRecord, ...]  # the decisive lines, whole, in chain order
    context: tuple[LogRecord, ...]  # corroborating lines (all_of/any_of/context), in chain order
    hit_count: int  # decisive lines found (records may keep fewer)
    values: Mapping[str, str]  # placeholder values (captured + derived)
    cause: str
    summary: str
    actions: Actions
    prevention: tuple[str, ...]
    missing_info: tuple[str, ...]
    last_index: int  # position of the latest decisive line in the input
    last_time: datetime | None = field(default=None)

    def rank(self) -> tuple[int, tuple[int, datetime, int], int]:
        """Sort key: priority, then the latest decisive failure in time, then corroborating lines."""
        when = (1, self.last_time, self.last_index) if self.last_time else (0, datetime.min, self.last_index)
        return (self.priority, when, self.hit_count + len(self.context))

    def evidence(self) -> list[Evidence]:
        """Decisive then corroborating lines as report evidence (text kept whole)."""
        out: list[Evidence] = []
        for rec, why in [(r, self.title) for r in self.records] + [
            (r, f"{self.title}（佐证）") for r in self.context
        ]:
            out.append(
                Evidence(
                    time=rec.time_text,
                    level=rec.level,
                    logger=rec.logger,
                    trace_id=rec.trace_id,
                    text=rec.raw,
                    why=why,
                )
            )
        return out


def _record_text(rec: LogRecord) -> str:
    return f"{rec.message}\n{rec.stack}" if rec.stack else rec.message


class _ChainIndex:
    """The chain's record texts joined once; literal lookups are C-speed `str.find` scans."""

    def __init__(self, records: Sequence[LogRecord]) -> None:
        self.records = records
        self.texts = [_record_text(r).replace(_SEPARATOR, " ") for r in records]
        self.starts: list[int] = []
        pos = 0
        for t in self.texts:
            self.starts.append(pos)
            pos += len(t) + 1
        self.blob = _SEPARATOR.join(self.texts)
        self._cache: dict[str, list[int]] = {}

    def candidates(self, literal: str) -> list[int]:
        found = self._cache.get(literal)
        if found is not None:
            return found
        found = []
        blob, starts = self.blob, self.starts
        at = blob.find(literal)
        while at >= 0:
            idx = bisect.bisect_right(starts, at) - 1
            found.append(idx)
            nxt = idx + 1
            if nxt >= len(starts):
                break
            at = blob.find(literal, starts[nxt])
        self._cache[literal] = found
        return found

    def scan(
        self, pattern: CompiledPattern, unless: Sequence[CompiledPattern] = ()
    ) -> list[tuple[int, re.Match[str]]]:
        """Records matching `pattern` and none of `unless` (checked first: they are cheap)."""
        hits: list[tuple[int, re.Match[str]]] = []
        texts = self.texts
        candidates = self.candidates(pattern.literal)
        for need in pattern.filters:
            # further required texts: a substring test is far cheaper than a failing regex
            if len(need.alternatives) == 1:
                alt = need.alternatives[0]
                candidates = [i for i in candidates if alt in texts[i]]
            else:
                candidates = [i for i in candidates if need.found_in(texts[i])]
            if not candidates:
                return []
        for idx in candidates:
            text = texts[idx]
            if unless and any(u.literal in text and u.regex.search(text) for u in unless):
                continue
            m = pattern.regex.search(text)
            if m is not None:
                hits.append((idx, m))
        return hits


def _collect(values: dict[str, list[str]], m: re.Match[str]) -> None:
    for name, val in m.groupdict().items():
        if val is not None:
            bucket = values.setdefault(name, [])
            if val not in bucket:
                bucket.append(val)


def _extract_ids(text: str, captured: dict[str, list[str]]) -> None:
    for extractor in _COMMON_EXTRACTORS:
        for m in extractor.finditer(text):
            for name, val in m.groupdict().items():
                if val is not None and name not in captured:
                    captured[name] = [val]


def _keep(indices: list[int], cap: int) -> list[int]:
    if len(indices) <= cap:
        return indices
    half = cap // 2
    return indices[:half] + indices[-(cap - half) :]


def _match_one(sig: Signature, index: _ChainIndex, known: Mapping[str, str]) -> SignatureMatch | None:
    spec = sig.spec
    decisive: dict[int, re.Match[str]] = {}
    for pat in sig.patterns:
        for idx, m in index.scan(pat, sig.unless):
            decisive.setdefault(idx, m)
    levels = set(spec.require_level)
    hits: list[tuple[int, re.Match[str]]] = []
    for idx in sorted(decisive):
        rec = index.records[idx]
        if levels and rec.level is not None and rec.level not in levels:
            continue
        hits.append((idx, decisive[idx]))
    if not hits:
        return None

    for pat in sig.none_of:
        if index.scan(pat):
            return None
    corroborating: list[tuple[int, re.Match[str]]] = []
    for pat in sig.all_of:
        found = index.scan(pat)
        if not found:
            return None
        corroborating.extend(found[-MAX_CONTEXT_LINES:])
    if sig.any_of:
        found_any = [f for pat in sig.any_of for f in index.scan(pat)[-MAX_CONTEXT_LINES:]]
        if not found_any:
            return None
        corroborating.extend(found_any)
    for pat in sig.context:
        corroborating.extend(index.scan(pat)[-MAX_CONTEXT_LINES:])

    captured: dict[str, list[str]] = {}
    for _, m in hits:
        _collect(captured, m)
    for idx, _ in hits:
        _extract_ids(index.texts[idx], captured)
    for _, m in sorted(corroborating, key=lambda h: h[0]):
        for name, val in m.groupdict().items():
            if val is not None:
                captured.setdefault(name, [])
                if val not in captured[name]:
                    captured[name].append(val)
    trace_ids = _unique(index.records[idx].trace_id or "" for idx, _ in hits)
    if trace_ids:
        captured.setdefault("trace_id", trace_ids)
    for name, val in spec.defaults.items():
        captured.setdefault(name, [val])
    for name, val in known.items():
        if val:
            captured.setdefault(name, [val])
    if not _ID_NAMES <= captured.keys():
        # the decisive line may not name the step (e.g. `Start gse task fail, account is null!`):
        # borrow ids from the nearest lines around it, which belong to the same step chain
        first = hits[0][0]
        around = [
            *range(first - 1, max(-1, first - 1 - NEIGHBOUR_LINES), -1),
            *range(first + 1, min(len(index.texts), first + 1 + NEIGHBOUR_LINES)),
        ]
        for idx in around:
            _extract_ids(index.texts[idx], captured)
            if _ID_NAMES <= captured.keys():
                break

    values = derive_values(captured)
    last_idx = hits[-1][0]
    last_rec = index.records[last_idx]
    values.setdefault("count", str(len(hits)))
    if last_rec.time_text:
        values.setdefault("time", last_rec.time_text)
    values.setdefault("title", spec.title)

    decisive_idx = _keep([idx for idx, _ in hits], MAX_DECISIVE_LINES)
    hit_set = {idx for idx, _ in hits}
    context_idx = sorted({idx for idx, _ in corroborating} - hit_set)
    times = [t for idx, _ in hits if (t := index.records[idx].time) is not None]
    return SignatureMatch(
        id=spec.id,
        title=spec.title,
        stage=spec.stage,
        fault_side=spec.fault_side,
        priority=spec.priority,
        confidence=spec.confidence,
        records=tuple(index.records[i] for i in decisive_idx),
        context=tuple(index.records[i] for i in context_idx),
        hit_count=len(hits),
        values=values,
        cause=render(spec.cause, values),
        summary=render(spec.summary, values),
        actions=Actions(
            immediate=[render(t, values) for t in spec.immediate],
            root_fix=[render(t, values) for t in spec.root_fix],
            improvements=[render(t, values) for t in spec.improvements],
        ),
        prevention=tuple(render(t, values) for t in spec.prevention),
        missing_info=tuple(render(t, values) for t in spec.missing_info_hint),
        last_index=last_idx,
        last_time=max(times) if times else None,
    )


@dataclass(frozen=True, slots=True)
class Catalog:
    signatures: tuple[Signature, ...]
    source: str = ""

    def __len__(self) -> int:
        return len(self.signatures)

    def ids(self) -> list[str]:
        return [s.id for s in self.signatures]

    def get(self, signature_id: str) -> Signature | None:
        return next((s for s in self.signatures if s.id == signature_id), None)

    def match(
        self, records: Sequence[LogRecord], known: Mapping[str, str] | None = None
    ) -> list[SignatureMatch]:
        """Every entry that fires on the chain, most decisive first (see `SignatureMatch.rank`).

        `known`: placeholder values the caller already has (e.g. `step_instance_id`,
        `task_instance_id` from the request); values found in the lines take precedence.
        """
        if not records:
            return []
        index = _ChainIndex(records)
        extra = dict(known or {})
        found = [m for sig in self.signatures if (m := _match_one(sig, index, extra)) is not None]
        found.sort(key=SignatureMatch.rank, reverse=True)
        return found

    def best(
        self, records: Sequence[LogRecord], known: Mapping[str, str] | None = None
    ) -> SignatureMatch | None:
        """The most decisive match: priority, then the latest failure in time, then most lines."""
        found = self.match(records, known)
        return found[0] if found else None


# --------------------------------------------------------------------------- loading


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<entry>"
        parts.append(f"field {loc!r}: {e['msg']}")
    return "; ".join(parts)


def parse_catalog(data: Mapping[str, Any], source: str = "<catalog>") -> Catalog:
    """Validate and compile a catalog already read from TOML (`{"signature": [...]}`)."""
    entries = data.get("signature")
    if not isinstance(entries, list) or not entries:
        raise CatalogError(f"{source}: no [[signature]] entries")
    unknown_top = set(data) - {"signature"}
    if unknown_top:
        raise CatalogError(f"{source}: unknown top-level keys {sorted(unknown_top)}")
    specs: list[SignatureSpec] = []
    seen: set[str] = set()
    for n, entry in enumerate(entries, start=1):
        sid = entry.get("id") if isinstance(entry, dict) else None
        label = f"signature {sid!r} (entry #{n})" if sid else f"signature entry #{n}"
        try:
            spec = SignatureSpec.model_validate(entry)
        except ValidationError as exc:
            raise CatalogError(f"{source}: {label}: {_describe(exc)}") from None
        if spec.id in seen:
            raise CatalogError(f"{source}: {label}: field 'id': duplicate id")
        seen.add(spec.id)
        known = spec.group_names() | DERIVED_NAMES | _COMMON_NAMES | set(spec.defaults)
        for fname in (
            "cause",
            "summary",
            "immediate",
            "root_fix",
            "improvements",
            "prevention",
            "missing_info_hint",
        ):
            value = getattr(spec, fname)
            for t in [value] if isinstance(value, str) else value:
                unknown = [p for p in template_fields(t) if p not in known]
                if unknown:
                    raise CatalogError(
                        f"{source}: {label}: field {fname!r}: unknown placeholder(s) {unknown} "
                        "(not a named group, default or derived value)"
                    )
        specs.append(spec)
    # literals several regexes can scan for are preferred: each distinct one is a pass over the chain
    usage: dict[str, int] = {}
    for spec in specs:
        for p in (*spec.patterns, *spec.all_of, *spec.any_of, *spec.none_of, *spec.context):
            for lit in _scan_literals(p):
                usage[lit] = usage.get(lit, 0) + 1
    return Catalog(tuple(Signature.build(spec, usage) for spec in specs), source)


def load_catalog(path: Path | None = None) -> Catalog:
    """Read, validate and compile the signature catalog (default: the packaged signatures.toml)."""
    target = path if path is not None else data_file("config", "signatures.toml")
    try:
        data = tomllib.loads(target.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"{target}: cannot read catalog: {exc}") from exc
    return parse_catalog(data, str(target))
