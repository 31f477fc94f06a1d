"""Collect one step's engine log chain from BkLog (analysis-method.md, steps 1–4).

step id → BkLog lines naming the step (plus `<step>_<n>` keys) → the traceIds those lines
carry (a chain can span several; each retry is its own run) → one query per traceId, latest
run first → merged, de-duplicated, ordered records. A traceId ending in a digit is searched as a
wildcard term (the standard analyzer glues it to a spanId starting with a digit, so a phrase
query would miss those lines); others by phrase, retried as a wildcard when asked to and the
phrase found nothing. Queries are bounded and listed in the result.
When nothing is found, one probe tells "no lines for this id" from "no engine lines at all".
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from bot.clients.bklog import BkLogClient, QueryTemplates, SearchResult
from bot.clients.gateway import GatewayConfigError, GatewayError
from bot.diagnosis.extract import ids_in
from bot.diagnosis.parser import dedupe, order, parse_documents
from bot.diagnosis.records import LogRecord

log = structlog.get_logger(__name__)


@dataclass
class QueryRun:
    name: str
    query: str
    hits: int
    new_lines: int
    error: str = ""

    def describe(self) -> str:
        tail = f"错误：{self.error}" if self.error else f"{self.hits} 条，新增 {self.new_lines} 条"
        return f"[{self.name}] {self.query} → {tail}"


@dataclass
class Collected:
    records: list[LogRecord] = field(default_factory=list)
    queries: list[QueryRun] = field(default_factory=list)
    trace_ids: list[str] = field(default_factory=list)  # every trace seen on the step's lines, in order
    step_instance_id: int | None = None
    task_instance_id: int | None = None
    window: tuple[datetime, datetime] | None = None
    error: str = ""  # BkLog failed (unreachable, 5xx, timeouts): user-readable
    config_error: str = ""  # credentials, permission or index set: nothing works until configured
    engine_lines_in_window: int | None = None  # only probed when nothing was found
    truncated: bool = False
    budget_exhausted: bool = False

    @property
    def empty(self) -> bool:
        return not self.records


class Collector:
    def __init__(self, bklog: BkLogClient, templates: QueryTemplates, *, max_queries: int = 12) -> None:
        self.bklog = bklog
        self.templates = templates
        self.max_queries = max(2, max_queries)

    async def collect(
        self,
        *,
        start: datetime,
        end: datetime,
        step_instance_id: int | None = None,
        request_id: str | None = None,
    ) -> Collected:
        out = Collected(step_instance_id=step_instance_id, window=(start, end))
        seen: dict[str, LogRecord] = {}
        try:
            if step_instance_id is not None:
                await self._from_step(out, seen, step_instance_id, start, end)
            elif request_id is not None:
                await self._from_request(out, seen, request_id.lower(), start, end)
        except GatewayConfigError as exc:
            out.config_error = exc.zh
        except GatewayError as exc:
            out.error = exc.zh
        out.records = order(dedupe(seen.values()))
        if out.empty and not out.error and not out.config_error:
            await self._probe_engine(out, start, end)
        return out

    # ------------------------------------------------------------------ queries

    def _budget_left(self, out: Collected) -> int:
        return self.max_queries - len(out.queries)

    async def _run(
        self,
        out: Collected,
        seen: dict[str, LogRecord],
        name: str,
        start: datetime,
        end: datetime,
        **ids: object,
    ) -> list[LogRecord]:
        """Run one named query; returns the records it added."""
        if self._budget_left(out) <= 0:
            out.budget_exhausted = True
            return []
        query = self.templates.render(name, **ids)
        entry = QueryRun(name, query, 0, 0)
        out.queries.append(entry)
        result: SearchResult = await self.bklog.search(query, start, end)
        entry.hits = len(result.docs)
        out.truncated = out.truncated or result.truncated
        # Up to page_size × max_pages documents: parsed in a worker thread, not on the event loop.
        records = await asyncio.to_thread(parse_documents, result.docs, self.templates.layout)
        added = self._merge(seen, records)
        entry.new_lines = len(added)
        log.info("bklog_query", name=name, hits=entry.hits, new=entry.new_lines)
        return added

    async def _trace_query(
        self,
        out: Collected,
        seen: dict[str, LogRecord],
        trace: str,
        start: datetime,
        end: datetime,
        *,
        always_fallback: bool = False,
    ) -> list[LogRecord]:
        """The lines of one trace: by the trace field when the install extracts it (exact), else by
        the line's header, falling back to a wildcard term when the analyzer glued the traceId to
        its spanId (only possible when it ends in a digit)."""
        if self.templates.layout.trace_field:
            return await self._run(out, seen, "trace_field", start, end, trace_id=trace)
        if trace[-1].isdigit():
            # Lines whose spanId starts with a digit hold `<traceId>,<spanId>` as one token: a phrase
            # query would find only the others, so the wildcard (which finds both) goes first.
            return await self._run(out, seen, "trace_wildcard", start, end, trace_id=trace)
        added = await self._run(out, seen, "trace_id", start, end, trace_id=trace)
        if not added and always_fallback and self._budget_left(out) > 0:
            added = await self._run(out, seen, "trace_wildcard", start, end, trace_id=trace)
        return added

    @staticmethod
    def _merge(seen: dict[str, LogRecord], records: Iterable[LogRecord]) -> list[LogRecord]:
        added = []
        for rec in records:
            key = rec.raw
            if key not in seen:
                seen[key] = rec
                added.append(rec)
        return added

    async def _follow_traces(
        self, out: Collected, seen: dict[str, LogRecord], traces: list[str], start: datetime, end: datetime
    ) -> None:
        queried: set[str] = set()
        pending = list(traces)
        while pending:
            trace = pending.pop(0)
            if trace in queried:
                continue
            if self._budget_left(out) <= 0:
                out.budget_exhausted = True
                return
            queried.add(trace)
            added = await self._trace_query(out, seen, trace, start, end)
            # A hop found through this trace may name further traces of the same step run.
            for t in self._related_traces(added, out.step_instance_id):
                if t not in queried and t not in pending:
                    pending.append(t)
                    if t not in out.trace_ids:
                        out.trace_ids.append(t)

    @staticmethod
    def _related_traces(records: Iterable[LogRecord], step_id: int | None) -> list[str]:
        found: list[str] = []
        for rec in records:
            if not rec.trace_id or rec.trace_id in found:
                continue
            ids = ids_in(rec)
            if step_id is None or ids.step == step_id:
                found.append(rec.trace_id)
        return found

    async def _from_step(
        self, out: Collected, seen: dict[str, LogRecord], step_id: int, start: datetime, end: datetime
    ) -> None:
        first, keyed = await asyncio.gather(
            self._run(out, seen, "step_id", start, end, step_instance_id=step_id),
            self._run(out, seen, "step_key", start, end, step_instance_id=step_id),
        )
        step_lines = order(dedupe([*first, *keyed]))
        out.task_instance_id = _most_common(ids_in(r).task for r in step_lines)
        out.trace_ids = _traces_latest_run_first(step_lines)
        await self._follow_traces(out, seen, list(out.trace_ids), start, end)

    async def _from_request(
        self, out: Collected, seen: dict[str, LogRecord], request_id: str, start: datetime, end: datetime
    ) -> None:
        added = await self._trace_query(out, seen, request_id, start, end, always_fallback=True)
        out.trace_ids = [request_id]
        if not added:
            return
        out.step_instance_id = _most_common(ids_in(r).step for r in added)
        out.task_instance_id = _most_common(ids_in(r).task for r in added)
        if out.step_instance_id is None:
            return
        # The request names a step: pull that step's lines of the same run so the chain is complete.
        runs = {ids_in(r).execute_count for r in added} - {None}
        step_added = await self._run(out, seen, "step_id", start, end, step_instance_id=out.step_instance_id)
        more = [
            r.trace_id
            for r in order(dedupe(step_added))
            if r.trace_id
            and r.trace_id not in out.trace_ids
            and (not runs or ids_in(r).execute_count in runs)
            and ids_in(r).execute_count is not None
        ]
        for t in dict.fromkeys(more):
            out.trace_ids.append(t)
        await self._follow_traces(out, seen, out.trace_ids[1:], start, end)

    async def _probe_engine(self, out: Collected, start: datetime, end: datetime) -> None:
        if self._budget_left(out) <= 0:
            return
        query = self.templates.render("engine_probe")
        entry = QueryRun("engine_probe", query, 0, 0)
        out.queries.append(entry)
        try:
            result = await self.bklog.search(query, start, end, size_cap=1)
        except GatewayError as exc:
            entry.error = str(exc)[:200]
            return
        entry.hits = result.total
        out.engine_lines_in_window = result.total


def _most_common(values: Iterable[int | None]) -> int | None:
    counts = Counter(v for v in values if v is not None)
    return counts.most_common(1)[0][0] if counts else None


def _traces_latest_run_first(records: list[LogRecord]) -> list[str]:
    """Trace ids on the step's lines, those of the latest executeCount first, then by time."""
    run_of: dict[str, int] = {}
    order_seen: list[str] = []
    for rec in records:
        if not rec.trace_id:
            continue
        if rec.trace_id not in order_seen:
            order_seen.append(rec.trace_id)
        ec = ids_in(rec).execute_count
        if ec is not None:
            run_of[rec.trace_id] = max(run_of.get(rec.trace_id, -1), ec)
    return sorted(order_seen, key=lambda t: (-run_of.get(t, -1), order_seen.index(t)))
