"""GSE task lifecycle lines: start, result pulls, finish, and the step refresh that follows."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.core.codes import codes, run_status_zh
from bot.diagnosis.extract.ids import GseTaskKey, parse_gse_key
from bot.diagnosis.extract.kv import as_int, as_str, bracket_end, parse_kv


@dataclass(frozen=True, slots=True)
class GseStart:
    """`Start gse task successfully, gseTaskId: X` / `Start gse task fail, response: GseTaskResponse(...)`."""

    ok: bool
    key: GseTaskKey | None
    gse_native_task_id: str | None = None  # GSE's own task id (not JOB's numeric gse task id)
    error_code: int | None = None
    error_message: str | None = None


_GSE_START_OK_RE = re.compile(r"Start gse task successfully, gseTaskId: (\S+)")
_GSE_START_FAIL_RE = re.compile(r"Start gse task fail(?:, response: (.*)|, account is null!)")
_GSE_RESPONSE_RE = re.compile(r"GseTaskResponse\(")


def parse_gse_start(message: str) -> GseStart | None:
    m = _GSE_START_OK_RE.search(message)
    if m is not None:
        return GseStart(ok=True, key=parse_gse_key(message[: m.start()]), gse_native_task_id=m.group(1))
    m = _GSE_START_FAIL_RE.search(message)
    if m is None:
        return None
    key = parse_gse_key(message[: m.start()])
    resp = m.group(1)
    if resp is None:
        return GseStart(ok=False, key=key, error_message="account is empty")
    r = _GSE_RESPONSE_RE.search(resp)
    if r is None:
        return GseStart(ok=False, key=key, error_message=resp)
    kv = parse_kv(resp[r.end() : bracket_end(resp, r.end() - 1) - 1])
    return GseStart(
        ok=False,
        key=key,
        gse_native_task_id=as_str(kv.get("gseTaskId")),
        error_code=as_int(kv.get("errorCode")),
        error_message=as_str(kv.get("errorMessage")),
    )


@dataclass(frozen=True, slots=True)
class GseTaskFinish:
    """`Finish gse task, task:<key>, executeResult:N` (§2.4)."""

    task: str
    key: GseTaskKey | None
    execute_result: int

    @property
    def name(self) -> str:
        return codes().execute_result.name.get(self.execute_result, str(self.execute_result))

    @property
    def zh(self) -> str:
        return codes().execute_result.zh.get(self.execute_result, "未知")

    @property
    def run_status(self) -> int | None:
        return codes().execute_result.run_status.get(self.execute_result)

    @property
    def ok(self) -> bool:
        return self.execute_result in codes().execute_result.ok


_FINISH = "Finish gse task, task:"
_FINISH_RESULT_RE = re.compile(r", executeResult:(-?\d+)")


def parse_gse_finish(message: str) -> GseTaskFinish | None:
    # The first marker, then the first result after it on its line: the same answer as
    # `Finish gse task, task:(.*?), executeResult:(-?\d+)`, which is quadratic on repeated markers.
    i = message.find(_FINISH)
    if i < 0:
        return None
    start = i + len(_FINISH)
    end = message.find("\n", start)
    m = _FINISH_RESULT_RE.search(message, start, len(message) if end < 0 else end)
    if m is None:
        return None
    task = message[start : m.start()]
    return GseTaskFinish(task=task, key=parse_gse_key(task), execute_result=int(m.group(1)))


@dataclass(frozen=True, slots=True)
class StepRefresh:
    """`Refresh step according to gse task status, …` and the two `Refresh step fail…` lines."""

    step_instance_id: int | None
    gse_task_status: str | None  # enum name, e.g. FAIL / ABNORMAL_STATE
    batch: int | None
    failed_refresh: bool = False  # the refresh itself failed (engine error)
    step_status: str | None = None

    @property
    def run_status(self) -> int | None:
        return codes().run_status.by_name.get(self.gse_task_status or "")

    @property
    def zh(self) -> str | None:
        return run_status_zh(self.gse_task_status)

    @property
    def ok(self) -> bool:
        return not self.failed_refresh and self.gse_task_status == "SUCCESS"


_REFRESH_RE = re.compile(
    r"Refresh step according to gse task status, stepInstanceId: (\d+), gseTaskStatus: (\w+), batch: (\w+)"
)
_REFRESH_FAIL1_RE = re.compile(
    r"Refresh step fail because of unexpected gse task status\. stepInstanceId: (\d+), gseTaskStatus: (\w+)"
)
_REFRESH_FAIL2_RE = re.compile(
    r"Refresh step fail, stepInstanceId: (\d+), stepStatus: (\w+), gseTaskStatus: (\w+)"
)


def parse_step_refresh(message: str) -> StepRefresh | None:
    m = _REFRESH_RE.search(message)
    if m is not None:
        return StepRefresh(int(m.group(1)), m.group(2), as_int(m.group(3)))
    m = _REFRESH_FAIL1_RE.search(message)
    if m is not None:
        return StepRefresh(int(m.group(1)), m.group(2), None, failed_refresh=True)
    m = _REFRESH_FAIL2_RE.search(message)
    if m is not None:
        return StepRefresh(int(m.group(1)), m.group(3), None, failed_refresh=True, step_status=m.group(2))
    return None


_PULL_RE = re.compile(r"Start pull gse task result, times: (\d+)")


def pull_times(message: str) -> int | None:
    """N of `[<key>]: Start pull gse task result, times: N`."""
    m = _PULL_RE.search(message)
    return int(m.group(1)) if m else None
