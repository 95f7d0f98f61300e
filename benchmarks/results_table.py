"""Print the README's results table from built bundles' report.json and a bench run of each.

    python benchmarks/results_table.py build/sdn_ddos_vae_dnn build/sdn_ddos_ae build/nbaiot_ae build/default

Every figure comes from the bundles (tinyad build) and a fresh bench in this process (tinyad bench).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from firmware_host.bench import bench_bundle


def _row(name, split, models, xgb, size, bench, claim=""):
    i8, fl = models["int8"], models["float"]
    xgb_txt = f"{xgb['accuracy']:.4f} / {xgb['f1']:.4f}" if xgb else "-"
    lat = f"{bench['int8']['invoke_us_p50']:.1f} / {bench['int8']['invoke_us_p99']:.1f}" if bench else "-"
    return (f"| {name} | {split} | {fl['accuracy']:.4f} / {fl['f1']:.4f} | {i8['accuracy']:.4f} / {i8['f1']:.4f} | "
            f"{i8['roc_auc']:.4f} | {xgb_txt} | {size} | {lat} | {claim} |")


def main(bundles: list[str]) -> None:
    print("| recipe | split | float acc / F1 | int8 acc / F1 | int8 ROC-AUC | XGBoost acc / F1 | int8 bytes "
          "(weights ratio) | int8 p50 / p99 us | paper claim |")
    print("|---|---|---|---|---|---|---|---|---|")
    per_class = []
    for bundle in bundles:
        report = json.loads((Path(bundle) / "report.json").read_text())
        bench = bench_bundle(bundle, invokes=2000)
        q = report["quantize"]
        size = f"{q['size_bytes']['int8']} ({q['weight_ratio']:.3f})"
        name = report["recipe"]["name"]
        claim = "95.68 % acc (VAE+DNN)" if report["recipe"]["detector"]["kind"] == "vae_dnn" else ""
        xgb = report["features"]["xgboost_baseline"]["test"]
        print(_row(name, report["split"]["method"], report["verify"]["models"], xgb, size, bench, claim))
        for method, other in report["splits"].items():
            print(_row(name, method, other["verify"]["models"], other["xgboost_baseline"]["test"], "", None, claim))
        if "per_class" in report["verify"]["models"]["int8"]:
            per_class.append((name, report))
    for name, report in per_class:
        print(f"\n{name}: per attack class on the test split (ROC-AUC, TPR at FPR <= 0.01)\n")
        print("| class | AE int8 AUC | AE int8 TPR@1%FPR | AE float AUC | IsolationForest AUC | IsolationForest TPR@1%FPR |")
        print("|---|---|---|---|---|---|")
        ae = report["verify"]["models"]
        forest = report["baselines"]["isolation_forest"]["per_class"]
        for cls in sorted(forest):
            print(f"| {cls} | {ae['int8']['per_class'][cls]['roc_auc']:.4f} | "
                  f"{ae['int8']['per_class'][cls]['tpr_at_fpr_0.01']:.3f} | {ae['float']['per_class'][cls]['roc_auc']:.4f} | "
                  f"{forest[cls]['roc_auc']:.4f} | {forest[cls]['tpr_at_fpr_0.01']:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
