"""The run side installs and serves on the Pythons of Raspberry Pi OS: Bookworm 3.11, Trixie 3.13
(and 3.10, the oldest supported). Each is a real `pip install .` (of a copy of this checkout) into
a fresh venv; the venvs are made at the same time."""

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


TFLITE_RUNTIME = ["tflite-runtime==2.14.0", "numpy<2", "click", "pyserial"]


def _make_venv(python: str, venv: Path, installs: list[list[str]]) -> tuple[int, subprocess.CompletedProcess] | None:
    """A fresh venv of ``python``, then each ``pip install`` of ``installs`` in turn; (index,
    result) of the first that failed, or None."""
    subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    for index, args in enumerate(installs):
        done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *NO_COMPILE, *args], capture_output=True,
                              text=True, timeout=600)
        if done.returncode != 0:
            return index, done
    return None


@pytest.fixture(scope="module")
def venvs(tmp_path_factory) -> dict:
    """This module's fresh venvs, made at the same time (a venv and pip install are mostly one
    core's work, for ~10 s each): "3.10" and "3.13" with `pip install .`, "tflite_runtime" (this
    Python) with tflite-runtime 2.14 and then tinyad without its dependencies. Name -> (venv,
    first failed install as _make_venv gives it, or None); a Python not on this machine is absent."""
    from concurrent.futures import ThreadPoolExecutor

    folder = tmp_path_factory.mktemp("venvs")

    def checkout(name: str) -> str:
        """A copy of this checkout's sources: setuptools builds in the source tree (build/,
        *.egg-info), so parallel `pip install .` of one tree would race there."""
        copy = folder / f"{name}-source"
        shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info",
                                                                  "__pycache__"))
        return str(copy)

    jobs = {version: (python, [[checkout(version)]]) for version in ("3.10", "3.13") if (python := _python(version))}
    if sys.version_info < (3, 12):
        jobs["tflite_runtime"] = (sys.executable, [TFLITE_RUNTIME, ["--no-deps", checkout("tflite_runtime")]])
    with ThreadPoolExecutor(max(len(jobs), 1)) as pool:
        started = {name: pool.submit(_make_venv, python, folder / name, installs)
                   for name, (python, installs) in jobs.items()}
        return {name: (folder / name, job.result()) for name, job in started.items()}


_HOST_VERDICTS: dict[str, bytes] = {}


def _our_verdicts(bundle: Path, out: Path) -> bytes:
    """This venv's `tinyad run` (ai-edge-litert) on the whole SDN slice, once per bundle."""
    if str(bundle) not in _HOST_VERDICTS:
        result = subprocess.run([sys.executable, "-m", "firmware_host.cli", "run", str(bundle), "--input", str(SLICE),
                                 "--output", str(out)], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        _HOST_VERDICTS[str(bundle)] = out.read_bytes()
    return _HOST_VERDICTS[str(bundle)]


def _their_verdicts(venv: Path, bundle: Path, out: Path) -> bytes:
    result = subprocess.run([str(venv / "bin" / "tinyad"), "run", str(bundle), "--input", str(SLICE), "--output",
                             str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return out.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.10", "3.13"])
def test_run_side_on_other_pythons_gives_identical_verdicts(version, venvs, built_bundle, tmp_path):
    if version not in venvs:
        pytest.skip(f"no Python {version} on this machine")
    venv, failed = venvs[version]
    assert failed is None, failed[1].stderr[-2000:]
    theirs = _their_verdicts(venv, built_bundle, tmp_path / "theirs.csv")
    assert theirs == _our_verdicts(built_bundle, tmp_path / "ours.csv")
    listed = subprocess.run([str(venv / "bin" / "pip"), "list"], capture_output=True, text=True).stdout.lower()
    assert "tensorflow" not in listed and "xgboost" not in listed and "pandas" not in listed


@pytest.mark.slow
def test_tflite_runtime_gives_byte_identical_verdicts(venvs, built_bundle, tmp_path):
    """The other interpreter a Pi may have: tflite-runtime 2.14 (numpy<2), builtin kernels on both."""
    if sys.version_info >= (3, 12):
        pytest.skip("tflite-runtime 2.14 has wheels for Python <= 3.11 only")
    venv, failed = venvs["tflite_runtime"]
    if failed and failed[0] == 0:
        pytest.skip(f"tflite-runtime 2.14 not installable here: {failed[1].stderr[-300:]}")
    assert failed is None, failed[1].stderr[-2000:]
    theirs = _their_verdicts(venv, built_bundle, tmp_path / "tflite_runtime.csv")
    assert "tflite_runtime 2.14.0 (builtin kernels)" in subprocess.run(
        [str(venv / "bin" / "tinyad"), "info", str(built_bundle)], capture_output=True, text=True).stdout
    assert theirs == _our_verdicts(built_bundle, tmp_path / "ai_edge_litert.csv")
