"""The catalog: every signature of `config/signatures.toml`, validated and compiled once."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bot.core.resources import data_file
from bot.diagnosis.records import LogRecord
from bot.diagnosis.signatures.literals import scan_literals
from bot.diagnosis.signatures.match import ChainIndex, SignatureMatch, match_one
from bot.diagnosis.signatures.schema import Signature, SignatureSpec
from bot.diagnosis.signatures.values import COMMON_NAMES, DERIVED_NAMES, template_fields


class CatalogError(ValueError):
    """The catalog file is unreadable or an entry is invalid (the message names entry and field)."""


@dataclass(frozen=True, slots=True)
class Catalog:
    signatures: tuple[Signature, ...]
    source: str = ""

    def __len__(self) -> int:
        return len(self.signatures)

    def ids(self) -> list[str]:
        return [s.id for s in self.signatures]

    def get(self, signature_id: str) -> Signature | None:
        return next((s for s in self.signatures if s.id == signature_id), None)

    def match(
        self, records: Sequence[LogRecord], known: Mapping[str, str] | None = None
    ) -> list[SignatureMatch]:
        """Every entry that fires on the chain, most decisive first (see `SignatureMatch.rank`).

        `known`: placeholder values the caller already has (e.g. `step_instance_id`,
        `task_instance_id` from the request); values found in the lines take precedence.
        """
        if not records:
            return []
        index = ChainIndex(records)
        extra = dict(known or {})
        found = [m for sig in self.signatures if (m := match_one(sig, index, extra)) is not None]
        found.sort(key=SignatureMatch.rank, reverse=True)
        return found

    def best(
        self, records: Sequence[LogRecord], known: Mapping[str, str] | None = None
    ) -> SignatureMatch | None:
        """The most decisive match: priority, then the latest failure in time, then most lines."""
        found = self.match(records, known)
        return found[0] if found else None


# --------------------------------------------------------------------------- loading


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<entry>"
        parts.append(f"field {loc!r}: {e['msg']}")
    return "; ".join(parts)


def parse_catalog(data: Mapping[str, Any], source: str = "<catalog>") -> Catalog:
    """Validate and compile a catalog already read from TOML (`{"signature": [...]}`)."""
    entries = data.get("signature")
    if not isinstance(entries, list) or not entries:
        raise CatalogError(f"{source}: no [[signature]] entries")
    unknown_top = set(data) - {"signature"}
    if unknown_top:
        raise CatalogError(f"{source}: unknown top-level keys {sorted(unknown_top)}")
    specs: list[SignatureSpec] = []
    seen: set[str] = set()
    for n, entry in enumerate(entries, start=1):
        sid = entry.get("id") if isinstance(entry, dict) else None
        label = f"signature {sid!r} (entry #{n})" if sid else f"signature entry #{n}"
        try:
            spec = SignatureSpec.model_validate(entry)
        except ValidationError as exc:
            raise CatalogError(f"{source}: {label}: {_describe(exc)}") from None
        if spec.id in seen:
            raise CatalogError(f"{source}: {label}: field 'id': duplicate id")
        seen.add(spec.id)
        known = spec.group_names() | DERIVED_NAMES | COMMON_NAMES | set(spec.defaults)
        for fname in (
            "cause",
            "summary",
            "immediate",
            "root_fix",
            "improvements",
            "prevention",
            "missing_info_hint",
        ):
            value = getattr(spec, fname)
            for t in [value] if isinstance(value, str) else value:
                unknown = [p for p in template_fields(t) if p not in known]
                if unknown:
                    raise CatalogError(
                        f"{source}: {label}: field {fname!r}: unknown placeholder(s) {unknown} "
                        "(not a named group, default or derived value)"
                    )
        specs.append(spec)
    # literals several regexes can scan for are preferred: each distinct one is a pass over the chain
    usage: dict[str, int] = {}
    for spec in specs:
        for p in (*spec.patterns, *spec.all_of, *spec.any_of, *spec.none_of, *spec.context):
            for lit in scan_literals(p):
                usage[lit] = usage.get(lit, 0) + 1
    return Catalog(tuple(Signature.build(spec, usage) for spec in specs), source)


def load_catalog(path: Path | None = None) -> Catalog:
    """Read, validate and compile the signature catalog (default: the packaged signatures.toml)."""
    target = path if path is not None else data_file("config", "signatures.toml")
    try:
        data = tomllib.loads(target.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"{target}: cannot read catalog: {exc}") from exc
    return parse_catalog(data, str(target))
