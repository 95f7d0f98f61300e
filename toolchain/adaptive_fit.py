"""Adaptive scoring at build time: its parameters from the learning rows, and int8 against float.

The run side (``firmware_host/adaptive.py``) turns raw scores into a [0, 1] unit score. Fitted
here, on validation rows only, with no label read: ``reference``, the mean raw score of the
validation windows (above ``offset``, their minimum where scores can be negative), and for a
temporal bundle ``change_reference`` and ``context_reference``, the validation means of the two
window channels (a level of 1 is a typical validation value of each channel). ``min_history``
is the recipe's (HTM's 388 rows) or less, so that scoring starts once the rows the model learned
from have streamed past. Every other parameter is the recipe's ``[adaptive]`` table.
"""

from __future__ import annotations

import numpy as np

from firmware_host import adaptive

from .recipe import AdaptiveSpec

MIN_AGREEMENT = 0.995         # int8 and float adaptive verdicts agree on at least this share of test rows
MIN_LEARNING = 30             # rows of history before scoring, at the least


def _mean(values: np.ndarray, floor: float) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    mean = float(np.mean(values)) if len(values) else floor
    return mean if mean > floor else floor


def _model_reference(scores: np.ndarray) -> dict:
    """``offset`` (0, or the validation minimum where scores go negative) and ``reference``."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = scores[np.isfinite(scores)]
    offset = min(float(finite.min()), 0.0) if len(finite) else 0.0
    return {"offset": offset, "reference": _mean(finite - offset, 1e-12)}


def fit_params(spec: AdaptiveSpec, validation_scores: np.ndarray, validation_windows: np.ndarray | None,
               learning_rows: int, window: int) -> dict:
    """The manifest's ``adaptive`` table: the recipe's settings and the validation references.

    ``validation_windows`` are the int8 model inputs of the validation rows; ``learning_rows`` the
    rows of the train and validation parts together (the rows before the test part)."""
    learning = learning_rows - (window - 1) - 2 * spec.short + 2
    params = {"history": int(spec.history), "short": int(spec.short),
              "min_history": int(max(min(spec.min_history, learning), MIN_LEARNING)),
              "std_floor": float(spec.std_floor), "threshold": float(spec.threshold),
              "spatial_tolerance": float(spec.spatial_tolerance), "quiet": int(spec.quiet),
              "change_reference": 0.0, "context_reference": 0.0, **_model_reference(validation_scores)}
    temporal = validation_windows is not None and np.ndim(validation_windows) == 3
    if spec.window_channels and temporal and len(validation_windows):
        for key, scores in adaptive.CHANNELS.items():      # at least 1 LSB squared: a flat series still scores
            params[key] = _mean(scores(validation_windows), 1.0)
    adaptive.params_with_defaults(params)      # refuses sums that would not stay exact
    return params


def compare(spec: AdaptiveSpec, validation: dict, test: dict, windows: dict, learning_rows: int,
            window: int) -> dict:
    """Unit scores of the test rows for the float and int8 models (each with its own validation
    reference, each as one fresh stream over the test part) and their agreement.

    ``validation`` and ``test`` map "float" and "int8" to raw scores; ``windows`` maps
    "validation" and "test" to the int8 model inputs of those rows (the step and range channels
    read the same int8 samples for both models). Returns params, unit scores and verdicts per
    model, and the agreement figures."""
    result = {"params": {}, "unit": {}, "flags": {}}
    for name in ("float", "int8"):
        params = fit_params(spec, validation[name], windows["validation"], learning_rows, window)
        unit, flags = adaptive.unit_scores(test[name], params, windows["test"])
        result["params"][name], result["unit"][name], result["flags"][name] = params, unit, flags
    f, q = result["unit"]["float"], result["unit"]["int8"]
    result["agreement"] = {
        "verdict_agreement": float(np.mean(result["flags"]["float"] == result["flags"]["int8"])) if len(f) else 1.0,
        "mean_abs_unit_diff": float(np.mean(np.abs(f - q))) if len(f) else 0.0,
        "max_abs_unit_diff": float(np.max(np.abs(f - q), initial=0.0)),
        "alarms": {name: int(result["flags"][name].sum()) for name in ("float", "int8")},
        "min_agreement": MIN_AGREEMENT}
    return result
