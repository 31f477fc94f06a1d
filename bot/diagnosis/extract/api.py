"""API client lines (`[BaseBkApiClient] Request|…`, `Fail to request api|…`) and error codes in free text."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from bot.core.codes import api_error_zh
from bot.diagnosis.extract.kv import as_int, as_str


@dataclass(frozen=True, slots=True)
class ApiCall:
    """A `[BaseBkApiClient]`/`[AbstractBkApiClient]` line or a `Fail to request ...` line (§1.4)."""

    client: str | None  # BaseBkApiClient | AbstractBkApiClient | None
    kind: str  # request | response | fail | blank | null_data
    method: str | None
    uri: str | None
    tenant_id: str | None = None
    bk_api_request_id: str | None = None
    success: bool | None = None  # from HTTP status only: a 200 with code!=0 still logs success=true
    cost_ms: int | None = None
    code: int | None = None  # `code` of the response envelope
    api_message: str | None = None
    result: bool | None = None
    request_body: str | None = None
    response_body: str | None = None
    data_missing: bool | None = None  # the reply's `data` is null, absent or empty; None: no reply body

    @property
    def said_ok(self) -> bool:
        """The call was logged as a success (`success=true`: HTTP 2xx) or its reply said `result: true`."""
        return self.success is True or self.result is True

    @property
    def ok_but_failed(self) -> bool:
        """An answer logged as ok whose body carries a non-zero `code` and no data (bk-job.md §1.4:
        `success=` is computed from the HTTP status, so such a reply still logs `success=true`)."""
        return (
            self.kind == "response"
            and self.said_ok
            and self.code not in (None, 0)
            and self.data_missing is True
        )

    @property
    def system(self) -> str:
        """gse / cmdb / iam / ... from the uri (best effort)."""
        uri = (self.uri or "").lower()
        if "/task/extensions/" in uri or "/cluster/" in uri or "gse" in uri:
            return "gse"
        for name in ("cmdb", "iam", "paas", "usermanage", "bklog", "artifactory"):
            if name in uri:
                return name
        if "search_biz_inst_topo" in uri or "list_biz_hosts" in uri or "find_host" in uri:
            return "cmdb"
        return "other"

    @property
    def failed(self) -> bool:
        """The call went wrong: transport failure, HTTP failure, or a non-zero `code` in the reply."""
        if self.kind in ("fail", "blank"):
            return True
        if self.kind != "response":
            return False
        return self.success is False or self.result is False or (self.code is not None and self.code != 0)

    @property
    def error_zh(self) -> str | None:
        return api_error_zh(self.code)


_API_RE = re.compile(
    r"^(?:\[(?P<client>BaseBkApiClient|AbstractBkApiClient)\]\s*)?"
    r"(?P<kind>Request|Response|fail:response code!=0|fail: Response is blank|warn: response data is null"
    r"|Fail to request api|Fail to request CMDB data)\|"
)
_API_KIND = {
    "Request": "request",
    "Response": "response",
    "fail:response code!=0": "response",
    "fail: Response is blank": "blank",
    "warn: response data is null": "null_data",
    "Fail to request api": "fail",
    "Fail to request CMDB data": "fail",
}
_API_HEADER_KEYS = frozenset(
    {"tenantId", "bkApiRequestId", "method", "uri", "success", "costTime", "code", "message"}
)
_API_BODY_KEYS = ("reqStr", "resp", "respStr", "queryParams", "body")
_RESP_CODE_RE = re.compile(r'"code"\s*:\s*"?(-?\d+)')
_RESP_MSG_RE = re.compile(r'"message"\s*:\s*"((?:[^"\\]|\\.)*)"')
_RESP_RESULT_RE = re.compile(r'"result"\s*:\s*(true|false)')


def _key_at(text: str, key: str) -> tuple[int, int] | None:
    """(start of the field, start of its value) for `key=` at the start of text or after a `|`."""
    if text.startswith(key + "="):
        return 0, len(key) + 1
    i = text.find("|" + key + "=")
    return None if i == -1 else (i, i + len(key) + 2)


def _split_api_fields(rest: str) -> tuple[dict[str, str], dict[str, str]]:
    """Header `k=v|k=v` fields and the free-form payload fields (JSON that may contain `|`)."""
    found = sorted((pos[0], pos[1], key) for key in _API_BODY_KEYS if (pos := _key_at(rest, key)) is not None)
    head = rest[: found[0][0]] if found else rest
    header: dict[str, str] = {}
    last: str | None = None
    for seg in head.split("|"):
        k, eq, v = seg.strip().partition("=")
        if eq and k in _API_HEADER_KEYS:
            header[k] = v
            last = k
        elif last is not None and seg:  # a `|` inside the previous value
            header[last] += "|" + seg
    body: dict[str, str] = {}
    for j, (_, value_at, key) in enumerate(found):
        stop = found[j + 1][0] if j + 1 < len(found) else len(rest)
        body[key] = rest[value_at:stop]
    return header, body


_RESP_DATA_NULL_RE = re.compile(r'"data"\s*:\s*(?:null\b|\{\s*\}|\[\s*\])')


def _empty(value: object) -> bool:
    """No data: null, an empty container, or a container of nothing but empty values."""
    if value is None:
        return True
    if isinstance(value, dict):
        return all(_empty(v) for v in value.values())
    if isinstance(value, list):
        return not value
    return False


def _data_missing(text: str | None) -> bool | None:
    """Whether a JSON reply carries no `data` (None when there is no reply to read)."""
    if not text:
        return None
    text = text.strip().removesuffix("|")
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return _empty(data.get("data"))
    if '"data"' not in text:
        return None
    return _RESP_DATA_NULL_RE.search(text) is not None


def _envelope(text: str | None) -> tuple[int | None, str | None, bool | None]:
    """`code`, `message`, `result` of a JSON reply (regex fallback when the JSON is cut or invalid)."""
    if not text:
        return None, None, None
    text = text.strip()
    if text.endswith("|"):
        text = text[:-1]
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, dict):
            code, message, res = data.get("code"), data.get("message"), data.get("result")
            return (
                as_int(str(code)) if code is not None else None,
                str(message) if message is not None else None,
                res if isinstance(res, bool) else None,
            )
    c = _RESP_CODE_RE.search(text)
    mm = _RESP_MSG_RE.search(text)
    r = _RESP_RESULT_RE.search(text)
    msg: str | None = None
    if mm is not None:
        try:
            msg = str(json.loads('"' + mm.group(1) + '"'))
        except (ValueError, RecursionError):
            msg = mm.group(1)
    return (int(c.group(1)) if c else None, msg, (r.group(1) == "true") if r else None)


def parse_api_call(message: str) -> ApiCall | None:
    m = _API_RE.match(message)
    if m is None:
        return None
    header, body = _split_api_fields(message[m.end() :])
    kind = _API_KIND[m.group("kind")]
    resp = body.get("resp") if "resp" in body else body.get("respStr")
    code, api_msg, result = _envelope(resp)
    if "code" in header:
        code = as_int(header["code"])
    if "message" in header and api_msg is None:
        api_msg = header["message"]
    success_text = header.get("success")
    success = None if success_text is None else success_text.strip().lower() == "true"
    if m.group("kind") == "fail:response code!=0":
        success = success if success is not None else True
    return ApiCall(
        client=m.group("client"),
        kind=kind,
        method=as_str(header.get("method")),
        uri=as_str(header.get("uri")),
        tenant_id=as_str(header.get("tenantId")),
        bk_api_request_id=as_str(header.get("bkApiRequestId")),
        success=success,
        cost_ms=as_int(header.get("costTime")),
        code=code,
        api_message=api_msg,
        result=result,
        request_body=body.get("reqStr") if "reqStr" in body else body.get("body"),
        response_body=resp.rstrip("|") if resp is not None else None,
        data_missing=_data_missing(resp),
    )


# `code` fields in key=value, JSON or prose forms; only 7-digit BK-JOB / gateway codes count.
_CODE_RE = re.compile(r"""(?:"code"|\bcode|\berrorCode|\berror_code)"?\s*[=:]\s*"?(1[26]\d{5})\b""")
_ANY_CODE_RE = re.compile(r"""(?:"code"|\bcode|\berrorCode|\berror_code)"?\s*[=:]\s*"?(-?\d+)""")


def api_error_codes(text: str) -> list[int]:
    """BK-JOB (12xxxxx) and gateway (16xxxxx) error codes that appear as a `code` in the text, in order."""
    out: list[int] = []
    for m in _CODE_RE.finditer(text):
        c = int(m.group(1))
        if c not in out:
            out.append(c)
    return out


def nonzero_codes(text: str) -> list[int]:
    """Every non-zero `code`/`errorCode`/`error_code` value in the text (any width), in order."""
    out: list[int] = []
    for m in _ANY_CODE_RE.finditer(text):
        c = int(m.group(1))
        if c != 0 and c not in out:
            out.append(c)
    return out
