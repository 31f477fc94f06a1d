"""The decisive line of a host's output: the error the script printed, not merely its last line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.diagnosis.output import MAX_LINE_CHARS, OutputsError, load_output_catalog, output_catalog, tail

START = "[2024-06-11 21:30:01][PID:28411] job_start"

# (output as printed, the entry that must explain it, the line that must be quoted)
CASES = [
    (
        [START, "cp: error writing '/home/deploy/app.tgz': Disk quota exceeded", "cleanup done"],
        "disk_quota",
        "cp: error writing '/home/deploy/app.tgz': Disk quota exceeded",
    ),
    (
        [START, "tar: lib/x.so: Cannot write: No space left on device", "tar: Exiting with failure status"],
        "no_space_left",
        "tar: lib/x.so: Cannot write: No space left on device",
    ),
    (
        [
            "Traceback (most recent call last):",
            '  File "a.py", line 9, in <module>',
            "OSError: [Errno 28] No space left on device",
        ],
        "no_space_left",  # the specific cause wins over "a Python traceback"
        "OSError: [Errno 28] No space left on device",
    ),
    (
        ["touch: cannot touch '/data/x': Read-only file system"],
        "read_only_fs",
        "touch: cannot touch '/data/x': Read-only file system",
    ),
    (
        ["/tmp/bkjob/s.sh: line 12: 34567 Killed    java -jar r.jar"],
        "oom_killed",
        "/tmp/bkjob/s.sh: line 12: 34567 Killed    java -jar r.jar",
    ),
    (
        ["java.lang.OutOfMemoryError: Java heap space", "\tat x.y(Z.java:1)"],
        "oom_killed",
        "java.lang.OutOfMemoryError: Java heap space",
    ),
    (
        ["./bin/check: Segmentation fault (core dumped)"],
        "segfault",
        "./bin/check: Segmentation fault (core dumped)",
    ),
    (
        ["curl: (28) Failed to connect to 10.0.0.5 port 443: Connection timed out"],
        "connection_timed_out",
        "curl: (28) Failed to connect to 10.0.0.5 port 443: Connection timed out",
    ),
    (
        ["curl: (7) Failed to connect to 127.0.0.1 port 8080: Connection refused"],
        "connection_refused",
        "curl: (7) Failed to connect to 127.0.0.1 port 8080: Connection refused",
    ),
    (
        ["curl: (6) Could not resolve host: repo.example.com"],
        "dns_failure",
        "curl: (6) Could not resolve host: repo.example.com",
    ),
    (
        ["ping: unknown.example: Name or service not known"],
        "dns_failure",
        "ping: unknown.example: Name or service not known",
    ),
    (
        ["deploy@10.0.0.9: Permission denied (publickey)."],
        "auth_failed",
        "deploy@10.0.0.9: Permission denied (publickey).",
    ),
    (
        ["/tmp/bkjob/s.sh: line 6: jq: command not found"],
        "command_not_found",
        "/tmp/bkjob/s.sh: line 6: jq: command not found",
    ),
    (["sh: 1: jq: not found"], "command_not_found", "sh: 1: jq: not found"),
    (
        ["'jq' is not recognized as an internal or external command,", "operable program or batch file."],
        "command_not_found",
        "'jq' is not recognized as an internal or external command,",
    ),
    (
        ["E: Could not get lock /var/lib/dpkg/lock-frontend - open (11: Resource temporarily unavailable)"],
        "lock_held",
        "E: Could not get lock /var/lib/dpkg/lock-frontend - open (11: Resource temporarily unavailable)",
    ),
    (
        ["mkdir: cannot create directory '/opt/app': Permission denied"],
        "permission_denied",
        "mkdir: cannot create directory '/opt/app': Permission denied",
    ),
    (
        ["cp: cannot stat '/data/a.tgz': No such file or directory"],
        "no_such_file",
        "cp: cannot stat '/data/a.tgz': No such file or directory",
    ),
    (["waiting ...", "timed out waiting for condition"], "script_timeout", "timed out waiting for condition"),
    (
        [
            START,
            "Traceback (most recent call last):",
            '  File "/tmp/x.py", line 3, in <module>',
            "    import yaml",
            "ModuleNotFoundError: No module named 'yaml'",
        ],
        "python_traceback",
        "ModuleNotFoundError: No module named 'yaml'",
    ),
    (["Terminated"], "terminated", "Terminated"),
]


@pytest.mark.parametrize(("lines", "entry", "line"), CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_the_printed_error_is_found_and_explained(lines: list[str], entry: str, line: str) -> None:
    found = output_catalog().decisive("\n".join(lines), tail_lines=30)
    assert found is not None and found.entry is not None
    assert (found.entry.id, found.line) == (entry, line)
    assert found.entry.meaning and found.entry.actions


def test_an_exception_line_without_a_traceback_is_not_called_one() -> None:
    found = output_catalog().decisive("ValueError: bad input\nbye", tail_lines=30)
    assert found is not None and (found.entry is None or found.entry.id != "python_traceback")


def test_without_a_known_error_the_last_error_looking_line_is_quoted() -> None:
    found = output_catalog().decisive(
        f"{START}\nERROR: release manifest invalid\nrolling back\n[2024-06-11 21:30:06][PID:1] job_fail:[deploy failed]\nbye",
        tail_lines=30,
    )
    assert found is not None and found.entry is None and not found.last_resort
    assert found.line == "[2024-06-11 21:30:06][PID:1] job_fail:[deploy failed]"


def test_with_nothing_error_like_the_last_line_is_quoted_and_marked_so() -> None:
    found = output_catalog().decisive("step 1\nstep 2\n\n", tail_lines=30)
    assert found is not None and found.last_resort and found.line == "step 2"
    assert output_catalog().decisive("\n \n", tail_lines=30) is None


def test_only_the_tail_is_read() -> None:
    text = "jq: command not found\n" + "\n".join(f"line {i}" for i in range(40))
    found = output_catalog().decisive(text, tail_lines=30)
    assert found is not None and found.entry is None and found.line == "line 39"
    assert output_catalog().decisive(text, tail_lines=41) is not None
    assert tail("a\r\nb\rc\x1b[31m red\x1b[0m\n", 2) == ["b", "c red"]


def test_a_huge_line_is_capped_but_a_long_one_is_whole() -> None:
    long_line = "Permission denied: " + "x" * (MAX_LINE_CHARS - 40)
    found = output_catalog().decisive(long_line, tail_lines=5)
    assert found is not None and found.line == long_line
    huge = output_catalog().decisive("Permission denied: " + "y" * 5000, tail_lines=5)
    assert huge is not None and len(huge.line) == MAX_LINE_CHARS and huge.line.endswith("…")


def test_an_exit_code_alone_is_explained() -> None:
    assert output_catalog().by_exit_code(127).id == "command_not_found"  # type: ignore[union-attr]
    assert output_catalog().by_exit_code(137).id == "oom_killed"  # type: ignore[union-attr]
    assert output_catalog().by_exit_code(1) is None


def _write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "outputs.toml"
    p.write_text(body, encoding="utf-8")
    return p


def test_a_broken_catalog_names_the_problem(tmp_path: Path) -> None:
    head = "error_line = 'error'\n"
    entry = "[[output]]\nid = '{id}'\npatterns = ['{p}']\nfault_side = 'user'\nmeaning = 'x'\n"
    with pytest.raises(OutputsError, match="does not compile"):
        load_output_catalog(_write(tmp_path, head + entry.format(id="a", p="(")))
    with pytest.raises(OutputsError, match="duplicate"):
        load_output_catalog(
            _write(tmp_path, head + entry.format(id="a", p="x") + entry.format(id="a", p="y"))
        )
    with pytest.raises(OutputsError, match="fault_side"):
        load_output_catalog(
            _write(tmp_path, head + entry.format(id="a", p="x").replace("'user'", "'nobody'"))
        )
