"""Digest benchmark: N failed steps through one whole digest run, fakes at a fixed latency.

The sandbox BK-JOB and BkLog run in a child process (they are "remote" servers: their CPU does not
compete with the bot's) and answer every request after a fixed delay. The failed steps are clones
of the scenario corpus (fresh step/job/trace ids, spread over the 24 h window), so every step has
a real engine chain to collect and diagnose.

Printed, all from one run:
* per-step critical path: one step alone (its job-status call + its analysis), measured per
  scenario template with nothing else running;
* the whole digest's wall time as a ratio to N × per-step critical path / concurrency (goal ≤ 1.2);
* BkLog queries per step (the analyzer's count and the requests the fake BkLog served).

    python bench/digest.py [--steps 500] [--latency-ms 100] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import functools
import json
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `tests.digest.world` from a checkout

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from bot.app.services import build_bkjob, build_bklog
from bot.core.logsetup import configure_logging
from bot.devtools.sandbox import REQUESTS, lucene
from bot.devtools.scenarios import load_scenarios
from bot.digest.build import DigestBuilder, digest_analyzer
from bot.digest.collect import DigestWindow, FailedJob, failed_steps_of
from tests.digest.world import World, fire_at, world_settings

FIRE = fire_at("2025-03-10")
_IDS = re.compile(r"\b[0-9a-f]{32}\b|\d{8,}")
_TRACE = re.compile(r"\b[0-9a-f]{32}\b")


def templates() -> list[str]:
    return [
        sc.name
        for sc in load_scenarios()
        if sc.expected.step_instance_id is not None and sc.expected.task_instance_id is not None
    ]


def build_world(steps: int) -> World:
    """Deterministic: parent and child build the same world from the same arguments."""
    world = World()
    names = templates()
    span = 23 * 3600 / max(1, steps)
    for i in range(steps):
        world.add_scenario(
            names[i % len(names)],
            biz=2 + i % 2,
            at=FIRE - timedelta(seconds=600 + i * span),
            job_name=f"bench-{names[i % len(names)]}-{i}",
            fresh_ids=True,
        )
    return world


# --------------------------------------------------------------------------- child: the fakes


def serve_fakes(steps: int, latency_s: float) -> None:
    world = build_world(steps)
    # BkLog routing: each query names a step id or a traceId; it searches that step's documents
    # only (the sandbox matches documents one by one, and 500 chains in one list would measure
    # the fake, not the bot).
    by_token: dict[str, list[dict[str, Any]]] = {}
    for step_id, step_docs in world.logs.items():
        by_token[str(step_id)] = step_docs
        for doc in step_docs:
            for trace in _TRACE.findall(str(doc.get("log", ""))):
                by_token.setdefault(trace, step_docs)
    # The sandbox analyses each document's text on first sight (a bounded cache): done here, before
    # the run, with an unbounded cache, so the fake answers in its fixed latency and the bench
    # measures the bot rather than the fake's CPU on a shared machine.
    lucene.tokenize = functools.cache(lucene.tokenize.__wrapped__)
    for token, docs_of in by_token.items():
        for doc in docs_of:
            text = str(doc.get("log", ""))
            if token in text:
                lucene.tokenize(text)
    current: contextvars.ContextVar[tuple[dict[str, Any], ...]] = contextvars.ContextVar("docs", default=())

    def docs() -> tuple[dict[str, Any], ...]:
        return current.get()

    @web.middleware
    async def delay(request: web.Request, handler: Handler) -> web.StreamResponse:
        await asyncio.sleep(latency_s)
        return await handler(request)

    @web.middleware
    async def route(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.body_exists:  # already read by the gateway middleware: served from its cache
            body = await request.json()
            query = str(body.get("query_string") or body.get("keyword") or "")
            for token in _IDS.findall(query):
                if token in by_token:
                    # Only documents holding the id can match it: the sandbox's (slow, faithful)
                    # analyzer then checks a handful instead of every line of the chain.
                    current.set(tuple(d for d in by_token[token] if token in str(d.get("log", ""))))
                    break
        return await handler(request)

    bkjob, bklog = world.bkjob_app(), world.bklog_app(docs)
    bkjob.middlewares.append(delay)
    bklog.middlewares.extend([delay, route])

    async def count(request: web.Request) -> web.Response:
        app = bklog if request.match_info["which"] == "bklog" else bkjob
        return web.json_response({"requests": len(app[REQUESTS]), "cpu_s": time.process_time()})

    async def main() -> None:
        runners = []
        urls = []
        for app in (bkjob, bklog):
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            runners.append(runner)
            urls.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
        admin = web.Application()
        admin.router.add_get("/count/{which}", count)
        admin_runner = web.AppRunner(admin, access_log=None)
        await admin_runner.setup()
        await web.TCPSite(admin_runner, "127.0.0.1", 0).start()
        urls.append(f"http://127.0.0.1:{admin_runner.addresses[0][1]}")
        print(json.dumps({"bkjob": urls[0], "bklog": urls[1], "admin": urls[2]}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent ends
        for r in [*runners, admin_runner]:
            await r.cleanup()

    asyncio.run(main())


# --------------------------------------------------------------------------- parent: the bot


async def served(session: aiohttp.ClientSession, admin: str, which: str) -> tuple[int, float]:
    """Requests the fake has served so far, and the fakes' process CPU time."""
    async with session.get(f"{admin}/count/{which}") as resp:
        body = await resp.json()
    return int(body["requests"]), float(body["cpu_s"])


async def bench(args: argparse.Namespace, urls: dict[str, str]) -> None:
    world = build_world(args.steps)
    settings = world_settings(
        bkjob_url=urls["bkjob"],
        bklog_url=urls["bklog"],
        biz_ids=[2, 3],
        digest={"concurrency": args.concurrency},
        bklog={"timeout_s": 30},
        bkjob={"timeout_s": 30},
    )
    window = DigestWindow.before(FIRE)
    names = templates()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        bkjob = build_bkjob(settings, session)
        assert bkjob is not None
        # Not the cap under test here: concurrency is. (The production default is 20 queries/s.)
        analyzer = digest_analyzer(settings, build_bklog(settings, session), queries_per_s=1e6)
        builder = DigestBuilder(settings, bkjob=bkjob, analyzer=analyzer, concurrency=args.concurrency)

        # 1. per-step critical path, per template, each step alone
        critical: dict[str, float] = {}
        queries_alone: dict[str, int] = {}
        for i, name in enumerate(names):
            job = world.jobs[i]
            fj = FailedJob(int(job.bk_scope_id), job.job_instance_id, job.name, job.status, None)
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                steps = await failed_steps_of(bkjob, fj, settings.digest.failed_statuses)
                result = await builder.analyse(steps[0], window)
                times.append(time.perf_counter() - t0)
            critical[name] = statistics.median(times)
            queries_alone[name] = result.queries
        per_step = [critical[names[i % len(names)]] for i in range(args.steps)]
        cp_mean = statistics.fmean(per_step)

        # 2. the whole digest
        bklog_before, fake_cpu_before = await served(session, urls["admin"], "bklog")
        t0, c0 = time.perf_counter(), time.process_time()
        digest = await builder.build(window)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        bklog_after, fake_cpu_after = await served(session, urls["admin"], "bklog")
        bklog_requests = bklog_after - bklog_before

    ideal = args.steps * cp_mean / args.concurrency
    sigs = Counter(
        g.signature or f"({g.stage}/{g.fault_side})" for g in digest.groups for _ in range(g.count)
    )
    print(
        f"steps: {args.steps} failed steps in {digest.total_failed_jobs} jobs, {len(names)} scenario templates"
    )
    print(
        f"fixed latency per request: {args.latency_ms:g} ms (BK-JOB and BkLog); concurrency {args.concurrency}"
    )
    print(
        f"per-step critical path (alone, status call + analysis): mean {cp_mean * 1000:.1f} ms "
        f"(min {min(critical.values()) * 1000:.1f}, max {max(critical.values()) * 1000:.1f})"
    )
    print(f"digest wall time: {wall:.2f} s; N x critical path / concurrency: {ideal:.2f} s")
    print(f"bot CPU during the digest: {cpu:.2f} s ({cpu / args.steps * 1000:.1f} ms per step, all threads)")
    print(f"fakes' CPU during the digest: {fake_cpu_after - fake_cpu_before:.2f} s (other process)")
    print(f"ratio wall / (N x critical path / concurrency): {wall / ideal:.3f}  (goal <= 1.2)")
    print(
        f"BkLog queries per step: {digest.stats.bklog_queries / args.steps:.2f} (analyzer), "
        f"{bklog_requests / args.steps:.2f} (requests served); alone: "
        f"{statistics.fmean(queries_alone[names[i % len(names)]] for i in range(args.steps)):.2f}"
    )
    print(
        f"analysed {digest.stats.steps_analysed}, failed analyses {digest.analysis_failed}, "
        f"groups {len(digest.groups)}, read problems {len(digest.problems)}"
    )
    print("steps per group: " + ", ".join(f"{k} {v}" for k, v in sigs.most_common()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--latency-ms", type=float, default=100.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--serve-fakes", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    configure_logging(json_lines=False, level="WARNING")
    if args.serve_fakes:
        serve_fakes(args.steps, args.latency_ms / 1000)
        return
    cmd = [
        sys.executable,
        __file__,
        "--serve-fakes",
        f"--steps={args.steps}",
        f"--latency-ms={args.latency_ms}",
    ]
    child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        urls = json.loads(child.stdout.readline())
        asyncio.run(bench(args, urls))
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=30)


if __name__ == "__main__":
    main()
