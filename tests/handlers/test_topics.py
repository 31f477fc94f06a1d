"""The Q&A topics load from config/topics.toml; a broken topic fails to load with a message naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.core.resources import data_file
from handlers.knowledge import TopicsError, answer_topic, load_topics, topics

GOOD = data_file("config", "topics.toml").read_text(encoding="utf-8")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topics.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_packaged_topics_are_cached_and_answer() -> None:
    assert topics() is topics()
    assert len(topics()) == 5
    answer = answer_topic("脚本 TIMEOUT 了怎么办")
    assert answer is not None and answer.startswith(
        "脚本超时：GSE 返回 status=3 时主机状态为 102 脚本执行超时；"
    )
    assert (
        "作业平台在超时时间 + 300 秒后打印 `Task execution timeout!`" in answer
    )  # a wrapped line keeps its space


@pytest.mark.parametrize(
    ("old", "new", "entry", "hint"),
    [
        ("pattern = '超时|timeout'", "pattern = '超时|(timeout'", "topic #3", "invalid regex"),
        ("pattern = '超时|timeout'", "pattern = ''", "topic #3", "'pattern'"),
        ("pattern = '超时|timeout'", "pattern = 3", "topic #3", "valid string"),
        ("pattern = '超时|timeout'", "pattern = '超时|timeout'\nlang = 'zh'", "topic #3", "Extra inputs"),
        ("pattern = '超时|timeout'\nanswer", "pattern = '超时|timeout'\nreply", "topic #3", "'answer'"),
        ("[[topic]]\npattern = '下发", "[[topics]]\npattern = '下发", "expected only [[topic]]", "topics"),
    ],
)
def test_broken_topic_is_named(tmp_path: Path, old: str, new: str, entry: str, hint: str) -> None:
    assert old in GOOD
    with pytest.raises(TopicsError) as err:
        load_topics(_write(tmp_path, GOOD.replace(old, new, 1)))
    message = str(err.value)
    assert entry in message
    assert hint in message
    assert "\n" not in message


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(TopicsError, match="cannot read topics"):
        load_topics(_write(tmp_path, "[[topic]\n"))
