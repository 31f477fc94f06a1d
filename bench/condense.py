"""Condensation benchmark (issue 4): a synthetic 100k-line chain with the decisive lines buried in it.

Prints the tokens handed on to a model, key-line recall, and the time to condense as a ratio to
the time to merely parse the same lines, measured side by side in one run (shared machines are
noisy, absolute times are not comparable between runs).

    python bench/condense.py [--lines 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from bot.diagnosis.condense import condense, estimate_tokens
from bot.diagnosis.parser import parse_text

TASK, STEP, GSE = 20026160406, 20031265375, 20045800001
TRACE_A, TRACE_B = "84a2e275a062728b9b54aab16dea4289", "5b1f0c2d9e8a7b6c5d4e3f2a1b0c9d8e"
PFX = f"Job:{TASK}-GseTask:{GSE}:{STEP}:0"

DECISIVE = [
    f"[{PFX}]: Analyse execute object task result, result: ScriptExecuteObjectTaskResult[agentId=020000000052540079809816967513755991, atomicTaskId=0, status=5, errorCode=117, errorMsg='agent offline', startTime=1717038543000, endTime=1717038544000, exitCode=0, tag='', contentLength=0]",
    f"Finish gse task, task:{PFX}, executeResult:2",
    f"Refresh step according to gse task status, stepInstanceId: {STEP}, gseTaskStatus: FAIL, batch: 0",
]


def line(ts: float, level: str, trace: str, thread: str, logger: str, msg: str) -> str:
    t = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}"
    return f"[{t}] {level:>5} [job-execute,{trace},{random.randbytes(8).hex()}] 6 --- [{thread}] {logger:<40} : {msg}"


def synthetic_chain(n: int, seed: int = 7) -> tuple[str, list[str]]:
    random.seed(seed)
    ts = 1717038540.0
    out: list[str] = []
    head = [
        (TRACE_A, "c.t.b.j.e.s.impl.TaskExecuteServiceImpl", f"Start task, taskInstanceId={TASK}"),
        (TRACE_A, "c.t.b.j.e.engine.listener.StepListener", f"Start step, stepInstanceId={STEP}"),
        (TRACE_B, "c.t.b.j.e.e.executor.GseTaskManager", f"[{PFX}] Sending task to gse server"),
        (
            TRACE_B,
            "c.t.b.j.e.e.executor.GseTaskManager",
            f"[{PFX}] Start gse task successfully, gseTaskId: GT1",
        ),
    ]
    for trace, logger, msg in head:
        ts += 0.01
        out.append(line(ts, "INFO", trace, "execute-1", logger, msg))
    body = n - len(head) - len(DECISIVE)
    bury = sorted(random.sample(range(body), len(DECISIVE)))
    d = 0
    for i in range(body):
        ts += 0.005
        if d < len(DECISIVE) and i == bury[d]:
            out.append(
                line(ts, "INFO", TRACE_B, "result-1", "c.t.b.j.e.e.r.ScriptResultHandleTask", DECISIVE[d])
            )
            d += 1
            continue
        r = random.random()
        if r < 0.6:
            msg = f"[{PFX}]: Start pull gse task result, times: {i + 1}"
            out.append(line(ts, "INFO", TRACE_B, "result-1", "c.t.b.j.e.e.r.ScriptResultHandleTask", msg))
        elif r < 0.8:
            out.append(
                line(
                    ts,
                    "INFO",
                    "",
                    "execute-scheduler-3",
                    "e.e.r.h.ResultHandleTaskKeepaliveManager",
                    "Refresh task keepalive info start...",
                )
            )
        else:
            other = random.randint(20031000000, 20031999999)
            msg = f"Handle step event: StepEvent[action=14, actionDesc=REFRESH, jobInstanceId={other - 5000}, stepInstanceId={other}, batch=null, source=null, time=2024-05-30T11:09:00.1], duration: 3ms"
            out.append(
                line(
                    ts,
                    "INFO",
                    random.randbytes(16).hex(),
                    "step.service.job.execute-2",
                    "c.t.b.j.e.engine.listener.StepListener",
                    msg,
                )
            )
    return "\n".join(out) + "\n", DECISIVE


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    text, decisive = synthetic_chain(args.lines)
    parse_times, condense_times = [], []
    result = None
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        records = parse_text(text)
        t1 = time.perf_counter()
        result = condense(records, step_instance_id=STEP, token_budget=6000)
        t2 = time.perf_counter()
        parse_times.append(t1 - t0)
        condense_times.append(t2 - t1)
    assert result is not None
    found = sum(1 for d in decisive if any(d in r.raw for r in result.key_lines) and d in result.text)
    parse_s, condense_s = statistics.median(parse_times), statistics.median(condense_times)
    input_tokens = estimate_tokens(text)
    print(f"lines in chain:            {args.lines}")
    print(f"tokens in raw chain:       {input_tokens}")
    print(
        f"tokens handed on:          {result.tokens} (budget 6000, {result.tokens / input_tokens:.4%} of raw)"
    )
    print(f"key-line recall:           {found}/{len(decisive)}")
    print(
        f"condense / parse time:     {condense_s / parse_s:.2f}x  (parse {parse_s:.2f}s, condense {condense_s:.2f}s, median of {args.repeat})"
    )


if __name__ == "__main__":
    main()
