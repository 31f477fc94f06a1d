"""Real processes for the reliability tests: our own `redis-server` and `python -m bot serve` replicas.

Every child writes its output to a file (a full pipe would block a busy child); `close()` kills
what is still running and always reaps it with `communicate()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import aiohttp

REDIS_BIN = "redis-server"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class _Child:
    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.out_path = workdir / f"{name}.out"
        self._out: IO[bytes] | None = None
        self.runs = 0

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is already running"
        self._close_out()
        self._out = self.out_path.open("ab")
        self.runs += 1
        self.proc = subprocess.Popen(
            argv,
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def send(self, sig: signal.Signals) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float) -> int | None:
        """The exit code, or None when the process is still running after `timeout` seconds."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL and reap (a crash)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.communicate(timeout=10)

    def _close_out(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def close(self) -> None:
        self.kill()
        self._close_out()

    def output(self) -> str:
        try:
            return self.out_path.read_text("utf-8", errors="replace")
        except FileNotFoundError:
            return ""


class RedisServer(_Child):
    """A private redis-server with an append-only file, so its data survives a restart (same port)."""

    def __init__(self, workdir: Path) -> None:
        super().__init__("redis", workdir)
        self.port = free_port()
        (workdir / "redis-data").mkdir(exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, timeout: float = 10.0) -> None:
        self._spawn(
            [
                REDIS_BIN,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.workdir / "redis-data"),
            ]
        )
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(_ping, self.port):
            if not self.running or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{self.output()[-2000:]}")
            await asyncio.sleep(0.05)


_JOB_DOCTOR_ENV = re.compile(r"^JOB_DOCTOR_")


class BotProcess(_Child):
    """`python -m bot serve` on its own port, configured through `JOB_DOCTOR_*` variables only."""

    def __init__(self, name: str, workdir: Path, env: dict[str, str]) -> None:
        super().__init__(name, workdir)
        self.port = free_port()
        base = {k: v for k, v in os.environ.items() if not _JOB_DOCTOR_ENV.match(k)}
        self.env = {
            **base,
            **env,
            "JOB_DOCTOR_HTTP__HOST": "127.0.0.1",
            "JOB_DOCTOR_HTTP__PORT": str(self.port),
        }
        self.env["PYTHONUNBUFFERED"] = "1"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, session: aiohttp.ClientSession, timeout: float = 20.0) -> None:
        self._spawn([sys.executable, "-m", "bot", "serve"], self.env)
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise RuntimeError(f"{self.name} exited at start:\n{self.output()[-3000:]}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(self.url + "/healthz", timeout=aiohttp.ClientTimeout(total=1)) as r:
                    if r.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not healthy in {timeout}s:\n{self.output()[-3000:]}")
            await asyncio.sleep(0.05)

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log events the process wrote (non-JSON lines are skipped)."""
        events: list[dict[str, Any]] = []
        for line in self.output().splitlines():
            line = line.strip()
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    value = json.loads(line)
                    if isinstance(value, dict):
                        events.append(value)
        return events

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.log_events() if e.get("event") == name]


_METRIC = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def parse_metrics(text: str) -> dict[tuple[str, str], float]:
    """Prometheus text → {(name, 'k="v",...'): value}."""
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        m = _METRIC.match(line.strip())
        if m:
            out[(m.group("name"), m.group("labels") or "")] = float(m.group("value"))
    return out


async def metrics_of(session: aiohttp.ClientSession, bot: BotProcess) -> dict[tuple[str, str], float]:
    async with session.get(bot.url + "/metrics") as resp:
        return parse_metrics(await resp.text())


async def readyz(session: aiohttp.ClientSession, bot: BotProcess) -> tuple[int, dict[str, Any]]:
    async with session.get(bot.url + "/readyz", timeout=aiohttp.ClientTimeout(total=10)) as resp:
        body: dict[str, Any] = await resp.json()
        return resp.status, body


async def wait_metric(
    session: aiohttp.ClientSession,
    bot: BotProcess,
    name: str,
    labels: str,
    value: float,
    timeout: float = 5.0,
) -> None:
    """Poll /metrics until the sample reaches `value` (counters move just after the visible effect)."""
    deadline = time.monotonic() + timeout
    got = 0.0
    while time.monotonic() < deadline:
        got = (await metrics_of(session, bot)).get((name, labels), 0.0)
        if got >= value:
            break
        await asyncio.sleep(0.05)
    assert got == value, f"{name}{{{labels}}} = {got}, expected {value}"
