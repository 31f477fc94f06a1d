"""The model's part of a diagnosis: one call on the critical path, bounded tools, verified quotes.

`llm_diagnose` never raises for model trouble: it returns an `LlmResult` whose `report` is None
when the caller must use the rule-based report, with `outcome` saying why (for metrics and the
notice in the report).

Merge rule for contradictions: when the rules matched a catalog signature with confidence
>= 0.8 and the model names a different stage or fault side, the report keeps the RULES' stage
and fault side, adds a notice, and caps confidence. A signature is an exact match on collected
lines and the daily digest groups by (signature, stage, fault_side); letting a model relabel a
known signature would split one failure class across groups and cannot be verified, while its
narrative is still shown and the notice asks a human to look.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog

from bot.core.markup import defuse, defuse_mentions
from bot.core.models import FAULT_SIDE_ZH, STAGE_ZH, Actions, DiagnosisReport
from bot.llm.budget import BUDGET_NOTICE, TokenBudget
from bot.llm.client import (
    Completion,
    LlmClient,
    LlmError,
    LlmRateLimited,
    LlmRejected,
    LlmTimeout,
    ToolCall,
    Usage,
)
from bot.llm.prompts import PromptLibrary
from bot.llm.schema import ModelReport, ReportInvalid, has_cjk, parse_report, response_format
from bot.llm.scrub import Scrubber, SecretLeak
from bot.llm.verify import VerifyResult, verify_evidence

log = structlog.get_logger(__name__)

Outcome = Literal[
    "ok",
    "fallback_timeout",
    "fallback_rate_limited",
    "fallback_error",
    "fallback_invalid",
    "budget_exhausted",
]

STRONG_SIGNATURE = 0.8
CONTRADICTION_CONFIDENCE_CAP = 0.6
DROPPED_QUOTE_PENALTY = 0.15
NO_VERIFIED_EVIDENCE_CAP = 0.3
MAX_TOOL_CALLS_PER_ROUND = 4
CONTRADICTION_NOTICE = (
    "模型判断的失败阶段/责任方（{m_stage}／{m_side}）与已知故障特征 {signature} 的结论"
    "（{c_stage}／{c_side}）不一致，已采用特征库结论，请人工复核。"
)
UNVERIFIED_NOTICE = "模型引用的 {n} 条日志在采集结果中找不到，已剔除。"


class ToolBox(Protocol):
    """Read-only look-ups the model may ask for (implemented by the evidence pipeline).

    Nothing here can send a message or change anything; lines returned by `search_logs` are
    collected lines (they join the set quotes are verified against).
    """

    async def search_logs(self, query: str, limit: int) -> Sequence[str]: ...

    async def agent_state(self, hosts: Sequence[str]) -> str: ...


def _tool_lines(specs: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    return [{"name": s["function"]["name"], "description": s["function"]["description"]} for s in specs]


@dataclass
class LlmResult:
    report: DiagnosisReport | None
    outcome: Outcome
    calls: int = 0  # HTTP requests to the model
    tokens: int = 0
    notes: list[str] = field(default_factory=list)  # for logs/debugging, not for the chat
    tool_calls: int = 0
    dropped_quotes: int = 0


@dataclass
class _Run:
    client: LlmClient
    prompts: PromptLibrary
    scrubber: Scrubber
    deadline: float
    tools: ToolBox | None
    collected: list[str]
    tool_result_max_chars: int
    tool_timeout_s: float
    notes: list[str] = field(default_factory=list)
    best: ModelReport | None = None
    tool_calls: int = 0
    usage: Usage = field(default_factory=Usage)


async def llm_diagnose(
    client: LlmClient,
    prompts: PromptLibrary,
    *,
    candidate: DiagnosisReport,
    evidence_text: str,
    collected_lines: Sequence[str],
    tools: ToolBox | None,
    deadline_s: float,
    scrubber: Scrubber,
    max_tool_rounds: int = 2,
    prompt_max_chars: int = 24000,
    budget: TokenBudget | None = None,
    budget_key: str = "",
    budget_user: str = "",
    tool_result_max_chars: int = 4000,
    tool_timeout_s: float = 10.0,
) -> LlmResult:
    """Ask the model for the diagnosis; `report` is None when the caller must use `candidate`."""
    if budget is not None:
        try:
            allowed = await budget.check(budget_key, budget_user)
        except Exception:  # advisory: an unreachable Redis must not cost the user the model's report
            log.warning("llm_budget_check_failed", exc_info=True)
            allowed = True
        if not allowed:
            return LlmResult(None, "budget_exhausted", notes=[BUDGET_NOTICE])

    loop = asyncio.get_running_loop()
    run = _Run(
        client=client,
        prompts=prompts,
        scrubber=scrubber,
        deadline=loop.time() + deadline_s,
        tools=tools,
        collected=list(collected_lines),
        tool_result_max_chars=tool_result_max_chars,
        tool_timeout_s=tool_timeout_s,
    )
    outcome: Outcome
    model: ModelReport | None = None
    try:
        async with asyncio.timeout(deadline_s):
            outcome, model = await _conversation(
                run, candidate, evidence_text, max_tool_rounds if tools is not None else 0, prompt_max_chars
            )
    except (TimeoutError, LlmTimeout):
        outcome, model = "fallback_timeout", run.best
        run.notes.append(f"model deadline of {deadline_s:.1f}s reached")
    except LlmRateLimited as exc:
        outcome, model = "fallback_rate_limited", run.best
        run.notes.append(str(exc))
    except SecretLeak as exc:
        outcome, model = "fallback_error", None
        run.notes.append(str(exc))
    except LlmError as exc:
        outcome, model = "fallback_error", run.best
        run.notes.append(f"{type(exc).__name__}: {exc}")

    calls, tokens = run.usage.calls, run.usage.total_tokens
    if budget is not None and tokens:
        try:
            await budget.add(budget_key, tokens, budget_user)
        except Exception:  # the budget is advisory; never lose a report over it
            log.warning("llm_budget_add_failed", exc_info=True)

    result = LlmResult(None, outcome, calls=calls, tokens=tokens, notes=run.notes, tool_calls=run.tool_calls)
    if model is not None:
        verified = verify_evidence(model.evidence, run.collected, prepare=scrubber.text)
        result.dropped_quotes = len(verified.dropped)
        if verified.dropped:
            run.notes.append(f"dropped {len(verified.dropped)} unverifiable quote(s)")
        result.report = merge_report(candidate, model, verified)
    log.info(
        "llm_diagnose_done",
        outcome=outcome,
        calls=calls,
        tokens=tokens,
        tool_calls=run.tool_calls,
        dropped_quotes=result.dropped_quotes,
    )
    return result


async def _conversation(
    run: _Run, candidate: DiagnosisReport, evidence_text: str, rounds: int, prompt_max_chars: int
) -> tuple[Outcome, ModelReport | None]:
    specs = run.prompts.tool_specs() if rounds > 0 and run.client.capabilities.tools else []
    if not specs:
        rounds = 0
    system = run.prompts.system("diagnose")
    user = fit_prompt(
        run.prompts, run.scrubber, candidate, evidence_text, specs, rounds, prompt_max_chars - len(system)
    )
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system},
        {"role": "user", "content": user},
    ]

    completion: Completion | None = None
    for round_no in range(rounds + 1):
        offer = specs if round_no < rounds else []
        if round_no == rounds and round_no > 0:
            messages.append({"role": "user", "content": run.prompts.final_round()})
        completion = await _send(run, messages, offer, "diagnose" if round_no == 0 else "tool_round")
        if completion.tool_calls and offer:
            _keep_best(run, completion.content)
            messages.append(completion.assistant_message())
            for i, call in enumerate(completion.tool_calls):
                if i < MAX_TOOL_CALLS_PER_ROUND:
                    content = await _run_tool(run, call)
                else:
                    content = "本轮工具调用次数已达上限，未执行。"
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call.id,
                        "content": run.prompts.tool_result(call.name, content),
                    }
                )
            continue
        break
    assert completion is not None

    try:
        return "ok", parse_report(completion.content)
    except ReportInvalid as exc:
        run.notes.append(f"invalid model output: {exc.reason}")
        reason = exc.reason
    # One repair round, without tools.
    messages.append({"role": "assistant", "content": completion.content or ""})
    messages.append({"role": "user", "content": run.prompts.repair(reason)})
    repaired = await _send(run, messages, [], "repair")
    try:
        return "ok", parse_report(repaired.content)
    except ReportInvalid as exc:
        run.notes.append(f"repair failed: {exc.reason}")
        return "fallback_invalid", run.best


def _keep_best(run: _Run, content: str | None) -> None:
    if not content:
        return
    try:
        run.best = parse_report(content)
    except ReportInvalid:
        pass


async def _send(
    run: _Run, messages: list[dict[str, Any]], tools: Sequence[Mapping[str, Any]], purpose: str
) -> Completion:
    """Scrub, prove clean, send; downgrade once per missing capability on a 400/422."""
    while True:
        use_schema = run.client.capabilities.json_schema
        payload = run.scrubber.messages(messages)
        offered = list(tools) if tools and run.client.capabilities.tools else None
        run.scrubber.assert_clean({"messages": payload, "tools": offered})
        try:
            return await run.client.chat(
                payload,
                deadline=run.deadline,
                tools=offered,
                response_format=response_format() if use_schema else None,
                purpose=purpose,
                usage=run.usage,
            )
        except LlmRejected as exc:
            if exc.status not in (400, 422):
                raise
            if use_schema:
                run.client.capabilities.json_schema = False
                run.notes.append(
                    f"endpoint rejected json_schema (HTTP {exc.status}); using the prompt contract"
                )
            elif offered:
                run.client.capabilities.tools = False
                run.notes.append(f"endpoint rejected tools (HTTP {exc.status}); continuing without tools")
                tools = ()
            else:
                raise


async def _run_tool(run: _Run, call: ToolCall) -> str:
    run.tool_calls += 1
    toolbox = run.tools
    if toolbox is None:
        return "工具不可用。"
    try:
        args = json.loads(call.arguments or "{}")
    except (ValueError, RecursionError):
        return "工具参数不是合法的 JSON。"
    if not isinstance(args, dict):
        return "工具参数必须是 JSON 对象。"
    try:
        async with asyncio.timeout(run.tool_timeout_s):
            if call.name == "search_logs":
                query = str(args.get("query") or "").strip()
                if not query:
                    return "query 不能为空。"
                try:
                    limit = min(50, max(1, int(args.get("limit") or 20)))
                except (TypeError, ValueError):
                    limit = 20
                lines = list(await toolbox.search_logs(query, limit))
                run.collected.extend(lines)
                text = "\n".join(lines) if lines else "（没有匹配的日志）"
            elif call.name == "agent_state":
                hosts = args.get("hosts")
                if not isinstance(hosts, list) or not hosts:
                    return "hosts 必须是非空数组。"
                text = await toolbox.agent_state([str(h) for h in hosts[:50]])
            else:
                return f"没有名为 {call.name} 的工具。"
    except TimeoutError:
        return "工具调用超时。"
    except Exception as exc:
        log.warning("llm_tool_failed", tool=call.name, error=type(exc).__name__)
        return f"工具调用失败（{type(exc).__name__}）。"
    return _clip_lines(run.scrubber.text(text), run.tool_result_max_chars)


def _clip_lines(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    out: list[str] = []
    used = 0
    lines = text.splitlines()
    for line in lines:
        if used + len(line) + 1 > max_chars:
            break
        out.append(line)
        used += len(line) + 1
    out.append(f"……（另有 {len(lines) - len(out)} 行未列出）")
    return "\n".join(out)


def fit_prompt(
    prompts: PromptLibrary,
    scrubber: Scrubber,
    candidate: DiagnosisReport,
    evidence_text: str,
    specs: Sequence[Mapping[str, Any]],
    rounds: int,
    max_chars: int,
) -> str:
    """Render the request, trimming whole evidence lines from the middle to stay under `max_chars`.

    Head and tail are kept: a run's start (ids, parameters) and its end (the failure) matter most.
    """
    evidence = scrubber.text(evidence_text)
    tool_lines = _tool_lines(specs)

    def render(text: str, dropped: int) -> str:
        return prompts.diagnose(
            candidate=candidate,
            evidence_text=text,
            tools=tool_lines,
            truncated_lines=dropped,
            tool_rounds=rounds,
        )

    full = render(evidence, 0)
    if len(full) <= max_chars:
        return full
    lines = evidence.splitlines()
    room = max_chars - len(render("", len(lines))) - 40
    head: list[str] = []
    tail: list[str] = []
    used, lo, hi = 0, 0, len(lines) - 1
    while lo <= hi and used + len(lines[lo]) + 1 <= room // 3:  # the head gets a third
        head.append(lines[lo])
        used += len(lines[lo]) + 1
        lo += 1
    while lo <= hi and used + len(lines[hi]) + 1 <= room:
        tail.append(lines[hi])
        used += len(lines[hi]) + 1
        hi -= 1
    tail.reverse()
    while lo <= hi and used + len(lines[lo]) + 1 <= room:  # room the tail could not use
        head.append(lines[lo])
        used += len(lines[lo]) + 1
        lo += 1
    dropped = len(lines) - len(head) - len(tail)
    middle = [f"……（中间省略 {dropped} 行）……"] if dropped else []
    return render("\n".join(head + middle + tail), dropped)


def merge_report(candidate: DiagnosisReport, model: ModelReport, verified: VerifyResult) -> DiagnosisReport:
    """Model narrative + verified evidence + the candidate's ids, timeline and links."""
    confidence = model.confidence
    notices = list(candidate.notices)
    if verified.dropped:
        confidence = max(0.05, confidence - DROPPED_QUOTE_PENALTY * len(verified.dropped))
        notices.append(UNVERIFIED_NOTICE.format(n=len(verified.dropped)))
    evidence = verified.verified
    if not evidence:
        # Rule evidence is collected lines by construction; better than none.
        evidence = list(candidate.evidence)
        if verified.quoted:
            confidence = min(confidence, NO_VERIFIED_EVIDENCE_CAP)

    stage, side = model.stage, model.fault_side
    strong = candidate.signature is not None and candidate.confidence >= STRONG_SIGNATURE
    c_known = candidate.stage != "unknown" and candidate.fault_side != "unknown"
    if strong and c_known and (stage, side) != (candidate.stage, candidate.fault_side):
        notices.append(
            CONTRADICTION_NOTICE.format(
                m_stage=STAGE_ZH[stage],
                m_side=FAULT_SIDE_ZH[side],
                signature=candidate.signature,
                c_stage=STAGE_ZH[candidate.stage],
                c_side=FAULT_SIDE_ZH[candidate.fault_side],
            )
        )
        stage, side = candidate.stage, candidate.fault_side
        confidence = min(confidence, CONTRADICTION_CONFIDENCE_CAP)
    else:
        if stage == "unknown":
            stage = candidate.stage
        if side == "unknown":
            side = candidate.fault_side

    # The model's words reach plain-text chats too: none of them may @-mention anyone.
    plain = defuse_mentions
    missing = [plain(m) for m in model.missing_info]
    missing += [m for m in candidate.missing_info if m not in missing]
    return candidate.model_copy(
        update={
            "summary": plain(model.summary),
            "stage": stage,
            "fault_side": side,
            "root_cause": plain(model.root_cause),
            "evidence": [e.model_copy(update={"why": plain(e.why)}) for e in evidence],
            "actions": Actions(
                immediate=[plain(a) for a in model.actions.immediate],
                root_fix=[plain(a) for a in model.actions.root_fix],
                improvements=[plain(a) for a in model.actions.improvements],
            ),
            "prevention": [plain(p) for p in model.prevention],
            "missing_info": missing,
            "confidence": round(confidence, 3),
            "source": "llm",
            "notices": notices,
        },
        deep=True,
    )


# --------------------------------------------------------------------------- chat uses


async def answer_question(
    client: LlmClient,
    prompts: PromptLibrary,
    question: str,
    knowledge: str,
    deadline_s: float,
    *,
    scrubber: Scrubber | None = None,
    budget: TokenBudget | None = None,
    budget_key: str = "",
    budget_user: str = "",
) -> str | None:
    """A private-chat answer grounded in `knowledge`; None means: fall back (no model answer).

    With a `budget`, a spent budget (bot or chat) means no call, and the call's tokens are charged.
    """
    scrub = scrubber or Scrubber()
    messages = [
        {"role": "system", "content": prompts.system("chat")},
        {"role": "user", "content": prompts.qa(question=question, knowledge=knowledge)},
    ]
    if budget is None:
        return await _one_text_call(client, scrub, messages, deadline_s, "qa")
    try:
        if not await budget.check(budget_key, budget_user):
            log.info("llm_qa_budget_exhausted")
            return None
    except Exception:  # advisory, as for diagnoses
        log.warning("llm_budget_check_failed", exc_info=True)
    usage = Usage()
    try:
        return await _one_text_call(client, scrub, messages, deadline_s, "qa", usage=usage)
    finally:
        try:
            await budget.add(budget_key, usage.total_tokens, budget_user)
        except Exception:
            log.warning("llm_budget_add_failed", exc_info=True)


@dataclass(frozen=True)
class QuestionModel:
    """`answer_question` bound to one client and budget: the conversation's model answerer."""

    client: LlmClient
    prompts: PromptLibrary
    scrubber: Scrubber
    deadline_s: float
    budget: TokenBudget | None = None

    async def __call__(
        self, question: str, knowledge: str, *, budget_key: str, budget_user: str = ""
    ) -> str | None:
        return await answer_question(
            self.client,
            self.prompts,
            question,
            knowledge,
            self.deadline_s,
            scrubber=self.scrubber,
            budget=self.budget,
            budget_key=budget_key,
            budget_user=budget_user,
        )


async def summarize_digest(
    client: LlmClient,
    prompts: PromptLibrary,
    *,
    date: str,
    total_failed_steps: int,
    groups: Sequence[Mapping[str, Any]],
    deadline_s: float,
    scrubber: Scrubber | None = None,
) -> str | None:
    """One short Chinese paragraph over the digest's groups (keys: signature, stage, fault_side,
    count); None means: post the digest without it."""
    scrub = scrubber or Scrubber()
    messages = [
        {"role": "system", "content": prompts.system("chat")},
        {
            "role": "user",
            "content": prompts.digest_summary(
                date=date, total_failed_steps=total_failed_steps, groups=groups
            ),
        },
    ]
    return await _one_text_call(client, scrub, messages, deadline_s, "digest")


async def _one_text_call(
    client: LlmClient,
    scrubber: Scrubber,
    messages: list[dict[str, Any]],
    deadline_s: float,
    purpose: str,
    *,
    usage: Usage | None = None,
) -> str | None:
    loop = asyncio.get_running_loop()
    payload = scrubber.messages(messages)
    try:
        scrubber.assert_clean(payload)
        async with asyncio.timeout(deadline_s):
            completion = await client.chat(
                payload, deadline=loop.time() + deadline_s, temperature=0.3, purpose=purpose, usage=usage
            )
    except (TimeoutError, LlmError, SecretLeak) as exc:
        log.info("llm_text_call_fallback", purpose=purpose, error=type(exc).__name__)
        return None
    text = (completion.content or "").strip()
    if text.startswith("```"):
        text = text.strip("`").strip()
    if not text or not has_cjk(text):
        return None
    return defuse(text)  # goes into chat markdown: no mention, link, tag or code of the model's own
