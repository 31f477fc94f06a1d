"""BkLog log search client (reference bk-job.md §3).

Default resource: `POST <base_url>/esquery_search/` (public on the `bk-log-search` gateway).
With `response_shape="ui"` it uses the UI search resource
`POST <base_url>/search/index_set/{id}/search/` instead (needs a grant; other field names).
The client knows nothing about diagnosis: it runs one Lucene query over a time window and pages.
"""

from __future__ import annotations

import re
import string
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import aiohttp
import structlog

from bot.clients.gateway import (
    ApiCredentials,
    ApiError,
    Envelope,
    GatewayAuthError,
    GatewayConfigError,
    GatewayTransport,
    UpstreamError,
)
from bot.core.resources import data_file

log = structlog.get_logger(__name__)

ResponseShape = Literal["esquery", "ui"]
MAX_RESULT_WINDOW = 10000  # ES `max_result_window`: start + size may not go beyond it
SORT_ASC: list[list[str]] = [["dtEventTimeStamp", "asc"], ["gseIndex", "asc"], ["iterationIndex", "asc"]]
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# BkLog's own codes come back with HTTP 200, `result: false` and the code as a string: "36" +
# module + error (bk-monitor bklog/apps/exceptions.py, bklog/apps/log_esquery/exceptions.py):
# 3623301 索引集不存在, 3600965 找不到索引集"{id}"的相关信息, 3632915 请输入索引集ID,
# 3624964 索引集没有已审批通过的索引信息 (BaseSearchIndexSetDataDoseNotExists).
INDEX_SET_ERROR_CODES = frozenset({3623301, 3600965, 3632915, 3624964})
# IAM denied `search_log` on the index set for the user (bklog/apps/iam/exceptions.py).
PERMISSION_DENIED_CODE = 9900403
# BkLog's QoS throttle after Elasticsearch timeouts (bklog/apps/log_esquery/qos.py): retry later.
THROTTLED_CODE = 3600429
_MARK = re.compile(r"</?mark>")


class IndexSetNotFound(GatewayConfigError):
    """The configured index set id is missing, unknown or has no usable index."""

    kind_zh = "索引集不存在或不可用"


class SearchPermissionDenied(GatewayAuthError):
    """The user may not search the index set (IAM `search_log`, BkLog code 9900403)."""

    kind_zh = "没有日志检索权限"


# --------------------------------------------------------------------------- query building

_LUCENE_SPECIAL = set('+-=&|><!(){}[]^"~*?:\\/ ')


def escape_phrase(value: object) -> str:
    """Escape a value for use inside a Lucene double-quoted phrase."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"')


def escape_term(value: object) -> str:
    """Escape every Lucene special character so the value is one literal bare term."""
    return "".join("\\" + ch if ch in _LUCENE_SPECIAL else ch for ch in str(value))


def quote_phrase(value: object, field_name: str = "log") -> str:
    """`log: "<value>"`, always quoted (BkLog turns bare `a=1` into a field comparison)."""
    return f'{field_name}: "{escape_phrase(value)}"'


_FIELD_NAME = re.compile(r"^[A-Za-z_@][\w.@-]*$")
FIELD_PLACEHOLDERS = frozenset({"log_field", "trace_field"})
# The templates the collector runs; a queries file may override them, not drop or misname them.
REQUIRED_QUERIES = ("step_id", "step_key", "trace_id", "trace_wildcard", "trace_field", "engine_probe")


@dataclass(frozen=True, slots=True)
class LogLayout:
    """Which document fields hold the engine's log line and, where the collector extracts it, the
    traceId. Installs that ship JSON logs or another pattern have no `[app,traceId,spanId]` header
    in the line: the traceId is read from (and searched in) `trace_field` instead."""

    log_field: str = "log"
    trace_field: str = ""

    def __post_init__(self) -> None:
        for name in (self.log_field, self.trace_field):
            if name and not _FIELD_NAME.match(name):
                raise ValueError(f"{name!r} is not a BkLog field name")
        if not self.log_field:
            raise ValueError("the log field must be named")


class _QueryFormatter(string.Formatter):
    def __init__(self, layout: LogLayout) -> None:
        self.fields = {"log_field": layout.log_field, "trace_field": layout.trace_field}

    def get_value(self, key: int | str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if key in FIELD_PLACEHOLDERS:
            if not self.fields[str(key)]:
                raise ValueError(f"{{{key}}} is used but no such field is configured")
            return _FieldName(self.fields[str(key)])
        return super().get_value(key, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, _FieldName):
            return str(value)  # a field name, validated: never quoted
        if format_spec == "wild":
            text = str(value)
            if not text or any(ch.isspace() for ch in text):
                raise ValueError(f"id {text!r} cannot be used in a wildcard term")
            return escape_term(text)
        if format_spec:
            raise ValueError(f"unknown placeholder format {format_spec!r} (use '' or 'wild')")
        return f'"{escape_phrase(value)}"'


class _FieldName(str):
    pass


@dataclass(frozen=True, slots=True)
class QueryTemplates:
    """Named Lucene templates from config/bklog_queries.toml (and the operator's queries file)."""

    templates: Mapping[str, str]
    filters: Mapping[str, str] = field(default_factory=dict)
    layout: LogLayout = field(default_factory=LogLayout)

    @property
    def names(self) -> list[str]:
        return sorted(self.templates)

    def placeholders(self, name: str) -> set[str]:
        """The ids template `name` needs (field placeholders come from the layout)."""
        names = {f for _, f, _, _ in string.Formatter().parse(self.templates[name]) if f}
        return names - FIELD_PLACEHOLDERS

    def render(self, name: str, **ids: object) -> str:
        """Fill template `name`; every id is quoted/escaped, never pasted raw."""
        try:
            template = self.templates[name]
        except KeyError:
            raise KeyError(f"no BkLog query template {name!r} (have: {', '.join(self.names)})") from None
        missing = self.placeholders(name) - set(ids)
        if missing:
            raise ValueError(f"query template {name!r} needs {', '.join(sorted(missing))}")
        return _QueryFormatter(self.layout).format(template, **ids)


def _read_queries(source: Path) -> tuple[dict[str, str], dict[str, str]]:
    try:
        with source.open("rb") as fh:
            doc = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{source}: cannot read BkLog query templates: {exc}") from None
    queries = doc.get("queries")
    if not isinstance(queries, dict) or not queries:
        raise ValueError(f"{source}: missing [queries] table")
    filters = {str(k): str(v) for k, v in (doc.get("filters") or {}).items()}
    return {str(k): str(v) for k, v in queries.items()}, filters


def load_query_templates(
    path: str | Path | None = None, *, overrides: str | Path | None = None, layout: LogLayout | None = None
) -> QueryTemplates:
    """The packaged templates (or `path`), with the templates an operator's `overrides` file names
    replacing theirs; checked at load time, not in the middle of an analysis."""
    source = Path(path) if path is not None else data_file("config", "bklog_queries.toml")
    templates, filters = _read_queries(source)
    if overrides is not None:
        extra, extra_filters = _read_queries(Path(overrides))
        unknown = sorted(set(extra) - set(templates))
        if unknown:
            raise ValueError(f"{overrides}: unknown BkLog query templates {', '.join(unknown)}")
        templates.update(extra)
        filters.update(extra_filters)
    loaded = QueryTemplates(templates=templates, filters=filters, layout=layout or LogLayout())
    for name in templates:
        loaded.placeholders(name)  # a malformed template fails here
    if path is None:
        missing = [n for n in REQUIRED_QUERIES if n not in templates]
        if missing:
            raise ValueError(f"{source}: missing BkLog query templates {', '.join(missing)}")
    return loaded


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class SearchResult:
    docs: list[dict[str, Any]]  # `_source` dicts in BkLog order (ascending time)
    total: int  # hits BkLog reports for the query and window
    pages: int  # requests made
    truncated: bool  # fewer docs than `total` (page cap, size cap or the 10000 window)
    query_string: str = ""

    @property
    def empty(self) -> bool:
        return not self.docs


def format_time(moment: datetime, tz: ZoneInfo, *, round_up: bool = False) -> str:
    """`YYYY-MM-DD HH:MM:SS` in `tz`; naive datetimes are taken as wall-clock time in `tz`."""
    local = moment if moment.tzinfo is None else moment.astimezone(tz)
    if round_up and local.microsecond:
        local = local.replace(microsecond=0) + timedelta(seconds=1)
    return local.strftime(TIME_FORMAT)


def _strip_marks(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _MARK.sub("", v) if isinstance(v, str) else v for k, v in doc.items()}


def _as_int(value: Any) -> int:
    if isinstance(value, Mapping):  # raw ES 7: {"value": n, "relation": "eq"}
        value = value.get("value")
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


# --------------------------------------------------------------------------- client


class BkLogClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        index_set_id: int,
        credentials: ApiCredentials | tuple[str, str, str] | Any,
        tenant_id: str = "",
        time_zone: str = "Asia/Shanghai",
        timeout_s: float = 10.0,
        retries: int = 3,
        page_size: int = 500,
        max_pages: int = 20,
        response_shape: ResponseShape = "esquery",
        backoff_base_s: float = 0.5,
        layout: LogLayout | None = None,
    ) -> None:
        self._base = str(base_url).rstrip("/")
        self.layout = layout or LogLayout()  # which document fields hold the line and the traceId
        self.index_set_id = int(index_set_id)
        self.time_zone = time_zone
        self._tz = ZoneInfo(time_zone)
        self.page_size = max(1, min(int(page_size), MAX_RESULT_WINDOW))
        self.max_pages = max(1, int(max_pages))
        self.response_shape: ResponseShape = response_shape
        self._gw = GatewayTransport(
            session,
            service="BkLog",
            credentials=credentials,
            tenant_id=tenant_id,
            timeout_s=timeout_s,
            retries=retries,
            backoff_base_s=backoff_base_s,
            auth_codes=frozenset({PERMISSION_DENIED_CODE}),
            rate_limited_codes=frozenset({THROTTLED_CODE}),
        )

    @property
    def search_url(self) -> str:
        if self.response_shape == "ui":
            return f"{self._base}/search/index_set/{self.index_set_id}/search/"
        return f"{self._base}/esquery_search/"

    async def search(
        self,
        query_string: str,
        start: datetime,
        end: datetime,
        *,
        size_cap: int | None = None,
        filters: Sequence[Mapping[str, Any]] = (),
    ) -> SearchResult:
        """All hits of `query_string` in [start, end], oldest first, paged up to the caps.

        `filters`: BkLog filter items, e.g. `{"field": "path", "operator": "is", "value": ...}`.
        """
        if end < start:
            raise ValueError("search window ends before it starts")
        limit = min(size_cap if size_cap is not None else MAX_RESULT_WINDOW, MAX_RESULT_WINDOW)
        start_s = format_time(start, self._tz)
        end_s = format_time(end, self._tz, round_up=True)
        docs: list[dict[str, Any]] = []
        total = 0
        pages = 0
        offset = 0
        while pages < self.max_pages:
            size = min(self.page_size, limit - len(docs), MAX_RESULT_WINDOW - offset)
            if size <= 0:
                break
            page_docs, total = await self._page(query_string, start_s, end_s, offset, size, filters)
            pages += 1
            docs.extend(page_docs)
            offset += size
            if len(page_docs) < size or offset >= total:
                break
        truncated = len(docs) < total
        if truncated:
            log.info(
                "bklog_search_truncated",
                total=total,
                fetched=len(docs),
                pages=pages,
                page_size=self.page_size,
                max_pages=self.max_pages,
            )
        return SearchResult(
            docs=docs, total=total, pages=pages, truncated=truncated, query_string=query_string
        )

    async def _page(
        self,
        query_string: str,
        start_s: str,
        end_s: str,
        offset: int,
        size: int,
        filters: Sequence[Mapping[str, Any]],
    ) -> tuple[list[dict[str, Any]], int]:
        env = await self._call(self._body(query_string, start_s, end_s, offset, size, filters))
        return self._read(env)

    def _body(
        self,
        query_string: str,
        start_s: str,
        end_s: str,
        offset: int,
        size: int,
        filters: Sequence[Mapping[str, Any]],
    ) -> dict[str, Any]:
        body: dict[str, Any]
        if self.response_shape == "ui":
            body = {
                "keyword": query_string or "*",
                "time_range": "customized",
                "start_time": start_s,
                "end_time": end_s,
                "time_zone": self.time_zone,
                "sort_list": SORT_ASC,
                "begin": offset,
                "size": size,
            }
            if filters:
                body["addition"] = [dict(f) for f in filters]
        else:
            body = {
                "index_set_id": self.index_set_id,
                "time_range": "customized",
                "start_time": start_s,
                "end_time": end_s,
                "time_zone": self.time_zone,
                "query_string": query_string or "*",
                "sort_list": SORT_ASC,
                "start": offset,
                "size": size,
            }
            if filters:
                body["filter"] = [dict(f) for f in filters]
        return body

    async def _call(self, body: Mapping[str, Any], *, retries: int | None = None) -> Envelope:
        try:
            return await self._gw.call("POST", self.search_url, json_body=body, api="search", retries=retries)
        except GatewayAuthError as err:
            if err.code != PERMISSION_DENIED_CODE:
                raise
            user = self._gw.credentials.username or "(the access token's user)"
            raise SearchPermissionDenied(
                f"user {user} has no search_log permission on index set {self.index_set_id}"
                f" (ask the BkLog admin to grant 日志检索 on it): {err.message}",
                service=err.service,
                code=err.code,
                http_status=err.http_status,
                request_id=err.request_id,
            ) from None
        except ApiError as err:
            if err.code in INDEX_SET_ERROR_CODES or ("索引集" in err.message and "不存在" in err.message):
                raise IndexSetNotFound(
                    f"index set {self.index_set_id}: {err.message}",
                    service=err.service,
                    code=err.code,
                    http_status=err.http_status,
                    request_id=err.request_id,
                ) from None
            raise

    async def probe(self, now: datetime) -> int:
        """One cheap search over the last five minutes, no retries; returns the hits counted."""
        start_s = format_time(now - timedelta(minutes=5), self._tz)
        body = self._body("*", start_s, format_time(now, self._tz, round_up=True), 0, 1, ())
        return self._read(await self._call(body, retries=0))[1]

    def _read(self, env: Envelope) -> tuple[list[dict[str, Any]], int]:
        data = env.data
        if data is None:
            return [], 0
        if not isinstance(data, Mapping):
            raise UpstreamError("unexpected BkLog response: data is not an object", service="BkLog")
        if self.response_shape == "ui":
            origin = data.get("origin_log_list")
            if isinstance(origin, list) and (origin or not data.get("list")):
                docs = [dict(r) for r in origin if isinstance(r, Mapping)]
            else:  # highlighted copies only: drop the <mark> markup to get the raw text back
                docs = [_strip_marks(r) for r in data.get("list") or [] if isinstance(r, Mapping)]
            return docs, _as_int(data.get("total", len(docs)))
        hits = data.get("hits") or {}
        items = hits.get("hits") or []
        docs = [dict(h.get("_source") or {}) for h in items if isinstance(h, Mapping)]
        return docs, _as_int(hits.get("total", len(docs)))
