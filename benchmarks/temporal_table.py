"""Print the README's temporal-detector tables from built bundles' report.json.

    python benchmarks/temporal_table.py build/nab_machine_temperature_lstm build/ton_iot_weather_cnn_lstm_attn ...

One headline row per bundle (float and int8 beside the best baseline; with labelled windows,
windows caught, false alarms and NAB's standard score of the test verdicts), then each bundle's full
comparison (the detector and every baseline on the same test rows; latency from the build's
own run-side benchmark). Every figure comes from the bundles; nothing is typed in by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _fmt(value, spec=".4f"):
    return "-" if value is None or value != value else format(value, spec)


def _quality(row: dict, windows: bool) -> str:
    if not windows:
        return f"F1 {row['f1']:.4f}"
    return f"{row['windows']}, {row['false_alarms_per_1000']:.2f}/1000, NAB {_fmt(row.get('nab_standard'), '.1f')}"


def headline(report: dict) -> str:
    rows = {r["scorer"]: r for r in report["compare"]}
    kind = report["recipe"]["detector"]["kind"]
    fl, i8 = rows[f"{kind} (float)"], rows[f"{kind} (int8)"]
    baselines = [r for r in report["compare"] if "(" not in r["scorer"] and "skipped" not in r]
    key = "roc_auc"
    best = max(baselines, key=lambda r: (-1 if r[key] != r[key] else r[key]))
    quality = (lambda r: _quality(r, "windows" in i8))
    return (f"| `{report['recipe']['name']}` | {report['split']['method']} | {quality(fl)} | {quality(i8)} | "
            f"{_fmt(i8['roc_auc'])} | {best['scorer']}: {quality(best)}, AUC {_fmt(best['roc_auc'])} | "
            f"{i8['parameters']:,} | {i8['bytes']:,} | {i8['p50_us']:.0f} / {i8['p99_us']:.0f} |")


def full(report: dict) -> list[str]:
    windows = any("windows" in r for r in report["compare"])
    head = "| scorer | F1 | ROC-AUC | PR-AUC |" + (" windows | FA / 1000 | mean delay (rows) | NAB std |"
                                                 if windows else "")
    head += " params | bytes | p50 / p99 µs |"
    lines = [f"\n`{report['recipe']['name']}`\n", head, "|---" * (head.count("|") - 1) + "|"]
    for r in report["compare"]:
        if "skipped" in r:
            lines.append(f"| {r['scorer']} | skipped: {r['skipped']} |")
            continue
        line = f"| {r['scorer']} | {_fmt(r.get('f1'))} | {_fmt(r.get('roc_auc'))} | {_fmt(r.get('pr_auc'))} |"
        if windows:
            line += f" {r.get('windows', '-')} | {_fmt(r.get('false_alarms_per_1000'), '.2f')} | " \
                    f"{_fmt(r.get('mean_delay_rows'), '.0f')} | {_fmt(r.get('nab_standard'), '.1f')} |"
        line += f" {r.get('parameters', '-')} | {r.get('bytes', '-')} | "
        line += f"{r['p50_us']:.0f} / {r['p99_us']:.0f} |" if "p50_us" in r else "- |"
        lines.append(line)
    return lines


def main(bundles: list[str]) -> None:
    reports = [json.loads((Path(b) / "report.json").read_text()) for b in bundles]
    print("| recipe | split | float | int8 | int8 ROC-AUC | best baseline (by ROC-AUC) | params | int8 bytes "
          "| int8 p50 / p99 µs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for report in reports:
        print(headline(report))
    for report in reports:
        print("\n".join(full(report)))


if __name__ == "__main__":
    main(sys.argv[1:])
