"""Shared pieces of the console tests: the app under test, a stub analysis, a page-like socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import ClientWebSocketResponse, WSMsgType, web

from bot.app.services import AppOptions
from bot.app.web import create_app
from bot.core.models import (
    AnalysisJob,
    DiagnosisReport,
    Evidence,
    RunSpan,
    TimelineEntry,
    TimelineEvent,
    Window,
)
from bot.core.settings import Settings

Frame = dict[str, Any]
STEP_ID = "20031265375"
REPORT_HEADER = f"【job-doctor 诊断报告】stepInstanceId={STEP_ID}"


async def stub_analyze(job: AnalysisJob) -> DiagnosisReport:
    """STUB analysis pipeline for the console tests (the lead swaps in the real demo pipeline).

    It builds a plausible report for whatever step it is given; the log line carries markup so
    the page's safe rendering is exercised with log content too.
    """
    await asyncio.sleep(0.05)
    step = job.step_instance_id
    what = f"步骤 {step}" if step is not None else f"request_id {job.request_id}"
    return DiagnosisReport(
        step_instance_id=step,
        task_instance_id=job.task_instance_id,
        request_ids=["0123456789abcdef0123456789abcdef"],
        summary=f"{what} 在执行阶段失败：目标主机上的脚本以非零退出码结束。",
        stage="execution",
        fault_side="user",
        root_cause="脚本返回退出码 1（<b>not bold</b>）",
        evidence=[
            Evidence(
                time="2024-05-30 11:09:00.240",
                level="ERROR",
                logger="c.t.b.j.e.e.ScriptTaskExecutor",
                text="Script exit code=1, stderr=<script>window.__pwned=1</script> **not bold**",
                why="脚本的退出码",
            )
        ],
        timeline=[
            TimelineEntry(phase="dispatch", status="ok", time="2024-05-30 11:08:58.100", note="下发成功"),
            TimelineEntry(
                phase="execution",
                status="fail",
                time="2024-05-30 11:09:00.240",
                note="退出码 1",
                events=[
                    TimelineEvent(
                        time="2024-05-30 11:09:00.240",
                        text="104 脚本返回码非零：Analyse execute object task result: exitCode=1 <b>not bold</b>",
                    )
                ],
            ),
        ],
        span=RunSpan(start="2024-05-30 11:08:58.050", end="2024-05-30 11:09:00.300", seconds=2.25),
        window=Window(start="2024-05-27T11:39:30+08:00", end="2024-05-30T11:39:30+08:00"),
        confidence=0.8,
        source="rules",
        signature="script_nonzero_exit",
        links=["https://job.example.com/biz/2/execute/step/" + str(step), "javascript:alert(1)"],
    )


def console_settings(**overrides: Any) -> Settings:
    data: dict[str, Any] = {
        "http": {"host": "127.0.0.1", "shutdown_grace_s": 0.5},
        "chat": {"progress_after_s": 5.0},
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return Settings(**data)


async def console_app(
    settings: Settings, *, mode: str = "serve", samples: list[object] | None = None
) -> web.Application:
    options = AppOptions(mode=mode, analyze=stub_analyze, samples=samples or [])
    return await create_app(settings, options=options)


class Page:
    """One browser tab's socket: sends what app.js sends, keeps every frame it received."""

    def __init__(self, ws: ClientWebSocketResponse, *, user: str, mode: str = "group") -> None:
        self.ws = ws
        self.user = user
        self.mode = mode
        self.frames: list[Frame] = []

    async def say(self, text: str, client_id: str) -> None:
        await self.ws.send_json(
            {"type": "message", "id": client_id, "text": text, "mode": self.mode, "user": self.user}
        )

    async def _read(self, timeout: float) -> Frame:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type != WSMsgType.TEXT:
            raise AssertionError(f"socket ended: {msg.type} {msg.data!r}")
        frame: Frame = json.loads(msg.data)
        self.frames.append(frame)
        return frame

    async def wait_for(self, pred: Callable[[Frame], bool], timeout: float = 15.0) -> Frame:
        for frame in self.frames:
            if pred(frame):
                return frame
        async with asyncio.timeout(timeout):
            while True:
                frame = await self._read(timeout)
                if pred(frame):
                    return frame

    async def drain(self, seconds: float) -> None:
        """Keep reading for a while (to see that nothing more arrives)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            try:
                await self._read(left)
            except TimeoutError:
                return

    def bot(self, kind: str | None = None) -> list[Frame]:
        return [
            f
            for f in self.frames
            if f.get("type") == "message" and f.get("from") == "bot" and (kind is None or f["kind"] == kind)
        ]


def is_bot(kind: str) -> Callable[[Frame], bool]:
    return lambda f: f.get("type") == "message" and f.get("from") == "bot" and f.get("kind") == kind


def is_echo(client_id: str) -> Callable[[Frame], bool]:
    return lambda f: f.get("type") == "message" and f.get("client_id") == client_id
