"""Properties of extract_ids over generated input."""

from __future__ import annotations

import re
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.ids import extract_ids

ids = st.integers(min_value=1, max_value=2**63 - 1)
wrappers = st.sampled_from(
    [("", ""), ("（", "）"), ("【", "】"), ("[链接](", ")"), ("看下", "谢谢"), ("<", ">")]
)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300), max_ids=st.integers(min_value=0, max_value=6))
def test_never_raises_and_respects_the_limit(text: str, max_ids: int) -> None:
    result = extract_ids(text, max_ids=max_ids)
    assert len(result.refs) <= max_ids
    assert len({r.key for r in result.refs}) == len(result.refs)
    for ref in result.refs:
        if ref.kind == "request":
            assert ref.request_id is not None and re.fullmatch(r"[0-9a-f]{32}", ref.request_id)
        elif ref.kind == "step":
            assert ref.step_instance_id is not None and 0 < ref.step_instance_id < 2**63
        else:
            assert ref.task_instance_id is not None and ref.step_instance_id is None


@settings(max_examples=200, deadline=None)
@given(
    biz=st.integers(min_value=1, max_value=10**7),
    task=ids,
    step=ids,
    count=st.integers(min_value=0, max_value=99),
    scope=st.sampled_from(["biz", "biz_set"]),
    wrap=wrappers,
)
def test_step_links_round_trip(
    biz: int, task: int, step: int, count: int, scope: str, wrap: tuple[str, str]
) -> None:
    link = (
        f"https://job.example.com/{scope}/{biz}/execute/step/{task}?stepInstanceId={step}&retryCount={count}"
    )
    refs = extract_ids(f"{wrap[0]}{link}{wrap[1]}", max_ids=3).refs
    assert len(refs) == 1
    ref = refs[0]
    assert (ref.kind, ref.step_instance_id, ref.task_instance_id, ref.execute_count) == (
        "step",
        step,
        task,
        count,
    )
    assert (ref.bk_scope_type, ref.bk_scope_id) == (scope, biz)


@settings(max_examples=100, deadline=None)
@given(hexid=st.text(alphabet="0123456789abcdef", min_size=32, max_size=32).filter(lambda s: not s.isdigit()))
def test_trace_ids_round_trip_in_any_case(hexid: str) -> None:
    for text in (f"traceId={hexid}", f"request_id: {hexid.upper()}", f"看下{hexid}的日志"):
        assert [r.request_id for r in extract_ids(text, max_ids=3).refs] == [hexid]


def test_large_pastes_stay_fast() -> None:
    # guards against catastrophic regex backtracking; the bound is loose on purpose
    blobs = [
        "1 " * 50_000,
        "a1" * 50_000,
        "https://x.com/" * 10_000,
        "20031265375," * 10_000,
        "步骤1" * 30_000,
    ]
    for blob in blobs:
        started = time.perf_counter()
        extract_ids(blob, max_ids=5)
        assert time.perf_counter() - started < 5.0
