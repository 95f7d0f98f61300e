"""The run side installs and serves on the Pythons of Raspberry Pi OS: Bookworm 3.11, Trixie 3.13
(and 3.10, the oldest supported). Each is a real `pip install .` into a fresh venv."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SLICE

# pip would byte-compile every installed module (all of numpy: about 5 s an install); the modules a
# run imports are compiled as they are imported, so the run still proves they load on that Python.
NO_COMPILE = ("--no-compile",)


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
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *NO_COMPILE, str(ROOT)], capture_output=True,
                             text=True, timeout=600)
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


@pytest.mark.slow
def test_tflite_runtime_gives_byte_identical_verdicts(built_bundle, tmp_path):
    """The other interpreter a Pi may have: tflite-runtime 2.14 (numpy<2), builtin kernels on both."""
    if sys.version_info >= (3, 12):
        pytest.skip("tflite-runtime 2.14 has wheels for Python <= 3.11 only")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = str(venv / "bin" / "pip")
    install = subprocess.run([pip, "install", "-q", *NO_COMPILE, "tflite-runtime==2.14.0", "numpy<2", "click",
                              "pyserial"], capture_output=True, text=True, timeout=600)
    if install.returncode != 0:
        pytest.skip(f"tflite-runtime 2.14 not installable here: {install.stderr[-300:]}")
    subprocess.run([pip, "install", "-q", *NO_COMPILE, "--no-deps", str(ROOT)], check=True, capture_output=True,
                   timeout=600)
    theirs, ours = tmp_path / "tflite_runtime.csv", tmp_path / "ai_edge_litert.csv"
    for command, out in (([str(venv / "bin" / "tinyad")], theirs), ([sys.executable, "-m", "firmware_host.cli"], ours)):
        result = subprocess.run(command + ["run", str(built_bundle), "--input", str(SLICE), "--output", str(out)],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    assert "tflite_runtime 2.14.0 (builtin kernels)" in subprocess.run(
        [str(venv / "bin" / "tinyad"), "info", str(built_bundle)], capture_output=True, text=True).stdout
    assert theirs.read_bytes() == ours.read_bytes()
