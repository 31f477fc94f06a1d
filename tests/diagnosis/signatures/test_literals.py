"""Property: the extracted literals are present in every text the regex matches."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.diagnosis.signatures import AnyOf, literal_runs, required_literal

WORDS = ["Start gse task", "errorCode=", "agentId=", "] Response|", "lockKey: ", "abc", "x"]

# (regex fragment, strategy for a text it matches)
FRAGMENTS = st.one_of(
    st.sampled_from(WORDS).map(lambda w: (re.escape(w), st.just(w))),
    st.just((r"\d+", st.integers(0, 99999).map(str))),
    st.just((r"(?P<n{}>\d+)", st.integers(0, 999).map(str))),
    st.just(("(?:Base|Abstract)", st.sampled_from(["Base", "Abstract"]))),
    st.just(("(?:117|1326)", st.sampled_from(["117", "1326"]))),
    st.just(("q?", st.sampled_from(["", "q"]))),
    st.just(("(?:, tail)?", st.sampled_from(["", ", tail"]))),
    st.just(("[^|]*", st.text(alphabet="ab= ", max_size=5))),
    st.just(("z{0,2}", st.sampled_from(["", "z", "zz"]))),
    st.just(("w+", st.sampled_from(["w", "ww"]))),
)


@st.composite
def regex_and_text(draw: st.DrawFn) -> tuple[str, str]:
    parts = draw(st.lists(FRAGMENTS, min_size=1, max_size=8))
    pattern, text = [], []
    for n, (fragment, sample) in enumerate(parts):
        pattern.append(fragment.replace("{}", str(n)))
        text.append(draw(sample))
    return "".join(pattern), "".join(text)


@settings(max_examples=150, deadline=None)
@given(regex_and_text(), st.text(alphabet="xy ", max_size=4), st.text(alphabet="xy ", max_size=4))
def test_literals_are_required(pair: tuple[str, str], before: str, after: str) -> None:
    pattern, core = pair
    text = before + core + after
    assert re.search(pattern, text) is not None
    assert required_literal(pattern) in text
    for run in literal_runs(pattern):
        assert AnyOf.of(run).found_in(text), (pattern, run, text)
