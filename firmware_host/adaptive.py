"""Adaptive anomaly level: a detector's raw scores -> a score in [0, 1] and a verdict, numpy only.

The idea is HTM's anomaly likelihood (Ahmad et al. 2017, "Unsupervised real-time anomaly
detection for streaming data", Neurocomputing 262): how improbable is the *recent* average of
a raw score under the distribution of its averages over a *longer* recent past? A raw score
that is large but usual for this series (a noisy stretch) scores low; a jump against the recent
past scores high, and the reference moves with the series, so the threshold adapts to drift in
level and noise. This module is our own formulation, over up to three raw scores per row
(channels): the model's (e.g. the LSTM's forecast error), and two that a temporal bundle's int8
window gives exactly in integers: the step from the previous sample (the error of a "no change"
forecast) and the distance of the current sample from the mean of the W-1 before it:

1. level: each raw score becomes ``sqrt((raw - offset) / reference)`` (an error in units of its
   mean on the validation rows), clipped to ``[0, LEVEL_MAX]`` and stored as an integer of
   ``1 / LEVEL_STEPS`` units, so every sum below is exact integer arithmetic;
2. short mean: the mean level of the last ``short`` rows;
3. reference distribution: mean and standard deviation of the short means that ended in the
   ``history`` rows before the current short window began (floored at ``std_floor``);
4. tail: ``q = P(N(0, 1) > z)``, z the current short mean's standard score, and the unit score
   ``log(q + 1e-10) / log(1e-10)``, HTM's log scaling (0.5 is q = 1e-5, 1.0 is q <= 1e-10),
   rounded to a multiple of 1/65535 (the serial link sends it as uint16); the row takes the
   highest of its channels' scores;
5. range check (HTM's NAB detector's "spatial anomaly"): a current sample that lies beyond the
   range of the previous ``history`` samples by more than ``spatial_tolerance`` of that range
   (any feature, int8 input values) scores 1.0; 0 turns it off;
6. onset: a row keeps its score only if it is above every score of the ``quiet`` rows before
   it, else it scores 0 (an anomaly is reported when it starts or grows, not on every row it
   lasts: a long episode is one alarm, not hundreds); 0 turns it off;
7. verdict: ``unit_score >= threshold``.

Until ``min_history`` short means (and samples) precede a row, steps 4 and 5 give it 0: the
scorer is still learning (the first ``min_history + 2 * short - 2`` rows).

The state is the ordered list of the last ``span(params)`` levels and input samples, nothing
else: every score is recomputed from it with exact integer arithmetic, so replaying those rows
rebuilds it bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

UNIT_STEPS = 65535            # unit scores are multiples of 1/UNIT_STEPS (uint16 on the link)
LEVEL_STEPS = 4096            # levels are integers of 1/LEVEL_STEPS: exact sums, no float drift
LEVEL_MAX = 16.0              # a level (error in typical-error units) is clipped here
_LOG_FLOOR = math.log(1e-10)  # HTM's log scaling: q = 1e-10 maps to 1.0

# Defaults: HTM's anomaly-likelihood history (8640 rows, 30 days of 5-minute samples), learning
# period (288 + 100 estimation rows) and the NAB detector's spatial tolerance (0.05); short,
# std_floor and quiet were chosen on the NAB corpus (README, "Adaptive scoring").
DEFAULTS = {"history": 8640, "short": 1, "min_history": 388, "std_floor": 0.05, "threshold": 0.5,
            "reference": 1.0, "offset": 0.0, "change_reference": 0.0, "context_reference": 0.0,
            "spatial_tolerance": 0.05, "quiet": 20}


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
    """Rows the state holds: with the next row they make its short window, the short window before
    it, the ``history`` short means that end there, and as much again for each of the ``quiet``
    rows before it (``history + 2*short - 2 + quiet``)."""
    p = params_with_defaults(params)
    return int(p["history"]) + 2 * int(p["short"]) - 2 + int(p["quiet"])


def levels(raw_scores: np.ndarray, reference: float, offset: float = 0.0) -> np.ndarray:
    """Raw scores -> int64 levels (``sqrt((raw - offset) / reference)`` in 1/LEVEL_STEPS units,
    clipped to [0, LEVEL_MAX]); NaN or infinite scores count as the top level. ``offset`` is 0
    for squared errors and the validation minimum for a score that can be negative (``ae_lstm``)."""
    raw = np.asarray(raw_scores, dtype=np.float64)
    ratio = np.sqrt(np.maximum(raw - float(offset), 0.0) / float(reference))
    ratio = np.where(np.isfinite(ratio), np.minimum(ratio, LEVEL_MAX), LEVEL_MAX)
    return np.rint(ratio * LEVEL_STEPS).astype(np.int64)


def change_scores(windows: np.ndarray) -> np.ndarray:
    """Per int8 window (rows, W, features): the mean square step from the previous sample to the
    current one (int8 units squared), the error of a "no change" forecast, exact in integers."""
    w = np.asarray(windows, np.int64)
    step = w[:, -1] - w[:, -2]
    return np.mean(step * step, axis=1).astype(np.float64)


def context_scores(windows: np.ndarray) -> np.ndarray:
    """Per int8 window: the mean square distance of the current sample from the mean of the W-1
    samples before it (int8 units squared), from integer sums, so it does not depend on order."""
    w = np.asarray(windows, np.int64)
    past = w.shape[1] - 1
    gap = past * w[:, -1] - w[:, :-1].sum(axis=1)                  # past * (current - mean), exact
    return np.mean(gap * gap, axis=1).astype(np.float64) / float(past * past)


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


def _sliding_max(x: np.ndarray, width: int) -> np.ndarray:
    """Max over every ``width`` consecutive rows of ``x`` (rows, features): row i covers
    ``x[i:i+width]``. Block prefix/suffix maxima (van Herk / Gil-Werman), O(rows), exact."""
    rows, features = x.shape
    blocks = -(-rows // width)
    padded = np.concatenate((x, np.full((blocks * width - rows, features), x.min(initial=0), x.dtype)))
    padded = padded.reshape(blocks, width, features)
    prefix = np.maximum.accumulate(padded, axis=1).reshape(-1, features)
    suffix = np.maximum.accumulate(padded[:, ::-1], axis=1)[:, ::-1].reshape(-1, features)
    start = np.arange(rows - width + 1)
    return np.maximum(suffix[start], prefix[start + width - 1])


def _out_of_range(values: np.ndarray, ends: np.ndarray, p: dict) -> np.ndarray:
    """Per row at ``ends`` (consecutive): its sample lies beyond the range of the ``history``
    samples before it by more than ``spatial_tolerance`` of that range (and at least
    ``min_history`` precede it)."""
    history, first = int(p["history"]), int(ends[0])
    start = max(first - history, 0)                              # the oldest sample any window reads
    x = values[start:].astype(np.int32)
    nothing = np.full((history - (first - start), x.shape[1]), -(1 << 20), np.int32)  # never a max
    rows = ends - first                                          # window of row j: j-history .. j-1
    lo = -_sliding_max(np.concatenate((nothing, -x)), history)[rows]
    hi = _sliding_max(np.concatenate((nothing, x)), history)[rows]
    spread = (hi - lo).astype(np.float64) * float(p["spatial_tolerance"])
    current = x[ends - start]
    beyond = ((current > hi + spread) | (current < lo - spread)) & (hi > lo)
    return beyond.any(axis=1) & (np.minimum(ends, history) >= int(p["min_history"]))


CHANNELS = {"change_reference": change_scores, "context_reference": context_scores}


class AdaptiveState:
    """The adaptive scorer of one stream: ``push(raw_scores, windows)`` -> (unit scores, verdicts).

    Holds, for the last ``span(params)`` rows in arrival order, the levels of each channel (the
    model's raw score, the step from the previous sample, the distance from the window's mean)
    and each row's int8 sample; nothing else."""

    def __init__(self, params: dict):
        self.params = params_with_defaults(params)
        self.span = span(self.params)
        self.reset()

    def reset(self) -> None:
        self.levels = {}
        self.samples = None

    def _channel(self, name: str, new_levels: np.ndarray, ends: np.ndarray) -> np.ndarray:
        seq = np.concatenate((self.levels.get(name, np.zeros(0, np.int64)), new_levels))
        self.levels[name] = seq[-self.span:]
        return _scores_at(seq, ends, self.params)

    def push(self, raw_scores: np.ndarray, windows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Unit scores (float64 multiples of 1/65535) and verdicts of these rows, in order.

        ``windows`` are the rows' int8 model inputs: (rows, W, features) for a temporal bundle,
        whose samples feed the step and context channels and the range check, or (rows, features)
        (range check only). None scores the model's raw score alone."""
        p = self.params
        n = len(np.asarray(raw_scores))
        if not n:
            return np.zeros(0), np.zeros(0, dtype=bool)
        held = len(self.levels.get("model", ()))
        first = max(held - int(p["quiet"]), 0)                   # the quiet rows before the new ones too
        ends = np.arange(first, held + n)
        unit = self._channel("model", levels(raw_scores, p["reference"], p["offset"]), ends)
        temporal = windows is not None and np.ndim(windows) == 3 and np.shape(windows)[1] >= 2
        for key, scores in CHANNELS.items():
            if temporal and float(p[key]) > 0:
                unit = np.maximum(unit, self._channel(key, levels(scores(windows), p[key]), ends))
        if windows is not None:
            own = np.asarray(windows, dtype=np.int8)
            own = own[:, -1] if temporal else own.reshape(n, -1)
            kept = self.samples if self.samples is not None else np.zeros((0, own.shape[1]), np.int8)
            values = np.concatenate((kept, own))
            if float(p["spatial_tolerance"]) > 0:
                unit[_out_of_range(values, ends, p)] = 1.0
            self.samples = values[-self.span:]
        unit = _onset(unit, int(p["quiet"]))[held - first:]     # the new rows only
        return unit, unit >= float(p["threshold"])


def _onset(unit: np.ndarray, quiet: int) -> np.ndarray:
    """Keep a score only where it exceeds every score of the ``quiet`` rows before it."""
    if not quiet:
        return unit
    before = np.concatenate((np.full(quiet, -1.0), unit))
    recent = _sliding_max(before[:-1, None], quiet)[:, 0]
    return np.where(unit > recent, unit, 0.0)


def unit_scores(raw_scores: np.ndarray, params: dict, windows: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Unit scores and verdicts of a whole series of rows, as a fresh stream gives them."""
    return AdaptiveState(params).push(raw_scores, windows)
