"""A window the asker named is part of the request key; old queued jobs still read."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bot.core.models import AnalysisJob, Window
from bot.diagnosis.pipeline import AnalysisRequest
from handlers.ids import IdRef
from handlers.replies import key_ident
from handlers.service import covers, describe, request_key
from handlers.timehint import TimeWindow, time_window

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2024, 6, 12, 16, 20, tzinfo=TZ)
STEP = IdRef(kind="step", step_instance_id=20031265375)
RETRIED = IdRef(kind="step", step_instance_id=20031265375, execute_count=2)
TRACE = IdRef(kind="request", request_id="84a2e275a062728b9b54aab16dea4289")


def window(text: str) -> TimeWindow:
    found = time_window(text, now=NOW, before=timedelta(hours=2), after=timedelta(hours=1))
    assert found is not None
    return found


def test_keys_tell_windows_apart() -> None:
    yesterday = window("昨天下午3点")
    assert request_key(STEP) == "step:20031265375"
    assert request_key(STEP, yesterday) == "step:20031265375:w202406111300-202406111700"
    assert request_key(RETRIED, yesterday) == "step:20031265375:ec2:w202406111300-202406111700"
    assert request_key(TRACE, yesterday) == "req:84a2e275a062728b9b54aab16dea4289:w202406111300-202406111700"
    # The same moment said two ways is one analysis; another moment is another.
    assert request_key(STEP, window("昨天 15:00")) != request_key(STEP, yesterday)
    assert request_key(STEP, window("昨天下午3点")) == request_key(STEP, yesterday)
    assert request_key(STEP, window("6月11日下午3点")) == request_key(STEP, yesterday)


def test_the_id_a_user_types_comes_back_out_of_any_key() -> None:
    for ref in (STEP, RETRIED):
        assert key_ident(request_key(ref, window("昨天下午3点"))) == "20031265375"
    assert key_ident(request_key(TRACE)) == "84a2e275a062728b9b54aab16dea4289"


def test_describe_names_the_window() -> None:
    assert describe(STEP) == "stepInstanceId=20031265375"
    assert describe(STEP, window("昨天下午3点"), NOW) == (
        "stepInstanceId=20031265375（按「昨天下午3点」查 06-11 13:00 至 06-11 17:00 的日志）"
    )


def test_a_searched_window_covers_a_named_one_only_when_it_holds_it() -> None:
    named = window("昨天下午3点")  # 2024-06-11 13:00 - 17:00 China time
    assert covers(Window(start="2024-06-09T16:20:00+08:00", end="2024-06-12T16:20:00+08:00"), named)
    assert covers(
        Window(start="2024-06-11T05:00:00+00:00", end="2024-06-11T09:00:00+00:00"), named
    )  # same, UTC
    assert not covers(Window(start="2024-06-11T14:00:00+08:00", end="2024-06-12T16:20:00+08:00"), named)
    assert not covers(Window(start="2024-06-09T16:20:00+08:00", end="2024-06-11T16:59:00+08:00"), named)
    assert not covers(None, named)
    assert not covers(Window(start="garbage", end="2024-06-12T16:20:00+08:00"), named)
    assert not covers(Window(start="2024-06-09T16:20:00", end="2024-06-12T16:20:00"), named)  # no offset


def test_jobs_carry_the_window_to_the_analysis_and_old_jobs_still_read() -> None:
    named = window("昨天下午3点")
    job = AnalysisJob(
        request_key=request_key(STEP, named),
        step_instance_id=20031265375,
        since=named.since,
        until=named.until,
    )
    again = AnalysisJob.model_validate_json(job.model_dump_json())
    req = AnalysisRequest.of_job(again)
    assert (req.since, req.until) == (named.since, named.until)

    old = AnalysisJob.model_validate_json(
        '{"request_key": "step:20031265375", "step_instance_id": 20031265375}'
    )
    assert (old.since, old.until) == (None, None)
    assert AnalysisRequest.of_job(old).since is None
