"""The run side installs and serves on the Pythons of Raspberry Pi OS: Bookworm 3.11, Trixie 3.13
(and 3.10, the oldest supported). Each is a real `pip install .` into a fresh venv."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SLICE


def _python(version: str) -> str | None:
    for candidate in (shutil.which(f"python{version}"),
                      *sorted(Path("/root/.pyenv/versions").glob(f"{version}.*/bin/python"))):
        if candidate and subprocess.run([str(candidate), "-c", "import venv"], capture_output=True).returncode == 0:
            return str(candidate)
    return None


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.10", "3.13"])
def test_run_side_on_other_pythons_gives_identical_verdicts(version, built_bundle, tmp_path):
    python = _python(version)
    if python is None:
        pytest.skip(f"no Python {version} on this machine")
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(ROOT)], capture_output=True, text=True,
                             timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    theirs, ours = tmp_path / "theirs.csv", tmp_path / "ours.csv"
    for exe, out in ((str(venv / "bin" / "tinyad"), theirs), (None, ours)):
        command = [exe] if exe else [sys.executable, "-m", "firmware_host.cli"]
        result = subprocess.run(command + ["run", str(built_bundle), "--input", str(SLICE), "--output", str(out)],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    assert theirs.read_bytes() == ours.read_bytes()
    listed = subprocess.run([str(venv / "bin" / "pip"), "list"], capture_output=True, text=True).stdout.lower()
    assert "tensorflow" not in listed and "xgboost" not in listed and "pandas" not in listed
