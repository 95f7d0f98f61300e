"""Raw feature rows -> scaled model inputs, exactly as the manifest's scaler says.

The build side fits the scaler parameters; this module is the only one that applies
them, so build, verify, run and the device compute the same inputs.
"""

from __future__ import annotations

import numpy as np

from .errors import DataError
from .manifest import Scaler
from .values import FLOAT32_MAX


def signed_log1p(values: np.ndarray) -> np.ndarray:
    """sign(x) * log(1 + |x|): tames heavy-tailed counters (bytes, packets) before scaling."""
    return np.sign(values) * np.log1p(np.abs(values))


def scale_rows(raw: np.ndarray, scaler: Scaler) -> np.ndarray:
    """Scale a (rows, features) float array; NaN cells take the imputed value. Returns float32.

    Raises DataError for a value beyond float32's range (or infinite): the CSV readers refuse
    those already (``values.parse_cell``), this holds the rule for rows given directly."""
    values = np.array(raw, dtype=np.float64, copy=True)
    if values.ndim != 2 or values.shape[1] != len(scaler.mean):
        raise ValueError(f"expected rows of {len(scaler.mean)} features, got shape {values.shape}")
    outside = np.abs(values) > FLOAT32_MAX          # +-inf too; NaN is missing, imputed below
    if outside.any():
        row, column = (int(i) for i in np.argwhere(outside)[0])
        raise DataError(f"row {row}, feature {column + 1} of {values.shape[1]}: {float(values[row, column])} "
                        "is not a finite number within float32's range")
    missing = np.isnan(values)
    if missing.any():
        values[missing] = np.broadcast_to(np.asarray(scaler.impute, dtype=np.float64), values.shape)[missing]
    logged = np.asarray(scaler.log1p, dtype=bool)
    if logged.any():
        values[:, logged] = signed_log1p(values[:, logged])
    values = (values - np.asarray(scaler.mean)) / np.asarray(scaler.std)
    return np.clip(values, -scaler.clip, scaler.clip).astype(np.float32)
