"""A broken catalog fails to load with a message naming the entry and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.diagnosis.signatures import CatalogError, load_catalog
from tests.diagnosis.signatures.chains import rec

GOOD = """
[[signature]]
id = "demo_lock"
title = "获取锁失败"
stage = "dispatch"
fault_side = "system"
priority = 5
confidence = 0.5
patterns = ['Fail to get running lock, lockKey: (?P<lock_key>\\S+)']
cause = "锁 {lock_key} 获取失败"
summary = "锁 {lock_key} 获取失败。"
immediate = ["重试"]
root_fix = ["检查 Redis"]
prevention = ["监控 Redis"]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "signatures.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_small_catalog_loads_and_matches(tmp_path: Path) -> None:
    catalog = load_catalog(_write(tmp_path, GOOD))
    assert catalog.ids() == ["demo_lock"]
    best = catalog.best([rec("Fail to get running lock, lockKey: job:running:gse:task:7", "ERROR")])
    assert best is not None and best.cause == "锁 job:running:gse:task:7 获取失败"


@pytest.mark.parametrize(
    ("old", "new", "field", "hint"),
    [
        ("(?P<lock_key>\\S+)']", "(?P<lock_key>\\S+']", "patterns", "invalid regex"),
        ('cause = "锁 {lock_key} 获取失败"\n', "", "cause", "Field required"),
        ('stage = "dispatch"', 'stage = "somewhere"', "stage", ""),
        ("priority = 5", 'priority = "high"', "priority", ""),
        ("confidence = 0.5", "confidence = 1.5", "confidence", ""),
        ('summary = "锁 {lock_key} 获取失败。"', 'summary = "锁 {lockkey} 获取失败。"', "summary", "lockkey"),
        (
            'summary = "锁 {lock_key} 获取失败。"',
            'summary = "锁 {lock_key!r} 获取失败。"',
            "summary",
            "plain name",
        ),
        (
            "patterns = ['Fail to get running lock, lockKey: (?P<lock_key>\\S+)']",
            "patterns = ['\\w+ (?P<lock_key>\\S+)']",
            "patterns",
            "pre-filter",
        ),
        ('id = "demo_lock"', 'id = "Demo-Lock"', "id", ""),
        ("prevention = [", "surprise = 1\nprevention = [", "surprise", "Extra inputs"),
        ("prevention = [", 'facts = ["dns_lookup"]\nprevention = [', "facts.0", "gse_agent_state"),
    ],
)
def test_broken_entry_names_id_and_field(tmp_path: Path, old: str, new: str, field: str, hint: str) -> None:
    assert old in GOOD
    with pytest.raises(CatalogError) as err:
        load_catalog(_write(tmp_path, GOOD.replace(old, new)))
    message = str(err.value)
    assert "entry #1" in message
    assert f"'{field}'" in message
    assert hint in message
    if 'id = "Demo-Lock"' not in GOOD.replace(old, new):
        assert "'demo_lock'" in message


def test_duplicate_id_and_empty_catalog(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"signature 'demo_lock' \(entry #2\): field 'id': duplicate id"):
        load_catalog(_write(tmp_path, GOOD + GOOD))
    with pytest.raises(CatalogError, match="no \\[\\[signature\\]\\] entries"):
        load_catalog(_write(tmp_path, "# nothing\n"))
    with pytest.raises(CatalogError, match="cannot read catalog"):
        load_catalog(_write(tmp_path, "[[signature]\nid = 1"))
    with pytest.raises(CatalogError, match="cannot read catalog"):
        load_catalog(tmp_path / "missing.toml")


def test_facts_are_declared_and_carried_by_the_match(tmp_path: Path) -> None:
    catalog = load_catalog(
        _write(tmp_path, GOOD.replace("prevention = [", 'facts = "gse_agent_state"\nprevention = ['))
    )
    best = catalog.best([rec("Fail to get running lock, lockKey: job:running:gse:task:7", "ERROR")])
    assert best is not None and best.facts == ("gse_agent_state",)
    plain = load_catalog(_write(tmp_path, GOOD)).best([rec("Fail to get running lock, lockKey: k", "ERROR")])
    assert plain is not None and plain.facts == ()


def test_shipped_agent_entries_ask_for_the_agent_state() -> None:
    # the entries whose hosts' agent may be the cause get a live GSE lookup; no other entry does
    asking = {s.id for s in load_catalog().signatures if "gse_agent_state" in s.spec.facts}
    assert asking == {
        "invalid_agent_id_hosts",
        "target_agent_empty",
        "source_agent_empty",
        "agent_abnormal",
        "agent_id_mismatch",
    }
