"""The shape the code keeps (docs/ARCHITECTURE.md): rooms, not a flat heap of modules.

Import direction is checked by `lint-imports` in `make lint`; these are the rules it cannot see.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("bot", "handlers")
MAX_LINES = 600
MAX_LOOSE_MODULES = 8


SOURCE_SUFFIXES = (".py", ".js", ".css", ".html", ".j2")


def _sources() -> list[Path]:
    return sorted(p for room in PRODUCT for p in (ROOT / room).rglob("*") if p.suffix in SOURCE_SUFFIXES)


def test_no_source_file_is_longer_than_the_limit() -> None:
    long = {
        str(p.relative_to(ROOT)): n for p in _sources() if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_bot_holds_few_loose_modules() -> None:
    loose = sorted(p.name for p in (ROOT / "bot").glob("*.py"))
    assert len(loose) <= MAX_LOOSE_MODULES, loose


def test_product_code_never_reads_the_tests() -> None:
    reads_tests = re.compile(r"""["'](?:\.\./)*tests/|\bimport tests\b|from tests\b""")
    offenders = [str(p.relative_to(ROOT)) for p in _sources() if reads_tests.search(p.read_text())]
    assert offenders == []


def test_every_package_room_is_named_in_the_architecture_notes() -> None:
    notes = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    rooms = sorted(p.name for p in (ROOT / "bot").iterdir() if (p / "__init__.py").exists())
    assert [room for room in rooms if f"bot/{room}" not in notes and f"`{room}`" not in notes] == []
