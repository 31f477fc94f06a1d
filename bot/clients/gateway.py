"""BlueKing API-gateway plumbing shared by the BkLog, BK-JOB and GSE clients.

Builds the `X-Bkapi-Authorization` header, reads the `{result, code, message, data}` envelope,
turns every failure into one of a few typed errors and retries the transient ones. Error codes
and HTTP statuses follow the gateway's documented error responses (reference bk-job.md §4).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import aiohttp
import structlog

log = structlog.get_logger(__name__)

Method = Literal["GET", "POST"]

# Codes the gateway itself answers with (code_name in comments).
AUTH_CODES = frozenset(
    {1640001, 1640301, 1640302, 1640401}
)  # INVALID_ARGS, APP_NO_PERMISSION, IP, API_NOT_FOUND
RATE_LIMIT_CODES = frozenset({1642901, 1642902, 1642903, 1642904})  # RATE_LIMIT / CONCURRENCY
UPSTREAM_CODES = frozenset({1650200, 1650201, 1650401})  # BAD_GATEWAY, backend failed, backend timeout

_MAX_MESSAGE = 300


# --------------------------------------------------------------------------- credentials


@dataclass(frozen=True, slots=True)
class ApiCredentials:
    """App credentials for the gateway; the secrets never appear in repr or messages.

    With `access_token` the user is the token's (verified); without it `username` names the user,
    which the gateway treats as unverified (resources that require a verified user refuse it).
    """

    app_code: str
    app_secret: str = field(repr=False)
    username: str = ""
    access_token: str = field(default="", repr=False)

    @classmethod
    def coerce(cls, value: ApiCredentials | tuple[str, str, str] | Any) -> ApiCredentials:
        """Accept ApiCredentials, a (code, secret, user) tuple or bot.core.settings.Credentials."""
        if isinstance(value, ApiCredentials):
            return value
        if isinstance(value, tuple) and len(value) == 3:
            return cls(str(value[0]), str(value[1]), str(value[2]))
        return cls(
            app_code=str(getattr(value, "app_code", "") or ""),
            app_secret=_plain(getattr(value, "app_secret", None)),
            username=str(getattr(value, "username", "") or ""),
            access_token=_plain(getattr(value, "access_token", None)),
        )

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.app_secret, self.access_token) if s)


def _plain(value: Any) -> str:
    if value is not None and hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    return str(value or "")


def auth_headers(credentials: ApiCredentials, tenant_id: str = "") -> dict[str, str]:
    payload = {"bk_app_code": credentials.app_code, "bk_app_secret": credentials.app_secret}
    if credentials.access_token:
        payload["access_token"] = credentials.access_token
    else:
        payload["bk_username"] = credentials.username
    headers = {
        "X-Bkapi-Authorization": json.dumps(payload, ensure_ascii=False, separators=(",", ":")),
        "Accept": "application/json",
    }
    if tenant_id:
        headers["X-Bk-Tenant-Id"] = tenant_id
    return headers


# --------------------------------------------------------------------------- errors


class GatewayError(Exception):
    """Base of every client error. `str(err)` is safe to show: it never contains a secret."""

    kind_zh = "接口调用失败"

    def __init__(
        self,
        message: str,
        *,
        service: str = "",
        code: int | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.service = service
        self.code = code
        self.http_status = http_status
        self.request_id = request_id

    @property
    def zh(self) -> str:
        """A one-line Chinese description for chat users and report `missing_info`."""
        who = f"{self.service} " if self.service else ""
        code = f"（错误码 {self.code}）" if self.code is not None else ""
        if self.code is None and self.http_status is not None:
            code = f"（HTTP {self.http_status}）"
        return f"{who}{self.kind_zh}{code}：{self.message}"


class GatewayConfigError(GatewayError):
    """The call cannot work until someone changes the configuration or a permission: retrying or
    reporting it as a failure of the step would mislead."""

    kind_zh = "配置或权限错误"


class GatewayAuthError(GatewayConfigError):
    """Credentials, app permission or resource path rejected (16400xx/16403xx/16404xx, HTTP 401/403)."""

    kind_zh = "鉴权或权限错误"


class GatewayRateLimited(GatewayError):
    """Gateway rate limit (16429xx, HTTP 429); `retry_after` in seconds when the server said."""

    kind_zh = "请求被限流"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class UpstreamError(GatewayError):
    """Backend unreachable or misbehaving: 5xx, 1650xxx, non-JSON bodies, timeouts."""

    kind_zh = "服务不可用"

    def __init__(self, message: str, *, retryable: bool = True, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retryable = retryable


class ApiError(GatewayError):
    """The API answered `result: false` / `code != 0`."""

    kind_zh = "接口返回错误"


# --------------------------------------------------------------------------- envelope


@dataclass(frozen=True, slots=True)
class Envelope:
    result: bool
    code: int
    message: str
    data: Any
    request_id: str | None
    raw: Mapping[str, Any]


def _int_code(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0 if value in (None, "", "0") else -1


def _safe(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    current = datetime.now(UTC).timestamp() if now is None else now
    return max(0.0, when.timestamp() - current)


def rate_limit_wait(headers: Mapping[str, str]) -> float | None:
    """Seconds until the limit resets: the gateway's `X-Bkapi-RateLimit-Reset` (its 429s carry no
    `Retry-After`), else a standard `Retry-After`."""
    reset = headers.get("X-Bkapi-RateLimit-Reset")
    if reset:
        try:
            return max(0.0, float(reset.strip()))
        except ValueError:
            pass
    return parse_retry_after(headers.get("Retry-After"))


def classify(
    *,
    service: str,
    status: int,
    body: str,
    headers: Mapping[str, str],
    secrets: tuple[str, ...] = (),
    auth_codes: frozenset[int] = frozenset(),
    rate_limited_codes: frozenset[int] = frozenset(),
) -> Envelope | GatewayError:
    """Turn one HTTP response into an Envelope (success) or the matching typed error.

    `auth_codes` / `rate_limited_codes`: the service's own codes (answered with HTTP 200 and
    `result: false`) that mean a permission error / a throttle, besides the gateway's 16xxxxx.
    """
    request_id = headers.get("X-Bkapi-Request-Id")
    retry_after = rate_limit_wait(headers)
    kw: dict[str, Any] = {"service": service, "http_status": status, "request_id": request_id}
    try:
        doc = json.loads(body) if body.strip() else None
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        looks_html = body.lstrip()[:1] == "<"
        what = "an HTML page" if looks_html else ("an empty body" if not body.strip() else "a non-JSON body")
        if status == 429:
            return GatewayRateLimited(f"HTTP 429 with {what}", retry_after=retry_after, **kw)
        if status in (401, 403):
            return GatewayAuthError(f"HTTP {status} with {what}", **kw)
        # A proxy's error page on 5xx is transient; an HTML 200 is usually a login page (config).
        return UpstreamError(f"HTTP {status} with {what} instead of JSON", retryable=status >= 500, **kw)

    code = _int_code(doc.get("code"))
    message = _safe(str(doc.get("message") or doc.get("msg") or ""), secrets)
    request_id = request_id or doc.get("request_id") or doc.get("job_request_id")
    kw["request_id"] = request_id
    label = f"{message} [{doc.get('code_name')}]" if doc.get("code_name") else message
    if code in AUTH_CODES or code in auth_codes or (code // 100 in (16400, 16403, 16404) and code >= 1640000):
        return GatewayAuthError(label or "gateway rejected the credentials", code=code, **kw)
    if code in RATE_LIMIT_CODES or code in rate_limited_codes or (code // 100 == 16429):
        return GatewayRateLimited(label or "rate limited", code=code, retry_after=retry_after, **kw)
    if code in UPSTREAM_CODES or (code // 10000 == 165):
        return UpstreamError(label or "backend failed", code=code, **kw)
    if status in (401, 403):
        return GatewayAuthError(label or f"HTTP {status}", code=code or None, **kw)
    if status == 429:
        return GatewayRateLimited(label or "HTTP 429", code=code or None, retry_after=retry_after, **kw)
    if status >= 500:
        return UpstreamError(label or f"HTTP {status}", code=code or None, **kw)
    result = doc.get("result")
    ok = (result is True or result is None) and code == 0
    if not ok or status >= 400:
        return ApiError(label or f"HTTP {status}, code {code}", code=code, **kw)
    return Envelope(
        result=True, code=0, message=message, data=doc.get("data"), request_id=request_id, raw=doc
    )


# --------------------------------------------------------------------------- transport


class GatewayTransport:
    """Sends one API call through the gateway with bounded retries; the session is the caller's."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        service: str,
        credentials: ApiCredentials | tuple[str, str, str] | Any,
        tenant_id: str = "",
        timeout_s: float = 10.0,
        retries: int = 2,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 8.0,
        max_retry_after_s: float = 30.0,
        auth_codes: frozenset[int] = frozenset(),
        rate_limited_codes: frozenset[int] = frozenset(),
    ) -> None:
        self._session = session
        self.service = service
        self._credentials = ApiCredentials.coerce(credentials)
        self._tenant_id = tenant_id
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.timeout_s = timeout_s
        self.retries = max(0, retries)
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._max_retry_after_s = max_retry_after_s
        self.auth_codes = auth_codes
        self.rate_limited_codes = rate_limited_codes

    @property
    def credentials(self) -> ApiCredentials:
        return self._credentials

    def headers(self) -> dict[str, str]:
        return auth_headers(self._credentials, self._tenant_id)

    def _backoff(self, attempt: int) -> float:
        cap = min(self._backoff_max_s, self._backoff_base_s * (2**attempt))
        return random.uniform(cap / 2, cap)  # jitter keeps parallel workers from retrying in step

    async def call(
        self,
        method: Method,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        api: str = "",
        retries: int | None = None,
    ) -> Envelope:
        """One API call; transient failures are retried up to `retries` (default: the transport's)."""
        api = api or url.rstrip("/").rsplit("/", 1)[-1]
        budget = self.retries if retries is None else max(0, retries)
        attempt = 0
        while True:
            outcome = await self._once(method, url, params=params, json_body=json_body)
            if isinstance(outcome, Envelope):
                return outcome
            delay = self._retry_delay(outcome, attempt, budget)
            if delay is None:
                raise outcome
            log.warning(
                "gateway_retry",
                service=self.service,
                api=api,
                attempt=attempt + 1,
                error=type(outcome).__name__,
                code=outcome.code,
                http_status=outcome.http_status,
                delay_s=round(delay, 3),
            )
            attempt += 1
            await asyncio.sleep(delay)

    def _retry_delay(self, err: GatewayError, attempt: int, retries: int) -> float | None:
        if attempt >= retries:
            return None
        if isinstance(err, GatewayRateLimited):
            if err.retry_after is not None:
                if err.retry_after > self._max_retry_after_s:
                    return None  # waiting that long would stall a chat reply; give up now
                return err.retry_after + random.uniform(0, 0.1)
            return self._backoff(attempt)
        if isinstance(err, UpstreamError) and err.retryable:
            return self._backoff(attempt)
        return None

    async def _once(
        self, method: Method, url: str, *, params: Mapping[str, Any] | None, json_body: Any
    ) -> Envelope | GatewayError:
        query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        try:
            async with self._session.request(
                method,
                url,
                params=query or None,
                json=json_body,
                headers=self.headers(),
                timeout=self._timeout,
            ) as resp:
                body = await resp.text(errors="replace")
                return classify(
                    service=self.service,
                    status=resp.status,
                    body=body,
                    headers=resp.headers,
                    secrets=self._credentials.secrets,
                    auth_codes=self.auth_codes,
                    rate_limited_codes=self.rate_limited_codes,
                )
        except TimeoutError:
            return UpstreamError(f"no answer within {self.timeout_s:g}s", service=self.service)
        except aiohttp.ClientError as exc:
            detail = _safe(f"{type(exc).__name__}: {exc}", self._credentials.secrets)
            return UpstreamError(f"connection failed ({detail})", service=self.service)


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
