"""Sliding windows over one part of a split: what temporal detectors take as input.

A part's rows are in time order (``prepare`` sorts them). The window scoring row ``i`` holds
rows ``i-W+1 .. i``, all from the same part, so the first W-1 rows of a part get no score --
exactly what the device's ring buffer does with the same rows (``warming_up``).
"""

from __future__ import annotations

import numpy as np


def part_windows(rows: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, positions): windows ``(n-W+1, W, features)`` of consecutive rows and the row
    position each one scores (its last row). ``window == 1`` gives the rows themselves."""
    rows = np.asarray(rows)
    if window <= 1:
        return rows, np.arange(len(rows))
    if len(rows) < window:
        return np.empty((0, window, rows.shape[1]), dtype=rows.dtype), np.empty(0, dtype=np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(rows, (window, rows.shape[1]))[:, 0]
    return np.ascontiguousarray(windows), np.arange(window - 1, len(rows))


def all_rows_in(mask: np.ndarray, window: int) -> np.ndarray:
    """Per window of ``part_windows``: True where ``mask`` holds for every row of the window."""
    mask = np.asarray(mask, dtype=bool)
    if window <= 1:
        return mask
    if len(mask) < window:
        return np.empty(0, dtype=bool)
    return np.lib.stride_tricks.sliding_window_view(mask, window).all(axis=1)
