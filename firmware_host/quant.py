"""The one place where floats become int8 tensor values and back.

Everything that feeds an int8 model (build, verify, run, bench, the device agent)
quantizes with the tensor's own ``scale`` and ``zero_point`` through these two
functions, and dequantizes the model's outputs through them too.
"""

import numpy as np

INT8_MIN, INT8_MAX = -128, 127


def quantize(values, scale: float, zero_point: int) -> np.ndarray:
    """Map real values to int8 as TFLite's QUANTIZE op does: round half away from zero, then saturate."""
    if scale <= 0:
        raise ValueError(f"quantization scale must be positive, got {scale}")
    scaled = np.asarray(values, dtype=np.float64) / scale
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5) + zero_point
    return np.clip(rounded, INT8_MIN, INT8_MAX).astype(np.int8)


def dequantize(values, scale: float, zero_point: int) -> np.ndarray:
    """Map int8 tensor values back to real values (float32)."""
    return ((np.asarray(values, dtype=np.int32) - zero_point) * scale).astype(np.float32)
