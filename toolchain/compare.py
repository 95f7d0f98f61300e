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
    """One row per scorer: detector float, detector int8, their adaptive verdicts (what ``tinyad run``
    flags, when the bundle scores adaptively), then each baseline (or why it was skipped)."""
    rows = []
    verify, quant = report["verify"], report["quantize"]
    kind = report["recipe"]["detector"]["kind"]
    for model in ("float", "int8"):
        m = verify["models"][model]
        row = {"scorer": f"{kind} ({model})", **_figures(m),
               "parameters": report["train"]["parameters"], "bytes": quant["size_bytes"][model]}
        if latency:
            row["p50_us"] = latency[model]["invoke_us_p50"]
            row["p99_us"] = latency[model]["invoke_us_p99"]
        _windows(row, m)
        rows.append(row)
    for model, w in verify.get("adaptive", {}).get("windows", {}).items():
        row = {"scorer": f"{kind} ({model}, adaptive)", "bytes": quant["size_bytes"][model]}
        _windows(row, {"windows": w})
        rows.append(row)
    for name, result in report.get("baselines", {}).items():
        if "skipped" in result:
            rows.append({"scorer": name, "skipped": result["skipped"]})
            continue
        row = {"scorer": name, **_figures(result), "parameters": result.get("parameters")}
        _windows(row, result)
        rows.append(row)
    return rows


def _figures(metrics: dict) -> dict:
    """F1 and the AUCs of one scorer; None (shown as '-') where the rows hold no attack to find."""
    defined = metrics.get("attack_rows") != 0
    return {k: metrics[k] if defined else None for k in COLUMNS}


def _windows(row: dict, metrics: dict) -> None:
    w = metrics.get("windows")
    if w:
        row["windows"] = f"{w['detected']}/{w['windows']}"
        row["false_alarms_per_1000"] = w["false_alarms_per_1000"]
        row["mean_delay_rows"] = w["mean_delay_rows"]
        if w.get("nab"):
            row["nab_standard"] = w["nab"]["standard"]["score"]


def _num(value, width: int, places: int) -> str:
    """A right-aligned figure, or '-' when there is none (None or NaN)."""
    return f"{'-':>{width}}" if value is None or value != value else f"{value:{width}.{places}f}"


def comparison_lines(rows: list[dict]) -> list[str]:
    """The table as text, for the CLI. NAB is NAB's standard-profile score of the row's verdicts
    on the test rows (100 = every window caught at its start, no false alarm; 0 = no alarm)."""
    windows = any("windows" in r for r in rows)
    head = f"{'scorer':28} {'F1':>7} {'ROC-AUC':>8} {'PR-AUC':>7}"
    head += f" {'windows':>8} {'FA/1000':>8} {'delay':>6} {'NAB':>6}" if windows else ""
    head += f" {'params':>8} {'bytes':>7} {'p50 us':>8} {'p99 us':>8}"
    lines = [head]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['scorer']:28} skipped: {r['skipped']}")
            continue
        line = (f"{r['scorer']:28} {_num(r.get('f1'), 7, 4)} {_num(r.get('roc_auc'), 8, 4)}"
                f" {_num(r.get('pr_auc'), 7, 4)}")
        if windows:
            line += (f" {r.get('windows', '-'):>8} {_num(r.get('false_alarms_per_1000'), 8, 2)}"
                     f" {_num(r.get('mean_delay_rows'), 6, 0)} {_num(r.get('nab_standard'), 6, 1)}")
        params = r.get("parameters")
        line += f" {'-' if params is None else params:>8} {r.get('bytes', '-'):>7}"
        line += (f" {r['p50_us']:8.1f} {r['p99_us']:8.1f}" if "p50_us" in r else f" {'-':>8} {'-':>8}")
        lines.append(line)
    return lines


# -- NAB figures of a per-series build (toolchain/pipeline.py's summary) ------------------------

def run_windows(report: dict, model: str) -> dict | None:
    """Window figures of what ``tinyad run`` flags for ``model`` ("float" / "int8"): the adaptive
    verdicts when the bundle scores adaptively, else the threshold verdicts."""
    verify = report["verify"]
    return verify.get("adaptive", {}).get("windows", {}).get(model) or verify["models"][model].get("windows")


def series_nab(report: dict) -> dict:
    """A build's NAB figures for its summary row: ``float_nab`` / ``int8_nab`` (of the run
    verdicts) and ``baseline_nab`` per baseline, each ``{profile: {score, raw, null, perfect}}``."""
    row = {}
    for model in ("float", "int8"):
        w = run_windows(report, model)
        if w and w.get("nab"):
            row[f"{model}_nab"] = w["nab"]
    row["baseline_nab"] = {name: b["windows"]["nab"] for name, b in report.get("baselines", {}).items()
                           if b.get("windows", {}).get("nab")}
    return row


def nab_cell(row: dict) -> str:
    """'float / int8' NAB standard scores of one summary row."""
    return " / ".join(_num(row.get(f"{m}_nab", {}).get("standard", {}).get("score"), 1, 1) for m in ("float", "int8"))


def nab_corpus_lines(rows: list[dict]) -> list[str]:
    """NAB scores of every built series taken as one corpus (fixed verdicts, so raw scores add
    up): one markdown bullet per scorer, profiles standard / reward low FP / reward low FN."""
    from .nab_score import PROFILES, combine_fixed

    built = [r for r in rows if "error" not in r]
    scorers = {f"tinyad {m}": [r[f"{m}_nab"] for r in built if f"{m}_nab" in r] for m in ("float", "int8")}
    for name in sorted({n for r in built for n in r.get("baseline_nab", {})}):
        scorers[name] = [r["baseline_nab"][name] for r in built if name in r.get("baseline_nab", {})]
    lines = []
    for name, parts in scorers.items():
        if parts:
            scores = combine_fixed(parts)
            lines.append(f"- {name} ({len(parts)} series): NAB " + " / ".join(_num(scores[p], 1, 1) for p in PROFILES))
    return lines
