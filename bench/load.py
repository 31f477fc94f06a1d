"""Load: N analyses queued at once through the real engine, on one Redis and on a Redis Cluster,
against a bare-pipeline baseline.

The bot is the application `serve` builds (`create_app`: the durable job queue, the job worker
with heartbeats, the report store, the outbox delivery) plus a counting chat channel. N jobs with distinct request keys over the failed steps of the scenario
corpus are submitted at once; each must come back as one delivered report. The sandbox BkLog runs
in its own process, reached over real HTTP.

The baseline runs the same N analyses with the bare pipeline (the services' job analysis: the
same clients, BkLog, concurrency and scrubbing, then the same rendering), with no queue or delivery:
the ratio is what the durable engine costs.

Each run (baseline, bot on one Redis, bot on a three-node Redis Cluster, optionally the bot on the
embedded store) is its own child process, so its RSS is its own; the Redis servers are started
for the run on free ports (`bot.devtools.redislab`) unless `--redis-url` names one.

    python bench/load.py [--analyses 1000] [--concurrency 8] [--redis-url URL] [--stores single,cluster]

Prints per run: wall time and analyses/s, the ratio to the baseline, peak RSS growth per analysis,
and the asyncio task count before and after the run (it must return to its baseline); then the
cluster run as ratios against the single-Redis run of the same invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bot.app import keys as K  # noqa: E402
from bot.app.services import AppOptions, build_services  # noqa: E402
from bot.app.web import create_app  # noqa: E402
from bot.core.logsetup import configure_logging  # noqa: E402
from bot.core.models import AnalysisJob, ChatTarget, Reply, Requester  # noqa: E402
from bot.core.settings import Settings  # noqa: E402
from bot.delivery.port import Part  # noqa: E402
from bot.delivery.render import render_markdown, render_text  # noqa: E402
from bot.devtools.evaluate import SANDBOX_APP, SANDBOX_INDEX_SET  # noqa: E402
from bot.devtools.redislab import ClusterTopology, SingleRedis, redis_server_available  # noqa: E402
from bot.devtools.scenarios import load_scenarios  # noqa: E402


def proc_status() -> dict[str, int]:
    """VmRSS / VmHWM (peak) of this process in KiB."""
    out: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0])
    return out


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


# --------------------------------------------------------------------------- sandbox BkLog (child)


def serve_bklog(port: int) -> None:
    from bot.devtools.sandbox.bklog import create_bklog_app, docs_from_records

    docs: list[dict[str, Any]] = []
    for sc in load_scenarios():
        docs.extend(docs_from_records(sc.logs_text, first_gse_index=len(docs) + 1))
    code, secret, _user = SANDBOX_APP
    app = create_bklog_app(docs, app_code=code, app_secret=secret, index_set_id=SANDBOX_INDEX_SET)
    # The sandbox scans every document per query; the same ~30 steps are asked again and again, so
    # answers are memoised (the window always covers the whole corpus) to keep BkLog off the
    # critical path: the bench measures the bot, not the sandbox.
    memo: dict[str, bytes] = {}

    @web.middleware
    async def memoise(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            data = json.loads(await request.read())
            key = json.dumps(
                {k: v for k, v in data.items() if k not in ("start_time", "end_time")}, sort_keys=True
            )
        except (ValueError, AttributeError):
            return await handler(request)  # type: ignore[no-any-return]
        if key in memo:
            return web.Response(body=memo[key], content_type="application/json")
        resp: web.StreamResponse = await handler(request)
        if resp.status == 200 and isinstance(resp, web.Response) and isinstance(resp.body, bytes):
            memo[key] = resp.body
        return resp

    app.middlewares.insert(0, memoise)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def bklog_process() -> AsyncIterator[str]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve-bklog",
        str(port),
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with session.post(url + "/esquery_search/", json={}) as resp:
                        await resp.read()
                        break
                except aiohttp.ClientError:
                    if proc.returncode is not None or time.monotonic() > deadline:
                        raise RuntimeError("the sandbox BkLog did not start") from None
                    await asyncio.sleep(0.1)
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# --------------------------------------------------------------------------- the bot side


class CountingChannel:
    """A chat channel that accepts every part and counts the replies (first parts) per request."""

    name = "load"

    def __init__(self) -> None:
        self.reports: dict[str, int] = {}
        self.parts = 0
        self.done = asyncio.Event()
        self.expected = 0

    def render(self, reply: Reply) -> list[str]:
        return [reply.text or reply.markdown]

    async def send_part(self, part: Part) -> None:
        self.parts += 1
        key = part.target.reply_context.get("request", "?")
        self.reports[key] = self.reports.get(key, 0) + 1
        if len(self.reports) >= self.expected:
            self.done.set()

    async def already_sent(self, part: Part, *, since_ms: int) -> bool | None:
        return False


def settings_for(bklog_url: str, redis_url: str, concurrency: int, *, cluster: bool = False) -> Settings:
    code, secret, user = SANDBOX_APP
    return Settings(
        redis_url=redis_url,
        redis_cluster=cluster,
        redis_key_prefix=f"jdload:{uuid.uuid4().hex[:8]}:",
        http={"shutdown_grace_s": 2},
        bklog={
            "base_url": bklog_url,
            "index_set_id": SANDBOX_INDEX_SET,
            "app_code": code,
            "app_secret": secret,
            "username": user,
            "retries": 1,
            "timeout_s": 30,
            "lookback_days": 3650,
        },
        worker={"concurrency": concurrency},
    )


def jobs_for(n: int) -> list[AnalysisJob]:
    steps = [sc.expected.step_instance_id for sc in load_scenarios() if sc.expected.step_instance_id]
    return [AnalysisJob(request_key=f"load:{i}", step_instance_id=steps[i % len(steps)]) for i in range(n)]


async def run_bot(settings: Settings, jobs: list[AnalysisJob]) -> dict[str, Any]:
    channel = CountingChannel()
    channel.expected = len(jobs)

    app = await create_app(settings, options=AppOptions(extra_channels=[channel]))
    services = app[K.SERVICES]
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        await asyncio.sleep(1.0)  # loops started, store answering
        tasks_before = len(asyncio.all_tasks())
        tracked_before = services.tasks.active
        rss_before = proc_status()["VmRSS"]
        queue = services.jobs
        start = time.perf_counter()
        for i, job in enumerate(jobs):
            target = ChatTarget(
                channel="load", chat_id="load-group", reply_context={"request": job.request_key}
            )
            await queue.submit(
                job, Requester(target=target, sender_id=f"user{i % 50}", sender_name=f"用户{i % 50}")
            )
        queued_s = time.perf_counter() - start
        await asyncio.wait_for(channel.done.wait(), timeout=max(120.0, len(jobs) * 0.5))
        elapsed = time.perf_counter() - start
        # Let the worker acknowledge the last entries, then the task count must be back where it was.
        deadline = time.monotonic() + 10
        while (
            len(asyncio.all_tasks()) > tasks_before or await queue.depth() > 0
        ) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        status = proc_status()
        return {
            "elapsed": elapsed,
            "queued_s": queued_s,
            "reports": len(channel.reports),
            "duplicates": sum(n - 1 for n in channel.reports.values() if n > 1),
            "lost": len(jobs) - len(channel.reports),
            "depth_after": await queue.depth(),
            "tasks_before": tasks_before,
            "tasks_after": len(asyncio.all_tasks()),
            "tracked_before": tracked_before,
            "tracked_after": services.tasks.active,
            "rss_before": rss_before,
            "rss_after": status["VmRSS"],
            "hwm": status["VmHWM"],
        }
    finally:
        await runner.cleanup()


async def run_baseline(settings: Settings, jobs: list[AnalysisJob], concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)
    async with build_services(settings, options=AppOptions(mode="cli")) as services:

        async def one(job: AnalysisJob) -> None:
            async with gate:
                report = await services.analyze(job)
                render_markdown(report, detail_hint="")
                render_text(report)

        start = time.perf_counter()
        await asyncio.gather(*(one(j) for j in jobs))
        return time.perf_counter() - start


async def drop_prefix(settings: Settings) -> None:
    if not settings.redis_url:
        return
    from bot.core.store import open_store
    from bot.core.topology import RedisTopology

    store = open_store(RedisTopology.from_settings(settings), prefix=settings.redis_key_prefix)
    try:
        keys = [k async for k in store.redis.scan_iter(match=settings.redis_key_prefix + "*", count=1000)]
        for key in keys:  # one by one: on a cluster they live in many slots
            await store.redis.delete(key)
    finally:
        await store.close()


# --------------------------------------------------------------------------- one run per process


async def child_run(args: argparse.Namespace) -> dict[str, Any]:
    """One measured run in this (fresh) process; the parent reads the JSON line it prints."""
    configure_logging(json_lines=False, level="WARNING")
    jobs = jobs_for(args.analyses)
    settings = settings_for(args.bklog_url, args.store_url, args.concurrency, cluster=args.run == "cluster")
    if args.run == "bare":
        rss_before = proc_status()["VmRSS"]
        elapsed = await run_baseline(settings, jobs, args.concurrency)
        return {"elapsed": elapsed, "rss_before": rss_before, "hwm": proc_status()["VmHWM"], "lost": 0}
    try:
        return await run_bot(settings, jobs)
    finally:
        await drop_prefix(settings)


def run_child(kind: str, args: argparse.Namespace, bklog_url: str, store_url: str) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child-run", kind, "--bklog-url", bklog_url, "--store-url", store_url]
    argv += ["--analyses", str(args.analyses), "--concurrency", str(args.concurrency)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


@contextlib.contextmanager
def redis_servers(args: argparse.Namespace, stores: list[str]) -> Iterator[dict[str, str]]:
    """URL per store kind: our own redis-server (or --redis-url) and our own three-node cluster."""
    urls = {"embedded": ""}
    with tempfile.TemporaryDirectory(prefix="jd-load-") as tmp, contextlib.ExitStack() as stack:
        if "single" in stores:
            if args.redis_url:
                urls["single"] = args.redis_url
            else:
                single = SingleRedis(Path(tmp)).start()
                stack.callback(single.close)
                urls["single"] = single.url
        if "cluster" in stores:
            cluster = ClusterTopology(Path(tmp)).start()
            stack.callback(cluster.close)
            urls["cluster"] = cluster.url
        yield urls


LABELS = {"single": "one Redis", "cluster": "Redis Cluster (3 primaries)", "embedded": "embedded store"}


async def main(args: argparse.Namespace) -> int:
    configure_logging(json_lines=False, level="WARNING")
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if any(s != "embedded" for s in stores) and not redis_server_available() and not args.redis_url:
        print("redis-server is not installed: only the embedded store can run (--stores embedded)")
        return 2
    n = args.analyses
    async with bklog_process() as bklog_url:
        # Warm BkLog's memo with one analysis per step, so no run pays for the sandbox's first scans.
        warm = settings_for(bklog_url, "", args.concurrency)
        distinct = {j.step_instance_id: j for j in jobs_for(n)}
        await run_baseline(warm, list(distinct.values()), args.concurrency)
        with redis_servers(args, stores) as urls:
            bare = await asyncio.to_thread(run_child, "bare", args, bklog_url, "")
            runs = {
                kind: await asyncio.to_thread(run_child, kind, args, bklog_url, urls[kind]) for kind in stores
            }

    print(
        f"analyses queued at once: {n}  (worker concurrency {args.concurrency}); each run in its own process"
    )
    print(
        f"baseline:  {bare['elapsed']:.2f} s  {n / bare['elapsed']:.1f} analyses/s (bare pipeline: analyse, scrub, render)"
    )
    ok = True
    for kind, bot in runs.items():
        growth = (bot["hwm"] - bot["rss_before"]) / n
        bot["per_analysis_kib"] = growth
        print(f"-- bot on {LABELS[kind]}")
        print(
            f"   queued in {bot['queued_s']:.2f} s; all reports in {bot['elapsed']:.2f} s: {n / bot['elapsed']:.1f} analyses/s"
        )
        print(f"   ratio bot/baseline throughput: {bare['elapsed'] / bot['elapsed']:.2f}")
        print(
            f"   reports delivered: {bot['reports']}  lost: {bot['lost']}  duplicated: {bot['duplicates']};"
            f" queue depth after: {bot['depth_after']}"
        )
        print(
            f"   asyncio tasks: {bot['tasks_before']} before → {bot['tasks_after']} after;"
            f" tracked background tasks {bot['tracked_before']} → {bot['tracked_after']}"
        )
        print(
            f"   RSS: {mib(bot['rss_before'])} app ready, peak (VmHWM) {mib(bot['hwm'])}, {mib(bot['rss_after'])} after;"
            f" peak growth per analysis {growth:.1f} KiB"
        )
        ok = ok and bot["lost"] == 0 and bot["duplicates"] == 0 and bot["tasks_after"] <= bot["tasks_before"]
    if "single" in runs and "cluster" in runs:
        single, cluster = runs["single"], runs["cluster"]
        print("-- Redis Cluster vs one Redis (same invocation)")
        print(f"   throughput ratio cluster/single: {single['elapsed'] / cluster['elapsed']:.2f}")
        print(
            f"   peak RSS growth per analysis ratio cluster/single: "
            f"{cluster['per_analysis_kib'] / max(single['per_analysis_kib'], 0.1):.2f}"
            f" ({cluster['per_analysis_kib']:.1f} vs {single['per_analysis_kib']:.1f} KiB)"
        )
    print("result:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-bklog":
        serve_bklog(int(sys.argv[2]))
        raise SystemExit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--analyses", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--redis-url", default=os.environ.get("JOB_DOCTOR_REDIS_URL", ""))
    parser.add_argument("--stores", default="single,cluster", help="runs among single,cluster,embedded")
    parser.add_argument("--child-run", dest="run", default="", help=argparse.SUPPRESS)
    parser.add_argument("--bklog-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--store-url", default="", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.run:
        print(json.dumps(asyncio.run(child_run(parsed))))
        raise SystemExit(0)
    raise SystemExit(asyncio.run(main(parsed)))
