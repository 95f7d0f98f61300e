"""What ``--explain K`` costs: microseconds per explained row, and per scored row end to end.

    python benchmarks/explain_cost.py BUNDLE CSV [--k 3] [--rows 20000] [--repeats 5] [--run]

Prints, best of ``--repeats``:
- ``explain``: ``Detector.explain`` alone (dequantize, per-feature weights, top K) on every row,
  as if every row were flagged: the cost per explained row;
- ``stream push``: ``Stream.push`` over the same rows without and with ``explain=K`` (only
  flagged rows are explained, as ``tinyad run`` does), per scored row, and the share of them flagged;
- with ``--run``: the CPU time (user + sys) of a fresh ``tinyad run BUNDLE --input CSV`` process
  on the whole file, without and with ``--explain K`` (start-up and output included).
"""

from __future__ import annotations

import argparse
import gzip
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from firmware_host.csv_input import read_batches
from firmware_host.runner import Detector


def best(repeats: int, work) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("csv", type=Path)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--run", action="store_true", help="also time `tinyad run` end to end (CPU seconds)")
    args = parser.parse_args()
    with Detector(args.bundle) as detector:
        opener = gzip.open if args.csv.suffix == ".gz" else open
        with opener(args.csv, "rt", encoding="utf-8-sig", newline="") as text:
            raw = np.vstack(list(read_batches(text, detector.manifest, str(args.csv), 65536)))[:args.rows]
        prepared = detector.prepare(raw)
        stream = detector.stream()
        window = stream.window
        if window > 1:       # every window of the input, as the stream forms them
            inputs = np.lib.stride_tricks.sliding_window_view(prepared, window, axis=0).transpose(0, 2, 1).copy()
        else:
            inputs = prepared
        outputs = detector.model.invoke_all(inputs)
        n = len(inputs)
        explained = best(args.repeats, lambda: detector.explain(inputs, outputs, args.k))
        plain = best(args.repeats, lambda: detector.stream().push(prepared))
        with_why = best(args.repeats, lambda: detector.stream(args.k).push(prepared))
        flagged = float(np.mean(detector.stream().push(prepared).is_anomaly))
    m = detector.manifest
    print(f"bundle {args.bundle} ({m.detector}, {len(m.features)} features, window {m.window}), {len(raw)} rows, "
          f"K = {args.k}")
    print(f"explain alone:        {explained / n * 1e6:.2f} us per explained row ({n} rows)")
    print(f"stream push, no why:  {plain / len(raw) * 1e6:.2f} us per row")
    print(f"stream push, with why: {with_why / len(raw) * 1e6:.2f} us per row "
          f"(+{(with_why - plain) / len(raw) * 1e6:.2f} us; {flagged:.1%} of rows flagged)")
    if args.run:
        for extra in ([], ["--explain", str(args.k)]):
            print(f"tinyad run {' '.join(extra) or '(no --explain)'}: "
                  f"{run_cpu(args.bundle, args.csv, extra, args.repeats):.2f} s CPU, best of {args.repeats}")


def run_cpu(bundle: Path, data: Path, extra: list[str], repeats: int) -> float:
    """Least CPU seconds of ``repeats`` fresh ``tinyad run`` processes."""
    best_cpu = float("inf")
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(repeats):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([sys.executable, "-m", "firmware_host.cli", "run", str(bundle), "--input", str(data),
                            "--output", str(Path(scratch) / "verdicts.csv"), *extra], check=True, capture_output=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            best_cpu = min(best_cpu, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return best_cpu


if __name__ == "__main__":
    main()
