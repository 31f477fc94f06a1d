from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.clients.bklog import (
    BkLogClient,
    IndexSetNotFound,
    LogLayout,
    SearchPermissionDenied,
    load_query_templates,
    quote_phrase,
)
from bot.clients.gateway import ApiError, GatewayAuthError, GatewayConfigError, GatewayRateLimited
from bot.devtools.sandbox import FAULTS, REQUESTS
from bot.devtools.sandbox.bklog import create_bklog_app, docs_from_records, recorded_queries
from bot.diagnosis.parser import parse_documents
from tests.clients.conftest import APP_CODE, APP_SECRET, CREDS

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
SH = ZoneInfo("Asia/Shanghai")
INDEX_SET = 1234

# traceId ending in a digit + spanId starting with a digit: glued into one token by the analyzer
T_GLUED = "84a2e275a062728b9b54aab16dea4289"
T_PLAIN = "9f8db07dd48f9515d284a0c3e0146e1a"
LOG = f"""\
[2024-05-30 11:09:00.101]  INFO [job-execute,{T_GLUED},49cf5d493601969c] 6 --- [task.service.job.execute-1] c.t.b.j.e.engine.listener.JobListener    : Handle job event, event: JobEvent[action=1, actionDesc=START, jobInstanceId=20026160406, eventSource=null, time=2024-05-30T11:09:00.101], duration: 12ms
[2024-05-30 11:09:00.240]  INFO [job-execute,{T_GLUED},a9cf5d493601969c] 6 --- [step.service.job.execute-3] c.t.b.j.e.engine.listener.StepListener   : Start step, stepInstanceId=20031265375
[2024-05-30 11:09:01.500] ERROR [job-execute,{T_PLAIN},c9cf5d493601969c] 6 --- [gse.task.service.job.execute-2] c.t.b.j.e.e.listener.GseTaskListener     : Handling gse task event error, event:GseTaskEvent[action=1, gseTaskId=7, jobInstanceId=20026160406, stepInstanceId=20031265375]
com.tencent.bk.job.common.exception.InternalException: null
	at com.tencent.bk.job.execute.engine.executor.GseTaskManager.startTask(GseTaskManager.java:120)
2024-05-30 11:09:02.000  WARN [job-execute,{T_PLAIN},d9cf5d493601969c] 6 --- [main] c.t.b.j.e.s.impl.TaskExecuteServiceImpl  : Refresh step according to gse task status, stepInstanceId: 20031265375, gseTaskStatus: ABNORMAL_STATE, batch: 0
"""


def numbered_docs(n: int, *, start: datetime, step_s: float = 1.0) -> list[dict[str, Any]]:
    lines = [
        f"[{(start + timedelta(seconds=i * step_s)).strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]}]  INFO "
        f"[job-execute,{T_PLAIN},c9cf5d493601969c] 6 --- [t] c.t.b.j.X : line {i} stepInstanceId={i % 3}"
        for i in range(n)
    ]
    return docs_from_records(lines)


async def bklog_server(
    aiohttp_server: ServerFactory, docs: list[dict[str, Any]], **kw: Any
) -> tuple[TestServer, web.Application]:
    app = create_bklog_app(docs, app_code=APP_CODE, app_secret=APP_SECRET, index_set_id=INDEX_SET, **kw)
    server = await aiohttp_server(app)
    return server, app


def client(session: aiohttp.ClientSession, server: TestServer, **kw: Any) -> BkLogClient:
    args: dict[str, Any] = {
        "base_url": str(server.make_url("")),
        "index_set_id": INDEX_SET,
        "credentials": CREDS,
        "timeout_s": 5,
        "retries": 2,
        "page_size": 10,
        "max_pages": 20,
        "backoff_base_s": 0.01,
    }
    args.update(kw)
    return BkLogClient(session, **args)


WINDOW = (datetime(2024, 5, 30, 11, 0, tzinfo=SH), datetime(2024, 5, 30, 11, 30, tzinfo=SH))


# --------------------------------------------------------------------------- documents


def test_docs_from_records_builds_bklog_documents() -> None:
    docs = docs_from_records(LOG, server_ip="10.0.0.5")
    assert len(docs) == 4
    third = docs[2]
    assert third["log"].startswith("[2024-05-30 11:09:01.500] ERROR")
    assert third["log"].endswith("(GseTaskManager.java:120)")  # stack trace stays in the record
    assert third["log"].count("\n") == 2
    expected_ms = int(datetime(2024, 5, 30, 11, 9, 1, 500000, tzinfo=SH).timestamp() * 1000)
    assert third["dtEventTimeStamp"] == str(expected_ms)
    assert third["path"] == "/data/logs/job-execute/execute.log"
    assert third["serverIp"] == "10.0.0.5"
    assert docs[3]["log"].startswith("2024-05-30 11:09:02.000  WARN")  # console pattern record
    assert [d["gseIndex"] for d in docs] == sorted({d["gseIndex"] for d in docs})
    assert [d["iterationIndex"] for d in docs] == [0, 1, 2, 3]


# --------------------------------------------------------------------------- search


async def test_search_sends_documented_body_and_auth(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    server, app = await bklog_server(aiohttp_server, docs_from_records(LOG))
    c = client(session, server, tenant_id="tenant-a")
    result = await c.search(quote_phrase("20031265375"), *WINDOW)
    assert [d["log"].split("]")[0] for d in result.docs] == [
        "[2024-05-30 11:09:00.240",
        "[2024-05-30 11:09:01.500",
        "2024-05-30 11:09:02.000  WARN [job-execute,9f8db07dd48f9515d284a0c3e0146e1a,d9cf5d493601969c",
    ]
    assert result.total == 3 and result.pages == 1 and not result.truncated and not result.empty
    for doc in result.docs:
        assert {"log", "dtEventTimeStamp", "path", "serverIp"} <= set(doc)
    (req,) = app[REQUESTS]
    assert req.path == "/esquery_search/" and req.method == "POST"
    assert req.auth == {"bk_app_code": APP_CODE, "bk_app_secret": APP_SECRET, "bk_username": "admin"}
    assert req.headers["X-Bk-Tenant-Id"] == "tenant-a"
    assert req.body == {
        "index_set_id": INDEX_SET,
        "time_range": "customized",
        "start_time": "2024-05-30 11:00:00",
        "end_time": "2024-05-30 11:30:00",
        "time_zone": "Asia/Shanghai",
        "query_string": 'log: "20031265375"',
        "sort_list": [["dtEventTimeStamp", "asc"], ["gseIndex", "asc"], ["iterationIndex", "asc"]],
        "start": 0,
        "size": 10,
    }


async def test_paging_reads_every_page_in_order(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    docs = numbered_docs(25, start=datetime(2024, 5, 30, 11, 10))
    server, app = await bklog_server(aiohttp_server, list(reversed(docs)))
    result = await client(session, server).search("*", *WINDOW)
    assert result.total == 25 and result.pages == 3 and not result.truncated
    assert [d["log"] for d in result.docs] == [d["log"] for d in docs]
    assert [(r.body["start"], r.body["size"]) for r in app[REQUESTS]] == [(0, 10), (10, 10), (20, 10)]


async def test_page_cap_and_size_cap_truncate(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    docs = numbered_docs(25, start=datetime(2024, 5, 30, 11, 10))
    server, app = await bklog_server(aiohttp_server, docs)
    capped = await client(session, server, max_pages=2).search("*", *WINDOW)
    assert (len(capped.docs), capped.total, capped.pages, capped.truncated) == (20, 25, 2, True)
    assert capped.docs[-1]["log"] == docs[19]["log"]
    app[REQUESTS].clear()
    small = await client(session, server).search("*", *WINDOW, size_cap=13)
    assert (len(small.docs), small.truncated) == (13, True)
    assert [(r.body["start"], r.body["size"]) for r in app[REQUESTS]] == [(0, 10), (10, 3)]


async def test_paging_stops_at_result_window(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    base = {"path": "/data/logs/job-execute/execute.log", "serverIp": "127.0.0.1", "iterationIndex": 0}
    t0 = int(datetime(2024, 5, 30, 11, 10, tzinfo=SH).timestamp() * 1000)
    docs = [{**base, "log": f"l{i}", "dtEventTimeStamp": str(t0 + i), "gseIndex": i} for i in range(10005)]
    server, app = await bklog_server(aiohttp_server, docs)
    result = await client(session, server, page_size=4000, max_pages=10).search("*", *WINDOW)
    assert [(r.body["start"], r.body["size"]) for r in app[REQUESTS]] == [
        (0, 4000),
        (4000, 4000),
        (8000, 2000),
    ]
    assert len(result.docs) == 10000 and result.total == 10005 and result.truncated


async def test_time_window_is_sent_in_time_zone(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    # The fake server's own zone is UTC: a request without time_zone would be off by 8 hours.
    docs = numbered_docs(10, start=datetime(2024, 5, 30, 11, 0), step_s=60)  # 11:00 .. 11:09 Shanghai
    server, app = await bklog_server(aiohttp_server, docs)
    start_utc = datetime(2024, 5, 30, 3, 2, tzinfo=UTC)  # 11:02 Shanghai
    end_utc = datetime(2024, 5, 30, 3, 5, 0, 500000, tzinfo=UTC)  # 11:05:00.5 → rounded up to :01
    got = await client(session, server).search("*", start_utc, end_utc)
    assert [d["log"].split(" line ")[1].split()[0] for d in got.docs] == ["2", "3", "4", "5"]
    assert (app[REQUESTS][0].body["start_time"], app[REQUESTS][0].body["end_time"]) == (
        "2024-05-30 11:02:00",
        "2024-05-30 11:05:01",
    )
    # a client configured for UTC sends UTC wall-clock strings and finds the same documents
    utc = await client(session, server, time_zone="UTC").search("*", start_utc, end_utc)
    assert [d["log"] for d in utc.docs] == [d["log"] for d in got.docs]
    assert app[REQUESTS][-1].body["start_time"] == "2024-05-30 03:02:00"
    # naive datetimes are wall-clock times in the client's time zone
    naive = await client(session, server).search(
        "*", datetime(2024, 5, 30, 11, 8), datetime(2024, 5, 30, 12, 0)
    )
    assert len(naive.docs) == 2


async def test_phrase_misses_glued_trace_id_wildcard_finds_it(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    server, app = await bklog_server(aiohttp_server, docs_from_records(LOG))
    templates = load_query_templates()
    c = client(session, server)
    phrase = await c.search(templates.render("trace_id", trace_id=T_GLUED), *WINDOW)
    # only the line whose spanId starts with a letter: "...4289,a9cf..." splits at the comma
    assert [d["log"] for d in phrase.docs] == [docs_from_records(LOG)[1]["log"]]
    wildcard = await c.search(templates.render("trace_wildcard", trace_id=T_GLUED), *WINDOW)
    assert len(wildcard.docs) == 2
    assert recorded_queries(app) == [f'log: "{T_GLUED}"', f"log: *{T_GLUED}*"]
    # the other trace id ends with a letter: the phrase finds both of its records
    plain = await c.search(templates.render("trace_id", trace_id=T_PLAIN), *WINDOW)
    assert plain.total == 2


async def test_engine_probe_and_step_templates(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    server, _ = await bklog_server(aiohttp_server, docs_from_records(LOG))
    templates = load_query_templates()
    c = client(session, server)
    probe = await c.search(templates.render("engine_probe"), *WINDOW)
    assert probe.total == 1 and "Handle job event" in probe.docs[0]["log"]
    step = await c.search(templates.render("step_id", step_instance_id=20031265375), *WINDOW)
    assert step.total == 3


async def test_empty_result_is_not_an_error(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    server, _ = await bklog_server(aiohttp_server, docs_from_records(LOG))
    result = await client(session, server).search(quote_phrase("nothing-like-this"), *WINDOW)
    assert result.empty and result.docs == [] and result.total == 0 and not result.truncated


async def test_unknown_index_set_is_typed(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    server, app = await bklog_server(aiohttp_server, docs_from_records(LOG))
    with pytest.raises(IndexSetNotFound) as info:
        await client(session, server, index_set_id=999).search("*", *WINDOW)
    assert info.value.code == 3623301 and len(app[REQUESTS]) == 1  # not retried


# --------------------------------------------------------------------------- BkLog's own errors


async def test_no_search_log_permission_names_the_permission_and_the_index_set(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """BkLog answers IAM denials with HTTP 200, result false and the string code "9900403"."""
    server, app = await bklog_server(aiohttp_server, docs_from_records(LOG), searchers=["someone-else"])
    with pytest.raises(SearchPermissionDenied) as info:
        await client(session, server).search("*", *WINDOW)
    err = info.value
    assert isinstance(err, GatewayAuthError) and err.code == 9900403 and err.http_status == 200
    assert "search_log" in str(err) and f"index set {INDEX_SET}" in str(err) and "admin" in str(err)
    assert len(app[REQUESTS]) == 1  # a permission error is not retried


async def test_index_set_without_an_approved_index_is_a_configuration_error(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    server, _ = await bklog_server(aiohttp_server, docs_from_records(LOG), unapproved_index_sets=[INDEX_SET])
    with pytest.raises(IndexSetNotFound) as info:
        await client(session, server).search("*", *WINDOW)
    assert info.value.code == 3624964 and isinstance(info.value, GatewayConfigError)


async def test_bklog_throttle_is_retried_with_backoff(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """ "3600429" (BkLog's QoS throttle after Elasticsearch timeouts) is transient, not permanent."""
    server, app = await bklog_server(aiohttp_server, docs_from_records(LOG))
    app[FAULTS].envelope("3600429", "请求过于频繁，请稍后再试", times=2)
    result = await client(session, server, retries=2).search("*", *WINDOW)
    assert result.total == 4 and len(app[REQUESTS]) == 3
    app[FAULTS].envelope("3600429", "请求过于频繁，请稍后再试", times=3)
    with pytest.raises(GatewayRateLimited):
        await client(session, server, retries=2).search("*", *WINDOW)


# --------------------------------------------------------------------------- other log layouts


async def test_trace_field_layout_reads_and_queries_the_trace_id_field(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    docs = docs_from_records(LOG, line_field="message", trace_field="traceId")
    server, app = await bklog_server(aiohttp_server, docs, text_fields=["message"])
    layout = LogLayout(log_field="message", trace_field="traceId")
    templates = load_query_templates(layout=layout)
    c = client(session, server, layout=layout)
    assert templates.render("trace_field", trace_id=T_GLUED) == f'traceId: "{T_GLUED}"'
    assert templates.render("step_id", step_instance_id=7) == 'message: "7"'
    found = await c.search(templates.render("trace_field", trace_id=T_GLUED), *WINDOW)
    assert found.total == 2  # exact on the keyword field: no glued-token problem
    records = parse_documents(found.docs, layout)
    assert [r.trace_id for r in records] == [T_GLUED, T_GLUED]
    assert records[1].message == "Start step, stepInstanceId=20031265375" and records[1].parsed
    assert recorded_queries(app) == [f'traceId: "{T_GLUED}"']


def test_queries_file_overrides_named_templates_and_refuses_unknown_ones(tmp_path: Any) -> None:
    mine = tmp_path / "mine.toml"
    mine.write_text(
        "[queries]\nstep_id = '{log_field}: {step_instance_id} AND path: \"/x\"'\n", encoding="utf-8"
    )
    t = load_query_templates(overrides=mine)
    assert t.render("step_id", step_instance_id=5) == 'log: "5" AND path: "/x"'
    assert t.render("step_key", step_instance_id=5) == "log: 5_*"  # the others stay
    typo = tmp_path / "typo.toml"
    typo.write_text("[queries]\nstep_idd = 'log: {step_instance_id}'\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown BkLog query templates step_idd"):
        load_query_templates(overrides=typo)
    with pytest.raises(ValueError, match="no such field"):
        load_query_templates().render("trace_field", trace_id="a" * 32)


async def test_bad_query_is_api_error(aiohttp_server: ServerFactory, session: aiohttp.ClientSession) -> None:
    server, app = await bklog_server(aiohttp_server, docs_from_records(LOG))
    with pytest.raises(ApiError) as info:
        await client(session, server).search('log: "unterminated', *WINDOW)
    assert info.value.code == 3624963 and len(app[REQUESTS]) == 1


# --------------------------------------------------------------------------- UI shape


async def test_ui_shape_search(aiohttp_server: ServerFactory, session: aiohttp.ClientSession) -> None:
    docs = numbered_docs(15, start=datetime(2024, 5, 30, 11, 10))
    server, app = await bklog_server(aiohttp_server, docs)
    c = client(session, server, response_shape="ui")
    result = await c.search(quote_phrase("stepInstanceId=1"), *WINDOW)
    expected = [d["log"] for d in docs if d["log"].endswith("stepInstanceId=1")]
    assert [d["log"] for d in result.docs] == expected  # raw text, no <mark>
    assert result.total == 5
    req = app[REQUESTS][0]
    assert req.path == f"/search/index_set/{INDEX_SET}/search/"
    assert req.body["keyword"] == 'log: "stepInstanceId=1"'
    assert (req.body["begin"], req.body["size"], req.body["time_zone"]) == (0, 10, "Asia/Shanghai")
    app[REQUESTS].clear()
    paged = await client(session, server, response_shape="ui", page_size=6).search("*", *WINDOW)
    assert [d["log"] for d in paged.docs] == [d["log"] for d in docs]
    assert [r.body["begin"] for r in app[REQUESTS]] == [0, 6, 12]


async def test_ui_shape_without_origin_list_strips_marks(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    # an older BkLog answers only `list` (highlighted): the client must return the raw text
    async def handler(request: web.Request) -> web.Response:
        row = {
            "log": "Start step, <mark>stepInstanceId</mark>=<mark>7</mark>",
            "dtEventTimeStamp": 1717038540240,
            "path": "/p",
            "serverIp": "1.1.1.1",
            "index": "x",
            "__index_set_id__": INDEX_SET,
        }
        data = {"total": 1, "took": 1, "list": [row], "fields": {}}
        return web.json_response({"result": True, "code": 0, "message": "", "data": data})

    app = web.Application()
    app.router.add_post(f"/search/index_set/{INDEX_SET}/search/", handler)
    server = await aiohttp_server(app)
    result = await client(session, server, response_shape="ui").search("*", *WINDOW)
    assert result.docs[0]["log"] == "Start step, stepInstanceId=7"


# --------------------------------------------------------------------------- templates


def test_quote_phrase_escapes() -> None:
    assert quote_phrase("20031265375") == 'log: "20031265375"'
    assert quote_phrase('say "hi" \\ bye') == 'log: "say \\"hi\\" \\\\ bye"'


def test_templates_render_quotes_every_id(tmp_path: Any) -> None:
    t = load_query_templates()
    assert {"step_id", "step_key", "trace_id", "trace_wildcard", "trace_field", "engine_probe"} == set(
        t.names
    )
    assert t.render("step_id", step_instance_id=123) == 'log: "123"'
    assert t.render("step_key", step_instance_id=123) == "log: 123_*"
    assert t.render("trace_wildcard", trace_id="ab12") == "log: *ab12*"
    assert t.filters["engine_path"] == "/data/logs/job-execute/execute.log"
    with pytest.raises(ValueError, match="needs step_instance_id"):
        t.render("step_id")
    with pytest.raises(ValueError):
        t.render("trace_wildcard", trace_id="a b")
    custom = tmp_path / "q.toml"
    custom.write_text("[queries]\nx = 'log: {v} AND log: *{v:wild}*'\n", encoding="utf-8")
    loaded = load_query_templates(custom)  # a whole template file of its own (not the collector's)
    assert loaded.render("x", v='a"b:c') == 'log: "a\\"b:c" AND log: *a\\"b\\:c*'
    assert json.loads(json.dumps(loaded.templates)) == {"x": "log: {v} AND log: *{v:wild}*"}
