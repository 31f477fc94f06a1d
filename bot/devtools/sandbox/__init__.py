"""Built-in sample BkLog / BK-JOB / GSE servers (aiohttp apps speaking the documented wire formats).

`job-doctor demo` serves them on local ports; the tests reach them over real HTTP. Shared here:
the API-gateway behaviour in front of every fake (`X-Bkapi-Authorization` check, the 16xxxxx
error envelopes), fault injection (`app[FAULTS]`) and the request log (`app[REQUESTS]`).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected answer. `status=None` means: wait `delay_s`, then answer normally."""

    status: int | None = 500
    body: str | None = None  # raw body; None → a JSON envelope with `code`/`message`
    content_type: str = "application/json"
    code: int | str | None = None  # BkLog's own codes are strings ("3600429")
    message: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


class Faults:
    """Queue of faults served to the next requests, in order (FIFO), then normal service."""

    def __init__(self) -> None:
        self._queue: deque[Fault] = deque()

    def add(self, fault: Fault, times: int = 1) -> None:
        self._queue.extend([fault] * times)

    def server_error(self, times: int = 1, status: int = 500) -> None:
        self.add(
            Fault(status=status, code=1650200 if status == 502 else None, message="Internal Server Error"),
            times,
        )

    def html(self, times: int = 1, status: int = 502) -> None:
        page = "<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>"
        self.add(Fault(status=status, body=page, content_type="text/html"), times)

    def rate_limit(self, times: int = 1, reset_s: int | None = 1, code: int = 1642902) -> None:
        """The gateway's 429: `X-Bkapi-RateLimit-*` headers (the reset in whole seconds, as the
        bk-rate-limit plugin sets it when the quota headers are on), never `Retry-After`."""
        headers = (
            {}
            if reset_s is None
            else {
                "X-Bkapi-RateLimit-Limit": "100",
                "X-Bkapi-RateLimit-Remaining": "0",
                "X-Bkapi-RateLimit-Reset": str(int(reset_s)),
                "X-Bkapi-RateLimit-Plugin": "bk-resource-rate-limit",
            }
        )
        msg = "API rate limit exceeded by stage strategy"
        self.add(Fault(status=429, code=code, message=msg, headers=headers), times)

    def delay(self, seconds: float, times: int = 1) -> None:
        self.add(Fault(status=None, delay_s=seconds), times)

    def envelope(self, code: int | str, message: str, times: int = 1, status: int = 200) -> None:
        self.add(Fault(status=status, code=code, message=message), times)

    def clear(self) -> None:
        self._queue.clear()

    def take(self) -> Fault | None:
        return self._queue.popleft() if self._queue else None

    def __len__(self) -> int:
        return len(self._queue)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any  # parsed JSON body, or None

    @property
    def auth(self) -> dict[str, Any]:
        try:
            value = json.loads(self.headers.get("X-Bkapi-Authorization", ""))
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


FAULTS = web.AppKey("faults", Faults)
REQUESTS = web.AppKey("requests", list[RecordedRequest])


@dataclass(frozen=True, slots=True)
class GatewayAuth:
    """What the fake gateway in front of a service accepts.

    `verify_user`: the resources need a verified user (`userVerifiedRequired`, BK-JOB's public
    APIs): an `access_token` the gateway knows (`access_tokens`, token → user), or an app on the
    verified-user exemption list (`exempt_apps`); `bk_username` alone is refused with 1640001.
    Paths under `system_prefix` are the app-only twins: no user check, but the app needs the grant
    (`system_apps`), else 1640301.
    """

    app_code: str
    app_secret: str
    require_username: bool = False
    tenant_id: str | None = None  # when set, X-Bk-Tenant-Id must equal it
    verify_user: bool = False
    exempt_apps: frozenset[str] = frozenset()
    access_tokens: Mapping[str, str] = field(default_factory=dict)
    system_prefix: str | None = None
    system_apps: frozenset[str] = frozenset()


GATEWAY_AUTH = web.AppKey("gateway_auth", GatewayAuth)


def new_request_id() -> str:
    return uuid.uuid4().hex


def envelope(
    data: Any, *, code: int | str = 0, message: str = "", result: bool | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "result": (code in (0, "0")) if result is None else result,
        "code": code,
        "message": message,
        "data": data,
        "request_id": new_request_id(),
        **extra,
    }


def gateway_error(status: int, code: int, code_name: str, message: str) -> web.Response:
    """The API gateway's own error body (`code_name`, `data: null`, 16xxxxx)."""
    body = {"code_name": code_name, "data": None, "code": code, "message": message, "result": False}
    return web.json_response(body, status=status, headers={"X-Bkapi-Request-Id": new_request_id()})


def request_user(request: web.Request) -> str:
    """The user a request acts for: the access token's user when the gateway knows the token,
    else the (unverified) `bk_username`."""
    try:
        creds = json.loads(request.headers.get("X-Bkapi-Authorization", "") or "{}")
    except ValueError:
        return ""
    if not isinstance(creds, dict):
        return ""
    token = creds.get("access_token")
    if token:
        return str(request.app[GATEWAY_AUTH].access_tokens.get(token, ""))
    return str(creds.get("bk_username") or "")


def _check_auth(request: web.Request, auth: GatewayAuth, body: Any) -> web.Response | None:
    raw = request.headers.get("X-Bkapi-Authorization", "")
    try:
        creds = json.loads(raw) if raw else {}
    except ValueError:
        creds = {}
    if not isinstance(creds, dict):
        creds = {}
    if not creds and request.path.startswith("/api/c/compapi/") and isinstance(body, dict):
        creds = body  # the legacy ESB reads bk_app_code/bk_app_secret/bk_username from the body
    if not creds.get("bk_app_code"):
        return gateway_error(
            400, 1640001, "INVALID_ARGS", 'Parameters error [reason="app code cannot be empty"]'
        )
    if not creds.get("bk_app_secret"):
        reason = "please provide bk_app_secret or bk_signature to verify app"
        return gateway_error(400, 1640001, "INVALID_ARGS", f'Parameters error [reason="{reason}"]')
    if creds.get("bk_app_code") != auth.app_code or creds.get("bk_app_secret") != auth.app_secret:
        reason = "bk_app_code or bk_app_secret is incorrect"
        return gateway_error(400, 1640001, "INVALID_ARGS", f'Parameters error [reason="{reason}"]')
    if auth.tenant_id is not None and request.headers.get("X-Bk-Tenant-Id") != auth.tenant_id:
        return gateway_error(403, 1640301, "APP_NO_PERMISSION", "App has no permission to the resource")
    if auth.system_prefix and request.path.startswith(auth.system_prefix):
        if creds.get("bk_app_code") not in auth.system_apps:
            return gateway_error(403, 1640301, "APP_NO_PERMISSION", "App has no permission to the resource")
        return None  # app-only resources: no user is needed
    return _check_user(creds, auth)


def _check_user(creds: Mapping[str, Any], auth: GatewayAuth) -> web.Response | None:
    token = creds.get("access_token")
    if token:
        if token not in auth.access_tokens:
            reason = "access_token is invalid, url: http://bkauth.example.com/oauth/token, code: 403"
            return gateway_error(400, 1640001, "INVALID_ARGS", f'Parameters error [reason="{reason}"]')
        return None  # a verified user
    if not (auth.require_username or auth.verify_user):
        return None
    if not creds.get("bk_username"):
        reason = (
            "user authentication failed, please provide a valid user identity,"
            " such as bk_username, bk_token, access_token"
        )
        return gateway_error(400, 1640001, "INVALID_ARGS", f'Parameters error [reason="{reason}"]')
    if auth.verify_user and creds.get("bk_app_code") not in auth.exempt_apps:
        reason = "user authentication failed, the user indicated by bk_username is not verified"
        return gateway_error(400, 1640001, "INVALID_ARGS", f'Parameters error [reason="{reason}"]')
    return None


def _fault_response(fault: Fault) -> web.Response:
    headers = dict(fault.headers)
    headers.setdefault("X-Bkapi-Request-Id", new_request_id())
    status = fault.status or 200
    if fault.body is not None:
        return web.Response(status=status, text=fault.body, content_type=fault.content_type, headers=headers)
    code = fault.code if fault.code is not None else status * 10000 + 1
    body = {"result": False, "code": code, "message": fault.message or f"HTTP {status}", "data": None}
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def gateway_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Record the request, serve an injected fault if one is queued, then check credentials."""
    app = request.app
    body: Any = None
    if request.can_read_body:
        text = await request.text()
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = text
    app[REQUESTS].append(
        RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            body=body,
        )
    )
    fault = app[FAULTS].take()
    if fault is not None:
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault.status is not None:
            return _fault_response(fault)
    denied = _check_auth(request, app[GATEWAY_AUTH], body)
    if denied is not None:
        return denied
    response: web.StreamResponse = await handler(request)
    response.headers.setdefault("X-Bkapi-Request-Id", new_request_id())
    return response


def gateway_app(auth: GatewayAuth) -> web.Application:
    """An application with the fake gateway in front; routes are added by the caller."""
    app = web.Application(middlewares=[gateway_middleware])
    app[FAULTS] = Faults()
    app[REQUESTS] = []
    app[GATEWAY_AUTH] = auth
    return app


async def read_json(request: web.Request) -> dict[str, Any]:
    """The JSON object body (already read by the middleware), or {}."""
    try:
        value = await request.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def start_site(
    app: web.Application, *, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Serve `app` (e.g. for `job-doctor demo`); returns the runner (call `cleanup()`) and base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    addresses = runner.addresses
    bound = addresses[0][1] if addresses else port
    return runner, f"http://{host}:{bound}"
