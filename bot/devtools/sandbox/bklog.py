"""Sample BkLog (`bk-log-search` gateway) serving documents from memory (reference bk-job.md §3).

`POST /esquery_search/` answers with the ES envelope BkLog wraps (`data.hits.hits[]._source`,
`hits.total` an int); `POST /search/index_set/{id}/search/` with the UI shape (`data.list` with
`<mark>` highlights, `data.origin_log_list` raw). Time strings are parsed in the request's
`time_zone` (else the server's zone, UTC here, as a real server would use its own), numbers as
epoch s/ms/µs. BkLog error codes follow bk-monitor `bklog/apps/exceptions.py` ("36" + module + code).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from bot.devtools.sandbox import REQUESTS, GatewayAuth, envelope, gateway_app, read_json, request_user
from bot.devtools.sandbox.lucene import (
    TEXT_FIELDS,
    Bool,
    LuceneSyntaxError,
    Phrase,
    Query,
    Term,
    parse_query,
    tokenize,
)

ENGINE_LOG_PATH = "/data/logs/job-execute/execute.log"
MAX_RESULT_WINDOW = 10000
DEFAULT_SIZE = 10

# BkLog answers its own errors with HTTP 200, `result: false` and the code as a *string*.
CODE_VALIDATION = "3600001"  # 参数验证失败
CODE_INDEX_SET_ID_MISSING = "3632915"  # 请输入索引集ID
CODE_INDEX_SET_NOT_EXIST = "3623301"  # 索引集不存在
CODE_NO_APPROVED_INDEX = "3624964"  # 索引集没有已审批通过的索引信息
CODE_DSL_ERROR = "3624963"  # 查询DSL错误
CODE_ES_ERROR = "3624960"  # EsClient 查询错误
CODE_PERMISSION_DENIED = "9900403"  # IAM: no `search_log` on the index set
CODE_THROTTLED = "3600429"  # QoS throttle after Elasticsearch timeouts

Doc = Mapping[str, Any]
DocsProvider = Sequence[Doc] | Callable[[], Iterable[Doc]]

_RELATIVE = {"5m": 5, "15m": 15, "30m": 30, "1h": 60, "4h": 240, "12h": 720, "1d": 1440, "36m": 36}


class _BkLogError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --------------------------------------------------------------------------- documents from raw logs

# the MDC block of the engine's pattern: `[job-execute,<traceId>,<spanId>] ` (empty when unset)
_TRACE_BLOCK = re.compile(r"\[[\w-]+,([0-9a-f]{32})?,[0-9a-f]*(?:,[^\]]*)?\] ")
_FILE_TS = re.compile(r"^\[(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3})\]")
_CONSOLE_TS = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3})\s")


def split_records(text: str | Iterable[str]) -> list[tuple[str | None, str]]:
    """(timestamp text, record) pairs: a timestamp-led line plus its continuation lines."""
    if not isinstance(text, str):
        text = "\n".join(text)
    records: list[tuple[str | None, list[str]]] = []
    for line in text.splitlines():
        m = _FILE_TS.match(line) or _CONSOLE_TS.match(line)
        if m:
            records.append((m.group(1), [line]))
        elif records:
            records[-1][1].append(line)
        elif line.strip():
            records.append((None, [line]))  # text before the first record is kept, never dropped
    out: list[tuple[str | None, str]] = []
    for ts, lines in records:
        while len(lines) > 1 and not lines[-1].strip():
            lines.pop()
        out.append((ts, "\n".join(lines)))
    return out


def docs_from_records(
    text: str | Iterable[str],
    *,
    server_ip: str = "127.0.0.1",
    path: str = ENGINE_LOG_PATH,
    time_zone: str = "Asia/Shanghai",
    first_gse_index: int = 1,
    cloud_id: int = 0,
    extra: Mapping[str, Any] | None = None,
    line_field: str = "log",
    trace_field: str | None = None,
) -> list[dict[str, Any]]:
    """BkLog documents for raw engine log text, one per record, as the BkLog collector makes them.

    `dtEventTimeStamp` is the record's own timestamp read in `time_zone`, as epoch ms (string).
    With `trace_field` the documents look like another install's: the logging pattern has no
    `[app,traceId,spanId]` block, and the collector puts the traceId in a field of its own;
    `line_field` names the field that holds the line.
    """
    tz = ZoneInfo(time_zone)
    pairs = split_records(text)
    stamps: list[int | None] = []
    for ts, _ in pairs:
        if ts is None:
            stamps.append(None)
        else:
            moment = datetime.strptime(ts, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=tz)
            stamps.append(int(moment.timestamp() * 1000))
    known = [s for s in stamps if s is not None]
    fallback = known[0] if known else 0
    docs: list[dict[str, Any]] = []
    last = fallback
    for i, ((_, record), stamp) in enumerate(zip(pairs, stamps, strict=True)):
        ms = stamp if stamp is not None else last
        last = ms
        doc: dict[str, Any] = {
            "cloudId": cloud_id,
            "dtEventTimeStamp": str(ms),
            "gseIndex": first_gse_index + i,
            "iterationIndex": i,
            line_field: record,
            "path": path,
            "serverIp": server_ip,
            "time": str(ms),
        }
        if trace_field:
            m = _TRACE_BLOCK.search(record.split("\n", 1)[0])
            if m:
                doc[line_field] = record.replace(m.group(0), "", 1)
                if m.group(1):
                    doc[trace_field] = m.group(1)
        if extra:
            doc.update(extra)
        docs.append(doc)
    return docs


# --------------------------------------------------------------------------- request parsing


def _zone(name: Any, default: ZoneInfo) -> ZoneInfo:
    if not name:
        return default
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _BkLogError(CODE_VALIDATION, f"参数验证失败：time_zone {name!r} 无效") from exc


def parse_time(value: Any, tz: ZoneInfo) -> datetime:
    """`YYYY-MM-DD HH:mm:ss` in `tz`, or epoch seconds / ms / µs (string or number)."""
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        number = float(text)
        digits = len(text.split(".")[0])
        seconds = number / 1_000_000 if digits >= 16 else number / 1000 if digits >= 13 else number
        return datetime.fromtimestamp(seconds, UTC)
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=tz)
        except ValueError:
            continue
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _BkLogError(CODE_VALIDATION, f"参数验证失败：时间格式错误 {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def _window(body: Mapping[str, Any], server_tz: ZoneInfo) -> tuple[int, int]:
    tz = _zone(body.get("time_zone"), server_tz)
    start_raw, end_raw = body.get("start_time"), body.get("end_time")
    now = datetime.now(UTC)
    if start_raw in (None, ""):
        minutes = _RELATIVE.get(str(body.get("time_range") or "15m"), 15)
        start, end = now - timedelta(minutes=minutes), now
    else:
        start = parse_time(start_raw, tz)
        end = parse_time(end_raw, tz) if end_raw not in (None, "") else now
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def _int_field(body: Mapping[str, Any], name: str, default: int) -> int:
    value = body.get(name, default)
    try:
        number = int(value if value is not None else default)
    except (TypeError, ValueError):
        raise _BkLogError(CODE_VALIDATION, f"参数验证失败：{name} 必须是整数") from None
    if number < 0:
        raise _BkLogError(CODE_VALIDATION, f"参数验证失败：{name} 不能小于 0")
    return number


def _sort_key(value: Any) -> tuple[int, float, str]:
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, "" if value is None else str(value))


def _field_key(name: str) -> Callable[[Doc], tuple[int, float, str]]:
    return lambda doc: _sort_key(doc.get(name))


def _sort(docs: list[Doc], sort_list: Any) -> list[Doc]:
    if not isinstance(sort_list, list) or not sort_list:
        sort_list = [["dtEventTimeStamp", "desc"], ["gseIndex", "desc"], ["iterationIndex", "desc"]]
    out = list(docs)
    for item in reversed(sort_list):
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise _BkLogError(CODE_VALIDATION, "参数验证失败：sort_list 格式错误")
        name, order = str(item[0]), str(item[1]).lower()
        if order not in ("asc", "desc"):
            raise _BkLogError(CODE_VALIDATION, "参数验证失败：排序方式必须是 desc 或 asc")
        out.sort(key=_field_key(name), reverse=order == "desc")
    return out


def _filter_matches(doc: Doc, item: Mapping[str, Any]) -> bool:
    name = str(item.get("field") or item.get("key") or "")
    op = str(item.get("operator") or item.get("method") or "is").lower()
    raw = item.get("value")
    values = [str(v) for v in raw] if isinstance(raw, list) else [] if raw is None else [str(raw)]
    present = doc.get(name)
    if op == "exists":
        return present is not None
    if op == "does not exists":
        return present is None
    text = "" if present is None else str(present)
    if op in ("is", "=", "eq", "is one of", "contains match phrase"):
        return any(Phrase(name, v, TEXT_FIELDS).matches(doc) for v in values)
    if op in ("is not", "!=", "is not one of", "not contains match phrase"):
        return not any(Phrase(name, v, TEXT_FIELDS).matches(doc) for v in values)
    if op == "contains":
        return any(v in text for v in values)
    if op == "not contains":
        return not any(v in text for v in values)
    raise _BkLogError(CODE_VALIDATION, f"参数验证失败：不支持的操作符 {op!r}")


def _apply_filters(doc: Doc, filters: Any) -> bool:
    if not filters:
        return True
    if not isinstance(filters, list):
        raise _BkLogError(CODE_VALIDATION, "参数验证失败：filter 必须是列表")
    result: bool | None = None
    for item in filters:
        if not isinstance(item, Mapping):
            continue
        hit = _filter_matches(doc, item)
        if result is None:
            result = hit
        elif str(item.get("condition", "and")).lower() == "or":
            result = result or hit
        else:
            result = result and hit
    return True if result is None else result


def _literals(query: Query) -> list[str]:
    if isinstance(query, Phrase | Term) and query.field in TEXT_FIELDS:
        return [query.text]
    if isinstance(query, Bool):
        return [t for q in (*query.must, *query.should) for t in _literals(q)]
    return []


def _highlight(text: str, literals: Sequence[str]) -> str:
    """BkLog's UI highlight: matched words wrapped in <mark>…</mark>."""
    words = sorted({w for lit in literals for w in [lit, *tokenize(lit)] if w.strip()}, key=len, reverse=True)
    if not words:
        return text
    pattern = re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE)
    return pattern.sub(lambda m: f"<mark>{m.group(0)}</mark>", text)


# --------------------------------------------------------------------------- the app


class _Search:
    def __init__(
        self,
        provider: DocsProvider,
        index_set_ids: frozenset[int],
        server_tz: ZoneInfo,
        *,
        searchers: frozenset[str] | None = None,
        unapproved: frozenset[int] = frozenset(),
        text_fields: frozenset[str] = TEXT_FIELDS,
    ) -> None:
        self.provider = provider
        self.index_set_ids = index_set_ids
        self.server_tz = server_tz
        self.searchers = searchers
        self.unapproved = unapproved
        self.text_fields = text_fields

    def docs(self) -> list[Doc]:
        return list(self.provider() if callable(self.provider) else self.provider)

    def check_index_set(self, raw: Any, user: str) -> int:
        if raw in (None, ""):
            raise _BkLogError(CODE_INDEX_SET_ID_MISSING, "请输入索引集ID")
        try:
            index_set_id = int(raw)
        except (TypeError, ValueError):
            raise _BkLogError(CODE_VALIDATION, "参数验证失败：index_set_id 必须是整数") from None
        if index_set_id not in self.index_set_ids:
            raise _BkLogError(CODE_INDEX_SET_NOT_EXIST, "索引集不存在")
        if self.searchers is not None and user not in self.searchers:
            # IAM: the user lacks `search_log` on this index set
            raise _BkLogError(
                CODE_PERMISSION_DENIED, f"您没有该操作的权限：日志检索（索引集 {index_set_id}），用户 {user}"
            )
        if index_set_id in self.unapproved:
            raise _BkLogError(CODE_NO_APPROVED_INDEX, f"索引集【{index_set_id}】没有已审批通过的索引信息")
        return index_set_id

    def run(
        self, body: Mapping[str, Any], query_string: Any, offset: int, size: int, filters: Any
    ) -> tuple[Query, list[Doc], int]:
        begin_ms, end_ms = _window(body, self.server_tz)
        try:
            query = parse_query(
                str(query_string if query_string is not None else "*"), text_fields=self.text_fields
            )
        except LuceneSyntaxError as exc:
            raise _BkLogError(
                CODE_DSL_ERROR, f'查询DSL错误, ERROR DSL is : "{query_string}" ({exc})'
            ) from None
        size = min(size, MAX_RESULT_WINDOW)  # BkLog caps size silently
        if offset + size > MAX_RESULT_WINDOW:
            raise _BkLogError(
                CODE_ES_ERROR,
                f"EsClient 查询错误: Result window is too large, from + size must be less than or equal to:"
                f" [{MAX_RESULT_WINDOW}] but was [{offset + size}]",
            )
        hits = [
            d
            for d in self.docs()
            if begin_ms <= _ms(d) <= end_ms and query.matches(d) and _apply_filters(d, filters)
        ]
        ordered = _sort(hits, body.get("sort_list"))
        return query, ordered[offset : offset + size], len(ordered)


def _ms(doc: Doc) -> int:
    try:
        return int(doc.get("dtEventTimeStamp") or 0)
    except (TypeError, ValueError):
        return 0


def _error(exc: _BkLogError) -> web.Response:
    return web.json_response(envelope(None, code=exc.code, message=exc.message, result=False))


def create_bklog_app(
    docs_provider: DocsProvider,
    *,
    app_code: str,
    app_secret: str,
    index_set_id: int | Iterable[int],
    tenant_id: str | None = None,
    server_time_zone: str = "UTC",
    searchers: Iterable[str] | None = None,
    unapproved_index_sets: Iterable[int] = (),
    text_fields: Iterable[str] = TEXT_FIELDS,
    access_tokens: Mapping[str, str] | None = None,
) -> web.Application:
    """The sample BkLog gateway stage; mount it at the URL the client's `base_url` points to.

    `searchers`: the users IAM lets search the index sets (None: everyone); `unapproved_index_sets`:
    index sets without an approved index; `text_fields`: analysed text fields (the rest are keywords).
    """
    ids = frozenset([index_set_id] if isinstance(index_set_id, int) else [int(i) for i in index_set_id])
    search = _Search(
        docs_provider,
        ids,
        ZoneInfo(server_time_zone),
        searchers=None if searchers is None else frozenset(searchers),
        unapproved=frozenset(unapproved_index_sets),
        text_fields=frozenset(text_fields),
    )
    app = gateway_app(
        GatewayAuth(
            app_code=app_code,
            app_secret=app_secret,
            tenant_id=tenant_id,
            access_tokens=dict(access_tokens or {}),
        )
    )
    started = time.monotonic

    async def esquery(request: web.Request) -> web.Response:
        body = await read_json(request)
        t0 = started()
        try:
            index = search.check_index_set(body.get("index_set_id"), request_user(request))
            _, page, total = search.run(
                body,
                body.get("query_string", "*"),
                _int_field(body, "start", 0),
                _int_field(body, "size", DEFAULT_SIZE),
                body.get("filter"),
            )
        except _BkLogError as exc:
            return _error(exc)
        hits = [
            {
                "_index": f"v2_bklog_index_set_{index}_{_day(d)}_0",
                "_id": f"{index}-{d.get('gseIndex', '')}-{d.get('iterationIndex', '')}-{_ms(d)}",
                "_score": None,
                "_source": dict(d),
            }
            for d in page
        ]
        data = {
            "took": int((started() - t0) * 1000),
            "timed_out": False,
            "_shards": {"total": 3, "successful": 3, "skipped": 0, "failed": 0},
            "hits": {"total": total, "max_score": None, "hits": hits},
        }
        return web.json_response(envelope(data))

    async def ui_search(request: web.Request) -> web.Response:
        body = await read_json(request)
        t0 = started()
        try:
            index = search.check_index_set(request.match_info["index_set_id"], request_user(request))
            query, page, total = search.run(
                body,
                body.get("keyword") or "*",
                _int_field(body, "begin", 0),
                _int_field(body, "size", DEFAULT_SIZE),
                body.get("addition"),
            )
        except _BkLogError as exc:
            return _error(exc)
        literals = _literals(query)
        origin = [dict(d) for d in page]
        listed = [
            {
                **{
                    k: _highlight(v, literals) if k == "log" and isinstance(v, str) else v
                    for k, v in d.items()
                },
                "index": f"v2_bklog_index_set_{index}_{_day(d)}_0",
                "__index_set_id__": index,
            }
            for d in page
        ]
        fields = {
            k: {"max_length": max(len(str(d.get(k, ""))) for d in page)} for k in (page[0] if page else {})
        }
        data = {
            "total": total,
            "took": int((started() - t0) * 1000),
            "list": listed,
            "origin_log_list": origin,
            "fields": fields,
            "_shards": {"total": 3, "successful": 3, "skipped": 0, "failed": 0},
        }
        return web.json_response(envelope(data))

    app.router.add_post("/esquery_search/", esquery)
    app.router.add_post("/search/index_set/{index_set_id}/search/", ui_search)
    return app


def _day(doc: Doc) -> str:
    return datetime.fromtimestamp(_ms(doc) / 1000, UTC).strftime("%Y%m%d")


def recorded_queries(app: web.Application) -> list[str]:
    """Query strings the server received, in order (esquery `query_string` or UI `keyword`)."""
    out: list[str] = []
    for req in app[REQUESTS]:
        if isinstance(req.body, dict):
            q = req.body.get("query_string", req.body.get("keyword"))
            if q is not None:
                out.append(str(q))
    return out
