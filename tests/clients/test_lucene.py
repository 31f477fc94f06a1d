from __future__ import annotations

import pytest

from bot.devtools.sandbox.lucene import LuceneSyntaxError, parse_query, tokenize

LINE = (
    "[2024-05-30 11:09:00.240]  INFO [job-execute,84a2e275a062728b9b54aab16dea4289,49cf5d493601969c] 6 --- "
    "[step-3] c.t.b.j.e.engine.listener.StepListener   : "
    "Start step, stepInstanceId=20031265375 key=20031265375_1"
)
DOC = {"log": LINE, "path": "/data/logs/job-execute/execute.log", "serverIp": "10.0.0.5"}


def test_tokenizer_standard_analyzer_rules() -> None:
    tokens = tokenize(LINE)
    assert "84a2e275a062728b9b54aab16dea4289,49cf5d493601969c" in tokens  # digit,digit does not split
    assert "c.t.b.j.e.engine.listener.steplistener" in tokens  # letter.letter does not split
    assert tokens[:6] == ("2024", "05", "30", "11", "09", "00.240")
    assert "20031265375_1" in tokens and "stepinstanceid" in tokens
    assert tokenize("job-execute,84a2x,4f78") == ("job", "execute", "84a2x", "4f78")
    assert tokenize("步骤执行失败") == ("步", "骤", "执", "行", "失", "败")


@pytest.mark.parametrize(
    ("query", "hit"),
    [
        ('log: "84a2e275a062728b9b54aab16dea4289"', False),
        ("log: *84a2e275a062728b9b54aab16dea4289*", True),
        ('"stepInstanceId: 20031265375"', True),
        ('log: "START STEP"', True),
        ('log: "step start"', False),
        ("log: 20031265375_*", True),
        ("log: 2003126537?_1", True),
        ("*", True),
        ('NOT log: "foo"', True),
        ('-log: "Start step"', False),
        ("foo OR bar", False),
        ("foo OR start", True),
        ("foo start", True),  # default operator OR
        ('log: "start step" AND NOT log: "error"', True),
        ('log: "start step" and not log: "stepinstanceid"', False),
        ('(foo OR "start step") AND path: "/data/logs/job-execute/execute.log"', True),
        ('path: "/data/logs/job-execute/other.log"', False),
        ("path: /data/logs/job-execute/*", True),
        ("log: (foo OR bar)", False),
        ("serverIp: *", True),
        ("cloudId: *", False),
        # Lucene's classic parser: `AND` makes its left and right clauses required, others stay optional
        ('log: "Start step" OR foo AND bar', False),
        ('foo bar "start step" AND stepInstanceId', True),
    ],
)
def test_query_semantics(query: str, hit: bool) -> None:
    assert parse_query(query).matches(DOC) is hit


def test_and_makes_both_sides_required() -> None:
    assert parse_query('log: "Start step" AND foo').matches(DOC) is False


@pytest.mark.parametrize("bad", ['log: "open', "(a OR b", "a)", "AND", "log: [1 TO 2]"])
def test_syntax_errors(bad: str) -> None:
    with pytest.raises(LuceneSyntaxError):
        parse_query(bad)
