"""A disputed report (👎) becomes a scenario folder that the corpus loader accepts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from bot.core.models import DiagnosisReport, Evidence, IncomingMessage
from bot.core.store import open_store
from bot.delivery.reports import ReportStore
from bot.devtools.scenarios import load_scenario
from tests.conftest import REDIS_URL, require_redis
from tests.support import REPO

LINE = (
    "[2024-05-30 11:09:02.246]  INFO [job-execute,7d9369e51255ad96c215a9b3e2ed97fc,163a7c812044e75b] 6 --- "
    "[task-result-handle-25] c.t.b.j.e.e.r.ScriptResultHandleTask     : [Job:1-GseTask:2:3:0]: Analyse execute "
    "object task result, result: ScriptExecuteObjectTaskResult[agentId=0200, errorCode=117, exitCode=null]"
)


async def test_cases_export_writes_disputed_reports(tmp_path: Path, key_prefix: str) -> None:
    require_redis()
    store = open_store(REDIS_URL, prefix=key_prefix)
    try:
        reports = ReportStore(store, fresh_s=60)
        report = DiagnosisReport(
            step_instance_id=3,
            task_instance_id=1,
            request_ids=["7d9369e51255ad96c215a9b3e2ed97fc"],
            summary="执行阶段失败",
            stage="execution",
            fault_side="environment",
            evidence=[Evidence(time="2024-05-30 11:09:02.246", text=LINE, why="agent")],
        )
        await reports.save("step:3", report)
        await reports.save("step:4", report.model_copy(update={"step_instance_id": 4}))
        msg = IncomingMessage(channel="worktool", chat_id="ops", is_group=True, sender_id="李四", text="👎")
        await reports.add_feedback("step:3", msg, "down", "其实是脚本问题")
        await reports.add_feedback("step:4", msg, "up", "")
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOB_DOCTOR_")}
        env.update(
            {
                "PYTHONPATH": str(REPO),
                "JOB_DOCTOR_REDIS_URL": REDIS_URL,
                "JOB_DOCTOR_REDIS_KEY_PREFIX": key_prefix,
            }
        )
        res = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "bot", "cases", "export", str(tmp_path / "cases")],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert res.returncode == 0, res.stderr
        folders = sorted(p for p in (tmp_path / "cases").iterdir() if p.is_dir())
        assert [f.name for f in folders] == ["case_step_3"]  # only the disputed one
        sc = load_scenario(folders[0])
        assert sc.expected.step_instance_id == 3
        assert "其实是脚本问题" in sc.expected.description
        assert LINE in sc.logs_text
    finally:
        keys = [k async for k in store.redis.scan_iter(match=key_prefix + "*")]
        if keys:
            await store.redis.delete(*keys)
        await store.close()
