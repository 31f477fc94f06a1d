"""Fuzzing of everything that reads untrusted input: no exception escapes, no 5xx.

The default suite runs a few hundred examples per target; the dedicated run
(`JOB_DOCTOR_FUZZ_EXAMPLES=10000 pytest -m slow tests/fuzz`) runs ≥ 10k per target.
"""

from __future__ import annotations

import asyncio
import json
import os
import string
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.app.web import create_app
from bot.channels.wecom.crypto import WeComCrypto, WeComCryptoError
from bot.channels.worktool.parse import Ignored, to_incoming
from bot.core.models import IncomingMessage
from bot.core.redact import Redactor
from bot.core.settings import Settings
from bot.diagnosis.extract import ids_in_text, parse_callback, parse_event, parse_gse_finish
from bot.diagnosis.parser import parse_record, parse_text
from handlers.ids import extract_ids
from handlers.intent import classify, parse_feedback

SMALL = 300
BIG = int(os.environ.get("JOB_DOCTOR_FUZZ_EXAMPLES", "10000"))

LOG_ALPHABET = st.sampled_from(list(string.printable) + list("[]|,=:{}()'\"步骤失败\u00a0\u2005\x00\x1b"))
ENGINE_FRAGMENTS = st.sampled_from(
    [
        "[2024-05-30 11:09:00.240]  INFO [job-execute,84a2e275a062728b9b54aab16dea4289,4f786ec86329458a] 6 --- [t-1] c.t.b.j.e.engine.listener.JobListener    : ",
        "2024-05-30 11:09:00.240 ERROR [job-execute,,] 6 --- [   execute-1] x : ",
        "Handle job event, event: JobEvent[action=4, actionDesc=REFRESH, jobInstanceId=",
        "ScriptExecuteObjectTaskResult[agentId=0200, errorCode=117, exitCode=",
        "[Job:1-GseTask:2:3:0] ",
        "[BaseBkApiClient] Response|tenantId=default|bkApiRequestId=x|method=POST|uri=/a|success=true|costTime=1|resp={",
        "\tat com.tencent.bk.job.X.y(X.java:1)\n",
        "stepInstanceId=",
        "https://job.example.com/biz/2/execute/step/1?stepInstanceId=",
    ]
)
log_text = st.lists(
    st.one_of(ENGINE_FRAGMENTS, st.text(LOG_ALPHABET, max_size=40), st.integers().map(str)), max_size=12
).map("".join)

# Crafted quadratic inputs: one marker of a pattern repeated many times (a regex that retries an
# unbounded gap from every repetition costs seconds on 100 KB).
MARKERS = st.sampled_from(
    [
        "what is ",
        "what does x ",
        "Finish gse task, task:",
        "Callback using json body failed",
        "Analyse execute object task result, result: agentId=a, ",
        "stepInstanceId=",
        "step[1",
        "JobEvent[",
        "EventSource(",
        "[BaseBkApiClient] Response|",
        '"message":"',
        "code=",
        "https://a.b/biz/1/execute/step/",
        "a://b:",
        "sk-",
        "\\",
        "%25",
        "1 ",
        "步骤ID：",
        "[",
        "'",
        "@",
    ]
)
repeated = st.tuples(st.one_of(MARKERS, ENGINE_FRAGMENTS), st.integers(1, 6000)).map(
    lambda t: (t[0] * t[1])[: 100 * 1024]
)
REPEAT_BUDGET_S = 1.0  # per call on up to 100 KB; the quadratic patterns took seconds

scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30))
field_names = st.sampled_from(
    [
        "spoken",
        "rawSpoken",
        "receivedName",
        "groupName",
        "groupRemark",
        "roomType",
        "atMe",
        "textType",
        "fileBase64",
        "x",
    ]
)
worktool_payload = st.dictionaries(
    field_names,
    st.one_of(scalar, st.lists(scalar, max_size=3), st.dictionaries(st.text(max_size=5), scalar, max_size=3)),
    max_size=9,
)


def check_parser(text: str) -> None:
    rec = parse_record(text)
    assert isinstance(rec.message, str)
    for r in parse_text(text):
        assert isinstance(r.raw, str)


def _timed(fn: Callable[[], object], what: str) -> None:
    start = time.perf_counter()
    fn()
    took = time.perf_counter() - start
    assert took < REPEAT_BUDGET_S, f"{what}: {took:.2f}s"


def check_parser_repeated(text: str) -> None:
    _timed(lambda: check_parser(text), "parser")
    _timed(lambda: [ids_in_text(r.message) for r in parse_text(text)], "ids_in_text")
    _timed(lambda: (parse_gse_finish(text), parse_callback(text), parse_event(text)), "extractors")


def check_ids_repeated(text: str) -> None:
    _timed(lambda: check_ids(text[:4000]), "extract_ids at the chat limit")
    _timed(lambda: (classify(text[:4000]), parse_feedback(text[:4000])), "intent")
    _timed(lambda: Redactor(["secret-1234"])(text), "redactor")


def check_parser_bytes(data: bytes) -> None:
    parse_record(data)
    parse_text(data)


def check_ids(text: str) -> None:
    got = extract_ids(text, max_ids=3)
    assert len(got.refs) <= 3
    for ref in got.refs:
        if ref.request_id is not None:
            assert len(ref.request_id) == 32


def check_worktool_payload(payload: dict[str, Any]) -> None:
    got = to_incoming(payload, robot_id="r1", bot_name="job-doctor")
    assert isinstance(got, IncomingMessage | Ignored)


CRYPTO = WeComCrypto("token123", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "")


def check_wecom_envelope(body: str, sig: str) -> None:
    try:
        CRYPTO.open_envelope(sig, "1700000000", "nonce", body)
    except WeComCryptoError:
        pass


TARGETS: list[tuple[str, Callable[..., None], Any]] = [
    ("log_parser_text", check_parser, log_text),
    ("log_parser_bytes", check_parser_bytes, st.binary(max_size=400)),
    ("id_extraction", check_ids, log_text),
    ("worktool_payload", check_worktool_payload, worktool_payload),
    ("log_parser_repeated", check_parser_repeated, repeated),
    ("id_extraction_repeated", check_ids_repeated, repeated),
]


def _run(fn: Callable[..., None], strategy: Any, n: int) -> None:
    @settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(strategy)
    def inner(value: Any) -> None:
        fn(value)

    inner()


@pytest.mark.parametrize(("name", "fn", "strategy"), TARGETS, ids=[t[0] for t in TARGETS])
def test_fuzz_default(name: str, fn: Callable[..., None], strategy: Any) -> None:
    _run(fn, strategy, SMALL)


def test_fuzz_wecom_envelope_default() -> None:
    _run(lambda v: check_wecom_envelope(*v), st.tuples(st.text(max_size=300), st.text(max_size=50)), SMALL)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize(("name", "fn", "strategy"), TARGETS, ids=[t[0] for t in TARGETS])
def test_fuzz_big(name: str, fn: Callable[..., None], strategy: Any) -> None:
    _run(fn, strategy, BIG)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_fuzz_wecom_envelope_big() -> None:
    _run(lambda v: check_wecom_envelope(*v), st.tuples(st.text(max_size=300), st.text(max_size=50)), BIG)


# --------------------------------------------------------------------------- the HTTP callback


def _nested(depth: int, opener: str) -> bytes:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return (opener * depth + "1" + closer * depth).encode()


# Bodies a JSON decoder chokes on: nested past its recursion limit (was an HTTP 500), numbers past
# int's digit limit or float's range, invalid UTF-8 inside strings.
hostile_json = st.one_of(
    st.tuples(st.integers(900, 20000), st.sampled_from(["[", '{"a":'])).map(lambda t: _nested(*t)),
    st.integers(900, 20000).map(lambda n: b"[" * n),
    st.integers(4000, 20000).map(
        lambda n: b'{"roomType": ' + b"9" * n + b', "spoken": "x", "receivedName": "y"}'
    ),
    st.sampled_from([b"1e999", b"-1e999", b'{"roomType": 1e400, "spoken": "x", "receivedName": "y"}']),
    st.binary(max_size=60).map(lambda b: b'{"spoken": "' + b + b'", "receivedName": "y", "roomType": "3"}'),
)
bodies = st.one_of(
    hostile_json.map(lambda b: ("application/json", b)),
    worktool_payload.map(lambda p: ("application/json", json.dumps(p, default=str).encode())),
    st.binary(max_size=600).map(lambda b: ("application/json", b)),
    st.text(max_size=300).map(lambda t: ("application/x-www-form-urlencoded", t.encode())),
    st.binary(max_size=300).map(lambda b: ("multipart/form-data; boundary=xyz", b)),
    st.text(max_size=100).map(lambda t: ("text/plain", t.encode())),
)


def _callback_fuzz(n: int) -> None:
    loop = asyncio.new_event_loop()
    settings_ = Settings(
        worktool={"robot_id": "r1", "callback_token": "tok-fuzz-123", "base_url": "http://127.0.0.1:9"},
        wecom_aibot={"token": "token123", "encoding_aes_key": "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"},
        chat={"dedup_window_s": 1},
    )
    app = loop.run_until_complete(create_app(settings_))
    client: TestClient[Any, Any] = TestClient(TestServer(app), loop=loop)
    loop.run_until_complete(client.start_server())
    statuses: list[int] = []
    try:

        @settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(bodies, st.sampled_from(ENDPOINTS))
        def inner(body: tuple[str, bytes], endpoint: str) -> None:
            ctype, data = body

            async def post() -> int:
                resp = await client.post(endpoint, data=data, headers={"Content-Type": ctype})
                await resp.read()
                return resp.status

            status = loop.run_until_complete(post())
            statuses.append(status)
            assert status < 500, (endpoint, data[:60])

        inner()
    finally:
        loop.run_until_complete(client.close())
        loop.close()
    # a callback is answered (200) or refused as malformed (4xx), never a 5xx
    assert statuses and all(s == 200 or 400 <= s < 500 for s in statuses)


ENDPOINTS = (
    "/worktool/callback?token=tok-fuzz-123",
    "/wecom/aibot?msg_signature=x&timestamp=1700000000&nonce=n",
)


def test_fuzz_worktool_callback_http_default() -> None:
    _callback_fuzz(100)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_fuzz_worktool_callback_http_big() -> None:
    _callback_fuzz(BIG)
