"""Our NAB scorer on the three published detectors' scores, beside NAB's own numbers.

    python benchmarks/nab_reference.py [NAB_FOLDER]      # default ../shared/data/nab

Reads ``reference/<detector>/**.csv.gz`` and ``reference/expected_scores.json`` (NAB v1.1's own
scorer on the same 11 series as one corpus) and prints, per detector and profile, our score,
NAB's, the difference, our optimised threshold and the time our scorer took.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from toolchain.nab_score import PROFILES, REFERENCE_DETECTORS, nab_scores_all_profiles, reference_corpus

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab"


def main(folder: Path) -> None:
    expected = json.loads((folder / "reference" / "expected_scores.json").read_text())["detectors"]
    print(f"{'detector':<18}{'profile':<20}{'ours':>8}{'NAB':>8}{'diff':>8}{'threshold':>12}"
          f"{'windows':>9}{'FP rows':>8}{'seconds':>9}")
    for detector in REFERENCE_DETECTORS:
        files, windows = reference_corpus(folder, detector)
        start = time.perf_counter()
        results = nab_scores_all_profiles(files, windows)
        seconds = time.perf_counter() - start
        for profile in PROFILES:
            r, nab = results[profile], expected[detector][profile]
            print(f"{detector:<18}{profile:<20}{r.score:8.3f}{nab:8.3f}{r.score - nab:8.3f}{r.threshold:12.6f}"
                  f"{f'{r.detected}/{r.windows}':>9}{r.false_positives:>8}{seconds:9.2f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT)
