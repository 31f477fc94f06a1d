"""The built wheel installs into a fresh venv (not editable) and still finds its data."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import venv
from pathlib import Path

from tests.support import REPO


def test_wheel_installs_and_finds_packaged_data(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert build.returncode == 0, build.stderr
    wheel = next(dist.glob("job_doctor-*.whl"))

    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    py = target / "bin" / "python"
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # Reuse this environment's dependencies (offline), but not its editable job-doctor.
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    Path(purelib, "_deps.pth").write_text("\n".join(deps) + "\n", encoding="utf-8")
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            "--target",
            purelib,
            str(wheel),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert install.returncode == 0, install.stderr

    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOB_DOCTOR_", "PYTHON"))}
    probe = (
        "import bot, bot.core.resources as r; "
        "print(bot.__file__); "
        "print(r.data_file('config', 'job-doctor.example.toml')); "
        "print(r.data_dir('prompts')); "
        "import bot.devtools.scenarios as s; print(s.CORPUS); print(len(s.load_scenarios()))"
    )
    res = subprocess.run(
        [str(py), "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env, check=False
    )
    assert res.returncode == 0, res.stderr
    *lines, count = res.stdout.splitlines()
    assert all(purelib in line for line in lines), lines  # nothing comes from the source tree
    assert all("_data" in line for line in lines[1:3])
    assert int(count) >= 40  # the scenario corpus ships inside the package

    helped = subprocess.run(
        [str(py), "-m", "bot", "--help"], capture_output=True, text=True, cwd=tmp_path, env=env, check=False
    )
    assert helped.returncode == 0 and "usage: job-doctor" in helped.stdout
