"""The model's words go into WeCom markdown inert: no mention, link, tag, code or heading of its own."""

from __future__ import annotations

import re

from bot.core.markup import defuse
from bot.delivery.render import render_markdown, render_text
from tests.integration.llm_pipeline.conftest import RigFactory
from tests.integration.llm_pipeline.helpers import QuotingModel

HOSTILE = (
    '<@zhangsan> @all 请立即处理 [点这里修复](http://evil.example/x) <font color="warning">紧急</font>'
    "\n# 新标题\n```\n吞掉后面的报告"
)


async def test_model_markup_and_mentions_are_defused_in_the_chat_report(make_rig: RigFactory) -> None:
    rig = await make_rig()
    rig.fake.default = QuotingModel(summary=HOSTILE)
    report = await rig.analyze(rig.settings())
    assert report.source == "llm"
    md = render_markdown(report).text
    assert "<@" not in md and "@all" not in md and "<font" not in md
    assert "](http://evil.example" not in md  # shown as text, not a link behind other words
    assert not re.search(r"(?m)^# 新标题", md)
    # the only fences are the bot's own around evidence lines: as many openers as closers
    assert len(re.findall(r"(?m)^`{3,}", md)) % 2 == 0
    assert "@all" not in render_text(report)  # plain-text channels: no mention either
    assert "紧急" in md and "evil.example" in md  # the words themselves are still shown


def test_defuse_keeps_ordinary_text() -> None:
    text = "GSE Agent 异常（errorCode=117 → 主机状态 310），请在节点管理中重启 Agent；a_b * c"
    assert defuse(text) == text
    assert defuse("<@u1> [x](http://a) `y` @all") == "＜＠u1＞ [x] (http://a) 'y' ＠all"
