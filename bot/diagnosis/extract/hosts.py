"""Per-host script results: `ScriptExecuteObjectTaskResult[...]` of `Analyse execute object task result`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.core.codes import codes, host_status_for, normalise_exit_code
from bot.diagnosis.extract.ids import GseTaskKey, parse_gse_key
from bot.diagnosis.extract.kv import as_int, as_str, bracket_end, parse_kv


@dataclass(frozen=True, slots=True)
class ScriptResult:
    """`ScriptExecuteObjectTaskResult[...]` from `Analyse execute object task result` (one host)."""

    agent_id: str | None
    atomic_task_id: int | None
    status: int | None  # GSE atomic status (codes().gse.atomic_status)
    error_code: int | None  # GSE error_code
    error_msg: str | None
    start_time: str | None
    end_time: str | None
    exit_code: int | None  # as logged (may be a raw wait status, 256 = exit 1)
    tag: str | None
    content_length: int | None
    key: GseTaskKey | None

    @property
    def exit_code_normalised(self) -> int | None:
        return normalise_exit_code(self.exit_code)

    @property
    def host_status(self) -> int:
        return host_status_for(self.status, self.error_code, self.exit_code)

    @property
    def host_status_name(self) -> str:
        return codes().host_status.name.get(self.host_status, str(self.host_status))

    @property
    def host_status_zh(self) -> str:
        return codes().host_status.zh.get(self.host_status, "未知状态")

    @property
    def gse_status_name(self) -> str | None:
        return codes().gse.atomic_status.name.get(self.status, "ERROR") if self.status is not None else None

    @property
    def ok(self) -> bool:
        return self.host_status in codes().host_status.ok

    @property
    def finished(self) -> bool:
        return self.host_status not in codes().host_status.pending


_SCRIPT_RESULT_RE = re.compile(r"ScriptExecuteObjectTaskResult\[")


def parse_script_result(message: str) -> ScriptResult | None:
    m = _SCRIPT_RESULT_RE.search(message)
    if m is None:
        return None
    end = bracket_end(message, m.end() - 1)
    kv = parse_kv(message[m.end() : end - 1])
    return ScriptResult(
        agent_id=as_str(kv.get("agentId")),
        atomic_task_id=as_int(kv.get("atomicTaskId")),
        status=as_int(kv.get("status")),
        error_code=as_int(kv.get("errorCode")),
        error_msg=as_str(kv.get("errorMsg")),
        start_time=as_str(kv.get("startTime")),
        end_time=as_str(kv.get("endTime")),
        exit_code=as_int(kv.get("exitCode")),
        tag=as_str(kv.get("tag")),
        content_length=as_int(kv.get("contentLength")),
        key=parse_gse_key(message[: m.start()]),
    )
