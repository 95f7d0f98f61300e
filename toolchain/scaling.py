"""Fit the scaler on training rows only; ``firmware_host.preprocess`` applies it."""

from __future__ import annotations

import numpy as np

from firmware_host.manifest import Scaler

# A non-negative feature whose 99th percentile is this many times its median (or whose
# range spans this many orders of magnitude) is logged before standardising.
_HEAVY_TAIL_RATIO = 50.0


def _heavy_tailed(column: np.ndarray) -> bool:
    finite = column[np.isfinite(column)]
    if finite.size == 0 or finite.min() < 0:
        return False
    hi = np.percentile(finite, 99)
    mid = np.percentile(finite, 50)
    return hi > 1000 and hi > _HEAVY_TAIL_RATIO * max(mid, 1.0)


def fit_scaler(train: np.ndarray, log1p: str = "auto", clip: float = 6.0) -> Scaler:
    """Imputation medians, log flags, means and standard deviations from training rows."""
    from firmware_host.preprocess import signed_log1p

    train = np.asarray(train, dtype=np.float64)
    medians = np.nanmedian(train, axis=0)
    medians = np.where(np.isfinite(medians), medians, 0.0)
    filled = np.where(np.isnan(train), medians, train)
    if log1p == "all":
        flags = np.ones(train.shape[1], dtype=bool)
    elif log1p == "none":
        flags = np.zeros(train.shape[1], dtype=bool)
    else:
        flags = np.array([_heavy_tailed(filled[:, j]) for j in range(train.shape[1])], dtype=bool)
    transformed = filled.copy()
    transformed[:, flags] = signed_log1p(transformed[:, flags])
    mean = transformed.mean(axis=0)
    std = transformed.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)   # a constant column scales to 0, not to NaN
    return Scaler(impute=medians.tolist(), log1p=flags.tolist(), mean=mean.tolist(), std=std.tolist(),
                  clip=float(clip))
