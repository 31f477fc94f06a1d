"""What a failing host printed: the decisive line of its output and what it means.

Usage::

    catalog = output_catalog()                       # config/outputs.toml, read once
    found = catalog.decisive(log_content, tail_lines=30)
    found.line, found.entry.meaning if found.entry else ...

The decisive line is the error the script printed (the last line an entry of the catalog
recognises, else the last line that reads like an error, else the last line), quoted whole.
Output is masked by the caller before it gets here and is never shortened except for a line so
long it would flood a chat (`MAX_LINE_CHARS`).
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.core.models import FaultSide
from bot.core.resources import data_file

MAX_LINE_CHARS = 1000

_Text = Annotated[str, Field(min_length=1)]


class OutputsError(ValueError):
    """The output catalog is unreadable or an entry is invalid (the message names it)."""


def _compiles(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"pattern {value!r} does not compile: {exc}") from None
    return value


class OutputEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    patterns: list[_Text] = Field(min_length=1)
    requires: str = ""
    exit_codes: list[int] = Field(default_factory=list)
    fault_side: FaultSide
    meaning: _Text
    actions: list[_Text] = Field(default_factory=list)

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        return [_compiles(v) for v in value]

    @field_validator("requires")
    @classmethod
    def _requires(cls, value: str) -> str:
        return _compiles(value) if value else value


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    agent_statuses: list[int] = Field(default_factory=list)
    error_line: _Text
    output: list[OutputEntry] = Field(min_length=1)
    status_why: dict[int, _Text] = Field(default_factory=dict)

    @field_validator("error_line")
    @classmethod
    def _error_line(cls, value: str) -> str:
        return _compiles(value)


@dataclass(frozen=True, slots=True)
class Decisive:
    line: str  # as printed (masked), whole unless longer than MAX_LINE_CHARS
    entry: OutputEntry | None  # what recognised it; None = an error-looking or the last line
    last_resort: bool = False  # nothing looked like an error: it is merely the last line


def tail(text: str, lines: int) -> list[str]:
    """The last `lines` non-blank lines of an output (CR/LF tolerant, ANSI colours dropped)."""
    clean = _ANSI.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    out = [line.rstrip() for line in clean.split("\n") if line.strip()]
    return out[-lines:] if lines > 0 else []


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _whole(line: str) -> str:
    line = line.strip()
    return line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 1] + "…"


class OutputCatalog:
    def __init__(self, spec: _Spec) -> None:
        self.entries = spec.output
        self.agent_statuses = frozenset(spec.agent_statuses)
        self.status_why = dict(spec.status_why)
        self._error = re.compile(spec.error_line)
        self._compiled = [
            (e, [re.compile(p) for p in e.patterns], re.compile(e.requires) if e.requires else None)
            for e in self.entries
        ]
        self._by_exit: dict[int, OutputEntry] = {}
        for e in self.entries:
            for code in e.exit_codes:
                self._by_exit.setdefault(code, e)

    def decisive(self, text: str, *, tail_lines: int) -> Decisive | None:
        lines = tail(text, tail_lines)
        if not lines:
            return None
        whole = "\n".join(lines)
        for entry, patterns, requires in self._compiled:
            if requires is not None and not requires.search(whole):
                continue
            for line in reversed(lines):
                if any(p.search(line) for p in patterns):
                    return Decisive(_whole(line), entry)
        for line in reversed(lines):
            if self._error.search(line):
                return Decisive(_whole(line), None)
        return Decisive(_whole(lines[-1]), None, last_resort=True)

    def by_exit_code(self, code: int | None) -> OutputEntry | None:
        return self._by_exit.get(code) if code is not None else None

    def entry(self, entry_id: str) -> OutputEntry | None:
        return next((e for e in self.entries if e.id == entry_id), None)


def load_output_catalog(path: Path | None = None) -> OutputCatalog:
    target = path if path is not None else data_file("config", "outputs.toml")
    try:
        data = tomllib.loads(target.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise OutputsError(f"{target}: cannot read the output catalog: {exc}") from exc
    try:
        spec = _Spec.model_validate(data)
    except ValidationError as exc:
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise OutputsError(f"{target}: {'; '.join(parts)}") from None
    ids = [e.id for e in spec.output]
    if len(set(ids)) != len(ids):
        raise OutputsError(f"{target}: duplicate output ids")
    return OutputCatalog(spec)


@functools.cache
def output_catalog() -> OutputCatalog:
    """The packaged catalog, read on first use (packaged data never changes at run time)."""
    return load_output_catalog()
