"""Model outputs -> anomaly scores and verdicts, for every detector kind.

The score is always "higher means more anomalous":
- ``ae``: mean squared reconstruction error over features, in scaled units; the model's
  output is the residual (input - reconstruction), computed inside the int8 model;
- ``vae_dnn``: 1 - P(normal class) from the classifier's softmax.
Used by verify (Keras, float TFLite and int8 outputs alike), run, bench and the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Verdicts:
    """One entry per scored row."""

    scores: np.ndarray        # float64, higher = more anomalous
    is_anomaly: np.ndarray    # bool
    predicted: np.ndarray     # int class index (argmax for classifiers; 0/1 for the AE)
    warming_up: np.ndarray | None = None   # bool; set by a stream: True where the window was not full yet


def reconstruction_error(residual: np.ndarray) -> np.ndarray:
    """Mean squared reconstruction error per row, from the model's residual output."""
    residual = np.asarray(residual, np.float64)
    return np.mean(residual.reshape(residual.shape[0], -1) ** 2, axis=1)


def score(detector: str, inputs: np.ndarray, outputs: np.ndarray, normal_index: int = 0) -> np.ndarray:
    """Anomaly score per row from (dequantized) model inputs and outputs."""
    if detector == "ae":
        return reconstruction_error(outputs)
    if detector == "vae_dnn":
        return 1.0 - np.asarray(outputs, np.float64)[:, normal_index]
    raise ValueError(f"unknown detector {detector!r}")


def decide(detector: str, scores: np.ndarray, outputs: np.ndarray, threshold: float,
           normal_index: int = 0) -> Verdicts:
    """Apply the threshold. A classifier's class is its argmax among anomalous classes when flagged."""
    flagged = scores > threshold
    if detector == "vae_dnn":
        probs = np.asarray(outputs, np.float64).copy()
        probs[:, normal_index] = -np.inf
        predicted = np.where(flagged, np.argmax(probs, axis=1), normal_index)
    else:
        predicted = flagged.astype(np.int64)
    return Verdicts(scores=np.asarray(scores, np.float64), is_anomaly=flagged, predicted=predicted)
