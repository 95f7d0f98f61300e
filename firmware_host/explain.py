"""Why a row was flagged: the features that made its score, from the dequantized int8 outputs.

Pure numpy, no I/O. Each detector kind gets the cheapest answer that is honest about it:

- ``ae``, ``lstm`` and a forecasting ``cnn_lstm_attn`` (residual models): the score is the mean of
  the squared residuals (x - x_hat, or the forecast error), so feature f's squared residual over
  their sum is exactly its share of the score;
- ``ae_lstm`` (hybrid): ``A = a*(RE - re_mean)/re_std + b*(PE - pe_mean)/pe_std`` is, up to its
  constant offset, a sum over features of ``a/re_std * (f's squared reconstruction residuals over
  the window) / re_width + b/pe_std * (f's squared forecast residual) / features``; each feature's
  term over their sum is its exact share of ``A`` above that offset (a, b >= 0 by construction);
- ``vae_dnn`` and a classifying ``cnn_lstm_attn`` (softmax models): no exact attribution is this
  cheap (it would take gradients or one invoke per feature). These name the features whose scaled
  input lies farthest from the training mean, as |z| / clip: 1.0 means at or beyond the edge of
  the range the scaler keeps (``clip`` training standard deviations), i.e. outside what training
  showed. It says which inputs are unusual, not what the network weighed. z is read from the
  dequantized int8 input, so it stops where the input tensor's range does (the device sees no more).

A value is a multiple of 1/255 in [0, 1] (``VALUE_STEPS``), so the serial link carries it exactly
as one byte and ``tinyad stream --explain`` writes what ``tinyad run --explain`` writes.
"""

from __future__ import annotations

import numpy as np

from .scoring import output_kind

VALUE_STEPS = 255           # a value v in [0, 1] is stored and sent as round(v * 255)
MAX_FEATURES = 256          # feature indices travel as one byte
MAX_K = 8                   # features named per flagged row (bounds a RESULT frame's size)


def method(detector: str, params: dict | None = None) -> str:
    """``share`` (exact share of the score) or ``range`` (distance to the training range's edge)."""
    return "range" if output_kind(detector, params) == "classifier" else "share"


def feature_weights(detector: str, inputs: np.ndarray, outputs: np.ndarray, params: dict | None,
                    features: int, clip: float) -> np.ndarray:
    """(rows, features) non-negative weights, from dequantized model inputs and outputs.

    For ``share`` methods the weights sum to the part of the score that features explain; for
    ``range`` each is |z| / clip of the row's (last) sample, clipped to [0, 1]."""
    rows = len(outputs)
    kind = output_kind(detector, params)
    if kind == "residual":
        residual = np.asarray(outputs, np.float64).reshape(rows, -1, features)
        return np.sum(residual ** 2, axis=1)
    if kind == "hybrid":
        outputs = np.asarray(outputs, np.float64).reshape(rows, -1)
        width = int(params["re_width"])
        reconstruction = np.sum(outputs[:, :width].reshape(rows, -1, features) ** 2, axis=1)
        forecast = outputs[:, width:].reshape(rows, -1, features)
        forecast = np.sum(forecast ** 2, axis=1)
        return (max(params["a"], 0.0) / params["re_std"] * reconstruction / width
                + max(params["b"], 0.0) / params["pe_std"] * forecast / (outputs.shape[1] - width))
    last = np.asarray(inputs, np.float64).reshape(rows, -1, features)[:, -1, :]
    return np.clip(np.abs(last) / clip, 0.0, 1.0)


def top_features(weights: np.ndarray, k: int, as_shares: bool) -> tuple[np.ndarray, np.ndarray]:
    """(indices, values in 1/255 steps) of the k largest weights per row, largest first.

    ``as_shares`` divides each row by its sum first (a row of zeros gets zeros). Values are
    rounded before ordering, and ties go to the lower feature index, so any machine that computes
    the same int8 outputs names the same features in the same order."""
    weights = np.asarray(weights, np.float64)
    if as_shares:
        total = weights.sum(axis=1, keepdims=True)
        weights = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    steps = np.rint(np.clip(weights, 0.0, 1.0) * VALUE_STEPS).astype(np.int64)
    k = min(int(k), weights.shape[1])
    # Stable sort on the negated steps: descending value, ascending index among equals.
    order = np.argsort(-steps, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(steps, order, axis=1).astype(np.uint8)


def explain(detector: str, inputs: np.ndarray, outputs: np.ndarray, params: dict | None, features: int,
            clip: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k features that explain its score: (indices (rows, k), values (rows, k) uint8
    in 1/255 steps). ``inputs`` and ``outputs`` are dequantized, as ``scoring.score`` takes them."""
    weights = feature_weights(detector, inputs, outputs, params, features, clip)
    return top_features(weights, k, as_shares=method(detector, params) == "share")


def named(indices: np.ndarray, values: np.ndarray, flagged: np.ndarray, names: list[str]) -> list[list]:
    """``Verdicts.why``: per row ``[[feature name, value], ...]`` (value = steps / 255) for a flagged
    row, ``[]`` for any other."""
    why: list[list] = [[] for _ in range(len(flagged))]
    rows = np.flatnonzero(flagged)
    if not len(rows):
        return why
    # The nested lists come out of one object array's tolist(), not a Python loop per pair:
    # ~1.5 us a flagged row instead of ~5. The values go in as Python floats, not numpy scalars.
    pairs = np.empty((len(rows), indices.shape[1], 2), dtype=object)
    pairs[:, :, 0] = np.asarray(names, dtype=object)[indices[rows]]
    pairs[:, :, 1] = (values[rows] / VALUE_STEPS).tolist()
    for row, reasons in zip(rows.tolist(), pairs.tolist()):
        why[row] = reasons
    return why
