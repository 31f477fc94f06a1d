"""A group configured with its business (CHAT__GROUP_SCOPES) has bare ids looked up there."""

from __future__ import annotations

from tests.integration.conversation.conftest import MakeRig
from tests.integration.conversation.harness import GROUP

STEP = 20031290017  # corpus scenario script_exit_code_1


async def test_a_bare_id_in_a_configured_group_carries_its_business(make_rig: MakeRig) -> None:
    rig = await make_rig(("", "gs:"), chat={"group_scopes": {GROUP: "biz:2", "别的群": "biz_set:9"}})
    await rig.say(f"看下 {STEP}")
    (report,) = await rig.wait_reports(1, timeout=15)
    text = "\n".join(part for _chat, part, _at in report)
    assert "业务 biz:2" in text


async def test_a_link_names_its_own_business_and_other_groups_none(make_rig: MakeRig) -> None:
    rig = await make_rig(("", "gs2:"), chat={"group_scopes": {"别的群": "biz:3"}})
    await rig.say(f"https://job.example.com/biz_set/9991001/execute/step/20026188230?stepInstanceId={STEP}")
    (report,) = await rig.wait_reports(1, timeout=15)
    text = "\n".join(part for _chat, part, _at in report)
    assert "业务 biz_set:9991001" in text and "biz:3" not in text
