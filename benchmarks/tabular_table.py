"""Print the README's tabular results table (int8 detector beside XGBoost) from built bundles.

    python benchmarks/tabular_table.py build/sdn_ddos_vae_dnn build/sdn_ddos_vae_dnn-distilled ...

One row per split a bundle reports (its own split, then every ``also_report`` split): int8 F1,
float F1, XGBoost F1 on the same selected features and test rows (threshold chosen on
validation, report.json ``baselines.xgboost``) and on every candidate feature
(``features.xgboost_baseline``, threshold 0.5), int8-vs-float verdict agreement, the int8
model's agreement with its XGBoost teacher (distilled bundles), int8 bytes and the int8 invoke
p50 from a fresh ``tinyad bench`` run here. The last columns check the device targets
(int8 <= 64 KB, p50 <= 10 us).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from firmware_host.bench import bench_bundle

MAX_BYTES, MAX_P50_US = 65536, 10.0


def _f1(entry: dict | None) -> str:
    return "-" if not entry or "f1" not in entry else f"{entry['f1']:.4f}"


def _share(value: float) -> str:
    return f"{100 * value:.2f} %"


def rows_of(bundle: Path, bench: dict) -> list[str]:
    report = json.loads((bundle / "report.json").read_text())
    name = bundle.name
    size = report["quantize"]["size_bytes"]["int8"]
    p50 = bench["int8"]["invoke_us_p50"]
    splits = [(report["split"]["method"], report["verify"], report.get("baselines", {}),
               report["features"].get("xgboost_baseline"))]
    splits += [(method, other["verify"], other.get("baselines", {}), other.get("xgboost_baseline"))
               for method, other in report.get("splits", {}).items()]
    lines = []
    for method, verify, baselines, xgb_all in splits:
        models = verify["models"]
        teacher = verify.get("teacher")
        agree = verify["int8_vs_float"]["verdict_agreement"]
        lines.append(
            f"| `{name}` | {method} | {models['int8']['f1']:.4f} | {models['float']['f1']:.4f} | "
            f"{_f1(baselines.get('xgboost'))} | {_f1((xgb_all or {}).get('test'))} | {100 * agree:.2f} % | "
            f"{_share(teacher['int8_agreement']) if teacher else '-'} | {size:,} | {p50:.1f} | "
            f"{'yes' if size <= MAX_BYTES and p50 <= MAX_P50_US else 'NO'} |")
    return lines


def main(bundles: list[str]) -> None:
    print("| bundle | split | int8 F1 | float F1 | XGBoost F1 (same features) | XGBoost F1 (all features) | "
          "int8 vs float agreement | int8 vs teacher | int8 bytes | int8 p50 µs | ≤ 64 KB and ≤ 10 µs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for bundle in bundles:
        for line in rows_of(Path(bundle), bench_bundle(bundle, invokes=2000)):
            print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
