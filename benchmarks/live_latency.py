"""Live latency: rows written one at a time, 10 a second, and the time from each row's newline to
its verdict line.

    python benchmarks/live_latency.py [build/default] [--rows 200] [--rate 10] [--baud 115200]

(a) into ``tinyad run BUNDLE --input -``; (b) into ``tinyad stream --input -`` over a serial line
to a real ``tinyad device`` agent: two pseudo-terminals joined by a relay that paces bytes at
``--baud`` (10 bits a byte, both directions), as a UART does. Targets (issue 11): p99 <= 20 ms
for (a), <= 50 ms for (b). Each figure is measured on fresh processes, after start-up: the
first row goes in once the verdict header is out (and, for the link, the handshake is done).
The rows are the first ``--rows`` data rows of the shipped SDN DDoS slice (or ``--input``).
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fault_relay import Relay  # noqa: E402

SLICE = ROOT / "calibration_data" / "sdn_ddos_slice.csv.gz"
TINYAD = [sys.executable, "-m", "firmware_host.cli"]
READY = "listening on"              # the agent's line once its model is loaded and self-tested
START_TIMEOUT = 120.0               # seconds for a process to start (and the link to handshake)


def piped_latency(command: list[str], header: str, rows: list[str], rate: float,
                  env: dict | None = None) -> np.ndarray:
    """Write ``header``, wait for the verdict header, then ``rows`` one at a time, ``rate`` a second,
    into ``command``'s stdin; milliseconds from each row's write to its verdict line on stdout.
    ``env``: the child's environment (default: this one)."""
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT, env=env)
    arrived: list[float] = []

    def read_verdicts() -> None:
        pending = b""
        while True:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                return
            now = time.perf_counter()
            pending += chunk
            *lines, pending = pending.split(b"\n")
            arrived.extend(now for _ in lines)

    errors: list[bytes] = []
    reader = threading.Thread(target=read_verdicts, daemon=True)
    drain = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
    reader.start()
    drain.start()
    os.write(proc.stdin.fileno(), header.encode())
    deadline = time.monotonic() + START_TIMEOUT
    while not arrived:                              # start-up: the verdict header comes first
        if proc.poll() is not None or time.monotonic() > deadline:
            drain.join(timeout=5)
            raise SystemExit(f"{' '.join(command)} did not start: {b''.join(errors).decode().strip()}")
        time.sleep(0.005)
    written = []
    next_at = time.perf_counter()
    for row in rows:
        next_at += 1 / rate
        time.sleep(max(next_at - time.perf_counter(), 0))
        os.write(proc.stdin.fileno(), row.encode())
        written.append(time.perf_counter())
    time.sleep(0.5)
    proc.stdin.close()
    proc.wait(timeout=60)
    reader.join(timeout=10)
    drain.join(timeout=10)
    verdicts = arrived[1:]
    if proc.returncode != 0 or len(verdicts) != len(written):
        raise SystemExit(f"{len(written)} rows written, {len(verdicts)} verdict lines read, exit {proc.returncode}: "
                         f"{b''.join(errors).decode().strip()}")
    return (np.array(verdicts) - np.array(written)) * 1e3


def through_run(bundle: Path, header: str, rows: list[str], rate: float) -> np.ndarray:
    return piped_latency([*TINYAD, "run", str(bundle), "--input", "-"], header, rows, rate)


def through_link(bundle: Path, header: str, rows: list[str], rate: float, baud: int) -> np.ndarray:
    """The same rows through ``tinyad stream`` and a ``tinyad device`` agent on a paced pty pair."""
    with Relay(baud=baud) as relay, tempfile.TemporaryFile("w+") as log:
        agent = subprocess.Popen([*TINYAD, "device", "--port", relay.device_port, "--model", str(bundle),
                                  "--baud", str(baud)], stderr=log, cwd=ROOT)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                log.seek(0)
                said = log.read()
                if READY in said:
                    break
                if agent.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the device agent did not start:\n{said}")
                time.sleep(0.02)
            return piped_latency([*TINYAD, "stream", "--port", relay.host_port, "--model", str(bundle),
                                  "--baud", str(baud), "--input", "-", "--quiet"], header, rows, rate)
        finally:
            agent.terminate()
            try:
                agent.wait(timeout=5)
            except subprocess.TimeoutExpired:
                agent.kill()


def summary(latency: np.ndarray) -> str:
    return (f"p50 {np.percentile(latency, 50):.1f} ms, p99 {np.percentile(latency, 99):.1f} ms, "
            f"max {latency.max():.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", nargs="?", type=Path, default=ROOT / "build" / "default")
    parser.add_argument("--input", type=Path, default=SLICE, help="CSV (or .csv.gz) with the bundle's columns.")
    parser.add_argument("--rows", type=int, default=200, help="Rows written, one at a time.")
    parser.add_argument("--rate", type=float, default=10.0, help="Rows per second.")
    parser.add_argument("--baud", type=int, default=115200, help="Line rate of the serial link (b).")
    args = parser.parse_args()
    if not (args.bundle / "manifest.json").exists():
        raise SystemExit(f"{args.bundle}: no bundle there (tinyad build models/default.toml --out build/default)")
    opener = gzip.open if args.input.suffix == ".gz" else open
    with opener(args.input, "rt", newline="") as handle:
        header = handle.readline()
        rows = [line for line, _ in zip(handle, range(args.rows))]
    # A latency tail measures the machine too: on a shared host, other processes' turns show in p99.
    print(f"{len(rows)} rows written one at a time, {args.rate:g} a second; newline -> verdict line "
          f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start):")
    run = through_run(args.bundle, header, rows, args.rate)
    print(f"  (a) tinyad run --input -: {summary(run)}  (target p99 <= 20 ms)", flush=True)
    link = through_link(args.bundle, header, rows, args.rate, args.baud)
    print(f"  (b) tinyad stream --input - at {args.baud} baud to a tinyad device agent: {summary(link)}  "
          f"(target p99 <= 50 ms; load average now {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
