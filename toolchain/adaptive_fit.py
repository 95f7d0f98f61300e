"""Adaptive scoring at build time: its parameters from validation rows, and int8 against float.

The run side (``firmware_host/adaptive.py``) turns raw scores into a [0, 1] unit score. Its one
fitted parameter is ``reference``, the mean raw score of the validation windows (so a level of 1
is a typical validation error); every other parameter is the recipe's ``[adaptive]`` table, whose
defaults are HTM's anomaly-likelihood settings. No label is read.
"""

from __future__ import annotations

import numpy as np

from firmware_host import adaptive

from .recipe import AdaptiveSpec

MIN_AGREEMENT = 0.995         # int8 and float adaptive verdicts agree on at least this share of test rows


def fit_params(spec: AdaptiveSpec, validation_scores: np.ndarray) -> dict:
    """The manifest's ``adaptive`` table: the recipe's settings and the validation reference."""
    scores = np.asarray(validation_scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    reference = float(np.mean(scores)) if len(scores) else 1.0
    params = {"history": int(spec.history), "short": int(spec.short), "min_history": int(spec.min_history),
              "std_floor": float(spec.std_floor), "threshold": float(spec.threshold),
              "reference": reference if reference > 1e-12 else 1.0}
    adaptive.params_with_defaults(params)      # refuses sums that would not stay exact
    return params


def compare(spec: AdaptiveSpec, validation: dict, test: dict) -> dict:
    """Unit scores of the test rows for the float and int8 models (each with its own validation
    reference, each as one fresh stream over the test part) and their agreement.

    ``validation`` and ``test`` map "float" and "int8" to raw scores. Returns params per model,
    unit scores and verdicts per model, and the agreement figures the gate reads."""
    result = {"params": {}, "unit": {}, "flags": {}}
    for name in ("float", "int8"):
        params = fit_params(spec, validation[name])
        unit, flags = adaptive.unit_scores(test[name], params)
        result["params"][name], result["unit"][name], result["flags"][name] = params, unit, flags
    f, q = result["unit"]["float"], result["unit"]["int8"]
    result["agreement"] = {
        "verdict_agreement": float(np.mean(result["flags"]["float"] == result["flags"]["int8"])) if len(f) else 1.0,
        "mean_abs_unit_diff": float(np.mean(np.abs(f - q))) if len(f) else 0.0,
        "max_abs_unit_diff": float(np.max(np.abs(f - q), initial=0.0)),
        "alarms": {name: int(result["flags"][name].sum()) for name in ("float", "int8")},
        "min_agreement": MIN_AGREEMENT}
    return result
