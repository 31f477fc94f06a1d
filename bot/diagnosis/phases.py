"""Phase and severity of each engine record, by message template (`config/phases.toml`).

Classification goes by message template (the exact texts the engine logs), never by logger. A record
is put in one of the phases of `bot.core.models.PHASES`, or in none (``phase=None``) when it is a
generic chain line (event dispatch/handling, step refresh, API calls to other systems) whose phase
depends on where the chain was; the timeline (`timeline.py`) then places its warnings and failures by
context. The runs of a step are in `runs.py`.

The templates are data; a template may name a resolver, one of `RESOLVERS`, that decides from the
parsed line. The file is validated and indexed once, on first use (`phase_rules()`).

Usage::

    c = classify(record)   # Classification(phase="dispatch", severity="fail", template="Start gse task fail")
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.core.models import Stage
from bot.core.resources import data_file
from bot.diagnosis.extract import (
    parse_api_call,
    parse_callback,
    parse_gse_finish,
    parse_script_result,
    parse_step_refresh,
)
from bot.diagnosis.records import LogRecord

__all__ = [
    "RESOLVERS",
    "SEVERITY_RANK",
    "Classification",
    "PhaseRules",
    "PhasesError",
    "Severity",
    "classify",
    "load_phase_rules",
    "phase_rules",
    "strip_task_prefix",
]

Severity = Literal["fail", "warn", "info"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warn": 1, "fail": 2}
_LEVEL_SEVERITY: dict[str, Severity] = {"ERROR": "fail", "FATAL": "fail", "WARN": "warn"}
Phase = Literal["parameter_check", "initialization", "dispatch", "execution", "result_polling", "callback"]


class PhasesError(ValueError):
    """The phase rules file is unreadable or an entry is invalid (the message names it)."""


@dataclass(frozen=True, slots=True)
class Classification:
    """What a record says about the run.

    `consequence` marks lines that report an outcome decided earlier (`Finish gse task`,
    `Refresh step according to gse task status`): they fail their phase only when no earlier phase
    failed. `floor` is the lowest phase a context-placed line (phase None) can belong to.
    """

    phase: Stage | None
    severity: Severity
    consequence: bool = False
    template: str | None = None  # the matched template prefix; None when classified by level only
    floor: Stage | None = None


_Resolved = tuple[Stage | None, Severity, bool]


# --------------------------------------------------------------------------- resolvers


def _api_phase(uri: str | None) -> Stage | None:
    u = uri or ""
    if "async_execute_script" in u or "async_transfer_file" in u:
        return "dispatch"
    if "get_execute_script_result" in u or "get_transfer_file_result" in u:
        return "result_polling"
    if "async_terminate" in u:
        return "execution"
    return None


def _resolve_api(message: str) -> _Resolved:
    call = parse_api_call(message)
    if call is None:
        return None, "info", False
    phase = _api_phase(call.uri)
    if call.failed:
        return phase, "fail", False
    if call.kind == "null_data":
        return phase, "warn", False
    return phase, "info", False


def _resolve_host_result(message: str) -> _Resolved:
    res = parse_script_result(message)
    if res is None or res.ok or not res.finished:
        return "execution", "info", False
    return "execution", "fail", False


def _resolve_finish(message: str) -> _Resolved:
    fin = parse_gse_finish(message)
    if fin is None or fin.execute_result in (1, 6, 7):
        return "result_polling", "info", False
    if fin.execute_result == 3:
        return "result_polling", "warn", True
    return "result_polling", "fail", True


def _resolve_refresh(message: str) -> _Resolved:
    ref = parse_step_refresh(message)
    if ref is None or ref.gse_task_status in ("SUCCESS", "SKIPPED", "IGNORE_ERROR"):
        return None, "info", False
    if ref.gse_task_status in ("STOP_SUCCESS", "RUNNING"):
        return None, "warn", True
    return None, "fail", True


def _resolve_refresh_unsupported(message: str) -> _Resolved:
    return None, ("fail" if "taskStatus=" in message else "warn"), False


def _resolve_callback_result(message: str) -> _Resolved:
    cb = parse_callback(message)
    return "callback", ("info" if cb is None or cb.ok else "fail"), False


# Resolvers a template may name (`resolve = "..."`); the file cannot name anything else.
RESOLVERS: Mapping[str, Callable[[str], _Resolved]] = {
    "api": _resolve_api,
    "host_result": _resolve_host_result,
    "gse_finish": _resolve_finish,
    "step_refresh": _resolve_refresh,
    "refresh_unsupported": _resolve_refresh_unsupported,
    "callback_result": _resolve_callback_result,
}

# --------------------------------------------------------------------------- rules file

_WORD_RE = re.compile(r"[A-Za-z]\w*")


class TemplateSpec(BaseModel):
    """One entry of `templates` as written in the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str | None = Field(default=None, min_length=1)
    regex: str | None = Field(default=None, min_length=1)
    first_word: str | None = Field(default=None, pattern=r"^[A-Za-z]\w*$")
    phase: Phase | None = None
    severity: Severity
    consequence: bool = False
    floor: Phase | None = None
    resolve: str | None = None

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regex {value!r}: {exc}") from None
        return value

    @field_validator("resolve")
    @classmethod
    def _known_resolver(cls, value: str | None) -> str | None:
        if value is not None and value not in RESOLVERS:
            raise ValueError(f"unknown resolver {value!r} (known: {', '.join(RESOLVERS)})")
        return value

    @model_validator(mode="after")
    def _one_match(self) -> TemplateSpec:
        if (self.prefix is None) == (self.regex is None):
            raise ValueError("give exactly one of prefix and regex")
        if self.regex is not None and self.first_word is None:
            raise ValueError("a regex needs first_word (the first word of the lines it matches)")
        if self.prefix is not None:
            if self.first_word is not None:
                raise ValueError("first_word is for regexes; a prefix indexes by its own first word")
            if _WORD_RE.match(self.prefix) is None:
                raise ValueError("a prefix must start with a word (lines are looked up by their first word)")
        return self

    @property
    def name(self) -> str:
        return self.prefix if self.prefix is not None else str(self.regex)


class _PerPhase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExpectedFirst(_PerPhase):
    parameter_check: str
    initialization: str
    dispatch: str
    execution: str
    result_polling: str
    callback: str


class RulesSpec(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    templates: list[dict[str, Any]] = Field(min_length=1)  # validated one by one, to name the entry
    expected_first: ExpectedFirst
    completion: dict[Phase, list[str]] = Field(default_factory=dict)
    milestones: dict[Phase, list[str]] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled template: prefix of the message (after a leading `[...]` tag) or a regex."""

    match: str | re.Pattern[str]
    name: str  # the prefix, or the regex source
    phase: Stage | None
    severity: Severity
    consequence: bool = False
    floor: Stage | None = None
    resolve: Callable[[str], _Resolved] | None = None


@dataclass(frozen=True, slots=True)
class PhaseRules:
    """The validated rules file: templates indexed by first word, and what each phase should show."""

    by_first_word: Mapping[str, tuple[Template, ...]]
    expected_first: Mapping[str, str]
    completion: Mapping[str, tuple[str, ...]]
    milestones: Mapping[str, tuple[str, ...]]


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<entry>"
        parts.append(f"field {loc!r}: {e['msg']}")
    return "; ".join(parts)


def parse_phase_rules(data: Mapping[str, Any], source: str = "<phases>") -> PhaseRules:
    """Validate and index rules already read from TOML."""
    try:
        spec = RulesSpec.model_validate(data)
    except ValidationError as exc:
        raise PhasesError(f"{source}: {_describe(exc)}") from None
    index: dict[str, list[Template]] = {}
    names: set[str] = set()
    for n, entry in enumerate(spec.templates, start=1):
        label = f"template #{n}"
        if isinstance(entry.get("prefix") or entry.get("regex"), str):
            label += f" ({entry.get('prefix') or entry.get('regex')!r})"
        try:
            t = TemplateSpec.model_validate(entry)
        except ValidationError as exc:
            raise PhasesError(f"{source}: {label}: {_describe(exc)}") from None
        if t.name in names:
            raise PhasesError(f"{source}: {label}: duplicate template")
        names.add(t.name)
        if t.prefix is not None:
            m = _WORD_RE.match(t.prefix)
            word = m.group(0) if m else ""
        else:
            word = t.first_word or ""
        index.setdefault(word, []).append(
            Template(
                match=t.prefix if t.prefix is not None else re.compile(str(t.regex)),
                name=t.name,
                phase=t.phase,
                severity=t.severity,
                consequence=t.consequence,
                floor=t.floor,
                resolve=RESOLVERS[t.resolve] if t.resolve is not None else None,
            )
        )
    for what, table in (("completion", spec.completion), ("milestones", spec.milestones)):
        for phase, listed in table.items():
            unknown = [name for name in listed if name not in names]
            if unknown:
                raise PhasesError(f"{source}: {what}.{phase}: not a template: {unknown}")
    return PhaseRules(
        by_first_word={k: tuple(v) for k, v in index.items()},
        expected_first=spec.expected_first.model_dump(),
        completion={k: tuple(v) for k, v in spec.completion.items()},
        milestones={k: tuple(v) for k, v in spec.milestones.items()},
    )


def load_phase_rules(path: Path | None = None) -> PhaseRules:
    """Read, validate and index the phase rules (default: the packaged phases.toml)."""
    target = path if path is not None else data_file("config", "phases.toml")
    try:
        data = tomllib.loads(target.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PhasesError(f"{target}: cannot read phase rules: {exc}") from exc
    return parse_phase_rules(data, str(target))


@functools.cache
def phase_rules() -> PhaseRules:
    """The packaged rules, read on first use; cached for good since packaged data never changes at run time."""
    return load_phase_rules()


# --------------------------------------------------------------------------- classification

_TAG_RE = re.compile(r"^\[[^\]\s]*\]:?\s*")  # any leading tag, for template matching
_TASK_TAG_RE = re.compile(r"^\[(?:Job:[^\]\s]*|\d+(?:_\d+)?)\]:?\s*")  # GSE task key or step key


def strip_task_prefix(message: str) -> str:
    """The message without a leading `[Job:<task>-GseTask:…]:` or `[<step>[_<n>]]:` tag (for display)."""
    m = _TASK_TAG_RE.match(message)
    return message[m.end() :] if m else message


def _find_template(message: str) -> Template | None:
    m = _TAG_RE.match(message)
    body = message[m.end() :] if m else message
    m = _WORD_RE.match(body)
    if m is None:
        return None
    for t in phase_rules().by_first_word.get(m.group(0), ()):
        if isinstance(t.match, str):
            if body.startswith(t.match):
                return t
        elif t.match.match(body):
            return t
    return None


def classify(record: LogRecord) -> Classification:
    """Phase and severity of one record from its message template; unknown lines go by log level."""
    level_sev: Severity = _LEVEL_SEVERITY.get(record.level or "", "info")
    if not record.parsed:
        return Classification(None, level_sev)
    t = _find_template(record.message)
    if t is None:
        return Classification(None, level_sev)
    phase, sev, consequence = t.phase, t.severity, t.consequence
    if t.resolve is not None:
        phase, sev, consequence = t.resolve(record.message)
    if SEVERITY_RANK[level_sev] > SEVERITY_RANK[sev]:
        sev = level_sev
    return Classification(phase, sev, consequence, t.name, t.floor)
