"""The shipped catalog: every entry loads, compiles and fires on a chain built from the reference."""

from __future__ import annotations

import re

import pytest

from bot.diagnosis.signatures import Catalog, SignatureMatch, load_catalog
from tests.diagnosis.signatures.examples import EXAMPLES

PLACEHOLDER = re.compile(r"\{[A-Za-z_]\w*\}")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def _texts(m: SignatureMatch) -> list[str]:
    return [
        m.cause,
        m.summary,
        *m.actions.immediate,
        *m.actions.root_fix,
        *m.actions.improvements,
        *m.prevention,
        *m.missing_info,
    ]


def test_catalog_size_and_fields(catalog: Catalog) -> None:
    assert len(catalog) >= 24
    ids = catalog.ids()
    assert len(ids) == len(set(ids))
    for sig in catalog.signatures:
        spec = sig.spec
        assert re.fullmatch(r"[a-z][a-z0-9_]*", spec.id)
        assert spec.title and spec.cause and spec.summary
        assert spec.immediate and spec.root_fix and spec.prevention
        assert 0.0 <= spec.confidence <= 1.0
        for pat in (*sig.patterns, *sig.all_of, *sig.any_of, *sig.context):
            assert re.compile(pat.source) is not None
            assert len(pat.literal.encode()) >= 5, (spec.id, pat.source)


def test_every_entry_has_an_example(catalog: Catalog) -> None:
    assert sorted(catalog.ids()) == sorted(EXAMPLES)


def test_reference_failures_are_covered(catalog: Catalog) -> None:
    # §2.6, §7 and the brief's extra list, by the exact text each entry must recognise
    must = [
        "Contains hosts not in app",
        "The following execute object are not exist",
        "System account is not exist",
        "errorCode=(?P<error_code>122)",
        "errorCode=(?P<error_code>1326)",
        "errorCode=(?P<error_code>117)",
        "exitCode=",
        "Task execution timeout!",
        "Execution result log always empty!",
        "async_(?:execute_script|transfer_file)",
        "result handle error",
        "ThirdFilePrepareTask failed",
        "LocalFilePrepareTask failed",
        "not exists in project",
        "prepareTask timeout",
        "ResourceQuotaLimit-runningJob",
        "Script match dangerous rule",
        "Evict job",
        "evicted",
        "target agent is empty",
        "source agent is empty",
        "Callback url rejected by whitelist",
        "Callback using form data failed",
        "No execute object task found for executeObjectGseKey",
        "Unexpected target executeObjectGseKey",
        "Start gse task fail, response:",
        "GSE Job failed:",
        "Start gse task fail, account is null!",
        "Fail to request CMDB data",
        "Handling step event error,stepInstanceId:",
        "Handle job event error",
        "Fail to get running lock",
        "Fail to get result handle lock",
        "1244004",
        "1238001",
        "1244023",
        "1260005",
        "1260007",
        "1244030",
        "1244019",
    ]
    sources = "\n".join(p.source for s in catalog.signatures for p in s.patterns)
    missing = [m for m in must if m not in sources.replace("\\", "")]
    assert missing == []


@pytest.mark.parametrize("sig_id", sorted(EXAMPLES))
def test_positive_example(catalog: Catalog, sig_id: str) -> None:
    example = EXAMPLES[sig_id]
    matches = catalog.match(example.records)
    found = {m.id: m for m in matches}
    assert sig_id in found, f"{sig_id} did not fire; fired: {sorted(found)}"
    m = found[sig_id]

    assert (m.stage, m.fault_side) == (example.stage, example.fault_side)
    for text in _texts(m):
        assert not PLACEHOLDER.search(text), (sig_id, text)
    assert "{" not in m.cause and "{" not in m.summary
    for quote in example.quotes:
        assert quote in m.cause + m.summary, (sig_id, quote, m.cause)
    for name, value in example.values.items():
        assert m.values.get(name) == value, (sig_id, name, m.values.get(name))

    # the decisive lines are kept whole and come from the input
    assert m.records
    assert all(any(r is x for x in example.records) for r in m.records)
    assert all(ev.text in {r.raw for r in example.records} for ev in m.evidence())

    # the example is about this failure: it is the most decisive match on its own chain
    best = catalog.best(example.records)
    assert best is not None and best.id == sig_id, f"best for {sig_id} was {best and best.id}"


def test_prefilter_never_hides_a_match(catalog: Catalog) -> None:
    # every text a regex matches contains the literal and filters the matcher scans for first
    texts = [r.message + ("\n" + r.stack if r.stack else "") for ex in EXAMPLES.values() for r in ex.records]
    for sig in catalog.signatures:
        for pat in (*sig.patterns, *sig.all_of, *sig.any_of, *sig.context, *sig.unless):
            for text in texts:
                if pat.regex.search(text):
                    assert pat.literal in text, (sig.id, pat.source)
                    assert all(f.found_in(text) for f in pat.filters), (sig.id, pat.source)
