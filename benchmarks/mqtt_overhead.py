"""What `--mqtt` adds to `tinyad run`: the full SDN DDoS file (104,345 rows) with and without
publishing every verdict at QoS 1 to a local Mosquitto broker, runs interleaved.

    python benchmarks/mqtt_overhead.py [BUNDLE] [--repeats 5] [--data CSV] [--no-subscriber]

BUNDLE defaults to build/default (``tinyad build models/default.toml --out build/default``). The
broker is started here on a free localhost port (``tests/broker.py``, /usr/sbin/mosquitto). A
subscriber (QoS 1) counts the rows that arrive, so a run that lost verdicts is reported, not
timed as a success; ``--no-subscriber`` leaves the broker with no one to forward to (as when the
consumers are elsewhere). Each figure is a fresh `tinyad run` process, start-up and the wait
for the last PUBACK included; the best and the median of ``--repeats`` are printed, by wall clock
and by the child's CPU time (user + sys), and the ratio with/without (the target is <= 1.20).
Each repeat runs the pair back to back, in turn one first then the other, and the median of the
pairs' own ratios is printed too: on a shared host it moves least with the other jobs' load.
`run --mqtt` formats and publishes in a forked child process (``firmware_host/outputs/publisher.py``):
the CPU figure includes it (``wait4`` counts a child's reaped children), the wall figure is what
a user waits for.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from broker import Broker  # noqa: E402  (the tests' broker fixture, reused)

SDN = ROOT.parent / "shared" / "data" / "sdn_ddos" / "dataset_sdn.csv.gz"
TINYAD = [sys.executable, "-m", "firmware_host.cli"]


def timed(command: list[str]) -> tuple[float, float]:
    """(wall seconds, child CPU seconds) of one command run to completion."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stderr = proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command[3:])} failed: {stderr.strip()}")
    return wall, usage.ru_utime + usage.ru_stime


class RowCounter:
    """A QoS 1 subscriber to ``bench/+/verdicts`` counting the verdict records that arrive (each
    block message's records start ``{"row":``; a time cell's quotes would be escaped)."""

    def __init__(self, port: int):
        import paho.mqtt.client as mqtt

        self.rows = 0
        self.lock = threading.Lock()
        ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-counter")
        self.client.on_connect = lambda client, *_: client.subscribe("bench/+/verdicts", qos=1)
        self.client.on_subscribe = lambda *_: ready.set()
        self.client.on_message = self._count
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not ready.wait(10):
            raise SystemExit("the counting subscriber could not subscribe")

    def _count(self, client, userdata, message) -> None:
        with self.lock:
            self.rows += message.payload.count(b'{"row":')

    def take(self, expected: int, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self.rows < expected and time.monotonic() < deadline:
            time.sleep(0.01)
        with self.lock:
            rows, self.rows = self.rows, 0
        return rows

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", nargs="?", default=str(ROOT / "build" / "default"))
    parser.add_argument("--data", default=str(SDN), help="CSV to score (default: the full SDN DDoS file)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-subscriber", action="store_true", help="no subscriber on the broker")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="tinyad-mqtt-bench-") as folder, \
            Broker(Path(folder) / "broker") as broker:
        counter = None if args.no_subscriber else RowCounter(broker.port)
        out = Path(folder) / "verdicts.csv"
        plain = [*TINYAD, "run", args.bundle, "--input", args.data, "--output", str(out)]
        mqtt = plain + ["--mqtt", broker.url + "/bench", "--mqtt-id", "bench"]
        timed(plain)                                           # warm the page cache and bytecode
        rows = sum(1 for _ in open(out)) - 1
        results = {"without": [], "with": []}
        for repeat in range(args.repeats):                     # interleaved: both see the same machine,
            first, second = ("without", "with") if repeat % 2 == 0 else ("with", "without")   # in turn first
            for name in (first, second):
                results[name].append(timed(plain if name == "without" else mqtt))
            if counter is not None:
                arrived = counter.take(rows)
                if arrived != rows:
                    raise SystemExit(f"the subscriber got {arrived} of {rows} rows")
        if counter is not None:
            counter.close()
    print(f"tinyad run {Path(args.data).name}: {rows:,} rows, {args.repeats} runs each, interleaved; "
          f"QoS 1 to a local Mosquitto{'' if args.no_subscriber else ', one QoS 1 subscriber (every row arrived)'}; "
          f"1-minute load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after (this host has "
          f"{os.cpu_count()} CPUs)")
    for label, index in (("wall", 0), ("cpu", 1)):
        best = {name: min(run[index] for run in runs) for name, runs in results.items()}
        median = {name: statistics.median(run[index] for run in runs) for name, runs in results.items()}
        print(f"  {label:4s} best   without {best['without']:.3f} s ({rows / best['without']:,.0f} rows/s), "
              f"with --mqtt {best['with']:.3f} s ({rows / best['with']:,.0f} rows/s): "
              f"ratio {best['with'] / best['without']:.3f}")
        print(f"  {label:4s} median without {median['without']:.3f} s, with --mqtt {median['with']:.3f} s: "
              f"ratio {median['with'] / median['without']:.3f}")
        # Each pair ran back to back, so its two runs saw about the same load: the steadier figure.
        pairs = sorted(w[index] / wo[index] for w, wo in zip(results["with"], results["without"]))
        print(f"  {label:4s} ratio of each back-to-back pair: median {statistics.median(pairs):.3f}, "
              f"range {pairs[0]:.3f}-{pairs[-1]:.3f}")


if __name__ == "__main__":
    main()
