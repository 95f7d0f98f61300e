"""Serial-link throughput against the physical limit, in one run.

A relay paces bytes at the line rate (10 bits per byte) between two pseudo-terminals; a real
device agent serves a real bundle on one side and the host streamer sends the shipped SDN
slice from the other. Prints samples/s achieved divided by the physical limit
``baud / 10 / bytes_per_sample`` (one byte per feature, no framing), link efficiency, and the
p50/p99 round trip of a DATA frame to its RESULT.

    python benchmarks/link_throughput.py [build/default] [--baud 115200] [--rows 6000] [--input CSV]

The default bundle has 10 features: at 115200 baud the limit is 1,152 samples/s. The answers
travel the other way at 8 bytes per verdict (a float32 score, the unit score, flags and class),
so a bundle with fewer than 8 features is bound by the answer direction; the benchmark prints
both limits.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fault_relay import Relay  # noqa: E402
from firmware_host.link.protocol import RESULT_ITEM  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", nargs="?", default=str(ROOT / "build" / "default"))
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--input", help="CSV (or .csv.gz) with the bundle's columns; default: the shipped SDN slice")
    args = parser.parse_args()
    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").is_file():
        sys.exit(f"{bundle}: no bundle there; build it first: tinyad build models/default.toml --out {bundle}")
    features = len(json.loads((bundle / "manifest.json").read_text())["features"])
    tinyad = [sys.executable, "-m", "firmware_host.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        rows = Path(tmp) / "rows.csv"
        source_csv = Path(args.input) if args.input else ROOT / "calibration_data" / "sdn_ddos_slice.csv.gz"
        opener = gzip.open if source_csv.suffix == ".gz" else open
        with opener(source_csv, "rt", encoding="utf-8-sig") as source:
            rows.write_text("".join(line for _, line in zip(range(args.rows + 1), source)))
        local = subprocess.run([*tinyad, "run", str(bundle), "--input", str(rows), "--output", f"{tmp}/local.csv"],
                               capture_output=True, text=True)
        if local.returncode:
            sys.exit(local.stderr)
        with Relay(baud=args.baud) as relay:
            agent_log = Path(tmp) / "agent.log"
            with open(agent_log, "w") as log:
                agent = subprocess.Popen([*tinyad, "device", "--port", relay.device_port, "--model", str(bundle)],
                                         stderr=log)
            try:
                # The agent loads its model and self-tests before it listens: time the stream only.
                while "listening on" not in agent_log.read_text():
                    if agent.poll() is not None:
                        sys.exit(agent_log.read_text())
                    time.sleep(0.05)
                done = subprocess.run([*tinyad, "stream", "--port", relay.host_port, "--model", str(bundle),
                                       "--input", str(rows), "--output", f"{tmp}/streamed.csv", "--quiet",
                                       "--baud", str(args.baud)], capture_output=True, text=True)
            finally:
                agent.terminate()
                agent.wait()
        if done.returncode:
            sys.exit(done.stderr)
        same = Path(f"{tmp}/local.csv").read_bytes() == Path(f"{tmp}/streamed.csv").read_bytes()
    summary_line = done.stderr.strip().splitlines()
    rate = float(summary_line[0].split("(")[1].split(" samples/s")[0].replace(",", ""))
    limit = args.baud / 10 / features
    answers = args.baud / 10 / RESULT_ITEM.itemsize
    print(f"bundle {bundle.name}: {features} features, {args.rows} rows at {args.baud} baud")
    print(f"achieved {rate:,.0f} samples/s; physical limit {limit:,.0f} samples/s; ratio {rate / limit:.3f}")
    print(f"answer direction: {RESULT_ITEM.itemsize} bytes per verdict, at most {answers:,.0f} verdicts/s; "
          f"ratio to the lower of the two limits {rate / min(limit, answers):.3f}")
    for line in summary_line[1:]:
        print(line)
    print(f"verdicts identical to tinyad run: {same}")


if __name__ == "__main__":
    main()
