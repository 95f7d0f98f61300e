"""The systemd unit shipped for the device agent: every ExecStart line in it, the active one and
the commented one that turns on the verdict outputs, is a `tinyad device` command line that the
real command's parser accepts, and the extras its comments tell one to install exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click

try:
    import tomllib
except ModuleNotFoundError:          # Python 3.10
    import tomli as tomllib

from firmware_host.cli import device

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "firmware_host" / "link" / "tinyad-device.service"


def _command_lines() -> list[list[str]]:
    lines = re.findall(r"^#?ExecStart=(.+)$", UNIT.read_text(), flags=re.MULTILINE)
    return [shlex.split(line) for line in lines]


def test_every_execstart_line_is_a_device_command_the_parser_accepts():
    commands = _command_lines()
    assert len(commands) >= 2
    options = set()
    for argv in commands:
        assert Path(argv[0]).name == "tinyad" and argv[1] == "device", argv
        try:
            context = device.make_context("device", argv[2:])
        except click.UsageError as exc:
            raise AssertionError(f"{shlex.join(argv)}: {exc.format_message()}") from None
        options |= {name for name, value in context.params.items() if value is not None}
    # One of them shows how to turn on each verdict output.
    assert {"mqtt", "jsonl", "metrics_port"} <= options, options


def test_the_extras_the_unit_names_exist():
    extras = set(re.findall(r"pip install 'tinyad\[(\w+)\]'", UNIT.read_text()))
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras == {"mqtt", "metrics"} and extras <= set(declared)
