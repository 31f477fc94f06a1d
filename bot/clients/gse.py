"""GSE agent state client (reference bk-job.md §5).

v2 (GSE 2.0, `bk-gse` gateway): `POST <base>/api/v2/cluster/list_agent_state`, keyed by agent id.
v1 (legacy ESB): `POST <base>/api/c/compapi/v2/gse/get_agent_status/`, keyed `"<cloud>:<ip>"`.
Alive only if v2 `status_code == 2` (as BK-JOB decides) or v1 `bk_agent_alive == 1`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from bot.clients.gateway import ApiCredentials, ApiError, GatewayTransport, UpstreamError
from bot.core.codes import codes

ApiVersion = Literal["v1", "v2"]
V2_BATCH = 5000  # BK-JOB's gse.query.batchSize
V1_BATCH = 1000

ALIVE_STATUS = 2
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
NOT_FOUND = -2
V1_ALIVE_ZH = {0: "离线", 1: "在线"}


@dataclass(frozen=True, slots=True)
class AgentState:
    key: str  # the agent id (v2) or "<bk_cloud_id>:<ip>" (v1) that was asked for
    found: bool
    alive: bool
    status_code: int | None = None  # v2 status_code; v1: None
    status_zh: str = ""
    bk_cloud_id: int | None = None
    ip: str | None = None
    version: str | None = None
    run_mode: int | None = None


def status_zh(code: int | None) -> str:
    if code is None:
        return "未知"
    return codes().agent_state.zh.get(code, f"未知状态({code})")


def _legacy_host(agent_id: str) -> tuple[int, str] | None:
    """`"0:10.0.0.1"` → (0, "10.0.0.1"); None for GSE 2.0 ids."""
    cloud, sep, ip = agent_id.partition(":")
    if sep and cloud.isdigit() and (_IPV4.fullmatch(ip) or ":" in ip):
        return int(cloud), ip
    return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _chunks(items: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


class GseClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        api_version: ApiVersion = "v2",
        credentials: ApiCredentials | tuple[str, str, str] | Any,
        tenant_id: str = "",
        timeout_s: float = 5.0,
        retries: int = 1,
        bk_supplier_account: str = "0",
        backoff_base_s: float = 0.5,
    ) -> None:
        self._base = str(base_url).rstrip("/")
        self.api_version: ApiVersion = api_version
        self._supplier = bk_supplier_account
        self._gw = GatewayTransport(
            session,
            service="GSE",
            credentials=credentials,
            tenant_id=tenant_id,
            timeout_s=timeout_s,
            retries=retries,
            backoff_base_s=backoff_base_s,
        )

    async def probe(self) -> str:
        """One empty state query, no retries: the gateway, credentials and grant, or raise."""
        if self.api_version == "v1":
            url, api = f"{self._base}/api/c/compapi/v2/gse/get_agent_status/", "get_agent_status"
            body: dict[str, Any] = {"bk_supplier_account": self._supplier, "hosts": []}
        else:
            url, api = f"{self._base}/api/v2/cluster/list_agent_state", "list_agent_state"
            body = {"agent_id_list": []}
        try:
            await self._gw.call("POST", url, json_body=body, api=api, retries=0)
        except ApiError:
            pass  # GSE itself answered
        return f"GSE {self.api_version} answers"

    async def agent_states(
        self, agent_ids: Sequence[str] = (), *, hosts: Sequence[tuple[int, str]] = ()
    ) -> dict[str, AgentState]:
        """State per requested key: agent ids as given, hosts as `"<cloud>:<ip>"`.

        v2 takes hosts as legacy agent ids `"<cloud>:<ip>"`; v1 can only ask by host, so a
        GSE 2.0 agent id there comes back `found=False` with status "未知".
        """
        keys = list(dict.fromkeys([*agent_ids, *(f"{c}:{ip}" for c, ip in hosts)]))
        if not keys:
            return {}
        if self.api_version == "v1":
            return await self._v1(keys)
        return await self._v2(keys)

    async def _v2(self, keys: list[str]) -> dict[str, AgentState]:
        url = f"{self._base}/api/v2/cluster/list_agent_state"
        seen: dict[str, Mapping[str, Any]] = {}
        for batch in _chunks(keys, V2_BATCH):
            env = await self._gw.call(
                "POST", url, json_body={"agent_id_list": list(batch)}, api="list_agent_state"
            )
            if env.data is None:
                continue
            if not isinstance(env.data, list):
                raise UpstreamError("list_agent_state: data is not a list", service="GSE")
            for item in env.data:
                if isinstance(item, Mapping) and item.get("bk_agent_id") is not None:
                    seen[str(item["bk_agent_id"])] = item
        out: dict[str, AgentState] = {}
        for key in keys:
            item = seen.get(key)
            code = _int(item.get("status_code")) if item is not None else None
            if item is None or code is None:
                # missing entry / null state: BK-JOB treats it as not alive
                out[key] = AgentState(
                    key=key, found=False, alive=False, status_code=NOT_FOUND, status_zh=status_zh(NOT_FOUND)
                )
                continue
            legacy = _legacy_host(key)
            out[key] = AgentState(
                key=key,
                found=True,
                alive=code == ALIVE_STATUS,
                status_code=code,
                status_zh=status_zh(code),
                bk_cloud_id=_int(item.get("bk_cloud_id")),
                ip=legacy[1] if legacy else None,
                version=None if item.get("version") is None else str(item.get("version")),
                run_mode=_int(item.get("run_mode")),
            )
        return out

    async def _v1(self, keys: list[str]) -> dict[str, AgentState]:
        url = f"{self._base}/api/c/compapi/v2/gse/get_agent_status/"
        creds = self._gw.credentials
        out: dict[str, AgentState] = {}
        hosts = {k: h for k in keys if (h := _legacy_host(k)) is not None}
        for key in keys:
            if key not in hosts:
                out[key] = AgentState(
                    key=key, found=False, alive=False, status_zh="未知（v1 接口只能按 IP 查询）"
                )
        seen: dict[str, Mapping[str, Any]] = {}
        for batch in _chunks(list(hosts), V1_BATCH):
            body = {
                # legacy ESB reads credentials from the body; the header is sent as well
                "bk_app_code": creds.app_code,
                "bk_app_secret": creds.app_secret,
                "bk_username": creds.username,
                "bk_supplier_account": self._supplier,
                "hosts": [{"ip": hosts[k][1], "bk_cloud_id": hosts[k][0]} for k in batch],
            }
            env = await self._gw.call("POST", url, json_body=body, api="get_agent_status")
            if env.data is None:
                continue
            if not isinstance(env.data, Mapping):
                raise UpstreamError("get_agent_status: data is not an object", service="GSE")
            seen.update({str(k): v for k, v in env.data.items() if isinstance(v, Mapping)})
        for key, (cloud, ip) in hosts.items():
            item = seen.get(key)
            if item is None:
                out[key] = AgentState(
                    key=key,
                    found=False,
                    alive=False,
                    bk_cloud_id=cloud,
                    ip=ip,
                    status_zh=status_zh(NOT_FOUND),
                )
                continue
            alive_flag = _int(item.get("bk_agent_alive"))
            out[key] = AgentState(
                key=key,
                found=True,
                alive=alive_flag == 1,
                status_zh=V1_ALIVE_ZH.get(alive_flag or 0, "离线"),
                bk_cloud_id=_int(item.get("bk_cloud_id")) if item.get("bk_cloud_id") is not None else cloud,
                ip=str(item.get("ip") or ip),
            )
        return {k: out[k] for k in keys}
