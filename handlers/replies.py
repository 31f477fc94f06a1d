"""Replies about analyses: the report for each asker, and the apology when an analysis gave up.

The job worker calls these for every requester of a finished job (the composition root hands
them over as its delivery callbacks); the conversation calls `send_report` for a fresh cached one.
"""

from __future__ import annotations

from bot.core.models import AnalysisJob, ChatTarget, DiagnosisReport, Reply, Requester
from bot.delivery.render import render_markdown, render_text, report_header
from bot.delivery.reports import ReportStore
from bot.delivery.send import Delivery, delivery_key
from handlers import texts
from handlers.scope import ScopeGate, Verdict


def mention_of(requester: Requester) -> list[str]:
    """In groups the asker is @-mentioned; private chats need no mention."""
    return [requester.sender_name or requester.sender_id] if requester.target.is_group else []


def report_reply(report: DiagnosisReport, requester: Requester, *, detail_hint: str) -> Reply:
    md = render_markdown(report, detail_hint=detail_hint)
    return Reply(
        target=requester.target,
        kind="report",
        mention=mention_of(requester),
        title=report_header(report),
        markdown=md.text,
        text=render_text(report),
    )


def key_ident(request_key: str) -> str:
    """The id a user types for a request key: `step:<id>:ec2:w…` → `<id>`, `req:<hex>` → `<hex>`."""
    parts = request_key.split(":")
    return parts[1] if len(parts) > 1 else request_key


def detail_hint(report: DiagnosisReport, request_key: str) -> str:
    """How to ask for the full report: by the step id, else by the request id of the key."""
    ident = report.step_instance_id or key_ident(request_key)
    return texts.DETAIL_HINT.format(ident=ident)


def scope_refusal(verdict: Verdict, key: str, scope: str) -> str:
    """What a chat scoped to another business is told instead of a report (no evidence in it)."""
    ident = key.split(":", 1)[-1].split(":", 1)[0]
    what = f"stepInstanceId={ident}" if key.startswith("step:") else f"request_id={ident}"
    template = texts.OUT_OF_SCOPE if verdict == "outside" else texts.SCOPE_UNKNOWN
    return template.format(what=what, scope=scope, ident=ident)


class ReportReplies:
    def __init__(self, reports: ReportStore, delivery: Delivery, gate: ScopeGate | None = None) -> None:
        self.reports = reports
        self.delivery = delivery
        self.gate = gate

    async def refusal(self, target: ChatTarget, key: str, report: DiagnosisReport) -> str | None:
        """None when `target` may see the report; else what to say instead."""
        if self.gate is None:
            return None
        verdict = await self.gate.verdict(target, report)
        if verdict == "ok":
            return None
        scope = self.gate.scope_of(target)
        return scope_refusal(verdict, key, f"{scope[0]}:{scope[1]}" if scope else "")

    async def send_report(self, requester: Requester, key: str, salt: str) -> None:
        """Send the stored report of `key` to one asker (once per salt) and remember it as theirs."""
        stored = await self.reports.get(key)
        if stored is None:
            return
        target = requester.target
        refusal = await self.refusal(target, key, stored.report)
        if refusal is not None:
            note = Reply(
                target=target, kind="notice", mention=mention_of(requester), text=refusal, markdown=refusal
            )
            await self.delivery.send(
                note, delivery_key("scope", key, salt, target.chat_id, requester.sender_id)
            )
            return
        reply = report_reply(stored.report, requester, detail_hint=detail_hint(stored.report, key))
        await self.delivery.send(
            reply, delivery_key("report", key, salt, target.chat_id, requester.sender_id)
        )
        await self.reports.remember_for(target.channel, target.chat_id, requester.sender_id, key)

    async def send_failure(self, requester: Requester, job: AnalysisJob, salt: str) -> None:
        what = key_ident(job.request_key)
        text = texts.ANALYSIS_FAILED.format(what=what)
        reply = Reply(
            target=requester.target, kind="error", mention=mention_of(requester), text=text, markdown=text
        )
        await self.delivery.send(reply, delivery_key("failure", job.request_key, salt, requester.sender_id))
