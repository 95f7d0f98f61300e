"""A skip is not a pass: the conftest hook turns a skip into a failure when the resource the test
needs is present. Checked by running pytest for real on a test that skips anyway."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

# The project's conftest, loaded under another name (this file is itself a "conftest").
PLUGIN = f"""
import importlib.util, sys
sys.path.insert(0, {str(TESTS)!r})
spec = importlib.util.spec_from_file_location("tinyad_conftest", {str(TESTS / "conftest.py")!r})
project = importlib.util.module_from_spec(spec)
spec.loader.exec_module(project)
globals().update({{k: v for k, v in vars(project).items() if not k.startswith("__")}})
"""

SKIPPING = """
import pytest

def test_needs_data(shared_data):
    pytest.skip("pretending the data is not there")

def test_needs_nothing():
    pytest.skip("an ordinary skip")
"""


def test_a_skip_that_needs_present_data_fails(tmp_path, shared_data):
    (tmp_path / "conftest.py").write_text(PLUGIN)
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert "1 failed, 1 skipped" in done.stdout, done.stdout
    assert "skipped although the real data sets" in done.stdout
    assert done.returncode == 1
