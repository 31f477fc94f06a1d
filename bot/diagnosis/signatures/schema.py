"""One `[[signature]]` entry: its schema as written in the TOML file, and its compiled form."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from bot.core.models import FaultSide
from bot.diagnosis.signatures.literals import CompiledPattern, compile_pattern
from bot.diagnosis.signatures.values import template_fields


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


StrList = Annotated[list[Annotated[str, Field(min_length=1)]], BeforeValidator(_as_list)]
Level = Literal["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
SignatureStage = Literal[
    "parameter_check", "initialization", "dispatch", "execution", "result_polling", "callback"
]
# Live lookups a match may ask for (`facts`); the pipeline knows how to gather each of them.
Fact = Literal["gse_agent_state", "host_output"]


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
    facts: Annotated[list[Fact], BeforeValidator(_as_list)] = Field(default_factory=list)

    @field_validator("patterns", "all_of", "any_of", "none_of", "context")
    @classmethod
    def _scan_regexes(cls, value: list[str]) -> list[str]:
        for p in value:
            compile_pattern(p, need_literal=True)
        return value

    @field_validator("unless")
    @classmethod
    def _check_regexes(cls, value: list[str]) -> list[str]:
        for p in value:
            compile_pattern(p, need_literal=False)
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
            return tuple(compile_pattern(p, need_literal=True, prefer=prefer) for p in sources)

        return cls(
            spec=spec,
            patterns=scanned(spec.patterns),
            unless=tuple(compile_pattern(p, need_literal=False) for p in spec.unless),
            all_of=scanned(spec.all_of),
            any_of=scanned(spec.any_of),
            none_of=scanned(spec.none_of),
            context=scanned(spec.context),
        )
