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

from bot.clients.gateway import ApiCredentials, ApiError, Envelope, GatewayTransport, UpstreamError
from bot.core.resources import data_file

log = structlog.get_logger(__name__)

ResponseShape = Literal["esquery", "ui"]
MAX_RESULT_WINDOW = 10000  # ES `max_result_window`: start + size may not go beyond it
SORT_ASC: list[list[str]] = [["dtEventTimeStamp", "asc"], ["gseIndex", "asc"], ["iterationIndex", "asc"]]
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# BkLog codes = "36" + module + error (bk-monitor bklog/apps/exceptions.py):
# 3623301 IndexSetDoseNotExistException 索引集不存在, 3600965 找不到索引集"{id}"的相关信息,
# 3632915 请输入索引集ID, 3600964 索引集没有已审批通过的索引信息.
INDEX_SET_ERROR_CODES = frozenset({3623301, 3600965, 3632915, 3600964})
_MARK = re.compile(r"</?mark>")


class IndexSetNotFound(ApiError):
    """The configured index set id is missing, unknown or has no usable index."""

    kind_zh = "索引集不存在或不可用"


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


class _QueryFormatter(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        if format_spec == "wild":
            text = str(value)
            if not text or any(ch.isspace() for ch in text):
                raise ValueError(f"id {text!r} cannot be used in a wildcard term")
            return escape_term(text)
        if format_spec:
            raise ValueError(f"unknown placeholder format {format_spec!r} (use '' or 'wild')")
        return f'"{escape_phrase(value)}"'


@dataclass(frozen=True, slots=True)
class QueryTemplates:
    """Named Lucene templates from config/bklog_queries.toml."""

    templates: Mapping[str, str]
    filters: Mapping[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return sorted(self.templates)

    def placeholders(self, name: str) -> set[str]:
        return {f for _, f, _, _ in string.Formatter().parse(self.templates[name]) if f}

    def render(self, name: str, **ids: object) -> str:
        """Fill template `name`; every id is quoted/escaped, never pasted raw."""
        try:
            template = self.templates[name]
        except KeyError:
            raise KeyError(f"no BkLog query template {name!r} (have: {', '.join(self.names)})") from None
        missing = self.placeholders(name) - set(ids)
        if missing:
            raise ValueError(f"query template {name!r} needs {', '.join(sorted(missing))}")
        return _QueryFormatter().format(template, **ids)


def load_query_templates(path: str | Path | None = None) -> QueryTemplates:
    source = Path(path) if path is not None else data_file("config", "bklog_queries.toml")
    with source.open("rb") as fh:
        doc = tomllib.load(fh)
    queries = doc.get("queries")
    if not isinstance(queries, dict) or not queries:
        raise ValueError(f"{source}: missing [queries] table")
    templates = {str(k): str(v) for k, v in queries.items()}
    for name in templates:  # fail at load time, not in the middle of an analysis
        QueryTemplates(templates).placeholders(name)
    filters = {str(k): str(v) for k, v in (doc.get("filters") or {}).items()}
    return QueryTemplates(templates=templates, filters=filters)


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
    ) -> None:
        self._base = str(base_url).rstrip("/")
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
        try:
            env = await self._gw.call("POST", self.search_url, json_body=body, api="search")
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
        return self._read(env)

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
