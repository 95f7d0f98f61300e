"""Model outputs -> anomaly scores and verdicts, for every detector kind.

The score is always "higher means more anomalous". Each detector's model emits one of
three kinds of output:
- residual (``ae``, ``lstm``, ``cnn_lstm_attn`` as a forecaster): the model computes
  (actual - reconstruction or prediction) inside the int8 model; the score is its mean square,
  in scaled units;
- classifier (``vae_dnn``, ``cnn_lstm_attn`` as a classifier): a softmax; the score is
  1 - P(normal class);
- hybrid (``ae_lstm``): the window's reconstruction residual followed by the next step's
  prediction residual; the score is ``A(t) = a*RE'(t) + b*PE'(t)``, RE' and PE' being the
  mean squares normalised on validation normal data, with a and b fitted on validation
  (``params``: re_width, re_mean, re_std, pe_mean, pe_std, a, b).
Used by verify (Keras, float TFLite and int8 outputs alike), run, bench and the device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Verdicts:
    """One entry per scored row."""

    scores: np.ndarray        # float64, higher = more anomalous
    is_anomaly: np.ndarray    # bool
    predicted: np.ndarray     # int class index (argmax for classifiers; 0/1 for the AE)
    warming_up: np.ndarray | None = None   # bool; set by a stream: True where the window was not full yet
    # float64 in [0, 1], comparable across bundles (the adaptive anomaly level), or None where the
    # bundle has none. Always a multiple of 1/65535, so the serial link carries it exactly as uint16.
    unit_score: np.ndarray | None = None
    # Why each row was flagged (``explain.py``), or None when nobody asked: per row a list of
    # [feature name, value], most important first, for flagged rows only (others []). The value
    # is the feature's share of the score in [0, 1] (``ae``, ``lstm``, ``ae_lstm``, forecasting
    # ``cnn_lstm_attn``), or |z| / clip of its scaled input (softmax models); a multiple of 1/255.
    why: list | None = None
    # The block's cells as text, formatted once for every writer (``csv_input.score_cells``).
    texts: dict = field(default_factory=dict, repr=False, compare=False)


def reconstruction_error(residual: np.ndarray) -> np.ndarray:
    """Mean squared reconstruction error per row, from the model's residual output."""
    residual = np.asarray(residual, np.float64)
    return np.mean(residual.reshape(residual.shape[0], -1) ** 2, axis=1)


def output_kind(detector: str, params: dict | None = None) -> str:
    """``residual``, ``classifier`` or ``hybrid``: how a detector's model output becomes a score."""
    if detector in ("ae", "lstm"):
        return "residual"
    if detector == "vae_dnn":
        return "classifier"
    if detector == "ae_lstm":
        return "hybrid"
    if detector == "cnn_lstm_attn":
        return "classifier" if (params or {}).get("mode", "classifier") == "classifier" else "residual"
    raise ValueError(f"unknown detector {detector!r}")


def hybrid_parts(outputs: np.ndarray, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """(RE, PE) mean squares of a hybrid output row: the first ``re_width`` values are the window's
    reconstruction residual, the rest the next step's prediction residual."""
    outputs = np.asarray(outputs, np.float64).reshape(len(outputs), -1)
    width = int(params["re_width"])
    return reconstruction_error(outputs[:, :width]), reconstruction_error(outputs[:, width:])


def hybrid_score(re: np.ndarray, pe: np.ndarray, params: dict) -> np.ndarray:
    """``A = a*(RE - mean)/std + b*(PE - mean)/std`` with the validation-fitted parameters."""
    return (params["a"] * (re - params["re_mean"]) / params["re_std"]
            + params["b"] * (pe - params["pe_mean"]) / params["pe_std"])


def score(detector: str, inputs: np.ndarray, outputs: np.ndarray, normal_index: int = 0,
          params: dict | None = None) -> np.ndarray:
    """Anomaly score per row from (dequantized) model inputs and outputs."""
    kind = output_kind(detector, params)
    if kind == "residual":
        return reconstruction_error(outputs)
    if kind == "classifier":
        return 1.0 - np.asarray(outputs, np.float64)[:, normal_index]
    return hybrid_score(*hybrid_parts(outputs, params), params)


def decide(detector: str, scores: np.ndarray, outputs: np.ndarray, threshold: float,
           normal_index: int = 0, params: dict | None = None) -> Verdicts:
    """Apply the threshold. A classifier's class is its argmax among anomalous classes when flagged."""
    return flagged_verdicts(detector, scores, scores > threshold, outputs, normal_index, params)


def flagged_verdicts(detector: str, scores: np.ndarray, flagged: np.ndarray, outputs: np.ndarray,
                     normal_index: int = 0, params: dict | None = None, unit_score: np.ndarray | None = None
                     ) -> Verdicts:
    """Verdicts from rows already flagged (by the static threshold, or by the adaptive rule of
    ``adaptive.py``, whose [0, 1] scores come along as ``unit_score``)."""
    flagged = np.asarray(flagged, dtype=bool)
    if output_kind(detector, params) == "classifier":
        probs = np.asarray(outputs, np.float64).copy()
        probs[:, normal_index] = -np.inf
        predicted = np.where(flagged, np.argmax(probs, axis=1), normal_index)
    else:
        predicted = flagged.astype(np.int64)
    return Verdicts(scores=np.asarray(scores, np.float64), is_anomaly=flagged, predicted=predicted,
                    unit_score=unit_score)
