"""BK-JOB open API client (APIGW v3, reference bk-job.md §4).

`<base_url>/api/v3/<api>` on the `bk-job` gateway. Times in the API are epoch milliseconds;
the models carry timezone-aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import structlog
from pydantic import BaseModel, ConfigDict, Field

from bot.clients.gateway import (
    ApiCredentials,
    ApiError,
    Envelope,
    GatewayAuthError,
    GatewayTransport,
    UpstreamError,
)

log = structlog.get_logger(__name__)

INSTANCE_NOT_FOUND_CODES = frozenset({1244006, 1244007})  # 作业实例不存在 / 作业步骤实例不存在
MAX_LIST_SPAN = timedelta(days=30)
LIST_PAGE_MAX = 1000
# Servers with `startLimitEnabled` refuse a list `start` beyond this (1241010,
# EsbGetJobInstanceListV3ResourceImpl.checkRequest): bigger windows are read in time slices.
LIST_START_LIMIT = 1000
START_LIMIT_CODE = 1241010


class InstanceNotFound(ApiError):
    """The job or step instance does not exist (1244006 / 1244007)."""

    kind_zh = "作业实例不存在"


class UserNotVerified(GatewayAuthError):
    """The gateway refused `bk_username` alone: BK-JOB's public APIs need a verified user (1640001)."""

    kind_zh = "网关要求已认证的用户"


USER_NOT_VERIFIED_HINT = (
    "BK-JOB needs a verified user: exempt app {app} from user verification (bk-job gateway), "
    "or JOB_DOCTOR_BKJOB__USE_SYSTEM_API=true with the system APIs granted, or JOB_DOCTOR_BK__ACCESS_TOKEN"
)


# --------------------------------------------------------------------------- models


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


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _str(value: Any) -> str | None:
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
            bk_host_id=_int(d.get("bk_host_id")),
            ip=_str(d.get("ip")),
            ipv6=_str(d.get("ipv6")),
            bk_agent_id=_str(d.get("bk_agent_id")),
            bk_cloud_id=_int(d.get("bk_cloud_id")),
            status=_int(d.get("status")),
            status_desc=_str(d.get("status_desc")),
            tag=_str(d.get("tag")),
            exit_code=_int(d.get("exit_code")),
            error_code=_int(d.get("error_code")),
            start_time=ms_to_datetime(d.get("start_time")),
            end_time=ms_to_datetime(d.get("end_time")),
            total_time_ms=_int(d.get("total_time")),
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
            step_instance_id=_int(d.get("step_instance_id")) or 0,
            name=str(d.get("name") or ""),
            type=_int(d.get("type")),
            status=_int(d.get("status")),
            execute_count=_int(d.get("execute_count")),
            create_time=ms_to_datetime(d.get("create_time")),
            start_time=ms_to_datetime(d.get("start_time")),
            end_time=ms_to_datetime(d.get("end_time")),
            total_time_ms=_int(d.get("total_time")),
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
            job_instance_id=_int(d.get("job_instance_id", d.get("id"))) or 0,
            name=str(d.get("name") or ""),
            status=_int(d.get("status", d.get("task_status"))),
            bk_scope_type=_str(d.get("bk_scope_type")),
            bk_scope_id=_str(d.get("bk_scope_id", d.get("bk_biz_id"))),
            create_time=ms_to_datetime(d.get("create_time")),
            start_time=ms_to_datetime(d.get("start_time")),
            end_time=ms_to_datetime(d.get("end_time")),
            total_time_ms=_int(d.get("total_time")),
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
            step_instance_id=_int(d.get("id")) or step_instance_id,
            name=str(d.get("name") or ""),
            type=_int(d.get("type")),
            timeout_s=_int(timeout),
            account=str(account.get("name") or "") if isinstance(account, Mapping) else "",
            ignore_error=_int(info.get("is_ignore_error")) == 1,
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
            job_instance_id=_int(d.get("job_instance_id", d.get("id"))) or 0,
            bk_biz_id=_int(d.get("bk_biz_id")),
            bk_scope_type=_str(d.get("bk_scope_type")),
            bk_scope_id=_str(d.get("bk_scope_id")),
            job_plan_id=_int(d.get("job_plan_id")),
            job_template_id=_int(d.get("job_template_id")),
            name=str(d.get("name") or ""),
            operator=str(d.get("operator") or ""),
            launch_mode=_int(d.get("launch_mode")),
            status=_int(d.get("status", d.get("task_status"))),
            type=_int(d.get("type", d.get("task_type"))),
            create_time=ms_to_datetime(d.get("create_time")),
            start_time=ms_to_datetime(d.get("start_time")),
            end_time=ms_to_datetime(d.get("end_time")),
            total_time_ms=_int(d.get("total_time")),
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


def _parse_ip_logs(data: Mapping[str, Any]) -> IpLogs:
    script = [
        ScriptHostLog(
            bk_host_id=_int(x.get("bk_host_id")),
            bk_cloud_id=_int(x.get("bk_cloud_id")),
            ip=_str(x.get("ip")),
            ipv6=_str(x.get("ipv6")),
            log_content=str(x.get("log_content") or ""),
        )
        for x in data.get("script_task_logs") or []
        if isinstance(x, Mapping)
    ]
    files = [
        FileHostLog(
            bk_host_id=_int(x.get("bk_host_id")),
            bk_cloud_id=_int(x.get("bk_cloud_id")),
            ip=_str(x.get("ip")),
            file_logs=[
                FileLogEntry(
                    mode=_int(f.get("mode")),
                    src_ip=_ip_dict(f.get("src_ip")),
                    src_path=_str(f.get("src_path")),
                    dest_ip=_ip_dict(f.get("dest_ip")),
                    dest_path=_str(f.get("dest_path")),
                    status=_int(f.get("status")),
                    log_content=str(f.get("log_content") or ""),
                    size=_str(f.get("size")),
                    speed=_str(f.get("speed")),
                    process=_str(f.get("process")),
                )
                for f in x.get("file_logs") or []
                if isinstance(f, Mapping)
            ],
        )
        for x in data.get("file_task_logs") or []
        if isinstance(x, Mapping)
    ]
    return IpLogs(
        job_instance_id=_int(data.get("job_instance_id")),
        step_instance_id=_int(data.get("step_instance_id")),
        log_type=_int(data.get("log_type")),
        script_logs=script,
        file_logs=files,
    )


# --------------------------------------------------------------------------- client


class BkJobClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        credentials: ApiCredentials | tuple[str, str, str] | Any,
        tenant_id: str = "",
        timeout_s: float = 10.0,
        retries: int = 2,
        backoff_base_s: float = 0.5,
        system_api: bool = False,
    ) -> None:
        self._base = str(base_url).rstrip("/")
        self.system_api = system_api
        self._gw = GatewayTransport(
            session,
            service="BK-JOB",
            credentials=credentials,
            tenant_id=tenant_id,
            timeout_s=timeout_s,
            retries=retries,
            backoff_base_s=backoff_base_s,
        )

    def _url(self, api: str) -> str:
        # The system twins are app-only: no verified user, but the app must be granted them.
        return f"{self._base}/api/v3/system/{api}" if self.system_api else f"{self._base}/api/v3/{api}"

    async def _call(
        self,
        method: str,
        api: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        retries: int | None = None,
    ) -> Envelope:
        try:
            if method == "GET":
                return await self._gw.call("GET", self._url(api), params=params, api=api, retries=retries)
            return await self._gw.call("POST", self._url(api), json_body=body, api=api, retries=retries)
        except GatewayAuthError as err:
            if err.code == 1640001 and "not verified" in err.message:
                hint = USER_NOT_VERIFIED_HINT.format(app=self._gw.credentials.app_code or "(unset)")
                log.warning("bkjob_user_not_verified", detail=err.message)
                raise UserNotVerified(
                    hint,
                    service=err.service,
                    code=err.code,
                    http_status=err.http_status,
                    request_id=err.request_id,
                ) from None
            raise
        except ApiError as err:
            if err.code in INSTANCE_NOT_FOUND_CODES:
                raise InstanceNotFound(
                    err.message,
                    service=err.service,
                    code=err.code,
                    http_status=err.http_status,
                    request_id=err.request_id,
                ) from None
            raise

    async def probe(self) -> str:
        """Ask for an instance that cannot exist, once: any BK-JOB answer proves the gateway, the
        credentials and the resource grant; only those failures raise."""
        params = {"bk_scope_type": "biz", "bk_scope_id": "0", "job_instance_id": "0"}
        try:
            await self._call("GET", "get_job_instance_status", params=params, retries=0)
        except ApiError:
            pass  # BK-JOB itself answered (e.g. 作业实例不存在)
        return "system APIs answer" if self.system_api else "API gateway answers"

    @staticmethod
    def _data(env: Envelope, api: str) -> Mapping[str, Any]:
        if not isinstance(env.data, Mapping):
            raise UpstreamError(f"{api}: response data is not an object", service="BK-JOB")
        return env.data

    async def get_job_instance_status(
        self,
        bk_scope_id: int | str,
        job_instance_id: int,
        *,
        bk_scope_type: str = "biz",
        return_ip_result: bool = True,
    ) -> JobInstanceStatus:
        api = "get_job_instance_status"
        params = {
            "bk_scope_type": bk_scope_type,
            "bk_scope_id": bk_scope_id,
            "job_instance_id": job_instance_id,
            "return_ip_result": return_ip_result,
        }
        data = self._data(await self._call("GET", api, params=params), api)
        job = data.get("job_instance") or {}
        steps = data.get("step_instance_list") or []
        return JobInstanceStatus(
            finished=bool(data.get("finished")),
            job_instance=JobInstance.from_api(job if isinstance(job, Mapping) else {}),
            steps=[StepInstance.from_api(s) for s in steps if isinstance(s, Mapping)],
        )

    async def get_step_instance_status(
        self,
        bk_scope_id: int | str,
        job_instance_id: int,
        step_instance_id: int,
        *,
        bk_scope_type: str = "biz",
        execute_count: int | None = None,
        batch: int | None = None,
        max_host_num_per_group: int | None = None,
        status: int | None = None,
    ) -> StepInstanceStatus:
        api = "get_step_instance_status"
        params = {
            "bk_scope_type": bk_scope_type,
            "bk_scope_id": bk_scope_id,
            "job_instance_id": job_instance_id,
            "step_instance_id": step_instance_id,
            "execute_count": execute_count,
            "batch": batch,
            "max_host_num_per_group": max_host_num_per_group,
            "status": status,
        }
        data = self._data(await self._call("GET", api, params=params), api)
        groups = []
        for g in data.get("step_result_group_list") or []:
            if not isinstance(g, Mapping):
                continue
            hosts = [
                HostResult.from_api(h) for h in g.get("host_result_list") or [] if isinstance(h, Mapping)
            ]
            groups.append(
                StepResultGroup(
                    result_type=_int(g.get("result_type")),
                    result_type_desc=str(g.get("result_type_desc") or ""),
                    tag=str(g.get("tag") or ""),
                    host_size=_int(g.get("host_size")) or len(hosts),
                    hosts=hosts,
                )
            )
        return StepInstanceStatus(
            step_instance_id=_int(data.get("step_instance_id")) or step_instance_id,
            name=str(data.get("name") or ""),
            status=_int(data.get("status")),
            execute_count=_int(data.get("execute_count")),
            total_time_ms=_int(data.get("total_time")),
            groups=groups,
        )

    async def get_step_instance_detail(
        self,
        bk_scope_id: int | str,
        job_instance_id: int,
        step_instance_id: int,
        *,
        bk_scope_type: str = "biz",
    ) -> StepDetail:
        api = "get_step_instance_detail"
        params = {
            "bk_scope_type": bk_scope_type,
            "bk_scope_id": bk_scope_id,
            "job_instance_id": job_instance_id,
            "step_instance_id": step_instance_id,
        }
        data = self._data(await self._call("GET", api, params=params), api)
        return StepDetail.from_api(step_instance_id, data)

    async def get_job_instance_list(
        self,
        bk_scope_id: int | str,
        *,
        create_time_start: datetime,
        create_time_end: datetime,
        status: int | None = None,
        bk_scope_type: str = "biz",
        page_size: int = 500,
        max_items: int = 20000,
        filters: Mapping[str, Any] | None = None,
    ) -> list[JobInstanceSummary]:
        """Every job instance created in the window (one `status` per call), all pages read.

        The API refuses windows over 30 days (1241002), so that is checked here first. A window
        with more rows than paging can reach under the server's `start` limit is split in time
        (both bounds are inclusive milliseconds) until every slice fits; rows already read are
        kept, duplicates dropped.
        `filters`: other documented params (`name`, `operator`, `launch_mode`, `type`, `ip`, ...).
        """
        if create_time_end <= create_time_start:
            raise ValueError("create_time_end must be after create_time_start")
        if create_time_end - create_time_start > MAX_LIST_SPAN:
            raise ValueError("BK-JOB lists at most 30 days of job instances per query")
        length = max(1, min(page_size, LIST_PAGE_MAX))
        base: dict[str, Any] = dict(filters or {})
        base.update(bk_scope_type=bk_scope_type, bk_scope_id=bk_scope_id, status=status)
        found: dict[int, JobInstanceSummary] = {}
        await self._list_slice(
            base,
            datetime_to_ms(create_time_start),
            datetime_to_ms(create_time_end),
            length=length,
            found=found,
            max_items=max_items,
        )
        return list(found.values())[:max_items]

    async def _list_page(
        self, base: Mapping[str, Any], t0: int, t1: int, start: int, length: int
    ) -> tuple[list[JobInstanceSummary], int, int | None]:
        api = "get_job_instance_list"
        params = {**base, "create_time_start": t0, "create_time_end": t1, "start": start, "length": length}
        data = self._data(await self._call("GET", api, params=params), api)
        rows = [JobInstanceSummary.from_api(r) for r in data.get("data") or [] if isinstance(r, Mapping)]
        return rows, _int(data.get("total")) or 0, _int(data.get("start"))

    async def _list_slice(
        self,
        base: Mapping[str, Any],
        t0: int,
        t1: int,
        *,
        length: int,
        found: dict[int, JobInstanceSummary],
        max_items: int,
    ) -> None:
        rows, total, _ = await self._list_page(base, t0, t1, 0, length)
        found.update((r.job_instance_id, r) for r in rows)
        if total > LIST_START_LIMIT + length and t1 > t0:
            await self._list_halves(base, t0, t1, length=length, found=found, max_items=max_items)
            return
        start = length
        while rows and start < total and len(found) < max_items:
            try:
                rows, total, served = await self._list_page(base, t0, t1, start, length)
            except ApiError as err:
                if err.code != START_LIMIT_CODE or t1 <= t0:
                    raise
                # The server's limit is lower than assumed: read the rest of this slice by halves.
                await self._list_halves(base, t0, t1, length=length, found=found, max_items=max_items)
                return
            if served is not None and served != start:
                # The server capped `start` quietly: the page is not the one asked for.
                await self._list_halves(base, t0, t1, length=length, found=found, max_items=max_items)
                return
            found.update((r.job_instance_id, r) for r in rows)
            start += length

    async def _list_halves(
        self,
        base: Mapping[str, Any],
        t0: int,
        t1: int,
        *,
        length: int,
        found: dict[int, JobInstanceSummary],
        max_items: int,
    ) -> None:
        mid = (t0 + t1) // 2
        for a, b in ((t0, mid), (mid + 1, t1)):
            if len(found) < max_items:
                await self._list_slice(base, a, b, length=length, found=found, max_items=max_items)

    async def batch_get_job_instance_ip_log(
        self,
        bk_scope_id: int | str,
        job_instance_id: int,
        step_instance_id: int,
        *,
        host_ids: Sequence[int] = (),
        ips: Sequence[tuple[int, str]] = (),
        bk_scope_type: str = "biz",
    ) -> IpLogs:
        """Script output / file-transfer logs per host; `ips` are (bk_cloud_id, ip) pairs.

        BK-JOB ignores `ip_list` when `host_id_list` is given, so asking for both is two calls."""
        api = "batch_get_job_instance_ip_log"
        base: dict[str, Any] = {
            "bk_scope_type": bk_scope_type,
            "bk_scope_id": bk_scope_id,
            "job_instance_id": job_instance_id,
            "step_instance_id": step_instance_id,
        }
        bodies = []
        if host_ids:
            bodies.append({**base, "host_id_list": list(host_ids)})
        if ips:
            bodies.append({**base, "ip_list": [{"bk_cloud_id": c, "ip": ip} for c, ip in ips]})
        parts = [_parse_ip_logs(self._data(await self._call("POST", api, body=b), api)) for b in bodies]
        if not parts:
            raise ValueError("batch_get_job_instance_ip_log needs host_ids or ips")
        return parts[0].model_copy(
            update={
                "script_logs": [x for p in parts for x in p.script_logs],
                "file_logs": [x for p in parts for x in p.file_logs],
            }
        )
