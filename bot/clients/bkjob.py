"""BK-JOB open API client (APIGW v3, reference bk-job.md §4).

`<base_url>/api/v3/<api>` on the `bk-job` gateway. Times in the API are epoch milliseconds;
the models carry timezone-aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import structlog

from bot.clients.bkjob_models import (
    HostResult,
    IpLogs,
    JobInstance,
    JobInstanceStatus,
    JobInstanceSummary,
    StepDetail,
    StepInstance,
    StepInstanceStatus,
    StepResultGroup,
    datetime_to_ms,
    parse_ip_logs,
    to_int,
)
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
                    result_type=to_int(g.get("result_type")),
                    result_type_desc=str(g.get("result_type_desc") or ""),
                    tag=str(g.get("tag") or ""),
                    host_size=to_int(g.get("host_size")) or len(hosts),
                    hosts=hosts,
                )
            )
        return StepInstanceStatus(
            step_instance_id=to_int(data.get("step_instance_id")) or step_instance_id,
            name=str(data.get("name") or ""),
            status=to_int(data.get("status")),
            execute_count=to_int(data.get("execute_count")),
            total_time_ms=to_int(data.get("total_time")),
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
        return rows, to_int(data.get("total")) or 0, to_int(data.get("start"))

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
        parts = [parse_ip_logs(self._data(await self._call("POST", api, body=b), api)) for b in bodies]
        if not parts:
            raise ValueError("batch_get_job_instance_ip_log needs host_ids or ips")
        return parts[0].model_copy(
            update={
                "script_logs": [x for p in parts for x in p.script_logs],
                "file_logs": [x for p in parts for x in p.file_logs],
            }
        )
