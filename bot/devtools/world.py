"""The sandbox world of a scenario: what BK-JOB and GSE answer about its job (bkjob.json).

`job_of` turns a scenario's BK-JOB answers into the sandbox BK-JOB's dataset (times read in the
scenario's time zone, output lines joined as the API returns them); scenarios without the file get
a bare job instance (ids and times only) so links and windows still work in the demo.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot.core.scope import parse_scope
from bot.devtools.sandbox.bkjob import FakeHost, FakeJobInstance, FakeStep
from bot.devtools.scenarios import BkJobData, Scenario, time_span

TZ = "Asia/Shanghai"


def _ms(text: str | None, tz: str) -> int | None:
    if text is None:
        return None
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            moment = datetime.strptime(text, fmt).replace(tzinfo=ZoneInfo(tz))
        except ValueError:
            continue
        return int(moment.timestamp() * 1000)
    raise ValueError(f"bkjob.json time {text!r} is not 'YYYY-MM-DD HH:MM:SS[.fff]'")


def job_from(data: BkJobData, tz: str = TZ) -> FakeJobInstance:
    scope = parse_scope(data.scope)
    steps = []
    for s in data.steps:
        start, end = _ms(s.start, tz), _ms(s.end, tz)
        hosts = [
            FakeHost(
                bk_host_id=h.bk_host_id,
                ip=h.ip,
                bk_cloud_id=h.bk_cloud_id,
                bk_agent_id=h.bk_agent_id,
                status=h.status,
                exit_code=h.exit_code,
                error_code=h.error_code,
                start_time=start,
                end_time=end,
                log_content="".join(line + "\n" for line in h.output),
            )
            for h in s.hosts
        ]
        steps.append(
            FakeStep(
                step_instance_id=s.step_instance_id,
                name=s.name,
                type=s.type,
                status=s.status,
                execute_count=s.execute_count,
                create_time=start,
                start_time=start,
                end_time=end,
                total_time=(end - start) if start is not None and end is not None else None,
                hosts=hosts,
                timeout_s=s.timeout_s,
                account=s.account,
            )
        )
    first = steps[0].start_time or 0
    return FakeJobInstance(
        job_instance_id=data.job_instance_id,
        name=data.name,
        create_time=first,
        status=data.status,
        bk_scope_type=scope.type,
        bk_scope_id=str(scope.id),
        start_time=first,
        steps=steps,
    )


def job_of(sc: Scenario, tz: str = TZ) -> FakeJobInstance | None:
    """The scenario's job instance: its bkjob.json, else a bare one from its expected ids."""
    if sc.bkjob is not None:
        return job_from(sc.bkjob, tz)
    exp = sc.expected
    if not exp.task_instance_id or not exp.step_instance_id:
        return None
    span = time_span(sc.logs_text, tz)
    start = int(span[0].timestamp() * 1000) if span else 0
    step = FakeStep(
        step_instance_id=exp.step_instance_id, name=sc.name, status=4, start_time=start, end_time=start
    )
    return FakeJobInstance(
        job_instance_id=exp.task_instance_id,
        name=f"demo-{sc.name}",
        create_time=start,
        status=4,
        steps=[step],
    )


def agents_of(sc: Scenario) -> dict[str, dict[str, Any]]:
    return dict(sc.bkjob.agents) if sc.bkjob is not None else {}
