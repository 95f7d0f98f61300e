"""The report's figure: test score distributions (float vs int8) and the feature k-sweep."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_report(report: dict, scores: dict, path: Path) -> Path:
    """Write a PNG with three panels; ``scores`` holds test scores per model and ``is_attack``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attack = np.asarray(scores["is_attack"], dtype=bool)
    verify = report["verify"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, name in zip(axes[:2], ("float", "int8")):
        values = np.asarray(scores[name], dtype=np.float64)
        bins = np.linspace(values.min(), values.max(), 60) if np.ptp(values) else 10
        ax.hist(values[~attack], bins=bins, alpha=0.6, label="normal", color="tab:blue", log=True)
        ax.hist(values[attack], bins=bins, alpha=0.6, label="anomalous", color="tab:red", log=True)
        ax.axvline(verify["models"][name]["threshold"], color="black", linestyle="--", label="threshold")
        m = verify["models"][name]
        ax.set_title(f"{name}: F1 {m['f1']:.4f}, ROC-AUC {m['roc_auc']:.4f}")
        ax.set_xlabel("anomaly score (test split)")
        ax.legend()
    sweep = report["features"].get("sweep") or []
    ax = axes[2]
    if sweep:
        ks = [str(row["k"]) for row in sweep]
        ax.bar(ks, [row["validation_f1"] for row in sweep], color="tab:green")
        ax.set_ylim(0, 1.05)
        for i, row in enumerate(sweep):
            ax.text(i, 0.02, f"{row['int8_size_bytes'] / 1024:.1f} KB", ha="center", color="white")
        ax.set_title("k-sweep: validation F1 (int8 size in bars)")
        ax.set_xlabel("top-k features")
    else:
        ax.axis("off")
    fig.suptitle(f"{report['recipe']['name']}: {report['recipe']['detector']['kind']}, "
                 f"interpreter {verify['interpreter']}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
