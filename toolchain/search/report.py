"""A search's outputs: the Pareto front as a table (text and CSV), every trial as CSV, and a plot.
Files are written to a temporary name and renamed into place."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

PARETO_CSV, TRIALS_CSV, PARETO_PNG = "pareto.csv", "trials.csv", "pareto.png"
COLUMNS = ("trial", "state", "score", "metric", "fold_scores", "float_score", "agreement", "int8_bytes", "p50_us",
           "parameters", "feasible", "seconds", "worker", "params", "failure")


def _atomic_bytes(path: Path, payload: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(payload)
    os.replace(temporary, path)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return "" if value is None else str(value)


def write_csv(path: Path, rows: list[dict]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in COLUMNS])
    _atomic_bytes(path, buffer.getvalue().encode())
    return path


def table_lines(front: list[dict], chosen: dict | None) -> list[str]:
    """The Pareto front as aligned text, the chosen trial marked with '*'."""
    if not front:
        return ["(no feasible trial: the Pareto front is empty)"]
    metric = front[0]["metric"]
    lines = [f"{'':1}{'trial':>6} {'int8 ' + metric:>12} {'float':>8} {'agree':>7} {'int8 B':>8} {'p50 us':>8}"
             f" {'params':>7}  knobs"]
    for r in front:
        mark = "*" if chosen is not None and r["trial"] == chosen["trial"] else " "
        knobs = ", ".join(f"{k}={_short(v)}" for k, v in sorted(r["params"].items()))
        lines.append(f"{mark}{r['trial']:>6} {r['score']:>12.4f} {r['float_score']:>8.4f} {r['agreement']:>7.4f}"
                     f" {r['int8_bytes']:>8} {r['p50_us']:>8.2f} {r['parameters']:>7}  {knobs}")
    return lines


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def plot(path: Path, rows: list[dict], front: list[dict], chosen: dict | None, limits: dict) -> Path:
    """Two panels, int8 score against int8 bytes and against invoke p50: every complete trial
    (infeasible ones hollow), the front joined, the chosen trial circled, the limits dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    complete = [r for r in rows if r["state"] == "COMPLETE"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    metric = complete[0]["metric"] if complete else "score"
    for ax, key, label, limit in ((axes[0], "int8_bytes", "int8 model bytes", limits["max_bytes"]),
                                  (axes[1], "p50_us", "int8 invoke p50 (µs)", limits["max_p50_us"])):
        for feasible, style in ((True, {"color": "tab:blue"}), (False, {"facecolors": "none",
                                                                        "edgecolors": "tab:gray"})):
            pts = [r for r in complete if r["feasible"] == feasible]
            ax.scatter([r[key] for r in pts], [r["score"] for r in pts], s=22,
                       label="feasible" if feasible else "over a limit", **style)
        ordered = sorted(front, key=lambda r: r[key])
        ax.plot([r[key] for r in ordered], [r["score"] for r in ordered], color="tab:orange", lw=1,
                label="Pareto front")
        if chosen is not None:
            ax.scatter([chosen[key]], [chosen["score"]], s=120, facecolors="none", edgecolors="red", lw=1.5,
                       label=f"chosen (trial {chosen['trial']})")
        ax.axvline(limit, color="black", linestyle="--", lw=0.8, label="limit")
        ax.set_xlabel(label)
        ax.set_ylabel(f"int8 {metric}, mean over folds")
        ax.legend(fontsize=8)
    fig.tight_layout()
    temporary = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(temporary, dpi=110)
    plt.close(fig)
    os.replace(temporary, path)
    return path


def write_outputs(out: Path, rows: list[dict], front: list[dict], chosen: dict | None, limits: dict) -> dict:
    """pareto.csv, trials.csv and pareto.png in ``out``; returns their paths."""
    return {"pareto_csv": write_csv(out / PARETO_CSV, front), "trials_csv": write_csv(out / TRIALS_CSV, rows),
            "plot": plot(out / PARETO_PNG, rows, front, chosen, limits)}
