"""Fitting the AE-LSTM score ``A(t) = a*RE'(t) + b*PE'(t)`` on validation data.

RE' and PE' are the reconstruction and prediction errors standardised by their mean and
standard deviation on validation *normal* windows, so neither dominates by scale alone.
``a`` and ``b`` (a + b = 1, both >= 0) are then chosen on a grid to maximise the average
precision of A on validation: against the labelled anomalies when validation has them,
else against synthetic anomalies made from validation normal windows (``synthetic_anomalies``).
"""

from __future__ import annotations

import numpy as np

GRID = np.round(np.linspace(0.0, 1.0, 21), 2)


def normalisation(re: np.ndarray, pe: np.ndarray) -> dict:
    """Mean and standard deviation of RE and PE over normal windows."""
    def std(v):
        s = float(np.std(v))
        return s if s > 1e-12 else 1.0
    return {"re_mean": float(np.mean(re)), "re_std": std(re), "pe_mean": float(np.mean(pe)), "pe_std": std(pe)}


def fit_ab(re: np.ndarray, pe: np.ndarray, is_anomaly: np.ndarray, norms: dict) -> tuple[dict, list[dict]]:
    """(a, b) maximising validation average precision; returns (params, the grid's table).

    Ties go to the weighting closest to a = b = 0.5."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(is_anomaly, dtype=bool)
    if not 0 < y.sum() < len(y):
        raise ValueError("fitting a and b needs both normal and anomalous validation windows")
    table = []
    for a in GRID:
        params = {**norms, "a": float(a), "b": float(1.0 - a)}
        from firmware_host.scoring import hybrid_score
        ap = float(average_precision_score(y, hybrid_score(re, pe, params)))
        table.append({"a": float(a), "b": float(round(1.0 - a, 2)), "average_precision": ap})
    best = max(table, key=lambda row: (round(row["average_precision"], 6), -abs(row["a"] - 0.5)))
    return {**norms, "a": best["a"], "b": best["b"]}, table


def synthetic_anomalies(windows: np.ndarray, seed: int) -> np.ndarray:
    """Copies of normal windows whose last sample is made anomalous, half each way:

    - spike: one feature of the last sample moved by 3 to 6 (scaled units, i.e. training
      standard deviations), up or down -- a point anomaly;
    - out of context: the last sample replaced by a sample from a window at least W steps away
      -- a value normal somewhere, wrong here (a contextual anomaly).
    Used only to choose a and b when validation holds no labelled anomaly."""
    rng = np.random.default_rng(seed)
    out = np.array(windows, dtype=np.float32, copy=True)
    n, window, features = out.shape
    half = n // 2
    which = rng.integers(0, features, size=half)
    out[np.arange(half), -1, which] += rng.choice([-1.0, 1.0], size=half) * rng.uniform(3.0, 6.0, size=half)
    for i in range(half, n):
        far = [j for j in (i - 4 * window, i + 4 * window, i - 8 * window, i + 8 * window) if 0 <= j < n]
        source = far[rng.integers(len(far))] if far else rng.integers(n)
        out[i, -1] = windows[source, -1]
    return out
