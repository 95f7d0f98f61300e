"""The comparison a build reports: the recipe's detector (float and int8) beside the classical
baselines, all scored on the same split and the same test rows, with sizes and latency.

The papers' tables set deep detectors against exactly such baselines; this table does the
same without favouring either side: where a baseline scores higher, the table shows it.
"""

from __future__ import annotations

from pathlib import Path

from firmware_host import manifest as mf

LATENCY_INVOKES = 1000
COLUMNS = ("f1", "roc_auc", "pr_auc")


def detector_latency(work: Path) -> dict:
    """Single-sample invoke latency (p50/p99 microseconds) of the float and int8 models in ``work``,
    through the run side's own benchmark and interpreter loader."""
    from firmware_host.bench import bench_model
    from firmware_host.interpreter import load_runtime

    runtime = load_runtime()
    return {name: bench_model(work / file, runtime, LATENCY_INVOKES, 50, 0)
            for name, file in (("int8", mf.MODEL_FILE), ("float", mf.FLOAT_MODEL_FILE))}


def comparison_rows(report: dict, latency: dict | None = None) -> list[dict]:
    """One row per scorer: detector float, detector int8, then each baseline (or why it was skipped)."""
    rows = []
    verify, quant = report["verify"], report["quantize"]
    kind = report["recipe"]["detector"]["kind"]
    for model in ("float", "int8"):
        m = verify["models"][model]
        row = {"scorer": f"{kind} ({model})", **{k: m[k] for k in COLUMNS},
               "parameters": report["train"]["parameters"], "bytes": quant["size_bytes"][model]}
        if latency:
            row["p50_us"] = latency[model]["invoke_us_p50"]
            row["p99_us"] = latency[model]["invoke_us_p99"]
        _windows(row, m)
        rows.append(row)
    for name, result in report.get("baselines", {}).items():
        if "skipped" in result:
            rows.append({"scorer": name, "skipped": result["skipped"]})
            continue
        row = {"scorer": name, **{k: result[k] for k in COLUMNS}, "parameters": result.get("parameters")}
        _windows(row, result)
        rows.append(row)
    return rows


def _windows(row: dict, metrics: dict) -> None:
    w = metrics.get("windows")
    if w:
        row["windows"] = f"{w['detected']}/{w['windows']}"
        row["false_alarms_per_1000"] = w["false_alarms_per_1000"]
        row["mean_delay_rows"] = w["mean_delay_rows"]


def comparison_lines(rows: list[dict]) -> list[str]:
    """The table as text, for the CLI."""
    windows = any("windows" in r for r in rows)
    head = f"{'scorer':28} {'F1':>7} {'ROC-AUC':>8} {'PR-AUC':>7}"
    head += f" {'windows':>8} {'FA/1000':>8} {'delay':>6}" if windows else ""
    head += f" {'params':>8} {'bytes':>7} {'p50 us':>8} {'p99 us':>8}"
    lines = [head]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['scorer']:28} skipped: {r['skipped']}")
            continue
        line = f"{r['scorer']:28} {r['f1']:7.4f} {r['roc_auc']:8.4f} {r['pr_auc']:7.4f}"
        if windows:
            delay = r.get("mean_delay_rows")
            line += (f" {r.get('windows', '-'):>8} {r.get('false_alarms_per_1000', float('nan')):8.2f}"
                     f" {'-' if delay is None or delay != delay else f'{delay:.0f}':>6}")
        params = r.get("parameters")
        line += f" {'-' if params is None else params:>8} {r.get('bytes', '-'):>7}"
        line += (f" {r['p50_us']:8.1f} {r['p99_us']:8.1f}" if "p50_us" in r else f" {'-':>8} {'-':>8}")
        lines.append(line)
    return lines
