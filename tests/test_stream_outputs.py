"""`tinyad stream` with verdict outputs: a real device agent on a pty (test_link's), the real host
streamer and the real bundle. Its JSON lines (and the `time` cells they carry) must be exactly
what `tinyad run` writes for the same rows."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from fault_relay import Relay
from test_link import READY, _rows, agent, wait_for_text
from test_outputs_jsonl import _with_time_column

TINYAD = [sys.executable, "-m", "firmware_host.cli"]


def _run(bundle: Path, rows: Path, *extra: str) -> subprocess.CompletedProcess:
    done = subprocess.run([*TINYAD, "run", str(bundle), "--input", str(rows), *extra], capture_output=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    return done


def _stream(port: str, bundle: Path, rows: Path, *extra: str) -> subprocess.CompletedProcess:
    done = subprocess.run([*TINYAD, "stream", "--port", port, "--model", str(bundle), "--input", str(rows),
                           "--quiet", *extra], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    return done


def test_stream_jsonl_to_stdout_through_the_link(built_bundle, tmp_path):
    """`stream --jsonl -`: the verdicts as JSON lines on stdout, in place of the CSV, byte for byte
    what `run --jsonl -` prints for the same rows."""
    rows = _rows(tmp_path / "rows.csv", 400)
    with Relay() as relay, agent(relay.device_port, built_bundle, log_dir=tmp_path):
        streamed = _stream(relay.host_port, built_bundle, rows, "--jsonl", "-")
    local = _run(built_bundle, rows, "--jsonl", "-")
    records = [json.loads(line) for line in streamed.stdout.decode().splitlines()]   # JSON only: no CSV header
    assert [record["row"] for record in records] == list(range(400))
    assert streamed.stdout == local.stdout


def test_a_time_column_through_stream_as_through_run(built_bundle, tmp_path):
    """Rows with a `timestamp` column in front, some cells quoted (their blocks are read row by row),
    sent 97 rows a batch so frames and batches do not line up: the JSON lines carry each row's time
    cell, and both files equal `run`'s."""
    timed, stamps = _with_time_column(tmp_path, quote_every=160)
    rows = tmp_path / "timed600.csv"                          # 600 of its 6,000 rows keep the test short
    rows.write_text("".join(timed.read_text().splitlines(keepends=True)[:601]))
    local_csv, local_jsonl = tmp_path / "run.csv", tmp_path / "run.jsonl"
    _run(built_bundle, rows, "--output", str(local_csv), "--jsonl", str(local_jsonl))
    streamed_csv, streamed_jsonl = tmp_path / "stream.csv", tmp_path / "stream.jsonl"
    with Relay() as relay, agent(relay.device_port, built_bundle, log_dir=tmp_path):
        _stream(relay.host_port, built_bundle, rows, "--output", str(streamed_csv), "--jsonl",
                str(streamed_jsonl), "--batch-rows", "97")
    records = [json.loads(line) for line in streamed_jsonl.read_text().splitlines()]
    assert [record["time"] for record in records] == stamps[:600]
    assert streamed_jsonl.read_bytes() == local_jsonl.read_bytes()
    assert streamed_csv.read_bytes() == local_csv.read_bytes()


def test_the_device_agent_writes_json_lines_to_stdout(built_bundle, tmp_path):
    """`tinyad device --jsonl -`: what it serves as JSON lines on its stdout (its log stays on
    stderr), equal to `run --jsonl -` on the rows the host streamed (row = the sample's number)."""
    rows = _rows(tmp_path / "rows.csv", 300)
    log = tmp_path / "agent.log"
    with Relay() as relay:
        with open(log, "w") as stderr:
            device = subprocess.Popen([*TINYAD, "device", "--port", relay.device_port, "--model", str(built_bundle),
                                       "--jsonl", "-"], stdout=subprocess.PIPE, stderr=stderr)
        try:
            wait_for_text(log, READY, device)
            _stream(relay.host_port, built_bundle, rows, "--output", str(tmp_path / "s.csv"))
        finally:
            device.send_signal(signal.SIGTERM)                  # systemd's stop: flush and exit 0
            served, _ = device.communicate(timeout=30)
    assert device.returncode == 0, log.read_text()
    assert served == _run(built_bundle, rows, "--jsonl", "-").stdout
    assert len(served.splitlines()) == 300
