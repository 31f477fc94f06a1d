"""The console page in headless Chromium against the real app on a local port."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.channels.console.helpers import REPORT_HEADER, STEP_ID, console_app, console_settings
from tests.support import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _require_browser() -> Any:
    """The playwright module, or skip (fail under CI=true) with the reason."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} is missing")
    async_api: Any = None
    try:
        from playwright import async_api
    except ImportError:
        missing.append("the playwright package is not installed")
    if missing:
        reason = "browser test needs Chromium and Playwright: " + "; ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return async_api


async def shown(locator: Any) -> str:
    """Its innerText once Chromium renders it. Messages are `content-visibility: auto`: one outside
    the viewport is skipped, and its innerText reads "" until it is scrolled to and laid out."""
    for _ in range(100):
        await locator.scroll_into_view_if_needed()
        text = str(await locator.inner_text())
        if text.strip():
            return text
        await asyncio.sleep(0.05)
    raise AssertionError("the element was never rendered")


@asynccontextmanager
async def console_page(app: web.Application, *, height: int) -> AsyncIterator[tuple[Any, list[str]]]:
    """The app on a real local port and /console open in headless Chromium, logged in as 张三.

    Yields the page and the list its JavaScript errors are collected into.
    """
    pw_api = _require_browser()
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    errors: list[str] = []
    try:
        async with pw_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1440, "height": height})
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(str(server.make_url("/console")))
                await page.wait_for_selector("#conn.conn-ok", timeout=20_000)
                await page.fill("#user", "张三")
                await page.press("#user", "Enter")
                yield page, errors
            finally:
                await browser.close()
    finally:
        await server.close()


@pytest.mark.browser
async def test_console_page_end_to_end() -> None:
    api = _require_browser()
    app = await console_app(console_settings(), samples=[STEP_ID])
    async with console_page(app, height=960) as (page, errors):
        # A failure without an id: the bot asks for it.
        await page.fill("#input", "@job-doctor 帮我看看这个任务为什么失败")
        await page.press("#input", "Enter")
        question = page.locator(".msg-bot.kind-question").first
        await question.wait_for(timeout=10_000)
        assert "stepInstanceId" in await shown(question)
        assert await shown(question.locator(".badge")) == "追问"

        # The sample chip fills the input; sending it brings the report.
        await page.click(f".chip:has-text('{STEP_ID}')")
        assert await page.input_value("#input") == f"@job-doctor {STEP_ID}"
        await page.click("#send")
        report = page.locator(".msg-bot.kind-report").first
        await report.wait_for(timeout=15_000)
        assert REPORT_HEADER in await shown(report.locator(".report-title"))
        headings = await report.locator("h3").all_inner_texts()
        for heading in ("问题概述", "根因分析", "解决方案"):
            assert heading in headings
        # log lines: monospaced blocks, their markup shown as text
        log_line = await shown(report.locator("pre.code").first)
        assert "<script>window.__pwned=1</script> **not bold**" in log_line
        assert await report.locator("a[href^='javascript']").count() == 0

        # A message with markup is shown as text and runs nothing.
        hostile = "<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2> 这是什么"
        await page.fill("#input", hostile)
        await page.press("#input", "Enter")
        echo = page.locator(".messages .msg-user:not(.pending)").filter(has_text="window.__pwned")
        # retried until it holds: the list may be re-rendered between finding the echo and reading it
        await api.expect(echo.first).to_contain_text(hostile, timeout=10_000)
        assert await page.evaluate("typeof window.__pwned") == "undefined"
        assert await page.locator("#messages script, #messages img").count() == 0

        # The recent-analyses panel picks the analysis up.
        card = page.locator(".recent-list .card").first
        await card.wait_for(timeout=10_000)
        assert "执行" in await card.inner_text()
        await card.locator("summary").click()
        assert await card.locator(".tl").count() == 2
        # the failed phase's event, its markup shown as text; the window searched
        event = card.locator(".tl-fail .tl-events li")
        assert await event.count() == 1
        assert "11:09:00.240 104 脚本返回码非零" in await event.inner_text()
        assert "<b>not bold</b>" in await event.inner_text()
        assert "检索窗口" in await card.inner_text()

        await page.locator("#scroller").evaluate("el => { el.scrollTop = 0; }")
        shot_dir = REPO / "test-artifacts"
        shot_dir.mkdir(exist_ok=True)
        await page.screenshot(path=str(shot_dir / "console-markup.png"))
        assert errors == []


@pytest.mark.browser
async def test_demo_console_with_the_real_pipeline() -> None:
    """`job-doctor demo` as a user sees it: sandbox BkLog/BK-JOB/GSE, real pipeline, console."""
    _require_browser()
    from bot.app.services import AppOptions
    from bot.app.web import create_app
    from bot.core.settings import Settings
    from bot.devtools.demo import demo_settings, start_sandbox

    box = await start_sandbox()
    try:
        settings = demo_settings(Settings(http={"host": "127.0.0.1"}), box)
        app = await create_app(settings, options=AppOptions(mode="demo", samples=box.samples))
        step = next(s["id"] for s in box.samples if s["label"] == "output_disk_full_and_agent_down")
        async with console_page(app, height=1000) as (page, errors):
            await page.fill("#input", "@job-doctor 帮我看看这个任务为什么失败")
            await page.press("#input", "Enter")
            await page.locator(".msg-bot.kind-question").first.wait_for(timeout=15_000)
            await page.fill("#input", str(step))  # the follow-up needs no @
            await page.press("#input", "Enter")
            report = page.locator(".msg-bot.kind-report").first
            await report.wait_for(timeout=30_000)
            title = await shown(report.locator(".report-title"))
            assert f"【job-doctor 诊断报告】stepInstanceId={step}" in title
            headings = await report.locator("h3").all_inner_texts()
            for heading in ("问题概述", "根因分析", "解决方案", "预防措施"):
                assert heading in headings
            body = await shown(report)
            assert "errorCode=117" in body  # the decisive line, quoted from the sandbox BkLog
            # what the hosts printed, from the sandbox BK-JOB, and the agent's state from its GSE
            assert "Cannot write: No space left on device" in body and "异常（有损状态" in body
            assert "日志跨度：" in body and "检索窗口：" in body
            # the timeline's events are nested under their phases
            events = await report.locator(".md ul.sub li").all_inner_texts()
            assert any("Start gse task successfully" in e for e in events)
            assert any("拉取结果" in e for e in events)
            card = page.locator(".recent-list .card").first
            await card.wait_for(timeout=15_000)
            assert "分析耗时" in await card.inner_text()
            await page.locator(".recent-list .card summary").first.click()
            await page.wait_for_timeout(300)
            await report.evaluate("el => el.scrollIntoView({block: 'start'})")
            shot_dir = REPO / "test-artifacts"
            shot_dir.mkdir(exist_ok=True)
            shot = shot_dir / "console.png"
            await page.screenshot(path=str(shot))
            if os.environ.get("JOB_DOCTOR_TEST_SCREENSHOT") == "1":
                shutil.copyfile(shot, REPO / "docs" / "console.png")  # the README's picture
            assert errors == []
    finally:
        await box.close()
