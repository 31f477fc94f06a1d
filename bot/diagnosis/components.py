"""Downstream components of the engine (`config/components.toml`): who answered an API call, and
what to collect from a component when the engine's lines show only that it failed, not why.

The table is data; this module validates it once (`components()`), names the component behind an
API uri (`ComponentTable.for_uri`) and finds the components that failed without a visible reason
(`ComponentTable.unexplained`). Regexes are compiled like the signature catalog's, with a literal
pre-filter, so scanning a run of 100k lines stays linear and cheap.

Usage::

    table = components()
    table.for_uri("/api/v2/task/extensions/async_transfer_file").name    # "GSE"
    gaps = table.unexplained(run_records, decisive=match.records)       # [ComponentGap(...)]
"""

from __future__ import annotations

import functools
import re
import string
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.core.resources import data_file
from bot.diagnosis.records import LogRecord
from bot.diagnosis.signatures import CompiledPattern
from bot.diagnosis.signatures.literals import compile_pattern

__all__ = [
    "Component",
    "ComponentGap",
    "ComponentTable",
    "ComponentTexts",
    "ComponentsError",
    "components",
    "fill",
    "load_components",
    "parse_components",
    "record_text",
]

MAX_FAILURE_LINES = 3  # failure lines of one component kept as evidence
_NO_VALUE = frozenset({"", "null", "none"})

Text = Annotated[str, Field(min_length=1)]


class ComponentsError(ValueError):
    """The component table is unreadable or an entry is invalid (the message names it)."""


def record_text(rec: LogRecord) -> str:
    """What the table's regexes run over: the message, plus "\\n" + the stack when there is one."""
    return f"{rec.message}\n{rec.stack}" if rec.stack else rec.message


def _names(template: str) -> list[str]:
    names: list[str] = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"placeholder {{{name}}} must be a plain name")
        names.append(name)
    return names


def fill(template: str, values: Mapping[str, str], missing: str = "") -> str:
    """`template` with its {names} filled; a name without a value reads as `missing`."""
    return template.format_map({n: values.get(n) or missing for n in _names(template)})


class ComponentTexts(BaseModel):
    """`[texts]`: the Chinese the two lessons add to a report."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    answer_why: Text
    answer_cause: Text
    unknown_component: Text
    code_known: Text
    code_unknown: Text
    no_message: Text
    unsettled_why: Text
    unsettled_cause: Text
    unsettled_missing: Text
    unknown_id: Text
    unsettled_confidence: float = Field(gt=0.0, lt=1.0)

    @field_validator(
        "answer_why",
        "answer_cause",
        "code_known",
        "code_unknown",
        "unsettled_why",
        "unsettled_cause",
        "unsettled_missing",
    )
    @classmethod
    def _template(cls, value: str) -> str:
        _names(value)
        return value


class ComponentSpec(BaseModel):
    """One `[[component]]` as written in the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
    name: Text
    short: str = ""
    uris: list[Text] = Field(default_factory=list)
    failed: list[Text] = Field(default_factory=list)
    reason: list[Text] = Field(default_factory=list)
    ids: list[Text] = Field(default_factory=list)
    collect: list[Text] = Field(default_factory=list)

    @field_validator("failed", "reason", "ids")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        for p in value:
            compile_pattern(p, need_literal=True)
        return value

    @field_validator("reason")
    @classmethod
    def _reason_group(cls, value: list[str]) -> list[str]:
        for p in value:
            if "reason" not in re.compile(p).groupindex:
                raise ValueError(f"regex {p!r} has no named group 'reason'")
        return value

    @field_validator("ids")
    @classmethod
    def _id_groups(cls, value: list[str]) -> list[str]:
        for p in value:
            if not re.compile(p).groupindex:
                raise ValueError(f"regex {p!r} has no named group")
        return value

    @field_validator("collect")
    @classmethod
    def _templates(cls, value: list[str]) -> list[str]:
        for t in value:
            _names(t)
        return value


class _FileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    texts: ComponentTexts
    component: list[ComponentSpec] = Field(min_length=1)


def _search(p: CompiledPattern, text: str) -> re.Match[str] | None:
    if p.literal and p.literal not in text:
        return None
    if not all(f.found_in(text) for f in p.filters):
        return None
    return p.regex.search(text)


@dataclass(frozen=True, slots=True)
class Component:
    """One downstream component, its regexes compiled."""

    spec: ComponentSpec
    failed: tuple[CompiledPattern, ...]
    reason: tuple[CompiledPattern, ...]
    ids: tuple[CompiledPattern, ...]

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def short(self) -> str:
        return self.spec.short or self.spec.name

    @classmethod
    def build(cls, spec: ComponentSpec) -> Component:
        def compiled(sources: list[str]) -> tuple[CompiledPattern, ...]:
            return tuple(compile_pattern(p, need_literal=True) for p in sources)

        return cls(spec, compiled(spec.failed), compiled(spec.reason), compiled(spec.ids))

    def says_failed(self, rec: LogRecord) -> bool:
        text = record_text(rec)
        return any(_search(p, text) is not None for p in self.failed)

    def reason_in(self, records: Iterable[LogRecord]) -> str | None:
        """The component's own reason, when some record carries one."""
        for rec in records:
            text = record_text(rec)
            for p in self.reason:
                m = _search(p, text)
                if m is None:
                    continue
                value = (m.group("reason") or "").strip()
                if value.lower() not in _NO_VALUE:
                    return value
        return None

    def ids_in(self, records: Iterable[LogRecord]) -> dict[str, str]:
        """Values of the `ids` groups, the first found for each name."""
        found: dict[str, str] = {}
        for rec in records:
            text = record_text(rec)
            for p in self.ids:
                m = _search(p, text)
                if m is None:
                    continue
                for name, value in m.groupdict().items():
                    if value and name not in found:
                        found[name] = value
        return found


@dataclass(frozen=True, slots=True)
class ComponentGap:
    """A component that decided the failure but whose reason the engine logs do not show."""

    component: Component
    failures: tuple[LogRecord, ...]  # its failure lines in the run, time order (at most MAX_FAILURE_LINES)
    values: Mapping[str, str] = field(default_factory=dict)  # ids for the collect templates

    def collect(self, texts: ComponentTexts) -> list[str]:
        """What to collect from the component, ids filled."""
        return [fill(t, self.values, texts.unknown_id) for t in self.component.spec.collect]


@dataclass(frozen=True, slots=True)
class ComponentTable:
    texts: ComponentTexts
    components: tuple[Component, ...]
    source: str = ""

    def get(self, component_id: str) -> Component | None:
        return next((c for c in self.components if c.id == component_id), None)

    def for_uri(self, uri: str | None) -> Component | None:
        """The component serving an API uri (`uris` substrings), if the table knows it."""
        if not uri:
            return None
        return next((c for c in self.components if any(u in uri for u in c.spec.uris)), None)

    def unexplained(self, records: Sequence[LogRecord], decisive: Sequence[LogRecord]) -> list[ComponentGap]:
        """Components that one of the `decisive` lines says failed, when no line of the run
        (`records`, time order) carries the component's own reason."""
        gaps: list[ComponentGap] = []
        for comp in self.components:
            if not comp.failed or not any(comp.says_failed(r) for r in decisive):
                continue
            failures = [r for r in records if comp.says_failed(r)] or [
                r for r in decisive if comp.says_failed(r)
            ]
            if comp.reason_in([*failures, *records]) is not None:
                continue
            values = comp.ids_in([*failures, *records])
            gaps.append(ComponentGap(comp, tuple(failures[:MAX_FAILURE_LINES]), values))
        return gaps


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<file>"
        parts.append(f"field {loc!r}: {e['msg']}")
    return "; ".join(parts)


def parse_components(data: Mapping[str, Any], source: str = "<components>") -> ComponentTable:
    """Validate and compile a table already read from TOML."""
    entries = data.get("component")
    if isinstance(entries, list):
        for n, entry in enumerate(entries, start=1):
            try:
                ComponentSpec.model_validate(entry)
            except ValidationError as exc:
                cid = entry.get("id") if isinstance(entry, dict) else None
                label = f"component {cid!r} (entry #{n})" if cid else f"component entry #{n}"
                raise ComponentsError(f"{source}: {label}: {_describe(exc)}") from None
    try:
        spec = _FileSpec.model_validate(data)
    except ValidationError as exc:
        raise ComponentsError(f"{source}: {_describe(exc)}") from None
    ids = [c.id for c in spec.component]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ComponentsError(f"{source}: duplicate component id(s) {twice}")
    for comp in spec.component:
        known = {n for p in comp.ids for n in re.compile(p).groupindex}
        for template in comp.collect:
            unknown = [n for n in _names(template) if n not in known]
            if unknown:
                raise ComponentsError(
                    f"{source}: component {comp.id!r}: field 'collect': unknown placeholder(s) {unknown} "
                    "(not a group of its ids)"
                )
    return ComponentTable(spec.texts, tuple(Component.build(c) for c in spec.component), source)


def load_components(path: Path | None = None) -> ComponentTable:
    """Read, validate and compile the component table (default: the packaged components.toml)."""
    target = path if path is not None else data_file("config", "components.toml")
    try:
        data = tomllib.loads(target.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ComponentsError(f"{target}: cannot read component table: {exc}") from exc
    return parse_components(data, str(target))


@functools.cache
def components() -> ComponentTable:
    """The packaged table, read on first use; cached for good since packaged data never changes at run time."""
    return load_components()
