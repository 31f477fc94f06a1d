"""Callback ack benchmark: the real bot's `POST /worktool/callback` against a bare aiohttp baseline.

Both servers run in their own process and do the same durable write before answering: one Lua
call that sets the dedup key (SET NX PX) and appends the message to a Redis stream (XADD), then
`{"code": 0, "message": "参数接收成功"}`. The bot is the app `serve` builds (every component, the
inbox consumer and job worker running); the baseline is a single handler. One client drives
both in alternating rounds (same machine, same moment, so the noise is shared) with distinct
texts so nothing is deduplicated. The messages are group chatter without an @ (the bulk of what
a WorkTool robot calls back), so the bot's consumer takes each one off the inbox as it would in
production, without sending anything.

    python bench/ack.py [--requests 2000] [--concurrency 20] [--rounds 10] [--redis-url URL]

Uses the Redis at 127.0.0.1:6379 when it answers (own key prefix, keys removed afterwards),
else the embedded store for the bot and an in-process store for the baseline.
Goal: bot p99 < 20 ms and bot throughput >= 70 % of the baseline's.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-0123456789"
ROBOT_ID = "bench-robot"
ACK = {"code": 0, "message": "参数接收成功"}
REDIS_URL = "redis://127.0.0.1:6379/0"

# The same script as the bot's inbox (bot/delivery/queue.py): dedup key and stream entry in one
# step, refused when the inbox holds ARGV[3] unprocessed entries (never trimmed).
ACCEPT = """
if redis.call('exists', KEYS[1]) == 1 then return false end
if redis.call('xlen', KEYS[2]) >= tonumber(ARGV[3]) then return -1 end
redis.call('set', KEYS[1], '1', 'PX', ARGV[1])
return redis.call('xadd', KEYS[2], '*', 'p', ARGV[2])
"""


def redis_reachable(url: str) -> bool:
    if not url:
        return False
    host_port = url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = host_port.partition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port or 6379)), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# --------------------------------------------------------------------------- servers (child processes)

SERVICE_TIMES: web.AppKey[list[float]] = web.AppKey("bench_service_times", list[float])


@web.middleware
async def timed(request: web.Request, handler: Any) -> web.StreamResponse:
    """Time spent inside the app for one callback (the same middleware in both servers)."""
    t0 = time.perf_counter()
    response: web.StreamResponse = await handler(request)
    if request.path == "/worktool/callback":
        request.app[SERVICE_TIMES].append(time.perf_counter() - t0)
    return response


async def service_times(request: web.Request) -> web.Response:
    times = request.app[SERVICE_TIMES]
    if request.method == "DELETE":
        times.clear()
        return web.json_response({"cleared": True})
    return web.json_response(times)


def instrument(app: web.Application) -> None:
    app[SERVICE_TIMES] = []
    app.middlewares.insert(0, timed)
    app.router.add_route("*", "/bench/service-times", service_times)


def bot_settings(redis_url: str, prefix: str) -> Any:
    from bot.core.settings import Settings

    return Settings(
        redis_url=redis_url,
        redis_key_prefix=prefix,
        log_level="INFO",
        http={"host": "127.0.0.1", "shutdown_grace_s": 2},
        worktool={
            "base_url": "http://127.0.0.1:9",  # nothing is sent in this benchmark
            "robot_id": ROBOT_ID,
            "callback_token": TOKEN,
            "bot_name": "job-doctor",
        },
    )


async def serve_bot(redis_url: str, prefix: str, port_file: Path) -> None:
    from bot.app.server import run_server
    from bot.app.web import create_app
    from bot.core.logsetup import configure_logging

    settings = bot_settings(redis_url, prefix)
    # As `serve` logs when stderr is not a terminal: JSON lines.
    configure_logging(json_lines=True, level=settings.log_level)
    app = await create_app(settings)
    instrument(app)

    async def started(bound: int) -> None:
        await asyncio.to_thread(port_file.write_text, str(bound))

    await run_server(app, "127.0.0.1", 0, on_started=started)


async def serve_baseline(redis_url: str, prefix: str, port_file: Path) -> None:
    import redis.asyncio as aioredis

    if redis_url:
        client: aioredis.Redis = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=2.0)
    else:
        import fakeredis

        client = fakeredis.FakeAsyncRedis(decode_responses=True)
    accept = client.register_script(ACCEPT)
    stream = f"{prefix}q:inbox"

    async def callback(request: web.Request) -> web.Response:
        if request.query.get("token") != TOKEN:
            return web.json_response({"code": 403, "message": "forbidden"}, status=403)
        body = await request.json()
        fields = (ROBOT_ID, str(body.get("groupName", "")), str(body.get("receivedName", "")))
        fingerprint = hashlib.sha256("\x1f".join((*fields, str(body.get("spoken", "")))).encode()).hexdigest()
        await accept(keys=[f"{prefix}dedup:{fingerprint}", stream], args=[60_000, json.dumps(body), 100_000])
        return web.json_response(ACK)

    app = web.Application()
    app.router.add_post("/worktool/callback", callback)
    instrument(app)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    await asyncio.to_thread(port_file.write_text, str(runner.addresses[0][1]))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
    await client.aclose()


def start_child(kind: str, redis_url: str, prefix: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port_file = workdir / f"{kind}.port"
    log = (workdir / f"{kind}.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOB_DOCTOR_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve",
            kind,
            "--redis-url",
            redis_url,
            "--prefix",
            prefix,
            "--port-file",
            str(port_file),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,  # no job-doctor.toml from the caller's directory
        env=env,
    )
    deadline = time.monotonic() + 20
    while not port_file.exists() or not port_file.read_text().strip():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"{kind} server did not start; see {workdir / (kind + '.log')}")
        time.sleep(0.05)
    return proc, int(port_file.read_text())


def stop_child(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- client


def pct(values: list[float], q: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, int(q * len(data)))] * 1000 if data else float("nan")


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []  # seen by the client
        self.service: list[float] = []  # spent inside the server's app (middleware)
        self.elapsed = 0.0
        self.errors = 0

    def add(self, latencies: list[float], elapsed: float, errors: int) -> None:
        self.latencies.extend(latencies)
        self.elapsed += elapsed
        self.errors += errors

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0


def body(run: str, n: int) -> bytes:
    text = f"bench {run} message {n}: 今天的发布窗口改到下午三点"
    return json.dumps(
        {
            "spoken": text,
            "rawSpoken": text,
            "receivedName": f"用户{n % 50}",
            "groupName": "压测群",
            "groupRemark": "",
            "roomType": "3",
            "atMe": "false",
            "textType": "1",
        },
        ensure_ascii=False,
    ).encode()


async def run_round(
    session: aiohttp.ClientSession, url: str, run: str, start: int, count: int, concurrency: int
) -> tuple[list[float], float, int]:
    latencies: list[float] = []
    errors = 0
    next_n = start
    headers = {"Content-Type": "application/json"}

    async def worker() -> None:
        nonlocal next_n, errors
        while next_n < start + count:
            n = next_n
            next_n += 1
            t0 = time.perf_counter()
            async with session.post(url, data=body(run, n), headers=headers) as resp:
                payload = await resp.read()
            latencies.append(time.perf_counter() - t0)
            if resp.status != 200 or json.loads(payload).get("code") != 0:
                errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - t0, errors


async def drive(bases: dict[str, str], requests: int, concurrency: int, rounds: int) -> dict[str, Stats]:
    urls = {name: f"{base}/worktool/callback?token={TOKEN}" for name, base in bases.items()}
    stats = {name: Stats() for name in urls}
    per_round = max(1, requests // rounds)
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        run = uuid.uuid4().hex[:8]
        n = 0
        for name, url in urls.items():  # warm-up: connections, imports, first Lua load
            await run_round(session, url, run + "w", n, max(100, per_round // 2), concurrency)
            n += max(100, per_round // 2)
            async with session.delete(f"{bases[name]}/bench/service-times") as resp:
                await resp.read()
        order = list(urls)
        for r in range(rounds):
            for name in order if r % 2 == 0 else reversed(order):
                lat, elapsed, errors = await run_round(session, urls[name], run, n, per_round, concurrency)
                n += per_round
                stats[name].add(lat, elapsed, errors)
        for name, base in bases.items():
            async with session.get(f"{base}/bench/service-times") as resp:
                stats[name].service = await resp.json()
    return stats


async def drop_keys(redis_url: str, prefixes: list[str]) -> int:
    import redis.asyncio as aioredis

    client: aioredis.Redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    dropped = 0
    try:
        for prefix in prefixes:
            keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
            if keys:
                dropped += int(await client.delete(*keys))
    finally:
        await client.aclose()
    return dropped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--requests", type=int, default=2000, help="measured requests per server")
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--redis-url", default=REDIS_URL, help='"" for the embedded store')
    ap.add_argument("--serve", choices=["bot", "baseline"], help=argparse.SUPPRESS)
    ap.add_argument("--prefix", default="", help=argparse.SUPPRESS)
    ap.add_argument("--port-file", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.serve:
        serve = serve_bot if args.serve == "bot" else serve_baseline
        asyncio.run(serve(args.redis_url, args.prefix, Path(args.port_file)))
        return

    redis_url = args.redis_url if redis_reachable(args.redis_url) else ""
    tag = uuid.uuid4().hex[:8]
    prefixes = {"bot": f"jdbench:{tag}:bot:", "baseline": f"jdbench:{tag}:base:"}
    with tempfile.TemporaryDirectory(prefix="jd-bench-") as tmp:
        workdir = Path(tmp)
        children: dict[str, subprocess.Popen[bytes]] = {}
        bases: dict[str, str] = {}
        try:
            for name in ("bot", "baseline"):
                proc, port = start_child(name, redis_url, prefixes[name], workdir)
                children[name] = proc
                bases[name] = f"http://127.0.0.1:{port}"
            stats = asyncio.run(drive(bases, args.requests, args.concurrency, args.rounds))
        finally:
            for proc in children.values():
                stop_child(proc)
            if redis_url:
                asyncio.run(drop_keys(redis_url, list(prefixes.values())))

    store = "real Redis " + redis_url if redis_url else "embedded store (no Redis reachable)"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"callback ack: {args.requests} requests per server, concurrency {args.concurrency}, "
        f"{args.rounds} alternating rounds, {store}; {os.cpu_count()} CPUs, load average {load:.1f}"
    )
    print(
        f"{'':<10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'req/s':>9}{'errors':>8}"
        f"{'in-app p50':>12}{'in-app p99':>12}"
    )
    for name in ("bot", "baseline"):
        st = stats[name]
        print(
            f"{name:<10}{pct(st.latencies, 0.5):>9.2f}{pct(st.latencies, 0.9):>9.2f}"
            f"{pct(st.latencies, 0.99):>9.2f}{max(st.latencies) * 1000:>9.2f}{st.throughput:>9.0f}"
            f"{st.errors:>8}{pct(st.service, 0.5):>12.2f}{pct(st.service, 0.99):>12.2f}"
        )
    bot, base = stats["bot"], stats["baseline"]
    share = 100 * bot.throughput / base.throughput if base.throughput else float("nan")
    p99 = pct(bot.latencies, 0.99)
    print(
        f"bot/baseline: p50 x{pct(bot.latencies, 0.5) / pct(base.latencies, 0.5):.2f}, "
        f"p99 x{p99 / pct(base.latencies, 0.99):.2f}, "
        f"in-app p99 x{pct(bot.service, 0.99) / pct(base.service, 0.99):.2f}; "
        f"throughput {share:.0f}% of baseline"
    )
    ok = p99 < 20 and share >= 70 and bot.errors == 0
    print(
        f"goal (bot p99 < 20 ms, >= 70% of baseline throughput, no errors): {'met' if ok else 'MISSED'}"
        f" (bot p99 {p99:.2f} ms, throughput {share:.0f}%)"
    )


if __name__ == "__main__":
    main()
