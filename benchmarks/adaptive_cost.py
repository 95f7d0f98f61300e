"""What adaptive scoring adds to `tinyad run` on a temporal bundle: the same rows streamed through
the bundle's Stream with its adaptive parameters and without them (CPU seconds, best of N).

    python benchmarks/adaptive_cost.py BUNDLE CSV [--repeats 3] [--batch-rows 256]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from firmware_host import adaptive
from firmware_host.csv_input import open_text, read_batches
from firmware_host.runner import Detector


def stream_seconds(detector: Detector, batches: list[np.ndarray], adaptive: bool) -> tuple[float, int]:
    """CPU seconds to push every batch through a fresh stream; and the anomalies it flagged."""
    stream = detector.stream()
    if not adaptive:
        stream.adaptive = None
    flagged = 0
    started = time.process_time()
    for batch in batches:
        flagged += int(stream.push(batch).is_anomaly.sum())
    return time.process_time() - started, flagged


def adaptive_seconds(detector: Detector, batches: list[np.ndarray]) -> float:
    """CPU seconds of the adaptive scorer alone on the same rows and batches (raw scores and
    windows computed beforehand): the part of a run that adaptive scoring adds."""
    stream = detector.stream()
    stream.adaptive = None
    window, work = detector.manifest.window, []
    history = np.zeros((0, len(detector.manifest.features)), np.int8)
    for batch in batches:
        verdicts = stream.push(batch)
        rows = np.concatenate((history, batch))
        windows = np.lib.stride_tricks.sliding_window_view(rows, (window, rows.shape[1]))[:, 0]
        scored = ~verdicts.warming_up
        work.append((verdicts.scores[scored], windows[-int(scored.sum()):] if scored.any() else windows[:0]))
        history = rows[-(window - 1):] if window > 1 else rows[:0]
    state = adaptive.AdaptiveState(detector.manifest.adaptive)
    started = time.process_time()
    for raw, windows in work:
        state.push(raw, windows)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("csv")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-rows", type=int, default=256)
    args = parser.parse_args()
    with Detector(args.bundle) as detector:
        if not detector.manifest.adaptive:
            raise SystemExit(f"{args.bundle}: the bundle has no adaptive parameters")
        handle, source = open_text(args.csv)
        batches = [detector.prepare(raw) for raw in read_batches(handle, detector.manifest, source, args.batch_rows)]
        rows = sum(len(b) for b in batches)
        best = {}
        for _ in range(args.repeats):
            for with_adaptive in (False, True):
                seconds, flagged = stream_seconds(detector, batches, with_adaptive)
                best[with_adaptive] = min(best.get(with_adaptive, (np.inf, 0)), (seconds, flagged))
        alone = min(adaptive_seconds(detector, batches) for _ in range(args.repeats))
    plain, adapted = best[False][0], best[True][0]
    print(f"{rows} rows, window {detector.manifest.window}, batches of {args.batch_rows}, best of {args.repeats}")
    print(f"without adaptive scoring: {plain:.3f} s CPU ({1e6 * plain / rows:.1f} us/row), {best[False][1]} anomalies")
    print(f"with adaptive scoring:    {adapted:.3f} s CPU ({1e6 * adapted / rows:.1f} us/row), {best[True][1]} anomalies")
    print(f"ratio with/without: {adapted / plain:.3f} (adaptive adds {100 * (adapted / plain - 1):.1f} %)")
    print(f"adaptive scorer alone on the same batches: {alone:.3f} s CPU, {100 * alone / plain:.1f} % of the run")


if __name__ == "__main__":
    main()
