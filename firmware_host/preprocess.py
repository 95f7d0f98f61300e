"""Raw feature rows -> scaled model inputs, exactly as the manifest's scaler says.

The build side fits the scaler parameters; this module is the only one that applies
them, so build, verify, run and the device compute the same inputs.
"""

from __future__ import annotations

import numpy as np

from .manifest import Scaler


def signed_log1p(values: np.ndarray) -> np.ndarray:
    """sign(x) * log(1 + |x|): tames heavy-tailed counters (bytes, packets) before scaling."""
    return np.sign(values) * np.log1p(np.abs(values))


def scale_rows(raw: np.ndarray, scaler: Scaler) -> np.ndarray:
    """Scale a (rows, features) float array; NaN cells take the imputed value. Returns float32."""
    values = np.array(raw, dtype=np.float64, copy=True)
    if values.ndim != 2 or values.shape[1] != len(scaler.mean):
        raise ValueError(f"expected rows of {len(scaler.mean)} features, got shape {values.shape}")
    missing = np.isnan(values)
    if missing.any():
        values[missing] = np.broadcast_to(np.asarray(scaler.impute, dtype=np.float64), values.shape)[missing]
    logged = np.asarray(scaler.log1p, dtype=bool)
    if logged.any():
        values[:, logged] = signed_log1p(values[:, logged])
    values = (values - np.asarray(scaler.mean)) / np.asarray(scaler.std)
    return np.clip(values, -scaler.clip, scaler.clip).astype(np.float32)
