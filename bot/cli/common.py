"""What every command shares: exit codes and how it reports a failure."""

from __future__ import annotations

import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def fail(command: str, message: str) -> None:
    """One clear line on stderr, naming the command."""
    print(f"job-doctor {command}: {message}", file=sys.stderr)
