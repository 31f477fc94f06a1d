"""`job-doctor demo`: the real `serve` code path on embedded defaults.

The packaged scenario corpus is served by sandbox BkLog, BK-JOB and GSE gateways on local ports
(so the real clients run over HTTP), the store is in-process, and the web console is the channel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.core.settings import Settings
from bot.devtools.sandbox import start_site
from bot.devtools.sandbox.bkjob import create_bkjob_app
from bot.devtools.sandbox.bklog import create_bklog_app, docs_from_records
from bot.devtools.sandbox.gse import create_gse_app
from bot.devtools.scenarios import Scenario, load_scenarios
from bot.devtools.world import agents_of, job_of

DEMO_APP = ("job-doctor-demo", "demo-secret", "demo")
DEMO_INDEX_SET = 1
_AGENT = re.compile(r"agentId=([0-9a-f:]{6,})")


@dataclass
class Sandbox:
    runners: list[web.AppRunner] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    scopes: list[str] = field(default_factory=list)  # the businesses the sample jobs belong to

    async def close(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


def sample_ids(scenarios: list[Scenario], limit: int = 8) -> list[dict[str, Any]]:
    """A few sample ids to try (the console shows them as chips): a few whose BK-JOB answers show
    the hosts' output, then one per stage."""
    featured = ("output_disk_full_and_agent_down", "output_command_not_found", "stuck_gse_results_pending")
    picked: list[Scenario] = [sc for name in featured for sc in scenarios if sc.name == name]
    stages: set[str] = {sc.expected.stage for sc in picked}
    for sc in scenarios:
        if sc.expected.stage not in stages and not sc.name.startswith("holdout_"):
            stages.add(sc.expected.stage)
            picked.append(sc)
    for sc in scenarios:
        if len(picked) >= limit:
            break
        if sc not in picked and not sc.name.startswith("holdout_"):
            picked.append(sc)
    out = []
    for sc in picked[:limit]:
        exp = sc.expected
        if exp.start_request_id:
            out.append({"id": exp.start_request_id, "label": sc.name, "kind": "request"})
        elif exp.step_instance_id:
            out.append({"id": str(exp.step_instance_id), "label": sc.name, "kind": "step"})
    return out


async def start_sandbox() -> Sandbox:
    code, secret, _user = DEMO_APP
    scenarios = load_scenarios()
    box = Sandbox(samples=sample_ids(scenarios))
    docs: list[dict[str, Any]] = []
    for sc in scenarios:
        docs.extend(docs_from_records(sc.logs_text, first_gse_index=len(docs) + 1))
    agents: dict[str, dict[str, Any]] = {}
    for agent in sorted({m for sc in scenarios for m in _AGENT.findall(sc.logs_text)}):
        # the sample GSE says the agents of failed hosts are not running
        agents[agent.split(":", 1)[-1]] = {
            "bk_cloud_id": 0,
            "version": "2.1.5",
            "run_mode": 1,
            "status_code": -2,
        }
    for sc in scenarios:  # scenarios that carry GSE's answers say it exactly
        agents.update(agents_of(sc))
    jobs = [j for j in (job_of(sc) for sc in scenarios) if j is not None]
    box.scopes = sorted({f"{j.bk_scope_type}:{j.bk_scope_id}" for j in jobs})
    for name, app in (
        ("bklog", create_bklog_app(docs, app_code=code, app_secret=secret, index_set_id=DEMO_INDEX_SET)),
        # the sandbox gateway exempts the demo app from user verification, as an admin can
        ("bkjob", create_bkjob_app(jobs, app_code=code, app_secret=secret, exempt_apps=[code])),
        ("gse", create_gse_app(agents, app_code=code, app_secret=secret)),
    ):
        runner, url = await start_site(app)
        box.runners.append(runner)
        box.urls[name] = url
    return box


def demo_settings(base: Settings, box: Sandbox) -> Settings:
    """Point the clients at the sandbox; keep a configured model (then the demo uses it)."""
    code, secret, user = DEMO_APP
    creds = {"app_code": code, "app_secret": secret, "username": user}

    def section(model: Any, **changes: Any) -> Any:
        # validate (not model_copy) so URLs and secrets get their proper types
        return type(model).model_validate({**model.model_dump(), **changes})

    return base.model_copy(
        update={
            "redis_url": "",
            # the sample logs are from past years: look back far enough to find them
            "bklog": section(
                base.bklog,
                base_url=box.urls["bklog"],
                index_set_id=DEMO_INDEX_SET,
                lookback_days=3650.0,
                retries=1,
                **creds,
            ),
            "bkjob": section(
                base.bkjob,
                base_url=box.urls["bkjob"],
                web_url=str(base.bkjob.web_url or "https://job.example.com"),
                # a bare sample id finds its business by trying these
                scopes=base.bkjob.scopes or box.scopes,
                **creds,
            ),
            "gse": section(base.gse, base_url=box.urls["gse"], api_version="v2", **creds),
            "chat": section(base.chat, progress_after_s=1.0),
        }
    )
