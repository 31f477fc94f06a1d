from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support import REPO

JD = [sys.executable, "-m", "bot"]


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("JOB_DOCTOR_")}
    full_env["PYTHONPATH"] = str(REPO)
    full_env.update(env or {})
    return subprocess.run(
        [*JD, *args], capture_output=True, text=True, env=full_env, timeout=timeout, check=False
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("command", ["serve", "demo", "analyze", "digest", "check", "eval", "cases"])
def test_every_command_has_help(command: str) -> None:
    res = run(command, "--help")
    assert res.returncode == 0
    assert "usage: job-doctor" in res.stdout


def test_unknown_option_is_one_clear_line() -> None:
    res = run("check", "--frobnicate")
    assert res.returncode == 2
    assert "unrecognized arguments: --frobnicate" in res.stderr
    assert "Traceback" not in res.stderr


def test_bad_setting_stops_with_one_line() -> None:
    res = run("check", env={"JOB_DOCTOR_BKLOG__INDEX_SET_ID": "twelve"})
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0
    assert "JOB_DOCTOR_BKLOG__INDEX_SET_ID" in res.stderr
    assert "Traceback" not in res.stderr


def test_missing_config_file_by_path(tmp_path: Path) -> None:
    res = run("--config", str(tmp_path / "nope.toml"), "check")
    assert res.returncode == 2 and "config file not found" in res.stderr


def test_check_reports_each_dependency() -> None:
    ok = run("check")
    assert ok.returncode == 0, ok.stderr
    assert "redis" in ok.stdout and "OK" in ok.stdout
    bad = run("check", env={"JOB_DOCTOR_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert bad.returncode == 1
    line = next(ln for ln in bad.stdout.splitlines() if ln.startswith("redis"))
    assert "FAIL" in line and ("Connect" in line or "refused" in line)


def test_port_in_use_is_one_clear_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = run("serve", "--host", "127.0.0.1", "--port", str(port), timeout=30)
    assert res.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in res.stderr
    assert "Traceback" not in res.stderr


def _wait_http(url: str, deadline_s: float = 20) -> bytes:
    end = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bytes(resp.read())
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


def test_serve_answers_and_stops_on_sigterm() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOB_DOCTOR_")}
    env.update({"PYTHONPATH": str(REPO), "JOB_DOCTOR_HTTP__SHUTDOWN_GRACE_S": "2"})
    proc = subprocess.Popen(
        [*JD, "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert b'"ok"' in _wait_http(f"http://127.0.0.1:{port}/healthz")
        assert b"job_doctor_" in _wait_http(f"http://127.0.0.1:{port}/metrics")
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        _out, err = proc.communicate()
    assert rc == 0
    assert "Traceback" not in err
    assert "stopped" in err


def test_demo_starts_with_embedded_store() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOB_DOCTOR_")}
    env.update({"PYTHONPATH": str(REPO), "JOB_DOCTOR_REDIS_URL": "redis://127.0.0.1:1/0"})
    proc = subprocess.Popen(
        [*JD, "demo", "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        body = _wait_http(f"http://127.0.0.1:{port}/readyz")
        # REDIS_URL points nowhere: a redis check that is ok is the embedded store's
        # (/readyz shows no details since it is unauthenticated; `check` would print "embedded store")
        assert b'"redis": {"ok": true' in body
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        out, _err = proc.communicate()
    assert rc == 0
    assert f"http://127.0.0.1:{port}/console" in out


async def test_check_explains_an_unverified_user_and_a_missing_search_permission() -> None:
    """The two set-up mistakes a real BlueKing install shows first: BK-JOB refuses `bk_username`
    alone (1640001), and BkLog's IAM refuses `search_log` on the index set (9900403)."""
    from bot.devtools.sandbox import start_site
    from bot.devtools.sandbox.bkjob import create_bkjob_app
    from bot.devtools.sandbox.bklog import create_bklog_app

    code, secret, user = "check-app", "check-secret", "ops"
    sites = [
        await start_site(create_bkjob_app([], app_code=code, app_secret=secret)),
        await start_site(
            create_bklog_app([], app_code=code, app_secret=secret, index_set_id=7, searchers=["x"])
        ),
    ]
    (_, bkjob_url), (_, bklog_url) = sites
    env = {
        "JOB_DOCTOR_BK__APP_CODE": code,
        "JOB_DOCTOR_BK__APP_SECRET": secret,
        "JOB_DOCTOR_BK__USERNAME": user,
        "JOB_DOCTOR_BKJOB__BASE_URL": bkjob_url,
        "JOB_DOCTOR_BKLOG__BASE_URL": bklog_url,
        "JOB_DOCTOR_BKLOG__INDEX_SET_ID": "7",
    }
    try:
        res = await asyncio.to_thread(run, "check", env=env)
    finally:
        for runner, _url in sites:
            await runner.cleanup()
    assert res.returncode == 1, res.stdout + res.stderr
    lines = {line.split()[0]: line for line in res.stdout.splitlines() if line.strip()}
    bkjob, bklog = lines["bkjob"], lines["bklog"]
    assert "FAIL" in bkjob and "1640001" in bkjob
    assert f"exempt app {code}" in bkjob
    assert "JOB_DOCTOR_BKJOB__USE_SYSTEM_API=true" in bkjob and "JOB_DOCTOR_BK__ACCESS_TOKEN" in bkjob
    assert "FAIL" in bklog and "9900403" in bklog and "search_log" in bklog and "index set 7" in bklog
    assert secret not in res.stdout + res.stderr
