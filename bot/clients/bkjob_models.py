"""BK-JOB open API answers as models (reference bk-job.md §4).

Times in the API are epoch milliseconds; the models carry timezone-aware UTC datetimes. Parsing is
lenient: a field of an unexpected type reads as missing instead of failing the whole answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def ms_to_datetime(value: Any) -> datetime | None:
    try:
        ms = int(value)
    except (TypeError, ValueError):
        return None
    return datetime.fromtimestamp(ms / 1000, UTC) if ms > 0 else None


def datetime_to_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: pass an aware datetime for BK-JOB millisecond timestamps")
    return int(moment.timestamp() * 1000)


def to_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def to_str(value: Any) -> str | None:
    return None if value is None else str(value)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class HostResult(_Model):
    bk_host_id: int | None = None
    ip: str | None = None
    ipv6: str | None = None
    bk_agent_id: str | None = None
    bk_cloud_id: int | None = None
    status: int | None = None  # ExecuteObjectTaskStatusEnum (reference §2.2)
    status_desc: str | None = None
    tag: str | None = None
    exit_code: int | None = None
    error_code: int | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    total_time_ms: int | None = None

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> HostResult:
        return cls(
            bk_host_id=to_int(d.get("bk_host_id")),
            ip=to_str(d.get("ip")),
            ipv6=to_str(d.get("ipv6")),
            bk_agent_id=to_str(d.get("bk_agent_id")),
            bk_cloud_id=to_int(d.get("bk_cloud_id")),
            status=to_int(d.get("status")),
            status_desc=to_str(d.get("status_desc")),
            tag=to_str(d.get("tag")),
            exit_code=to_int(d.get("exit_code")),
            error_code=to_int(d.get("error_code")),
            start_time=ms_to_datetime(d.get("start_time")),
            end_time=ms_to_datetime(d.get("end_time")),
            total_time_ms=to_int(d.get("total_time")),
        )


class StepInstance(_Model):
    step_instance_id: int
    name: str = ""
    type: int | None = None  # 1 script, 2 file, 3 manual confirm, 4 SQL
    status: int | None = None  # RunStatusEnum (reference §2.1)
    execute_count: int | None = None
    create_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    total_time_ms: int | None = None
    host_results: list[HostResult] = Field(default_factory=list)

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> StepInstance:
        hosts = d.get("step_ip_result_list") or d.get("step_host_result_list") or []
        return cls(
            step_instance_id=to_int(d.get("step_instance_id")) or 0,
            name=str(d.get("name") or ""),
            type=to_int(d.get("type")),
            status=to_int(d.get("status")),
            execute_count=to_int(d.get("execute_count")),
            create_time=ms_to_datetime(d.get("create_time")),
            start_time=ms_to_datetime(d.get("start_time")),
            end_time=ms_to_datetime(d.get("end_time")),
            total_time_ms=to_int(d.get("total_time")),
            host_results=[HostResult.from_api(h) for h in hosts if isinstance(h, Mapping)],
        )


class JobInstance(_Model):
    job_instance_id: int
    name: str = ""
    status: int | None = None
    bk_scope_type: str | None = None
    bk_scope_id: str | None = None
    create_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    total_time_ms: int | None = None

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> JobInstance:
        return cls(
            job_instance_id=to_int(d.get("job_instance_id", d.get("id"))) or 0,
            name=str(d.get("name") or ""),
            status=to_int(d.get("status", d.get("task_status"))),
            bk_scope_type=to_str(d.get("bk_scope_type")),
            bk_scope_id=to_str(d.get("bk_scope_id", d.get("bk_biz_id"))),
            create_time=ms_to_datetime(d.get("create_time")),
            start_time=ms_to_datetime(d.get("start_time")),
            end_time=ms_to_datetime(d.get("end_time")),
            total_time_ms=to_int(d.get("total_time")),
        )


class JobInstanceStatus(_Model):
    finished: bool
    job_instance: JobInstance
    steps: list[StepInstance]

    def step(self, step_instance_id: int) -> StepInstance | None:
        return next((s for s in self.steps if s.step_instance_id == step_instance_id), None)


class StepResultGroup(_Model):
    result_type: int | None = None
    result_type_desc: str = ""
    tag: str = ""
    host_size: int = 0
    hosts: list[HostResult] = Field(default_factory=list)


class StepInstanceStatus(_Model):
    step_instance_id: int
    name: str = ""
    status: int | None = None
    execute_count: int | None = None
    total_time_ms: int | None = None
    groups: list[StepResultGroup] = Field(default_factory=list)

    @property
    def hosts(self) -> list[HostResult]:
        return [h for g in self.groups for h in g.hosts]


class StepDetail(_Model):
    """What get_step_instance_detail says about a step's settings (its script stays unread)."""

    step_instance_id: int
    name: str = ""
    type: int | None = None  # 1 script, 2 file, 3 manual confirm
    timeout_s: int | None = None  # script_info.script_timeout / file_info.timeout
    account: str = ""  # the execution account's name
    ignore_error: bool = False

    @classmethod
    def from_api(cls, step_instance_id: int, d: Mapping[str, Any]) -> StepDetail:
        script = d.get("script_info") if isinstance(d.get("script_info"), Mapping) else None
        files = d.get("file_info") if isinstance(d.get("file_info"), Mapping) else None
        info: Mapping[str, Any] = script or files or {}
        timeout = info.get("script_timeout") if script else info.get("timeout")
        account: Any = info.get("account")
        if files and not account and isinstance(files.get("file_destination"), Mapping):
            account = files["file_destination"].get("account")
        return cls(
            step_instance_id=to_int(d.get("id")) or step_instance_id,
            name=str(d.get("name") or ""),
            type=to_int(d.get("type")),
            timeout_s=to_int(timeout),
            account=str(account.get("name") or "") if isinstance(account, Mapping) else "",
            ignore_error=to_int(info.get("is_ignore_error")) == 1,
        )


class JobInstanceSummary(_Model):
    """One item of get_job_instance_list (real keys and the doc's outdated ones both read)."""

    job_instance_id: int
    bk_biz_id: int | None = None
    bk_scope_type: str | None = None
    bk_scope_id: str | None = None
    job_plan_id: int | None = None
    job_template_id: int | None = None
    name: str = ""
    operator: str = ""
    launch_mode: int | None = None
    status: int | None = None
    type: int | None = None
    create_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    total_time_ms: int | None = None

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> JobInstanceSummary:
        return cls(
            job_instance_id=to_int(d.get("job_instance_id", d.get("id"))) or 0,
            bk_biz_id=to_int(d.get("bk_biz_id")),
            bk_scope_type=to_str(d.get("bk_scope_type")),
            bk_scope_id=to_str(d.get("bk_scope_id")),
            job_plan_id=to_int(d.get("job_plan_id")),
            job_template_id=to_int(d.get("job_template_id")),
            name=str(d.get("name") or ""),
            operator=str(d.get("operator") or ""),
            launch_mode=to_int(d.get("launch_mode")),
            status=to_int(d.get("status", d.get("task_status"))),
            type=to_int(d.get("type", d.get("task_type"))),
            create_time=ms_to_datetime(d.get("create_time")),
            start_time=ms_to_datetime(d.get("start_time")),
            end_time=ms_to_datetime(d.get("end_time")),
            total_time_ms=to_int(d.get("total_time")),
        )


class ScriptHostLog(_Model):
    bk_host_id: int | None = None
    bk_cloud_id: int | None = None
    ip: str | None = None
    ipv6: str | None = None
    log_content: str = ""


class FileLogEntry(_Model):
    mode: int | None = None  # 0 upload, 1 download
    src_ip: dict[str, Any] | None = None
    src_path: str | None = None
    dest_ip: dict[str, Any] | None = None
    dest_path: str | None = None
    status: int | None = None  # 1 waiting, 2 uploading, 3 downloading, 4 success, 5 failed
    log_content: str = ""
    size: str | None = None
    speed: str | None = None
    process: str | None = None


class FileHostLog(_Model):
    bk_host_id: int | None = None
    bk_cloud_id: int | None = None
    ip: str | None = None
    file_logs: list[FileLogEntry] = Field(default_factory=list)


class IpLogs(_Model):
    job_instance_id: int | None = None
    step_instance_id: int | None = None
    log_type: int | None = None  # 1 script, 2 file
    script_logs: list[ScriptHostLog] = Field(default_factory=list)
    file_logs: list[FileHostLog] = Field(default_factory=list)


def _ip_dict(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None


def parse_ip_logs(data: Mapping[str, Any]) -> IpLogs:
    script = [
        ScriptHostLog(
            bk_host_id=to_int(x.get("bk_host_id")),
            bk_cloud_id=to_int(x.get("bk_cloud_id")),
            ip=to_str(x.get("ip")),
            ipv6=to_str(x.get("ipv6")),
            log_content=str(x.get("log_content") or ""),
        )
        for x in data.get("script_task_logs") or []
        if isinstance(x, Mapping)
    ]
    files = [
        FileHostLog(
            bk_host_id=to_int(x.get("bk_host_id")),
            bk_cloud_id=to_int(x.get("bk_cloud_id")),
            ip=to_str(x.get("ip")),
            file_logs=[
                FileLogEntry(
                    mode=to_int(f.get("mode")),
                    src_ip=_ip_dict(f.get("src_ip")),
                    src_path=to_str(f.get("src_path")),
                    dest_ip=_ip_dict(f.get("dest_ip")),
                    dest_path=to_str(f.get("dest_path")),
                    status=to_int(f.get("status")),
                    log_content=str(f.get("log_content") or ""),
                    size=to_str(f.get("size")),
                    speed=to_str(f.get("speed")),
                    process=to_str(f.get("process")),
                )
                for f in x.get("file_logs") or []
                if isinstance(f, Mapping)
            ],
        )
        for x in data.get("file_task_logs") or []
        if isinstance(x, Mapping)
    ]
    return IpLogs(
        job_instance_id=to_int(data.get("job_instance_id")),
        step_instance_id=to_int(data.get("step_instance_id")),
        log_type=to_int(data.get("log_type")),
        script_logs=script,
        file_logs=files,
    )
