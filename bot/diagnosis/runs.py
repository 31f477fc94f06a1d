"""The runs of a step: ids of every record completed from context, and records grouped by executeCount.

Usage::

    view = select_run(records, step_instance_id=S)   # latest executeCount of step S
    by_run = runs(records, S)                        # {0: [...], 1: [...]}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from bot.diagnosis.extract import RecordIds, ids_in, parse_event
from bot.diagnosis.phases import Classification, classify
from bot.diagnosis.records import LogRecord

__all__ = ["RunView", "attribute", "latest_run", "runs", "select_run"]


def attribute(records: Sequence[LogRecord]) -> list[RecordIds]:
    """Ids of every record, completed from context.

    A parsed record without (some) ids inherits them from the last record of the same thread and
    trace that had ids (e.g. `[BaseBkApiClient]` lines inside a GSE dispatch); an unparsed record
    inherits from the record before it. Records must be in time order.
    """
    ctx: dict[tuple[str | None, str | None], RecordIds] = {}
    out: list[RecordIds] = []
    prev: RecordIds | None = None
    for rec in records:
        own = ids_in(rec)
        if not rec.parsed:
            ids = own.inherit(prev)
        else:
            key = (rec.trace_id, rec.thread)
            c = ctx.get(key)
            if c is not None and own.step is not None and _is_run_boundary(rec.message):
                # a (re)start of the step opens a new run: the thread's old executeCount is stale
                c = RecordIds(task=c.task, step=c.step, trace_id=c.trace_id)
            ids = own.inherit(c)
            if not own.empty:
                ctx[key] = ids
        out.append(ids)
        prev = ids
    return out


_BOUNDARY_PREFIXES = ("Start step,", "Start rolling step,", "Retry-fail for step", "Retry-all for step")
_BOUNDARY_STEP_ACTIONS = frozenset({1, 3, 7})  # START, RETRY_FAIL, RETRY_ALL


def _is_run_boundary(message: str) -> bool:
    if message.startswith(_BOUNDARY_PREFIXES):
        return True
    if "StepEvent[" in message:
        ev = parse_event(message)
        return ev is not None and ev.kind == "StepEvent" and ev.action in _BOUNDARY_STEP_ACTIONS
    return False


def _run_indices(
    records: Sequence[LogRecord], ids: Sequence[RecordIds], step_id: int
) -> dict[int, list[int]]:
    """Indices of the step's records per executeCount.

    Lines of the step without an executeCount (step events, `Start step`, `Refresh step ...`) join the
    run in progress; after a run boundary (start/retry of the step) they wait for the next executeCount
    seen, or, if none follows, form the run after the last one seen.
    """
    out: dict[int, list[int]] = {}
    pending: list[int] = []
    current: int | None = None
    after_boundary = False
    for i, rec in enumerate(records):
        rid = ids[i]
        if rid.step != step_id:
            continue
        if rid.execute_count is not None:
            c = rid.execute_count
            if pending:
                out.setdefault(c, []).extend(pending)
                pending.clear()
            out.setdefault(c, []).append(i)
            current = c
            after_boundary = False
            continue
        if rec.parsed and _is_run_boundary(rec.message):
            after_boundary = True
        if after_boundary or current is None:
            pending.append(i)
        else:
            out[current].append(i)
    if pending:
        c = 0 if current is None else current + 1
        out.setdefault(c, []).extend(pending)
    for v in out.values():
        v.sort()
    return dict(sorted(out.items()))


def runs(records: Sequence[LogRecord], step_id: int) -> dict[int, list[LogRecord]]:
    """The step's records grouped by executeCount (0 = first run, +1 per retry), in time order.

    `records` must be de-duplicated and ordered (`parser.dedupe`, `parser.order`).
    """
    idx = _run_indices(records, attribute(records), step_id)
    return {c: [records[i] for i in v] for c, v in idx.items()}


def latest_run(records: Sequence[LogRecord], step_id: int) -> int | None:
    """The executeCount diagnosed by default: the latest run of the step (None when it has no lines)."""
    r = runs(records, step_id)
    return max(r) if r else None


@dataclass(frozen=True, slots=True)
class RunView:
    """The records of one run of a step: its own lines plus the chain lines around it
    (task creation before the first run, job events, notification/callback after it)."""

    step_instance_id: int | None
    execute_count: int | None
    records: list[LogRecord]
    ids: list[RecordIds]
    classes: list[Classification]
    run_counts: dict[int, int]  # records per executeCount of the step (all runs)
    run_indices: dict[int, list[int]] = field(default_factory=dict)  # into the chain's record list
    task_instance_id: int | None = None
    indices: list[int] = field(default_factory=list)  # chain index of each of `records`

    @property
    def trace_ids(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.records:
            if r.trace_id:
                seen.setdefault(r.trace_id, None)
        return list(seen)


def select_run(
    records: Sequence[LogRecord],
    step_instance_id: int | None,
    execute_count: int | None = None,
    *,
    ids: Sequence[RecordIds] | None = None,
) -> RunView:
    """The run to diagnose: `execute_count` when given, else the latest run of the step.

    Without a step id (or when no line names the step), every record is the run. `records` must be
    de-duplicated and ordered.
    """
    ids = list(ids) if ids is not None else attribute(records)
    run_idx = _run_indices(records, ids, step_instance_id) if step_instance_id is not None else {}
    run_counts = {c: len(v) for c, v in run_idx.items()}
    if not run_idx:
        counts = [i.execute_count for i in ids if i.execute_count is not None]
        chosen = execute_count if execute_count is not None else (max(counts) if counts else None)
        keep = list(range(len(records)))
    else:
        chosen = execute_count if execute_count is not None else max(run_idx)
        if chosen not in run_idx:
            keep = []
        else:
            own = set(run_idx[chosen])
            tasks = Counter(ids[i].task for i in own if ids[i].task is not None)
            task = tasks.most_common(1)[0][0] if tasks else None
            start = 0 if chosen == min(run_idx) else min(own)
            later = [c for c in run_idx if c > chosen]
            end = min(run_idx[min(later)]) if later else len(records)
            keep = [
                i
                for i in range(start, end)
                if i in own or (ids[i].step is None and (task is None or ids[i].task in (None, task)))
            ]
    recs = [records[i] for i in keep]
    kept_ids = [ids[i] for i in keep]
    tasks = Counter(i.task for i in kept_ids if i.task is not None)
    return RunView(
        step_instance_id=step_instance_id,
        execute_count=chosen,
        records=recs,
        ids=kept_ids,
        classes=[classify(r) for r in recs],
        run_counts=run_counts,
        run_indices=run_idx,
        task_instance_id=tasks.most_common(1)[0][0] if tasks else None,
        indices=keep,
    )
