"""Quantize stage: float and full-integer int8 TFLite models, the representative set, sizes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firmware_host.errors import QuantizationError

from . import convert
from .recipe import QuantizeSpec


@dataclass
class Quantized:
    float_model: bytes
    int8_model: bytes
    representative: np.ndarray     # model-input rows the int8 ranges were calibrated on
    representative_origin: str
    ops: list                       # op names of the int8 model
    size_bytes: dict
    weight_bytes: dict


def representative_rows(x_train: np.ndarray, is_attack: np.ndarray, spec: QuantizeSpec, seed: int,
                        clip: float | None = None):
    """A seeded sample of training rows (all classes, or normal only) for int8 calibration.

    Kept small on purpose: an oversized or outlier-heavy set widens activation ranges."""
    pool = np.arange(len(x_train)) if spec.representative_source == "train" else np.flatnonzero(~is_attack)
    rng = np.random.default_rng(seed)
    take = rng.choice(pool, size=min(spec.representative_rows, len(pool)), replace=False)
    origin = f"{len(take)} rows sampled (seed {seed}) from the training split ({spec.representative_source})"
    rows = x_train[np.sort(take)]
    if spec.synthetic_share > 0:
        rows, extra = _with_synthetic(rows, spec.synthetic_share, seed, clip)
        origin += f", {extra} of them given an out-of-place last sample to widen the output range"
    return rows, origin


def _with_synthetic(rows: np.ndarray, share: float, seed: int, clip: float | None = None) -> tuple[np.ndarray, int]:
    """Replace ``share`` of the representative rows by anomalies: each picked row's last sample
    moved to whichever end of [-clip, clip] (the scaler's range; without it, the calibration
    rows' own range) is farther from it.

    A model that emits a residual calibrated on normal rows alone gets an output range just
    wide enough for normal errors, and an input range just wide enough for the training rows.
    Every larger error then saturates at one int8 value, which is also the top of the
    validation scores, so no threshold separates anomalies; and a later value beyond the
    training range saturates in the input, so the model never sees how far out it is (seen on
    NAB machine temperature: the int8 LSTM detected 0 of 4 windows, float 2). These rows
    stretch both ranges over what the scaler can emit."""
    n = int(round(share * len(rows)))
    if n == 0:
        return rows, 0
    out = np.array(rows, copy=True)
    last = out[:, -1, :] if out.ndim == 3 else out
    low, high = (-clip, clip) if clip else (last.min(axis=0), last.max(axis=0))
    pick = np.random.default_rng(seed + 1).choice(len(out), size=n, replace=False)
    current = last[pick]
    last[pick] = np.where(np.abs(current - low) > np.abs(high - current), low, high)
    return out, n


def quantize(model, representative: np.ndarray, origin: str, spec: QuantizeSpec,
             float_model: bytes | None = None) -> Quantized:
    """Convert to float32 (unless ``float_model`` is given: a reconversion reuses it) and int8
    TFLite, and assert the int8 op list is integer-only. ``spec.unroll_lstm`` converts the LSTM
    layers unrolled, with a free batch dimension (``convert.unrolled``)."""
    if spec.unroll_lstm:
        model = convert.unrolled(model)
        if not convert.is_unrolled(model):
            raise QuantizationError("[quantize] unroll_lstm = true, but the model has no LSTM layer at its top "
                                    "level to unroll (it applies to the lstm detector); remove the key")
    float_model = float_model or convert.convert(model, int8=False)
    int8_model = convert.convert(model, int8=True, representative=representative, per_channel=spec.per_channel)
    ops = convert.assert_int8(int8_model)
    return Quantized(float_model, int8_model, representative, origin, [op.name for op in ops],
                     {"float": len(float_model), "int8": len(int8_model)},
                     {"float": convert.weight_bytes(float_model), "int8": convert.weight_bytes(int8_model)})
