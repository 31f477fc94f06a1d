"""Fuzzing of everything that reads untrusted input: no exception escapes, no 5xx.

The default suite runs a few hundred examples per target; the dedicated run
(`JOB_DOCTOR_FUZZ_EXAMPLES=10000 pytest -m slow tests/fuzz`) runs ≥ 10k per target.
"""

from __future__ import annotations

import asyncio
import json
import os
import string
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
from bot.core.settings import Settings
from bot.diagnosis.parser import parse_record, parse_text
from handlers.ids import extract_ids

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

bodies = st.one_of(
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
        chat={"dedup_window_s": 1},
    )
    app = loop.run_until_complete(create_app(settings_))
    client: TestClient[Any, Any] = TestClient(TestServer(app), loop=loop)
    loop.run_until_complete(client.start_server())
    statuses: list[int] = []
    try:

        @settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(bodies)
        def inner(body: tuple[str, bytes]) -> None:
            ctype, data = body

            async def post() -> int:
                resp = await client.post(
                    "/worktool/callback?token=tok-fuzz-123", data=data, headers={"Content-Type": ctype}
                )
                await resp.read()
                return resp.status

            status = loop.run_until_complete(post())
            statuses.append(status)
            assert status < 500

        inner()
    finally:
        loop.run_until_complete(client.close())
        loop.close()
    assert statuses and all(s == 200 for s in statuses)


def test_fuzz_worktool_callback_http_default() -> None:
    _callback_fuzz(100)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_fuzz_worktool_callback_http_big() -> None:
    _callback_fuzz(BIG)
