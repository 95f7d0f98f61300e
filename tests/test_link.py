"""The serial link end to end: a real device agent in a subprocess, the real host streamer,
real bundles and interpreter, joined through real pseudo-terminals by a fault-injecting relay.

In every fault case each input row gets exactly one verdict, and the verdict file is
byte-identical to `tinyad run`'s on the same bundle and input."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from firmware_host import protocol as p
from firmware_host.errors import LinkError
from firmware_host.link import Link
from firmware_host.manifest import GOLDEN_FILE, MANIFEST_FILE, load_manifest

from conftest import SLICE
from fault_relay import Relay

TINYAD = [sys.executable, "-m", "firmware_host.cli"]


@contextmanager
def agent(port: str, bundle: Path, env: dict | None = None):
    """``tinyad device`` in a subprocess, stopped on exit; its stderr log is kept for messages."""
    log = open(Path(bundle).parent / f"agent-{time.monotonic_ns()}.log", "w+")
    proc = subprocess.Popen([*TINYAD, "device", "--port", port, "--model", str(bundle)], stderr=log,
                            env={**os.environ, **(env or {})})
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def stream(port: str, bundle: Path, rows: Path, out: Path, *extra: str, timeout: float = 120):
    return subprocess.run([*TINYAD, "stream", "--port", port, "--model", str(bundle), "--input", str(rows),
                           "--output", str(out), "--quiet", *extra], capture_output=True, text=True,
                          timeout=timeout)


def run_locally(bundle: Path, rows: Path, out: Path) -> bytes:
    done = subprocess.run([*TINYAD, "run", str(bundle), "--input", str(rows), "--output", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return out.read_bytes()


@pytest.fixture(scope="module")
def sdn_rows(tmp_path_factory) -> Path:
    """2,000 rows of the shipped SDN slice."""
    path = tmp_path_factory.mktemp("rows") / "sdn.csv"
    with gzip.open(SLICE, "rt") as source:
        path.write_text("".join(line for _, line in zip(range(2001), source)))
    return path


@pytest.fixture(scope="module")
def weather_rows(tmp_path_factory, shared_data) -> Path:
    """1,500 rows of TON_IoT Weather in file order, for the temporal (window 6) bundle."""
    path = tmp_path_factory.mktemp("rows") / "weather.csv"
    with gzip.open(shared_data / "ton_iot" / "Train_Test_IoT_Weather.csv.gz", "rt", encoding="utf-8-sig") as source:
        path.write_text("".join(line for _, line in zip(range(1501), source)))
    return path


@pytest.fixture(scope="module")
def lstm_bundle(temporal_bundles) -> Path:
    return temporal_bundles["lstm"][1]


def _wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the stream to start"
        time.sleep(0.01)


def _same_as_local(bundle, rows, tmp_path, relay_kwargs=None, during=None, agent_env=None, extra=()):
    expected = run_locally(bundle, rows, tmp_path / "local.csv")
    with Relay(**(relay_kwargs or {})) as relay:
        with agent(relay.device_port, bundle, agent_env) as proc:
            if during:
                worker = threading.Thread(target=during, args=(relay, proc), daemon=True)
                worker.start()
            done = stream(relay.host_port, bundle, rows, tmp_path / "streamed.csv", *extra)
            if during:
                worker.join(timeout=30)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "streamed.csv").read_bytes() == expected
    return done.stderr, relay


def test_clean_link_gives_the_local_verdicts_and_a_summary(built_bundle, sdn_rows, tmp_path):
    """Also audits the credit window from the line: the host never has more DATA bytes
    unanswered than the device granted, and it does keep several frames in flight."""
    log, relay = _same_as_local(built_bundle, sdn_rows, tmp_path, {"audit": True, "baud": 115_200})
    assert "2000 samples" in log and "0 frames re-sent" in log and "round trip per frame: p50" in log
    audit = relay.credit_audit
    assert audit["credit"] and audit["data_frames"] > 10, audit
    assert audit["max_in_flight"] <= audit["credit"], audit
    assert audit["max_in_flight"] > audit["credit"] // 2, audit


def test_bit_flips_one_byte_in_ten_thousand(lstm_bundle, weather_rows, tmp_path):
    log, relay = _same_as_local(lstm_bundle, weather_rows, tmp_path,
                                {"flip_rate": 1e-4, "seed": 11, "baud": 2_000_000})
    assert relay.flipped > 0


def test_dropped_bytes(lstm_bundle, weather_rows, tmp_path):
    log, relay = _same_as_local(lstm_bundle, weather_rows, tmp_path,
                                {"drop_rate": 2e-4, "seed": 5, "baud": 2_000_000})
    assert relay.dropped > 0 and "frames re-sent" in log


def test_link_cut_mid_stream_and_restored(lstm_bundle, weather_rows, tmp_path):
    def cut(relay, proc):
        _wait_for(lambda: relay.forwarded > 6000)
        relay.cut_for(1.5)

    log, _ = _same_as_local(lstm_bundle, weather_rows, tmp_path, {"baud": 57_600}, during=cut)
    assert "0 frames re-sent" not in log          # the cut cost re-sends, not verdicts


def test_agent_killed_and_restarted_mid_stream(lstm_bundle, weather_rows, tmp_path):
    """A new agent lost the window state: the host replays W-1 samples and the verdicts still match."""
    expected = run_locally(lstm_bundle, weather_rows, tmp_path / "local.csv")
    with Relay(baud=57_600) as relay:
        with agent(relay.device_port, lstm_bundle) as first:
            result = {}
            worker = threading.Thread(target=lambda: result.update(
                done=stream(relay.host_port, lstm_bundle, weather_rows, tmp_path / "streamed.csv")), daemon=True)
            worker.start()
            _wait_for(lambda: relay.forwarded > 6000)       # the stream is under way
            first.kill()
            first.wait()
        with agent(relay.device_port, lstm_bundle):
            worker.join(timeout=120)
    done = result["done"]
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "streamed.csv").read_bytes() == expected
    assert "warm-up samples replayed" in done.stderr and "(0 warm-up" not in done.stderr


def test_a_device_that_fails_its_self_test_refuses_and_the_host_says_why(bundle_copy, sdn_rows, tmp_path):
    golden = json.loads((bundle_copy / GOLDEN_FILE).read_text())
    golden["outputs"] = [[max(-128, v - 9) for v in row] for row in golden["outputs"]]   # a "wrong CPU"
    (bundle_copy / GOLDEN_FILE).write_text(json.dumps(golden))
    with Relay() as relay, agent(relay.device_port, bundle_copy):
        done = stream(relay.host_port, bundle_copy, sdn_rows, tmp_path / "out.csv")
    assert done.returncode != 0
    assert "refuses to serve" in done.stderr and "self-test failed" in done.stderr and "LSB" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out.csv").exists() or \
        (tmp_path / "out.csv").read_text().count("\n") == 1


def _deploy(port: str, bundle: Path, timeout: float = 120):
    return subprocess.run([*TINYAD, "deploy", str(bundle), "--port", port], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def served(built_bundle, tmp_path) -> Path:
    """A private copy of the small bundle for an agent to serve (and a push to replace)."""
    path = tmp_path / "served" / "bundle"
    shutil.copytree(built_bundle, path)
    return path


def test_model_push_swaps_the_bundle_and_keeps_the_previous(served, lstm_bundle, weather_rows, tmp_path):
    with Relay() as relay, agent(relay.device_port, served):
        pushed = _deploy(relay.host_port, lstm_bundle)
        assert pushed.returncode == 0, pushed.stderr
        done = stream(relay.host_port, lstm_bundle, weather_rows, tmp_path / "streamed.csv")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "streamed.csv").read_bytes() == run_locally(lstm_bundle, weather_rows, tmp_path / "l.csv")
    assert load_manifest(served).sha256 == load_manifest(lstm_bundle).sha256
    assert (served.parent / "bundle.previous" / MANIFEST_FILE).is_file()


def test_corrupted_chunks_are_rejected_and_sent_again(served, lstm_bundle, tmp_path):
    with Relay(flip_rate=5e-4, seed=3) as relay, agent(relay.device_port, served):
        pushed = _deploy(relay.host_port, lstm_bundle)
    assert pushed.returncode == 0, pushed.stderr
    assert relay.flipped > 0 and " 0 re-sent" not in pushed.stdout
    assert load_manifest(served).sha256 == load_manifest(lstm_bundle).sha256


def test_push_killed_mid_transfer_leaves_the_old_model_serving(served, lstm_bundle, sdn_rows, tmp_path):
    old = load_manifest(served).sha256
    with Relay(baud=19_200) as relay, agent(relay.device_port, served):
        push = subprocess.Popen([*TINYAD, "deploy", str(lstm_bundle), "--port", relay.host_port],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _wait_for(lambda: relay.forwarded > 4000)       # part of the ~25 KB is through
        push.kill()
        push.wait()
        relay.baud = None                                  # the rest of the test at full speed
        done = stream(relay.host_port, served, sdn_rows, tmp_path / "streamed.csv")
    assert done.returncode == 0, done.stderr
    assert load_manifest(served).sha256 == old
    assert (tmp_path / "streamed.csv").read_bytes() == run_locally(served, sdn_rows, tmp_path / "l.csv")


def test_a_push_whose_model_does_not_match_its_manifest_is_refused(served, bundle_copy, tmp_path):
    manifest = json.loads((bundle_copy / MANIFEST_FILE).read_text())
    manifest["sha256"] = "0" * 64
    (bundle_copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    old = load_manifest(served).sha256
    with Relay() as relay, agent(relay.device_port, served):
        pushed = _deploy(relay.host_port, bundle_copy)
    assert pushed.returncode != 0
    assert "model push refused" in pushed.stderr and "sha256" in pushed.stderr
    assert load_manifest(served).sha256 == old


def test_protocol_version_mismatch_is_readable_on_both_ends(served, tmp_path):
    with Relay() as relay, agent(relay.device_port, served):
        link = Link(relay.host_port)
        try:
            replies = []
            deadline = time.monotonic() + 30
            while not replies and time.monotonic() < deadline:     # until the agent is up
                link.send(p.hello(version=p.PROTOCOL_VERSION + 1))
                replies = link.receive(0.5)
        finally:
            link.close()
        code, text = p.unpack_error(replies[0])
        assert code == p.E_VERSION and f"protocol {p.PROTOCOL_VERSION + 1}" in text
        assert "same tinyad version" in text
    # The host's side: a device that answers in another protocol version.
    from firmware_host.streamer import Session

    with Relay() as relay:
        device_end = Link(relay.device_port)
        host_end = Link(relay.host_port)
        try:
            future = bytearray(p.Caps(p.PROTOCOL_VERSION, 1, "00" * 32, 1, 1, 1.0, 0, 1, 1, 0, True).pack())
            future[3] = p.PROTOCOL_VERSION + 1
            device_end.send(p.Frame(p.CAPS, 0, bytes(future)))
            with pytest.raises(LinkError, match=f"speaks tinyad protocol {p.PROTOCOL_VERSION + 1}"):
                Session(host_end, load_manifest(served)).handshake(attempts=1)
        finally:
            device_end.close()
            host_end.close()


def test_no_device_on_the_port_is_a_clear_error(served, sdn_rows, tmp_path):
    with Relay() as relay:
        done = stream(relay.host_port, served, sdn_rows, tmp_path / "out.csv", timeout=60)
    assert done.returncode != 0 and "is 'tinyad device' running" in done.stderr
    missing = subprocess.run([*TINYAD, "stream", "--port", str(tmp_path / "nope"), "--model", str(served),
                              "--input", str(sdn_rows)], capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "cannot open the serial port" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_the_agent_reopens_its_port_after_the_host_side_vanishes(served, sdn_rows, tmp_path):
    """The agent's port is a symlink (as udev names a USB adapter); the pty behind it goes away
    and a new one appears under the same name; the agent reopens it and serves again."""
    port = tmp_path / "serial0"
    first = Relay().__enter__()
    os.symlink(first.device_port, port)
    log_path = tmp_path / "agent.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*TINYAD, "device", "--port", str(port), "--model", str(served)], stderr=log)
    try:
        _wait_for(lambda: "listening on" in log_path.read_text())
        first.__exit__(None, None, None)                   # the cable is pulled: both pty ends close
        _wait_for(lambda: "reopening" in log_path.read_text())
        with Relay() as second:
            os.unlink(port)
            os.symlink(second.device_port, port)
            done = stream(second.host_port, served, sdn_rows, tmp_path / "streamed.csv")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert done.returncode == 0, done.stderr + log_path.read_text()
    assert (tmp_path / "streamed.csv").read_bytes() == run_locally(served, sdn_rows, tmp_path / "l.csv")
    assert log_path.read_text().count("listening on") >= 2


def test_stdin_stream_and_a_host_bundle_that_is_not_the_devices(served, lstm_bundle, sdn_rows, tmp_path):
    """`--input -` streams stdin; a host holding another model than the device is refused before
    a single sample is sent, with both hashes named."""
    with Relay() as relay, agent(relay.device_port, served):
        piped = subprocess.run([*TINYAD, "stream", "--port", relay.host_port, "--model", str(served), "--input", "-",
                                "--quiet"], input=sdn_rows.read_bytes(), capture_output=True, timeout=120)
        other = stream(relay.host_port, lstm_bundle, sdn_rows, tmp_path / "other.csv")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == run_locally(served, sdn_rows, tmp_path / "l.csv")
    assert other.returncode != 0 and "Traceback" not in other.stderr
    assert load_manifest(served).sha256[:12] in other.stderr and load_manifest(lstm_bundle).sha256[:12] in other.stderr
    assert not (tmp_path / "other.csv").exists()


def test_a_swap_cut_by_a_power_loss_is_recovered_and_a_broken_bundle_rolled_back(built_bundle, tmp_path):
    """Between the two renames of a swap only `<bundle>.previous` exists: the agent puts it back
    at start and serves it. A served bundle that fails to load is swapped for the previous one."""
    from firmware_host.agent import DeviceAgent, _roll_back

    bundle = tmp_path / "bundle"
    shutil.copytree(built_bundle, tmp_path / "bundle.previous")
    said = []
    device = DeviceAgent(bundle, log=said.append)
    assert device.ready and (bundle / MANIFEST_FILE).is_file() and not (tmp_path / "bundle.previous").exists()
    assert any("interrupted model swap" in line for line in said)
    device.detector.close()

    shutil.copytree(bundle, tmp_path / "bundle.previous")
    (bundle / "model.tflite").write_bytes(b"\0" * 64)            # the served model no longer loads
    _roll_back(bundle, said.append)
    device = DeviceAgent(bundle, log=said.append)
    assert device.ready and load_manifest(bundle).sha256 == load_manifest(built_bundle).sha256
    assert len(list(tmp_path.glob("bundle.broken-*"))) == 1
    device.detector.close()


def test_a_bad_row_mid_stream_stops_it_after_the_rows_before_have_their_verdicts(served, sdn_rows, tmp_path):
    lines = sdn_rows.read_text().splitlines(keepends=True)
    header = lines[0].rstrip().split(",")
    name = next(f for f in load_manifest(served).features if f in header)
    column = header.index(name)
    cells = lines[1500].split(",")
    cells[column] = "oops"
    lines[1500] = ",".join(cells)
    bad = tmp_path / "bad.csv"
    bad.write_text("".join(lines))
    with Relay() as relay, agent(relay.device_port, served):
        done = stream(relay.host_port, served, bad, tmp_path / "streamed.csv", "--batch-rows", "100")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"line 1501, column '{name}': 'oops' is not a number" in done.stderr
    assert "the verdicts of the first 1400 rows are in" in done.stderr and "got no verdict" not in done.stderr
    expected = run_locally(served, sdn_rows, tmp_path / "l.csv").splitlines(keepends=True)
    assert (tmp_path / "streamed.csv").read_bytes().splitlines(keepends=True) == expected[:1401]
