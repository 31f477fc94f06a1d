"""Locate data shipped with the package: config/ and prompts/.

In a wheel they live under bot/_data/ (hatch force-include); in a source checkout (editable
install, tests) they are the top-level folders of the repository.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

DataName = Literal["config", "prompts"]


def data_dir(name: DataName) -> Path:
    here = Path(__file__).resolve().parents[1]  # the bot package
    packaged = here / "_data" / name
    if packaged.is_dir():
        return packaged
    source = here.parent / name
    if source.is_dir():
        return source
    raise FileNotFoundError(f"packaged data folder {name!r} is missing (looked in {packaged} and {source})")


def data_file(name: DataName, relative: str) -> Path:
    path = data_dir(name) / relative
    if not path.is_file():
        raise FileNotFoundError(f"packaged data file {name}/{relative} is missing")
    return path
