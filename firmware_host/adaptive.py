"""Adaptive anomaly level: a detector's raw scores -> a score in [0, 1] and a verdict, numpy only.

The idea is HTM's anomaly likelihood (Ahmad et al. 2017, "Unsupervised real-time anomaly
detection for streaming data", Neurocomputing 262): how improbable is the *recent* average of
the raw score under the distribution of raw-score averages over a *longer* recent past? A raw
score that is large but usual for this series (a noisy stretch) scores low; a jump against
the recent past scores high, and the reference moves with the series, so the threshold adapts
to drift in level and noise. This module is our own formulation:

1. level: each raw score becomes ``sqrt(raw / reference)`` (an error in units of the typical
   validation error), clipped to ``[0, LEVEL_MAX]`` and stored as an integer of
   ``1 / LEVEL_STEPS`` units, so every sum below is exact integer arithmetic;
2. short mean: the mean level of the last ``short`` rows;
3. reference distribution: mean and standard deviation of the short means that ended in the
   ``history`` rows before the current short window began (floored at ``std_floor``);
4. tail: ``q = P(N(0, 1) > z)``, z the current short mean's standard score, and the unit score
   ``log(q + 1e-10) / log(1e-10)``, HTM's log scaling (0.5 is q = 1e-5, 1.0 is q <= 1e-10),
   rounded to a multiple of 1/65535 (the serial link sends it as uint16);
5. verdict: ``unit_score >= threshold``.

Until ``min_history`` short means precede the current one (the first
``min_history + 2 * short - 2`` rows) the unit score is 0: the scorer is still learning.

The state is the ordered list of the last ``span(params)`` levels, nothing else: every score is
recomputed from it with exact integer sums, so replaying those rows rebuilds it bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

UNIT_STEPS = 65535            # unit scores are multiples of 1/UNIT_STEPS (uint16 on the link)
LEVEL_STEPS = 4096            # levels are integers of 1/LEVEL_STEPS: exact sums, no float drift
LEVEL_MAX = 16.0              # a level (error in typical-error units) is clipped here
_LOG_FLOOR = math.log(1e-10)  # HTM's log scaling: q = 1e-10 maps to 1.0

# Documented defaults (HTM's anomaly-likelihood settings, rows of a 5-minute series):
# history 8640 (30 days), averaging window 10, learning period 288 + 100 estimation samples.
DEFAULTS = {"history": 8640, "short": 10, "min_history": 388, "std_floor": 0.05, "threshold": 0.5,
            "reference": 1.0}


def params_with_defaults(params: dict) -> dict:
    """The manifest's ``adaptive`` table completed with ``DEFAULTS`` (unknown keys are kept).

    Raises ValueError when the sums could leave float64's exact integers (2**53)."""
    p = {**DEFAULTS, **params}
    top = int(p["short"]) * round(LEVEL_MAX * LEVEL_STEPS)
    if int(p["short"]) < 1 or int(p["history"]) < 1 or top * top * int(p["history"]) >= 2 ** 53:
        raise ValueError(f"adaptive short = {p['short']}, history = {p['history']}: need both >= 1 and "
                         "short**2 * history below 2**53 / (LEVEL_MAX * LEVEL_STEPS)**2")
    return p


def span(params: dict) -> int:
    """Raw scores the state holds: with the next row they make its short window, the short window
    before it and the ``history`` short means that end there (``history + 2*short - 2``)."""
    p = params_with_defaults(params)
    return int(p["history"]) + 2 * int(p["short"]) - 2


def levels(raw_scores: np.ndarray, params: dict) -> np.ndarray:
    """Raw scores -> int64 levels (``sqrt(raw / reference)`` in 1/LEVEL_STEPS units, clipped);
    NaN or infinite scores count as the top level."""
    raw = np.asarray(raw_scores, dtype=np.float64)
    ratio = np.sqrt(np.maximum(raw, 0.0) / float(params_with_defaults(params)["reference"]))
    ratio = np.where(np.isfinite(ratio), np.minimum(ratio, LEVEL_MAX), LEVEL_MAX)
    return np.rint(ratio * LEVEL_STEPS).astype(np.int64)


def _elementwise(function, values: np.ndarray) -> np.ndarray:
    # Transcendentals go through the C library one value at a time: numpy's vectorised log may
    # take a SIMD path for some elements of an array and a scalar one for the tail, and a score
    # must not depend on where its row fell in a batch.
    return np.frompyfunc(function, 1, 1)(np.asarray(values, dtype=np.float64)).astype(np.float64)


def to_unit(tail: np.ndarray) -> np.ndarray:
    """Tail probabilities -> unit scores in [0, 1], log-scaled and rounded to 1/UNIT_STEPS."""
    unit = _elementwise(math.log, np.asarray(tail, dtype=np.float64) + 1e-10) / _LOG_FLOOR
    return np.rint(np.clip(unit, 0.0, 1.0) * UNIT_STEPS) / UNIT_STEPS


def _gaussian_tail(z: np.ndarray) -> np.ndarray:
    return _elementwise(math.erfc, np.asarray(z, dtype=np.float64) / math.sqrt(2.0)) / 2.0


def _scores_at(seq: np.ndarray, ends: np.ndarray, p: dict) -> np.ndarray:
    """Unit scores of the rows at positions ``ends`` of the level sequence ``seq``, each from the
    levels at or before it (at most ``span`` of them)."""
    short, history = int(p["short"]), int(p["history"])
    c1 = np.concatenate(([0], np.cumsum(seq)))                  # exact int64 prefix sums
    sums = c1[short:] - c1[:-short]                              # short sum ending at row k is sums[k-short+1]
    d1 = np.concatenate(([0], np.cumsum(sums)))
    d2 = np.concatenate(([0], np.cumsum(sums * sums)))
    unit = np.zeros(len(ends))
    current = ends - short + 1                                   # index into sums of the current short window
    last_ref = current - short                                   # reference windows end before it begins
    first_ref = np.maximum(last_ref - history + 1, 0)
    count = last_ref - first_ref + 1
    ok = (current >= 0) & (count >= int(p["min_history"]))
    if not ok.any():
        return unit
    cur, a, b, n = current[ok], first_ref[ok], last_ref[ok] + 1, count[ok].astype(np.float64)
    s1 = (d1[b] - d1[a]).astype(np.float64)
    s2 = (d2[b] - d2[a]).astype(np.float64)
    mean = s1 / n
    var = np.maximum(s2 / n - mean * mean, 0.0)
    scale = float(short * LEVEL_STEPS)                           # sums -> mean levels
    std = np.maximum(np.sqrt(var) / scale, float(p["std_floor"]))
    z = (sums[cur] / scale - mean / scale) / std
    unit[ok] = to_unit(_gaussian_tail(z))
    return unit


class AdaptiveState:
    """The adaptive scorer of one stream: ``push(raw_scores)`` -> (unit scores, verdicts).

    Holds the last ``span(params)`` levels in arrival order and nothing else."""

    def __init__(self, params: dict):
        self.params = params_with_defaults(params)
        self.span = span(self.params)
        self.history = np.zeros(0, dtype=np.int64)

    def reset(self) -> None:
        self.history = np.zeros(0, dtype=np.int64)

    def push(self, raw_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unit scores (float64 multiples of 1/65535) and verdicts of these raw scores, in order."""
        new = levels(raw_scores, self.params)
        seq = np.concatenate((self.history, new))
        ends = np.arange(len(self.history), len(seq))
        unit = _scores_at(seq, ends, self.params) if len(new) else np.zeros(0)
        self.history = seq[-self.span:]
        return unit, unit >= float(self.params["threshold"])


def unit_scores(raw_scores: np.ndarray, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """Unit scores and verdicts of a whole series of raw scores, as a fresh stream gives them."""
    return AdaptiveState(params).push(raw_scores)
