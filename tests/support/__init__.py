"""Fakes that speak the platforms' wire formats, and what several test rooms share."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the repository's root
