"""The scenario corpus: realistic BK-JOB engine logs of failed steps, stored as data.

One folder per scenario (`bot/devtools/corpus/<name>/`, shipped inside the package):
`logs.txt` holds raw engine log records as BkLog returns them in `log` (a record starts with a
timestamp, stack-trace lines follow it) and `expected.json` the expected diagnosis. The test suite
runs every scenario through the pipeline, `job-doctor demo` serves them as its sample BkLog, and
`cases export` writes new ones with `write_scenario`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.core.models import FaultSide, Stage
from bot.core.scope import parse_scope
from bot.diagnosis.parser import split_records as parser_split_records

LOGS_FILE = "logs.txt"
EXPECTED_FILE = "expected.json"
BKJOB_FILE = "bkjob.json"  # optional: what BK-JOB (and GSE) answer about the scenario's step
CORPUS = Path(__file__).resolve().parent / "corpus"  # the scenario corpus the product ships

# A record starts at a timestamp-led line: `[2024-05-30 11:09:00.240] ...` (file pattern) or
# `2024-05-30 11:09:00.240 ...` (≤3.12 console pattern). Anything else continues the record.
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BkJobHost(_Data):
    bk_host_id: int
    ip: str
    bk_cloud_id: int = 0
    bk_agent_id: str = ""
    status: int  # host status (ExecuteObjectTaskStatusEnum)
    exit_code: int = 0
    error_code: int = 0
    output: list[str] = Field(default_factory=list)  # the script output (or file log), line by line


class BkJobStep(_Data):
    step_instance_id: int
    name: str = ""
    type: int = 1  # 1 script, 2 file
    status: int = 4  # RunStatus: 2 running, 3 success, 4 failed, ...
    execute_count: int = 0
    start: str  # "YYYY-MM-DD HH:MM:SS[.fff]" in the scenario's time zone
    end: str | None = None  # None: not finished
    timeout_s: int = 3600
    account: str = "root"
    hosts: list[BkJobHost] = Field(default_factory=list)


class BkJobData(_Data):
    """bkjob.json: the BK-JOB answers for the scenario's job instance, and GSE's agent states."""

    scope: str  # "biz:2" | "biz_set:ID"
    job_instance_id: int
    name: str = ""
    status: int = 4
    steps: list[BkJobStep] = Field(min_length=1)
    agents: dict[str, dict[str, Any]] = Field(default_factory=dict)  # agent id → GSE state

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        return str(parse_scope(value))


class ExpectedGroup(_Data):
    status: int
    exit_code: int | None = None
    count: int
    output_contains: str = ""  # a substring of the group's decisive output
    why_contains: str = ""


class ScenarioExpectation(BaseModel):
    """expected.json: what the diagnosis of the scenario must say."""

    model_config = ConfigDict(extra="forbid")

    step_instance_id: int | None
    task_instance_id: int | None
    stage: Stage
    fault_side: FaultSide
    key_lines: list[str] = Field(default_factory=list)  # substrings that must appear in the evidence
    request_ids: list[str] = Field(default_factory=list)  # traceIds of the diagnosed run, any order
    expect_missing_info: bool = False
    description: str = ""
    start_request_id: str | None = None  # start from this traceId instead of the step id
    signature: str | None = None  # expected catalog entry id (a hint)
    # with bkjob.json: the business found, the host groups (in report order, failing first) and
    # strings (planted secrets) that must appear nowhere in the report
    scope: str | None = None
    host_groups: list[ExpectedGroup] = Field(default_factory=list)
    absent: list[str] = Field(default_factory=list)
    # What the report must say, beyond stage and side (each optional; checked when given):
    first_evidence: str | None = None  # substring of the first evidence line (the primary evidence)
    missing_info_mentions: list[str] = Field(default_factory=list)  # substrings of the missing_info
    root_cause_mentions: list[str] = Field(default_factory=list)  # substrings of the root cause
    root_cause_excludes: list[str] = Field(default_factory=list)  # texts the root cause must not hold
    max_confidence: float | None = Field(default=None, ge=0.0, le=1.0)  # an unsettled cause stays below

    @field_validator("request_ids")
    @classmethod
    def _trace_ids(cls, value: list[str]) -> list[str]:
        for item in value:
            if not TRACE_ID.match(item):
                raise ValueError(f"request id {item!r} is not a 32-char lowercase hex traceId")
        return value

    @field_validator("start_request_id")
    @classmethod
    def _start_trace_id(cls, value: str | None) -> str | None:
        if value is not None and not TRACE_ID.match(value):
            raise ValueError(f"start_request_id {value!r} is not a 32-char lowercase hex traceId")
        return value

    @field_validator("key_lines", "missing_info_mentions", "root_cause_mentions", "root_cause_excludes")
    @classmethod
    def _non_blank(cls, value: list[str]) -> list[str]:
        if any(not line.strip() for line in value):
            raise ValueError("must not contain blank strings")
        return value

    @field_validator("first_evidence")
    @classmethod
    def _first_non_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("first_evidence must not be blank")
        return value


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    path: Path
    logs_text: str
    expected: ScenarioExpectation
    bkjob: BkJobData | None = None

    @property
    def records(self) -> list[str]:
        return split_records(self.logs_text)


def decode_log_bytes(data: bytes) -> str:
    """UTF-8 with replacement for broken bytes; a leading BOM is dropped."""
    text = data.decode("utf-8", errors="replace")
    return text.removeprefix("\ufeff")


_SECOND = re.compile(r"^\[?(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})", re.M)


def time_span(text: str, tz: str = "Asia/Shanghai") -> tuple[datetime, datetime] | None:
    """First and last record time (to the second) in raw log text, read in `tz`; None without any."""
    stamps = _SECOND.findall(text)
    if not stamps:
        return None
    zone = ZoneInfo(tz)
    first, last = (
        datetime.strptime(t, "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone) for t in (min(stamps), max(stamps))
    )
    return first, last


def split_records(text: str) -> list[str]:
    """Split raw log text into records: a timestamp-led line plus its continuation lines.

    The parser's splitter (CRLF/CR, BOM, orphan lines before the first record) with the corpus
    format's extra tidiness: trailing whitespace and blank lines dropped.
    """
    return [
        "\n".join(line.rstrip() for line in record.split("\n") if line.strip())
        for record in parser_split_records(text)
    ]


def load_scenario(path: Path) -> Scenario:
    logs_text = decode_log_bytes((path / LOGS_FILE).read_bytes())
    raw: Any = json.loads((path / EXPECTED_FILE).read_text(encoding="utf-8-sig"))
    bkjob = path / BKJOB_FILE
    return Scenario(
        name=path.name,
        path=path,
        logs_text=logs_text,
        expected=ScenarioExpectation.model_validate(raw),
        bkjob=(
            BkJobData.model_validate(json.loads(bkjob.read_text(encoding="utf-8-sig")))
            if bkjob.is_file()
            else None
        ),
    )


def load_scenarios(root: Path | None = None) -> list[Scenario]:
    """Every scenario folder under root (default: the packaged corpus), sorted by name."""
    base = root if root is not None else CORPUS
    folders = sorted(p for p in base.iterdir() if p.is_dir() and (p / EXPECTED_FILE).is_file())
    return [load_scenario(p) for p in folders]


# expectations left out of a written expected.json when they hold nothing
_OPTIONAL = (
    "start_request_id",
    "signature",
    "scope",
    "host_groups",
    "absent",
    "first_evidence",
    "missing_info_mentions",
    "root_cause_mentions",
    "root_cause_excludes",
    "max_confidence",
)


def write_scenario(
    root: Path, name: str, logs_text: str, expected: ScenarioExpectation | dict[str, Any]
) -> Path:
    """Write (or overwrite) one scenario folder and return its path; the input is validated first."""
    if not _NAME.match(name):
        raise ValueError(f"scenario name {name!r} must be lowercase letters, digits, '_', '-' or '.'")
    model = (
        expected
        if isinstance(expected, ScenarioExpectation)
        else ScenarioExpectation.model_validate(expected)
    )
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    text = logs_text.replace("\r\n", "\n")
    if text and not text.endswith("\n"):
        text += "\n"
    (folder / LOGS_FILE).write_text(text, encoding="utf-8")
    payload = model.model_dump(exclude_none=False)
    for optional in _OPTIONAL:
        if payload.get(optional) in (None, []):
            payload.pop(optional, None)
    (folder / EXPECTED_FILE).write_text(
        json.dumps(payload, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    return folder
