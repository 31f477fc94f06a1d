"""BK-JOB and GSE code tables (`config/codes.toml`): statuses, error codes, enums and their Chinese.

The ground floor for anything that explains a code without a model: the log extractors, the
signature placeholders, the timeline, the GSE client, the sandbox and the Q&A answers. The file is
validated when first read (integer keys, string texts, sets and mappings naming codes that exist);
a broken table fails loading with a one-line `CodesError` that names it.

Usage::

    codes().host_status.zh[310]          # "Agent 异常"
    run_status_zh("FAIL")                # "执行失败"
    host_status_for(5, 117, 0)           # 310 (GSE error_code 117 → GSE_AGENT_ERROR)
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Collection, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from bot.core.resources import data_file

__all__ = [
    "Codes",
    "CodesError",
    "api_error_zh",
    "codes",
    "host_status_for",
    "load_codes",
    "normalise_exit_code",
    "parse_codes",
    "run_status_zh",
]

Texts = Mapping[int, str]
CodeSet = frozenset[StrictInt]


class CodesError(ValueError):
    """The code tables are unreadable or a table is invalid (the message names the table)."""


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _subset(what: str, codes: Collection[int], known: Collection[int]) -> None:
    missing = sorted(set(codes) - set(known))
    if missing:
        raise ValueError(f"{what} names unknown code(s) {missing}")


class NameTable(_Table):
    """An enum: code → constant name."""

    name: Texts


class ZhTable(_Table):
    """Code → Chinese text."""

    zh: Texts


class NamedTable(_Table):
    """An enum with Chinese texts; every named code has one."""

    name: Texts
    zh: Texts

    @model_validator(mode="after")
    def _every_name_has_zh(self) -> NamedTable:
        _subset("name", self.name, self.zh)
        return self


class RunStatusTable(NamedTable):
    """RunStatusEnum (job, step and GSE task status)."""

    final: CodeSet
    failed: CodeSet

    @model_validator(mode="after")
    def _sets(self) -> RunStatusTable:
        _subset("final", self.final, self.name)
        _subset("failed", self.failed, self.final)
        return self

    @cached_property
    def by_name(self) -> dict[str, int]:
        return {name: code for code, name in self.name.items()}


class HostStatusTable(NamedTable):
    """ExecuteObjectTaskStatusEnum (per-host status)."""

    ok: CodeSet
    pending: CodeSet

    @model_validator(mode="after")
    def _sets(self) -> HostStatusTable:
        _subset("ok", self.ok, self.name)
        _subset("pending", self.pending, self.name)
        return self


class AtomicStatusTable(_Table):
    name: Texts
    host_status: Mapping[int, StrictInt]

    @model_validator(mode="after")
    def _known(self) -> AtomicStatusTable:
        _subset("host_status", self.host_status, self.name)
        return self


class GseTable(_Table):
    """GSE atomic task status and error_code as BK-JOB reads them."""

    error_finished: StrictInt
    error_running: StrictInt
    error_terminate: StrictInt
    atomic_status: AtomicStatusTable
    error_codes_by_host_status: Mapping[int, list[StrictInt]] = Field(min_length=1)

    @model_validator(mode="after")
    def _each_error_once(self) -> GseTable:
        seen: set[int] = set()
        for errors in self.error_codes_by_host_status.values():
            twice = sorted(seen.intersection(errors))
            if twice:
                raise ValueError(f"error_codes_by_host_status lists error code(s) {twice} twice")
            seen.update(errors)
        return self

    @cached_property
    def error_to_host_status(self) -> dict[int, int]:
        """GSE atomic `error_code` → per-host status."""
        return {e: status for status, errors in self.error_codes_by_host_status.items() for e in errors}


class ExecuteResultTable(NamedTable):
    """GseTaskExecuteResult (`Finish gse task, …, executeResult:N`)."""

    run_status: Mapping[int, StrictInt]
    ok: CodeSet

    @model_validator(mode="after")
    def _same_codes(self) -> ExecuteResultTable:
        for what, table in (("zh", self.zh), ("run_status", self.run_status)):
            if set(table) != set(self.name):
                raise ValueError(f"{what} must cover exactly the codes of name")
        _subset("ok", self.ok, self.name)
        return self


class ErrorTable(NamedTable):
    """API error codes: constant name and Chinese message (`{0}`… are message arguments)."""

    @model_validator(mode="after")
    def _same_codes(self) -> ErrorTable:
        _subset("zh", self.zh, self.name)
        return self


class Codes(_Table):
    """Every table of `config/codes.toml`."""

    run_status: RunStatusTable
    task_type: ZhTable
    step_type: ZhTable
    launch_mode: ZhTable
    host_status: HostStatusTable
    gse: GseTable
    execute_result: ExecuteResultTable
    api_error: ErrorTable
    apigw_error: ErrorTable
    job_action: NameTable
    step_action: NameTable
    gse_task_action: NameTable
    event_source_type: NameTable
    notify_execute_status: NameTable
    agent_state: ZhTable

    def run_status_zh(self, code: int | str | None) -> str | None:
        """Chinese for a RunStatusEnum code or name (``4`` / ``"FAIL"`` / ``"4"`` → ``执行失败``)."""
        if code is None:
            return None
        if isinstance(code, str):
            c = self.run_status.by_name.get(code.strip().upper())
            if c is None:
                c = int(code) if code.strip().isdigit() else None
            code = c
        return self.run_status.zh.get(code) if code is not None else None

    def api_error_zh(self, code: int | None, *args: object) -> str | None:
        """Chinese message of a BK-JOB API or gateway error code; placeholders filled when args are given."""
        if code is None:
            return None
        text = self.api_error.zh.get(code) or self.apigw_error.zh.get(code)
        if text is None:
            return None
        if args:
            try:
                return text.format(*args)
            except (IndexError, KeyError):
                return text
        return text

    def host_status_for(self, status: int | None, error_code: int | None, exit_code: int | None) -> int:
        """Per-host status JOB derives from a GSE script result (`ScriptResultHandleTask.analyseAgentResult`)."""
        gse = self.gse
        if error_code not in (None, gse.error_finished, gse.error_running):
            return gse.error_to_host_status.get(error_code, 0)
        if error_code == gse.error_running:
            status = 1  # RUNNING, whatever the atomic status says
        if status is not None and status in gse.atomic_status.host_status:
            return gse.atomic_status.host_status[status]
        code = normalise_exit_code(exit_code)
        return 104 if code not in (None, 0) else 101  # SCRIPT_NOT_ZERO_EXIT_CODE / SCRIPT_FAILED


def normalise_exit_code(exit_code: int | None) -> int | None:
    """GSE may report the raw wait status: ``256`` means ``exit 1``."""
    if exit_code is None:
        return None
    return exit_code // 256 if exit_code >= 256 else exit_code


def _cross_check(c: Codes) -> str | None:
    """Mappings across tables must name codes that exist; the message names the table."""
    host, run = set(c.host_status.name), set(c.run_status.name)
    for table, what, targets, known, target in (
        ("gse", "error_codes_by_host_status", set(c.gse.error_codes_by_host_status), host, "host_status"),
        (
            "gse",
            "atomic_status.host_status",
            set(c.gse.atomic_status.host_status.values()),
            host,
            "host_status",
        ),
        ("execute_result", "run_status", set(c.execute_result.run_status.values()), run, "run_status"),
    ):
        missing = sorted(targets - known)
        if missing:
            return f"table {table!r}: field {what!r}: code(s) {missing} not in table {target!r}"
    return None


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        field = f": field {'.'.join(loc[1:])!r}" if len(loc) > 1 else ""
        parts.append(f"table {loc[0] if loc else '<file>'!r}{field}: {e['msg']}")
    return "; ".join(parts)


def parse_codes(data: Mapping[str, Any], source: str = "<codes>") -> Codes:
    """Validate the tables already read from TOML."""
    try:
        result = Codes.model_validate(data)
    except ValidationError as exc:
        raise CodesError(f"{source}: {_describe(exc)}") from None
    problem = _cross_check(result)
    if problem:
        raise CodesError(f"{source}: {problem}")
    return result


def load_codes(path: Path | None = None) -> Codes:
    """Read and validate the code tables (default: the packaged codes.toml)."""
    target = path if path is not None else data_file("config", "codes.toml")
    try:
        data = tomllib.loads(target.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CodesError(f"{target}: cannot read code tables: {exc}") from exc
    return parse_codes(data, str(target))


@functools.cache
def codes() -> Codes:
    """The packaged tables, read on first use; cached for good since packaged data never changes at run time."""
    return load_codes()


def run_status_zh(code: int | str | None) -> str | None:
    """Chinese for a RunStatusEnum code or name (``4`` / ``"FAIL"`` → ``执行失败``)."""
    return codes().run_status_zh(code)


def api_error_zh(code: int | None, *args: object) -> str | None:
    """Chinese message for a BK-JOB API error or gateway code; placeholders filled when args are given."""
    return codes().api_error_zh(code, *args)


def host_status_for(status: int | None, error_code: int | None, exit_code: int | None) -> int:
    """Per-host status JOB derives from a GSE script result (see `Codes.host_status_for`)."""
    return codes().host_status_for(status, error_code, exit_code)
