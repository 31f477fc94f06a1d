"""Failure-signature catalog and matcher: the rule brain that diagnoses without a language model.

The catalog (`config/signatures.toml`) is data: each `[[signature]]` names exact BK-JOB engine log
texts as regexes with named groups, the stage and fault side they imply, and Chinese templates for the
report. This package validates and compiles it once (`load_catalog`, catalog.py) and matches it
against the records of one step chain (`Catalog.match/best`, match.py); placeholder values are
values.py, the literal pre-filter literals.py, the entry schema schema.py.

Matching semantics of one entry:
- `patterns`: a record whose text (message, plus "\\n" + stack when there is one) matches any of
  them is a *decisive* line, unless its level is known and not in `require_level`, or one of the
  `unless` regexes matches the same record text.
- `all_of` / `any_of`: chain context that must also be present (every / at least one regex
  matches some record); the records found corroborate the match.
- `none_of`: chain context that must be absent (e.g. "sent to GSE" with no answer at all).
- `context`: optional corroborating lines; they add evidence and placeholder values.
Regexes are compiled with `re.MULTILINE` (`$` ends a line, so stacks do not get in the way).

Speed (chains reach 100k lines): every regex run over the whole chain must contain a literal of
at least `MIN_LITERAL_LEN` UTF-8 bytes outside non-literal groups (bytes: CJK text is selective).
`literal_runs` extracts, at load time, every text a match must contain; the longest is searched
for with `str.find` in one joined text of the chain (C speed, linear), the others are substring
tests on those candidates, and only records passing both reach the regex. Matching is linear in
the number of records. The ids of the step/job are taken from the decisive lines, else from the
lines around them, else from `known` values the caller passes.

Usage::

    catalog = load_catalog()                       # once, at start-up
    best = catalog.best(records, known={"step_instance_id": "20031265375"})
"""

from __future__ import annotations

from bot.diagnosis.signatures.catalog import Catalog, CatalogError, load_catalog, parse_catalog
from bot.diagnosis.signatures.literals import (
    MIN_LITERAL_LEN,
    AnyOf,
    CompiledPattern,
    literal_runs,
    required_literal,
)
from bot.diagnosis.signatures.match import SignatureMatch
from bot.diagnosis.signatures.schema import Signature, SignatureSpec
from bot.diagnosis.signatures.values import (
    DEFAULT_FALLBACK,
    DERIVED_NAMES,
    FALLBACKS,
    derive_values,
    render,
    template_fields,
)

__all__ = [
    "DEFAULT_FALLBACK",
    "DERIVED_NAMES",
    "FALLBACKS",
    "MIN_LITERAL_LEN",
    "AnyOf",
    "Catalog",
    "CatalogError",
    "CompiledPattern",
    "Signature",
    "SignatureMatch",
    "SignatureSpec",
    "derive_values",
    "literal_runs",
    "load_catalog",
    "parse_catalog",
    "render",
    "required_literal",
    "template_fields",
]
