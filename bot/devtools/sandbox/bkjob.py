"""Sample BK-JOB API gateway (`bk-job` stage) over an in-memory dataset.

Serves get_job_instance_list (paging, `status` filter, ms window, 30-day rule, the server's
`start` limit), get_job_instance_status, get_step_instance_status and batch_get_job_instance_ip_log
with BK-JOB's `EsbResp` envelope (`job_request_id`) and its error codes, both as the public user
APIs (`/api/v3/<api>`: the gateway wants a verified user, as `userVerifiedRequired: true` in
bk-job's `support-files/bk-api-gateway/v3/resources.yaml` says) and as their app-only twins
(`/api/v3/system/<api>`: the app must be granted them). `legacy_list_keys=True` answers the list
with the outdated doc keys (`id`, `task_status`, `task_type`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.core.codes import codes
from bot.devtools.sandbox import GatewayAuth, gateway_app, read_json

CODE_MISSING_PARAM = 1241001
CODE_ILLEGAL_PARAM = 1241002
CODE_MISSING_TIME = 1241007
CODE_ILLEGAL_PARAM_REASON = 1241010  # 请求参数[{0}]不合法，原因：{1}
CODE_TASK_INSTANCE_NOT_EXIST = 1244006
CODE_STEP_INSTANCE_NOT_EXIST = 1244007
THIRTY_DAYS_MS = 30 * 24 * 3600 * 1000
MAX_LOG_HOSTS = 500  # batch_get_job_instance_ip_log hosts per call

FINAL_STATUSES = frozenset({3, 4, 5, 6, 8, 9, 11, 13, 14})


@dataclass
class FakeHost:
    bk_host_id: int
    ip: str
    bk_cloud_id: int = 0
    bk_agent_id: str = ""
    ipv6: str = ""
    status: int = 9
    tag: str = ""
    exit_code: int = 0
    error_code: int = 0
    start_time: int | None = None
    end_time: int | None = None
    total_time: int | None = None
    log_content: str = ""


@dataclass
class FakeStep:
    step_instance_id: int
    name: str
    type: int = 1
    status: int = 3
    execute_count: int = 0
    create_time: int | None = None
    start_time: int | None = None
    end_time: int | None = None
    total_time: int | None = None
    hosts: list[FakeHost] = field(default_factory=list)
    timeout_s: int = 3600
    account: str = "root"


@dataclass
class FakeJobInstance:
    job_instance_id: int
    name: str
    create_time: int  # epoch ms
    status: int = 3
    type: int = 0
    bk_scope_type: str = "biz"
    bk_scope_id: str = "2"
    operator: str = "admin"
    launch_mode: int = 2
    job_plan_id: int = 0
    job_template_id: int = 0
    start_time: int | None = None
    end_time: int | None = None
    total_time: int | None = None
    steps: list[FakeStep] = field(default_factory=list)


def _resp(data: Any, code: int = 0, message: str = "") -> web.Response:
    body = {
        "result": code == 0,
        "code": code,
        "message": message or ("success" if code == 0 else ""),
        "data": data,
        "job_request_id": uuid.uuid4().hex,
    }
    return web.json_response(body)


class _Err(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _int(
    params: Mapping[str, Any], name: str, *, required: bool = False, default: int | None = None
) -> int | None:
    raw = params.get(name)
    if raw in (None, ""):
        if required:
            raise _Err(CODE_MISSING_PARAM, f"请求参数缺失：{name}")
        return default
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise _Err(CODE_ILLEGAL_PARAM, f"请求参数[{name}]不合法") from None


def _host_json(h: FakeHost, *, detailed: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "bk_host_id": h.bk_host_id,
        "ip": h.ip,
        "bk_cloud_id": h.bk_cloud_id,
        "status": h.status,
        "tag": h.tag,
        "exit_code": h.exit_code,
        "error_code": h.error_code,
        "start_time": h.start_time,
        "end_time": h.end_time,
        "total_time": h.total_time,
    }
    if detailed:
        out.update(
            ipv6=h.ipv6, bk_agent_id=h.bk_agent_id, status_desc=codes().host_status.zh.get(h.status, "")
        )
    return out


def create_bkjob_app(
    instances: Iterable[FakeJobInstance],
    *,
    app_code: str,
    app_secret: str,
    tenant_id: str | None = None,
    legacy_list_keys: bool = False,
    max_length: int = 1000,
    start_limit: int | None = 1000,
    exempt_apps: Iterable[str] = (),
    access_tokens: Mapping[str, str] | None = None,
    system_apps: Iterable[str] = (),
) -> web.Application:
    """`exempt_apps`, `access_tokens` and `system_apps` are the three ways past the gateway's user
    verification (see `GatewayAuth`); `start_limit` is the server's cap on the list's `start`
    (`startLimitEnabled`), None for a server without it."""
    jobs: dict[int, FakeJobInstance] = {j.job_instance_id: j for j in instances}
    app = gateway_app(
        GatewayAuth(
            app_code=app_code,
            app_secret=app_secret,
            require_username=True,
            tenant_id=tenant_id,
            verify_user=True,
            exempt_apps=frozenset(exempt_apps),
            access_tokens=dict(access_tokens or {}),
            system_prefix="/api/v3/system/",
            system_apps=frozenset(system_apps),
        )
    )

    def find_job(params: Mapping[str, Any]) -> FakeJobInstance:
        scope_type = str(params.get("bk_scope_type") or "")
        scope_id = str(params.get("bk_scope_id") or "")
        if not scope_type or not scope_id:
            raise _Err(CODE_MISSING_PARAM, "请求参数缺失：bk_scope_type/bk_scope_id")
        job_id = _int(params, "job_instance_id", required=True)
        job = jobs.get(job_id or 0)
        if job is None or job.bk_scope_type != scope_type or job.bk_scope_id != scope_id:
            raise _Err(CODE_TASK_INSTANCE_NOT_EXIST, "作业实例不存在")
        return job

    def find_step(job: FakeJobInstance, params: Mapping[str, Any]) -> FakeStep:
        step_id = _int(params, "step_instance_id", required=True)
        step = next((s for s in job.steps if s.step_instance_id == step_id), None)
        if step is None:
            raise _Err(CODE_STEP_INSTANCE_NOT_EXIST, "作业步骤实例不存在")
        return step

    def job_json(job: FakeJobInstance) -> dict[str, Any]:
        return {
            "job_instance_id": job.job_instance_id,
            "bk_scope_type": job.bk_scope_type,
            "bk_scope_id": job.bk_scope_id,
            "name": job.name,
            "status": job.status,
            "create_time": job.create_time,
            "start_time": job.start_time,
            "end_time": job.end_time,
            "total_time": job.total_time,
        }

    async def job_list(request: web.Request) -> web.Response:
        q = request.query
        try:
            scope_type, scope_id = q.get("bk_scope_type"), q.get("bk_scope_id")
            if not scope_type or not scope_id:
                raise _Err(CODE_MISSING_PARAM, "请求参数缺失：bk_scope_type/bk_scope_id")
            t0 = _int(q, "create_time_start") or 0
            t1 = _int(q, "create_time_end") or 0
            if t0 <= 0 or t1 <= 0:
                raise _Err(CODE_MISSING_TIME, "请求参数缺失：create_time_start/create_time_end")
            if t1 < t0 or t1 - t0 > THIRTY_DAYS_MS:
                raise _Err(CODE_ILLEGAL_PARAM, "请求参数不合法")
            status = _int(q, "status")
            typ = _int(q, "type")
            start = _int(q, "start", default=0) or 0
            length = _int(q, "length", default=20) or 20
            if start < 0 or length <= 0 or length > max_length:
                raise _Err(CODE_ILLEGAL_PARAM, "请求参数不合法")
            if start_limit is not None and start > start_limit:
                # EsbGetJobInstanceListV3ResourceImpl.checkRequest with startLimitEnabled
                raise _Err(
                    CODE_ILLEGAL_PARAM_REASON, f"请求参数[start]不合法，原因：start must <= {start_limit}"
                )
        except _Err as exc:
            return _resp(None, exc.code, exc.message)
        rows = [
            j
            for j in jobs.values()
            if j.bk_scope_type == scope_type
            and j.bk_scope_id == scope_id
            and t0 <= j.create_time <= t1
            and (status is None or j.status == status)
            and (typ is None or j.type == typ)
            and (not q.get("name") or q["name"] in j.name)
            and (not q.get("operator") or q["operator"] == j.operator)
        ]
        rows.sort(key=lambda j: (-j.create_time, -j.job_instance_id))  # newest first, like JOB
        page = rows[start : start + length]
        items = []
        for j in page:
            item: dict[str, Any] = {
                "bk_biz_id": int(j.bk_scope_id) if j.bk_scope_type == "biz" else None,
                "bk_scope_type": j.bk_scope_type,
                "bk_scope_id": j.bk_scope_id,
                "job_plan_id": j.job_plan_id,
                "job_template_id": j.job_template_id,
                "name": j.name,
                "operator": j.operator,
                "launch_mode": j.launch_mode,
                "create_time": j.create_time,
                "start_time": j.start_time,
                "end_time": j.end_time,
                "total_time": j.total_time,
            }
            if legacy_list_keys:
                item.update(id=j.job_instance_id, task_status=j.status, task_type=j.type)
            else:
                item.update(job_instance_id=j.job_instance_id, status=j.status, type=j.type)
            items.append(item)
        return _resp({"start": start, "length": length, "total": len(rows), "data": items})

    async def job_status(request: web.Request) -> web.Response:
        q = request.query
        try:
            job = find_job(q)
        except _Err as exc:
            return _resp(None, exc.code, exc.message)
        with_ips = str(q.get("return_ip_result", "false")).lower() == "true"
        steps = []
        for s in job.steps:
            step: dict[str, Any] = {
                "step_instance_id": s.step_instance_id,
                "name": s.name,
                "type": s.type,
                "status": s.status,
                "execute_count": s.execute_count,
                "create_time": s.create_time,
                "start_time": s.start_time,
                "end_time": s.end_time,
                "total_time": s.total_time,
            }
            if with_ips:
                step["step_ip_result_list"] = [_host_json(h, detailed=False) for h in s.hosts]
            steps.append(step)
        data = {
            "finished": job.status in FINAL_STATUSES,
            "job_instance": job_json(job),
            "step_instance_list": steps,
        }
        return _resp(data)

    async def step_status(request: web.Request) -> web.Response:
        q = request.query
        try:
            job = find_job(q)
            step = find_step(job, q)
            only_status = _int(q, "status")
            per_group = _int(q, "max_host_num_per_group")
        except _Err as exc:
            return _resp(None, exc.code, exc.message)
        groups: dict[tuple[int, str], list[FakeHost]] = {}
        for h in step.hosts:
            if only_status is None or h.status == only_status:
                groups.setdefault((h.status, h.tag), []).append(h)
        group_list = [
            {
                "result_type": status,
                "result_type_desc": codes().host_status.zh.get(status, ""),
                "tag": tag,
                "host_size": len(hosts),
                "host_result_list": [_host_json(h, detailed=True) for h in hosts[:per_group]],
            }
            for (status, tag), hosts in sorted(groups.items())
        ]
        data = {
            "step_instance_id": step.step_instance_id,
            "name": step.name,
            "status": step.status,
            "execute_count": step.execute_count,
            "total_time": step.total_time,
            "step_result_group_list": group_list,
        }
        return _resp(data)

    async def ip_logs(request: web.Request) -> web.Response:
        body = await read_json(request)
        try:
            job = find_job(body)
            step = find_step(job, body)
        except _Err as exc:
            # an unknown step of a known job is answered like an unknown job here
            return _resp(None, CODE_TASK_INSTANCE_NOT_EXIST, exc.message)
        host_ids = {int(x) for x in body.get("host_id_list") or []}
        # "如果host_id_list与ip_list同时存在，将忽略ip_list参数" (the API doc)
        ips = {
            (int(x.get("bk_cloud_id", 0)), str(x.get("ip")))
            for x in (body.get("ip_list") or [] if not host_ids else [])
            if isinstance(x, dict)
        }
        if not host_ids and not ips:
            return _resp(None, CODE_MISSING_PARAM, "请求参数缺失：host_id_list/ip_list")
        if len(host_ids) + len(ips) > MAX_LOG_HOSTS:
            return _resp(None, CODE_MISSING_TIME, f"请求参数不合法：最多 {MAX_LOG_HOSTS} 台主机")
        chosen = [h for h in step.hosts if h.bk_host_id in host_ids or (h.bk_cloud_id, h.ip) in ips]
        data: dict[str, Any] = {
            "job_instance_id": job.job_instance_id,
            "step_instance_id": step.step_instance_id,
            "log_type": 1 if step.type != 2 else 2,
        }
        if step.type == 2:
            data["file_task_logs"] = [
                {
                    "bk_host_id": h.bk_host_id,
                    "bk_cloud_id": h.bk_cloud_id,
                    "ip": h.ip,
                    "file_logs": [
                        {"mode": 1, "status": 5 if h.status != 9 else 4, "log_content": h.log_content}
                    ],
                }
                for h in chosen
            ]
        else:
            data["script_task_logs"] = [
                {
                    "bk_host_id": h.bk_host_id,
                    "bk_cloud_id": h.bk_cloud_id,
                    "ip": h.ip,
                    "ipv6": h.ipv6 or None,
                    "log_content": h.log_content,
                }
                for h in chosen
            ]
        return _resp(data)

    async def step_detail(request: web.Request) -> web.Response:
        q = request.query
        try:
            job = find_job(q)
            step = find_step(job, q)
        except _Err as exc:
            return _resp(None, exc.code, exc.message)
        account = {"id": 1, "name": step.account}
        server = {
            "ip_list": [
                {"bk_host_id": h.bk_host_id, "bk_cloud_id": h.bk_cloud_id, "ip": h.ip} for h in step.hosts
            ]
        }
        data: dict[str, Any] = {"id": step.step_instance_id, "name": step.name, "type": step.type}
        if step.type == 2:
            data["file_info"] = {
                "file_source_list": [],
                "file_destination": {"path": "/tmp", "account": account, "server": server},
                "timeout": step.timeout_s,
                "transfer_mode": 2,
                "is_ignore_error": 0,
            }
        else:
            data["script_info"] = {
                "script_type": 1,
                "script_language": 1,
                "script_param": "",
                "script_timeout": step.timeout_s,
                "account": account,
                "server": server,
                "is_param_sensitive": 0,
                "is_ignore_error": 0,
            }
        return _resp(data)

    for prefix in ("/api/v3/", "/api/v3/system/"):
        app.router.add_get(prefix + "get_step_instance_detail", step_detail)
        app.router.add_get(prefix + "get_job_instance_list", job_list)
        app.router.add_get(prefix + "get_job_instance_status", job_status)
        app.router.add_get(prefix + "get_step_instance_status", step_status)
        app.router.add_post(prefix + "batch_get_job_instance_ip_log", ip_logs)
    return app
