"""tinyad's run side on an emulated Raspberry Pi (aarch64 Debian 12, Python 3.11, qemu-user),
under both interpreters: local runs, the device agent on a pseudo-terminal streamed from the
host, and a wrong CPU that must be refused.

Marked ``pi_emu``: CI runs it (building the userland with ../shared/tools/pi-emu/setup.sh
when none is found, about 6 minutes); skip it locally with ``-m "not pi_emu"``.
"""

from __future__ import annotations

import csv
import gzip
import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pi_userland as pi
from conftest import SLICE
from firmware_host.manifest import load_manifest
from firmware_host.runner import GOLDEN_TOLERANCE_LSB
from fault_relay import Relay

pytestmark = pytest.mark.pi_emu
TINYAD = [sys.executable, "-m", "firmware_host.cli"]
INSIDE = "/tmp/tinyad-test"


@pytest.fixture(scope="module")
def userland(tmp_path_factory) -> Path:
    e = pi.userland_path()
    if not pi.complete(e):
        reason = pi.why_not_buildable()
        if reason:
            pytest.skip(reason)
        pi.build(e, tmp_path_factory.mktemp("pi-emu") / "setup.log")
    pi.install_run_side(e, tmp_path_factory.mktemp("pi-wheels"))
    return e


@pytest.fixture(scope="module")
def on_device(userland, built_bundle, tmp_path_factory) -> dict:
    """The small bundle and 300 input rows, copied into the userland; the host's own verdicts."""
    host = tmp_path_factory.mktemp("host")
    rows = host / "rows.csv"
    with gzip.open(SLICE, "rt") as source:
        rows.write_text("".join(line for _, line in zip(range(301), source)))
    inside = userland / "root" / INSIDE.lstrip("/")
    if inside.exists():
        shutil.rmtree(inside)
    inside.mkdir(parents=True)
    shutil.copytree(built_bundle, inside / "bundle")
    shutil.copy(rows, inside / "rows.csv")
    local = subprocess.run([*TINYAD, "run", str(built_bundle), "--input", str(rows), "--output",
                            str(host / "host.csv")], capture_output=True, text=True, timeout=120)
    assert local.returncode == 0, local.stderr
    return {"inside": inside, "rows": rows, "expected": (host / "host.csv").read_bytes(), "bundle": built_bundle}


def _pi_run(userland, interpreter: str) -> bytes:
    """`tinyad run` inside the emulated Pi; its verdict file (computed once per interpreter)."""
    out = userland / "root" / INSIDE.lstrip("/") / f"run-{interpreter}.csv"
    if not out.exists():
        done = pi.chroot(userland, [f"{pi.VENVS[interpreter]}/bin/tinyad", "run", f"{INSIDE}/bundle", "--input",
                                    f"{INSIDE}/rows.csv", "--output", f"{INSIDE}/{out.name}"],
                         env={"TINYAD_INTERPRETER": interpreter})
        assert done.returncode == 0, done.stdout + done.stderr
        assert interpreter in done.stderr and "builtin kernels" in done.stderr
    return out.read_bytes()


def _rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode())))[1:]


@pytest.mark.parametrize("interpreter", sorted(pi.VENVS))
def test_run_on_the_emulated_pi_gives_the_host_verdicts(userland, on_device, interpreter):
    """Same verdicts as the x86 host on every row; scores within the self-test's LSB tolerance.

    Measured here: tflite_runtime 2.14 on aarch64 matches x86 bit for bit; ai_edge_litert 2.3's
    aarch64 builtin kernels put some scores 1-2 LSB (1/256) off (its int8 softmax), flipping no
    verdict -- the difference the golden self-test's tolerance allows."""
    device, host = _rows(_pi_run(userland, interpreter)), _rows(on_device["expected"])
    assert len(device) == len(host) == 300
    lsb = load_manifest(on_device["bundle"]).output_quantization.scale
    for mine, theirs in zip(device, host):
        assert (mine[0], mine[1], mine[3], mine[4]) == (theirs[0], theirs[1], theirs[3], theirs[4])
        assert abs(float(mine[2]) - float(theirs[2])) <= lsb * GOLDEN_TOLERANCE_LSB * 1.001


def test_a_wrong_cpu_is_refused_by_the_self_test(userland, on_device):
    """QEMU's default 'max' CPU with ai-edge-litert's XNNPACK int8 kernels computes wrongly."""
    done = pi.chroot(userland, ["/opt/litert/bin/tinyad", "run", f"{INSIDE}/bundle", "--input",
                                f"{INSIDE}/rows.csv", "--output", f"{INSIDE}/wrong.csv"],
                     cpu="max", env={"TINYAD_KERNELS": "xnnpack"})
    assert done.returncode != 0
    assert "self-test failed on ai_edge_litert" in done.stderr and "XNNPACK" in done.stderr.replace("xnnpack", "XNNPACK")
    assert "LSB" in done.stderr and "Traceback" not in done.stderr
    assert not (userland / "root" / INSIDE.lstrip("/") / "wrong.csv").exists()


def _agent_and_stream(userland, on_device, tmp_path, interpreter, cpu="cortex-a72", env=None):
    venv = pi.VENVS[interpreter]
    log = tmp_path / f"agent-{interpreter}-{cpu}.log"
    with Relay() as relay:
        agent = pi.start(userland, [f"{venv}/bin/tinyad", "device", "--port", relay.device_port, "--model",
                                    f"{INSIDE}/bundle"], log, cpu=cpu,
                         env={"TINYAD_INTERPRETER": interpreter, **(env or {})})
        try:
            pi.wait_for_text(log, "listening on", agent, timeout=180)
            done = subprocess.run([*TINYAD, "stream", "--port", relay.host_port, "--model", str(on_device["bundle"]),
                                   "--input", str(on_device["rows"]), "--output", str(tmp_path / "streamed.csv"),
                                   "--quiet"], capture_output=True, text=True, timeout=300)
        finally:
            pi.stop(agent)
    return done, log.read_text()


@pytest.mark.parametrize("interpreter", sorted(pi.VENVS))
def test_streaming_to_the_agent_on_the_emulated_pi(userland, on_device, tmp_path, interpreter):
    done, log = _agent_and_stream(userland, on_device, tmp_path, interpreter)
    assert done.returncode == 0, done.stderr + log
    # The device's verdicts over the link are byte for byte what `tinyad run` gives on the device.
    assert (tmp_path / "streamed.csv").read_bytes() == _pi_run(userland, interpreter)
    assert f"serving {INSIDE}/bundle" in log and interpreter in log


def test_the_agent_on_a_wrong_cpu_refuses_and_the_host_says_why(userland, on_device, tmp_path):
    done, log = _agent_and_stream(userland, on_device, tmp_path, "ai_edge_litert", cpu="max",
                                  env={"TINYAD_KERNELS": "xnnpack"})
    assert done.returncode != 0
    assert "refuses to serve" in done.stderr and "self-test failed on ai_edge_litert" in done.stderr
    assert "NOT serving" in log


def test_a_temporal_bundle_streams_to_the_emulated_pi(userland, temporal_bundles, shared_data, tmp_path):
    """The fused int8 LSTM (window 6) on aarch64: on-device run and stream agree byte for byte,
    and every verdict equals the x86 host's."""
    bundle = temporal_bundles["lstm"][1]
    rows = tmp_path / "weather.csv"
    with gzip.open(shared_data / "ton_iot" / "Train_Test_IoT_Weather.csv.gz", "rt", encoding="utf-8-sig") as source:
        rows.write_text("".join(line for _, line in zip(range(401), source)))
    inside = userland / "root" / INSIDE.lstrip("/") / "lstm"
    if inside.exists():
        shutil.rmtree(inside)
    inside.mkdir(parents=True)
    shutil.copytree(bundle, inside / "bundle")
    shutil.copy(rows, inside / "rows.csv")
    host = subprocess.run([*TINYAD, "run", str(bundle), "--input", str(rows), "--output", str(tmp_path / "host.csv")],
                          capture_output=True, text=True, timeout=120)
    assert host.returncode == 0, host.stderr
    ran = pi.chroot(userland, ["/opt/litert/bin/tinyad", "run", f"{INSIDE}/lstm/bundle", "--input",
                               f"{INSIDE}/lstm/rows.csv", "--output", f"{INSIDE}/lstm/pi.csv"])
    assert ran.returncode == 0, ran.stdout + ran.stderr
    on_pi = (inside / "pi.csv").read_bytes()
    device, expected = _rows(on_pi), _rows((tmp_path / "host.csv").read_bytes())
    assert [(r[0], r[1], r[3], r[4]) for r in device] == [(r[0], r[1], r[3], r[4]) for r in expected]
    log = tmp_path / "agent.log"
    with Relay() as relay:
        agent = pi.start(userland, ["/opt/litert/bin/tinyad", "device", "--port", relay.device_port, "--model",
                                    f"{INSIDE}/lstm/bundle"], log)
        try:
            pi.wait_for_text(log, "listening on", agent, timeout=180)
            done = subprocess.run([*TINYAD, "stream", "--port", relay.host_port, "--model", str(bundle), "--input",
                                   str(rows), "--output", str(tmp_path / "streamed.csv"), "--quiet"],
                                  capture_output=True, text=True, timeout=300)
        finally:
            pi.stop(agent)
    assert done.returncode == 0, done.stderr + log.read_text()
    assert (tmp_path / "streamed.csv").read_bytes() == on_pi
