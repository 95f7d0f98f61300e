"""Quantize stage: float and full-integer int8 TFLite models, the representative set, sizes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


def representative_rows(x_train: np.ndarray, is_attack: np.ndarray, spec: QuantizeSpec, seed: int):
    """A seeded sample of training rows (all classes, or normal only) for int8 calibration.

    Kept small on purpose: an oversized or outlier-heavy set widens activation ranges."""
    pool = np.arange(len(x_train)) if spec.representative_source == "train" else np.flatnonzero(~is_attack)
    rng = np.random.default_rng(seed)
    take = rng.choice(pool, size=min(spec.representative_rows, len(pool)), replace=False)
    origin = f"{len(take)} rows sampled (seed {seed}) from the training split ({spec.representative_source})"
    return x_train[np.sort(take)], origin


def quantize(model, representative: np.ndarray, origin: str, spec: QuantizeSpec) -> Quantized:
    """Convert to float32 and int8 TFLite and assert the int8 op list is integer-only."""
    float_model = convert.convert(model, int8=False)
    int8_model = convert.convert(model, int8=True, representative=representative, per_channel=spec.per_channel)
    ops = convert.assert_int8(int8_model)
    return Quantized(float_model, int8_model, representative, origin, [op.name for op in ops],
                     {"float": len(float_model), "int8": len(int8_model)},
                     {"float": convert.weight_bytes(float_model), "int8": convert.weight_bytes(int8_model)})
