"""Print the README's search results from `tinyad search` output folders.

    python benchmarks/search_table.py build/search/default build/search/sdn_ddos_vae_dnn ...

One row per search: trials (complete / failed / over a limit), the chosen trial's knobs and its
mean int8 score on the validation folds, its int8 bytes and p50, then the final build's figures
on the test part (scored once): int8 and float F1, verdict agreement, XGBoost F1 on the same
features and test rows and on every feature, and the gap int8 - XGBoost (where the final build
failed a gate, the figures its verify stage recorded in work/). Then each search's Pareto front. Every figure comes from trials.csv, pareto.csv, chosen.toml and the bundle's
report.json; nothing is typed in by hand.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path


def _fmt(value, spec=".4f") -> str:
    return "-" if value is None or value != value else format(value, spec)


def _knobs(params: str) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in sorted(json.loads(params).items()))


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def summary(out: Path) -> dict:
    trials = _rows(out / "trials.csv")
    front = _rows(out / "pareto.csv")
    header = (out / "chosen.toml").read_text() if (out / "chosen.toml").is_file() else ""
    found = re.search(r"trial (\d+) of", header)
    chosen = next((r for r in front if found and r["trial"] == found.group(1)), None)
    report_path = out / "bundle" / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    if report is None and (out / "work" / "verify.json").is_file():
        # The final build failed a gate on the test part: its verify stage still recorded the figures
        # of the attempt it kept (XGBoost on the same features is measured after the gates: none).
        report = {"verify": json.loads((out / "work" / "verify.json").read_text()), "baselines": {},
                  "features": json.loads((out / "work" / "features.json").read_text()), "gate_failed": True}
    return {"name": out.name, "trials": trials, "front": front, "chosen": chosen, "report": report}


def headline(s: dict) -> str:
    trials = s["trials"]
    failed = sum(r["state"] == "FAIL" for r in trials)
    over = sum(r["state"] == "COMPLETE" and r["feasible"] == "False" for r in trials)
    c = s["chosen"]
    knobs = _knobs(c["params"]) if c else "-"
    cells = [s["name"], f"{len(trials)} / {failed} / {over}", knobs,
             _fmt(float(c["score"])) if c else "-", c["int8_bytes"] if c else "-",
             _fmt(float(c["p50_us"]), ".2f") if c else "-"]
    r = s["report"]
    if r:
        models = r["verify"]["models"]
        xgb = r["baselines"].get("xgboost", {}).get("f1")
        every = (r["features"].get("xgboost_baseline") or {}).get("test", {}).get("f1")
        gate = " (gate FAILED: no bundle)" if r.get("gate_failed") else ""
        cells += [_fmt(models["int8"]["f1"]), _fmt(models["float"]["f1"]),
                  _fmt(r["verify"]["int8_vs_float"]["verdict_agreement"]) + gate, _fmt(xgb), _fmt(every),
                  _fmt(models["int8"]["f1"] - max(v for v in (xgb, every) if v is not None), "+.4f")]
        for method, other in r.get("splits", {}).items():
            cells[0] += f" (also '{method}': int8 F1 {_fmt(other['verify']['models']['int8']['f1'])}, XGBoost " \
                        f"{_fmt(other['xgboost_baseline']['test']['f1'])})"
    else:
        cells += ["-"] * 6
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main(folders: list[str]) -> None:
    searches = [summary(Path(f)) for f in folders]
    print("| search | trials / failed / over a limit | chosen knobs | fold int8 F1 | int8 B | p50 us | "
          "test int8 F1 | test float F1 | agreement | XGBoost F1 (same features) | XGBoost F1 (every feature) | "
          "int8 - best XGBoost |")
    print("|" + "---|" * 12)
    for s in searches:
        print(headline(s))
    for s in searches:
        print(f"\nPareto front of {s['name']} (feasible trials; int8 mean over the validation folds):\n")
        print("| trial | int8 score | float score | agreement (worst fold) | int8 B | p50 us | knobs |")
        print("|---|---|---|---|---|---|---|")
        for r in s["front"]:
            knobs = _knobs(r["params"])
            print(f"| {r['trial']} | {_fmt(float(r['score']))} | {_fmt(float(r['float_score']))} | "
                  f"{_fmt(float(r['agreement']))} | {r['int8_bytes']} | {_fmt(float(r['p50_us']), '.2f')} | {knobs} |")


if __name__ == "__main__":
    main(sys.argv[1:])
