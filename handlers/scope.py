"""Which business a chat may see: a group scoped to one business gets reports only of its steps.

`CHAT__GROUP_SCOPES` maps a chat name (or id) to `biz:<id>` / `biz_set:<id>`. Step ids are sequential,
so without this anyone the bot accepts reads any step's evidence by guessing ids. The decision is
one cheap BK-JOB call (`get_job_instance_status` of the report's job instance in the chat's scope:
BK-JOB answers "not found" for a job of another business), kept for a day in the store.

Usage::

    verdict = await gate.verdict(requester.target, report)   # "ok" | "outside" | "unknown"
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import structlog

from bot.clients.bkjob import BkJobClient, InstanceNotFound
from bot.clients.gateway import ApiError, GatewayError
from bot.core.models import ChatTarget, DiagnosisReport
from bot.core.scope import parse_scope as core_parse_scope
from bot.core.store import Store
from handlers.ids import IdRef

log = structlog.get_logger(__name__)

Verdict = Literal["ok", "outside", "unknown"]
_KEEP_S = 86400.0


def parse_scope(value: str) -> tuple[str, int]:
    """`biz:2` → ("biz", 2); raises ValueError for anything else."""
    scope = core_parse_scope(value)
    return scope.type, scope.id


class ScopeGate:
    def __init__(self, scopes: Mapping[str, str], bkjob: BkJobClient | None, store: Store) -> None:
        self.scopes = {chat: parse_scope(value) for chat, value in scopes.items()}
        self.bkjob = bkjob
        self.store = store

    def scope_of(self, target: ChatTarget) -> tuple[str, int] | None:
        """The chat's business, when the gate applies to it (a scope is set and BK-JOB is configured)."""
        if self.bkjob is None or not self.scopes:
            return None
        return self.scopes.get(target.chat_name) or self.scopes.get(target.chat_id)

    def link_outside(self, target: ChatTarget, ref: IdRef) -> bool:
        """A link that names another business than the chat's: refused without asking anyone."""
        scope = self.scope_of(target)
        if scope is None or ref.bk_scope_id is None:
            return False
        return (ref.bk_scope_type or "biz", ref.bk_scope_id) != scope

    async def verdict(self, target: ChatTarget, report: DiagnosisReport) -> Verdict:
        scope = self.scope_of(target)
        if scope is None:
            return "ok"
        task, step = report.task_instance_id, report.step_instance_id
        if task is None or self.bkjob is None:
            return "unknown"  # the logs did not say which job: nothing proves it is this business's
        kept = self.store.key("scope", scope[0], scope[1], task, step or 0)
        known = await self.store.get_json(kept)
        if known in ("ok", "outside"):
            return "ok" if known == "ok" else "outside"
        try:
            status = await self.bkjob.get_job_instance_status(
                scope[1], task, bk_scope_type=scope[0], return_ip_result=False
            )
        except InstanceNotFound:
            decided: Verdict = "outside"
        except GatewayError as exc:
            # Busy, internal error, no permission, unreachable: nothing is proven either way, and a
            # passing error must not be remembered as "another business" for a day.
            code = exc.code if isinstance(exc, ApiError) else None
            log.warning("scope_check_failed", error=type(exc).__name__, code=code)
            return "unknown"
        else:
            steps = {s.step_instance_id for s in status.steps}
            decided = "ok" if step is None or step in steps else "outside"
        await self.store.set_json(kept, decided, ttl_s=_KEEP_S)
        return decided
