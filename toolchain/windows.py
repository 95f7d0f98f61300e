"""Sliding windows over one part of a split: what temporal detectors take as input.

A part's rows are in time order (``prepare`` sorts them). The window scoring row ``i`` holds
rows ``i-W+1 .. i``, all consecutive rows of the data set within the same part, so the first
W-1 rows of each contiguous stretch of a part get no score -- exactly what the device's ring
buffer does with the same rows (``warming_up``).
"""

from __future__ import annotations

import numpy as np


def window_ends(row_ids: np.ndarray, window: int) -> np.ndarray:
    """Positions ``i`` (into ``row_ids``) whose window ``i-W+1 .. i`` is W consecutive data-set rows."""
    row_ids = np.asarray(row_ids, dtype=np.int64)
    if window <= 1:
        return np.arange(len(row_ids))
    ends = np.arange(window - 1, len(row_ids))
    return ends[row_ids[ends] - row_ids[ends - window + 1] == window - 1]


def part_windows(rows: np.ndarray, window: int, row_ids: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, positions): windows ``(n, W, features)`` of consecutive rows and the row position
    each one scores (its last row). ``row_ids`` (data-set row numbers of ``rows``, default
    0..n-1) marks where a part has gaps: no window spans one. ``window == 1`` gives the rows."""
    rows = np.asarray(rows)
    if window <= 1:
        return rows, np.arange(len(rows))
    ends = window_ends(np.arange(len(rows)) if row_ids is None else row_ids, window)
    if len(ends) == 0:
        return np.empty((0, window, rows.shape[1]), dtype=rows.dtype), ends
    all_windows = np.lib.stride_tricks.sliding_window_view(rows, (window, rows.shape[1]))[:, 0]
    return np.ascontiguousarray(all_windows[ends - window + 1]), ends


def all_rows_in(mask: np.ndarray, window: int, positions: np.ndarray | None = None) -> np.ndarray:
    """Per window (ending at ``positions``, default every full window): True where ``mask``
    holds for every row of the window."""
    mask = np.asarray(mask, dtype=bool)
    if window <= 1:
        return mask if positions is None else mask[positions]
    if positions is None:
        positions = np.arange(window - 1, len(mask))
    if len(positions) == 0:
        return np.empty(0, dtype=bool)
    ok = np.lib.stride_tricks.sliding_window_view(mask, window).all(axis=1)
    return ok[np.asarray(positions) - window + 1]
