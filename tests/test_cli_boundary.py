"""The CLI's shape: every command teaches through --help, and a TinyadError from any command,
run side or build side, is turned into one 'Error:' line in exactly one place."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from firmware_host.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_every_command_has_help_text():
    runner = CliRunner()
    for name in main.list_commands(None):
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        usage, _, rest = result.output.partition("\n\n")
        assert rest.strip() and not rest.lstrip().startswith("Options:"), f"'tinyad {name}' has no help text"


def test_a_tinyad_error_is_one_line_from_the_group_boundary(tmp_path):
    runner = CliRunner()
    for args in (["run", str(tmp_path / "nothing"), "--input", "-"],
                 ["info", str(tmp_path / "nothing")],
                 ["build", str(tmp_path / "missing.toml")]):
        result = runner.invoke(main, args)
        assert result.exit_code == 1, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), (args, result.output)
        assert "Traceback" not in result.output


def test_no_command_maps_tinyad_errors_itself():
    """One boundary: TinyadGroup.invoke is the only place that turns a TinyadError into a
    ClickException (before, the same block was copied into 11 commands)."""
    pattern = r"except TinyadError as \w+:\n\s+raise (?:click\.ClickException|fail)\("
    for path, allowed in ((ROOT / "firmware_host" / "cli.py", 1), (ROOT / "toolchain" / "cli.py", 0)):
        copies = re.findall(pattern, path.read_text())
        assert len(copies) == allowed, f"{path.parent.name}/{path.name} maps TinyadError {len(copies)} time(s)"
