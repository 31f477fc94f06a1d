"""The Q&A topics load from config/topics.toml; a broken topic fails to load with a message naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.core.resources import data_file
from handlers.knowledge import TopicsError, answer_topic, load_topics, rank_topics, topics

GOOD = data_file("config", "topics.toml").read_text(encoding="utf-8")
TIMEOUT_STRONG = "strong = ['超时|time\\s*out|timed\\s*out', '(执行|运行|跑)(的)?(时间)?(太久|太长|过长)']"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topics.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_packaged_topics_are_cached_and_answer() -> None:
    assert topics() is topics()
    ids = [t.id for t in topics()]
    assert len(ids) == len(set(ids)) >= 12
    assert {"stuck", "timeout", "account", "permission", "file", "agent", "retry"} <= set(ids)
    assert all(t.title and t.answer and t.strong for t in topics())
    answer = answer_topic("脚本 TIMEOUT 了怎么办")
    assert answer is not None and answer.startswith(
        "脚本超时：GSE 返回 status=3 时主机状态为 102 脚本执行超时；"
    )
    assert (
        "作业平台在超时时间 + 300 秒后打印 `Task execution timeout!`" in answer
    )  # a wrapped line keeps its space


def test_scores_pick_the_best_topic_not_the_first_match(tmp_path: Path) -> None:
    table = load_topics(
        _write(
            tmp_path,
            """
[[topic]]
id = "broad"
title = "宽泛"
strong = ['失败']
answer = "broad"

[[topic]]
id = "narrow"
title = "具体"
strong = ['文件', '分发']
weak = ['失败']
answer = "narrow"

[[topic]]
id = "hinted"
title = "弱词"
strong = ['从不出现的词']
weak = ['源', '目标']
answer = "hinted"
""",
        )
    )
    assert [t.id for t in rank_topics("文件分发失败", table)] == ["narrow", "broad"]
    assert answer_topic("文件分发失败", table) == "narrow"
    assert answer_topic("失败了", table) == "broad"
    assert answer_topic("源", table) is None  # one weak word is not enough
    assert answer_topic("源和目标", table) == "hinted"  # two are
    assert answer_topic("文件 失败 源 目标", table) == "narrow"  # 2 + 1 beats 2 and 1 + 1
    # Two topics with the same best score are answered together, each under its title.
    tied = answer_topic("分发 源 目标", table)
    assert tied == "【具体】\nnarrow\n\n【弱词】\nhinted"


@pytest.mark.parametrize(
    ("old", "new", "entry", "hint"),
    [
        (TIMEOUT_STRONG, "strong = ['超时|(timeout']", "topic #2", "invalid regex"),
        (TIMEOUT_STRONG, "strong = []", "topic #2", "'strong'"),
        (TIMEOUT_STRONG, "strong = ['']", "topic #2", "'strong.0'"),
        (TIMEOUT_STRONG, "strong = 3", "topic #2", "valid list"),
        (TIMEOUT_STRONG, TIMEOUT_STRONG + "\nlang = 'zh'", "topic #2", "Extra inputs"),
        ("weak = ['多久|时长|耗时']", "weak = ['(多久']", "topic #2", "invalid regex"),
        ('id = "timeout"\ntitle = "超时"\n', 'id = "timeout"\n', "topic #2", "'title'"),
        ('id = "timeout"', 'id = "stuck"', "topic #2", "used twice"),
        ('id = "timeout"', 'id = "Time Out"', "topic #2", "'id'"),
        ('[[topic]]\nid = "stuck"', '[[topics]]\nid = "stuck"', "expected only [[topic]]", "topics"),
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
