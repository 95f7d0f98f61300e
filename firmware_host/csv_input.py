"""Read raw feature rows from a CSV (file or stdin) by the manifest's feature names; write verdicts.

Plain ``csv`` and numpy, no pandas: this runs on the device too. Extra columns are
ignored; one-hot features (``Protocol_UDP``) are derived from their source column. Every
row and cell obeys the rules of ``values``, which the build side's loaders share.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import sys
from typing import Iterator, TextIO

import numpy as np

from .errors import DataError
from .manifest import Manifest
from .values import CellError, category_cell, located, parse_cell, records


class FeatureReader:
    """Maps a CSV header to the manifest's features and parses rows into float arrays."""

    def __init__(self, header: list[str], manifest: Manifest, source: str):
        self.source = source
        header = [h.strip().lstrip("\ufeff") for h in header]
        position = {name: i for i, name in enumerate(header)}
        # Per feature: (column index, None, None) for a number, or (column index, one-hot value,
        # the source column's build-time categories; None for a bundle that predates them).
        self.columns = []
        missing = []
        for name in manifest.features:
            if name in position:
                self.columns.append((position[name], None, None))
            elif name in manifest.one_hot and manifest.one_hot[name][0] in position:
                column, value = manifest.one_hot[name]
                known = manifest.categories.get(column)
                self.columns.append((position[column], value, None if known is None else frozenset(known)))
            else:
                missing.append(name if name not in manifest.one_hot else f"{name} (from {manifest.one_hot[name][0]})")
        if missing:
            raise DataError(f"{source}: missing input column(s) {', '.join(missing)}; the bundle needs "
                            f"{', '.join(manifest.features)}")
        self.header = header

    def parse(self, cells: list[str], line: int) -> np.ndarray:
        """One row of exactly ``len(header)`` cells -> its feature values (NaN where missing)."""
        row = np.empty(len(self.columns), dtype=np.float64)
        for j, (index, one_hot, known) in enumerate(self.columns):
            try:
                if one_hot is None:
                    row[j] = parse_cell(cells[index])
                else:
                    text = cells[index].strip()
                    if known is None or text not in known:    # missing, unseen, or an old bundle
                        text = category_cell(text, known)
                    row[j] = math.nan if text is None else (1.0 if text == one_hot else 0.0)
            except CellError as error:
                raise located(self.source, line, self.header[index], error) from None
        return row


def read_batches(stream: TextIO, manifest: Manifest, source: str, batch_rows: int = 256) -> Iterator[np.ndarray]:
    """(rows, features) float arrays of at most ``batch_rows`` rows, in input order.

    The header is checked now, so a missing column is reported before any verdict is written."""
    reader = csv.reader(stream)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{source}: empty input (expected a CSV header with {', '.join(manifest.features)})") from None
    except csv.Error as exc:
        raise DataError(f"{source} line 1: not valid CSV ({exc})") from None
    features = FeatureReader(header, manifest, source)
    return _batches(records(reader, features.header, source), features, batch_rows)


def _batches(rows, features: FeatureReader, batch_rows: int) -> Iterator[np.ndarray]:
    batch = []
    for line, cells in rows:
        batch.append(features.parse(cells, line))
        if len(batch) >= batch_rows:
            yield np.vstack(batch)
            batch = []
    if batch:
        yield np.vstack(batch)


def open_text(path: str) -> tuple[TextIO, str]:
    """A text stream for a path, ``-`` for stdin, or a .gz file."""
    if path == "-":
        return sys.stdin, "<stdin>"
    try:
        if path.endswith(".gz"):
            import gzip
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline=""), path
        return open(path, encoding="utf-8-sig", newline=""), path
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a CSV file") from None


VERDICT_HEADER = ["row", "status", "score", "unit_score", "is_anomaly", "class"]


def verdict_rows(first_row: int, verdicts, manifest: Manifest) -> list[list]:
    """CSV rows (row id, status, raw score, unit score, 0/1, class name) for one batch of verdicts.

    ``status`` is ``scored``, or ``warming_up`` for a temporal bundle's first window-1 rows,
    which get an empty score and class instead of a guess. ``score`` is the detector's raw score
    (its own units); ``unit_score`` is the adaptive anomaly level in [0, 1], comparable across
    bundles, empty for a bundle without adaptive scoring."""
    warming = verdicts.warming_up if verdicts.warming_up is not None else np.zeros(len(verdicts.scores), bool)
    unit = verdicts.unit_score
    rows = []
    for i, (score, flag, cls, warm) in enumerate(zip(verdicts.scores, verdicts.is_anomaly, verdicts.predicted,
                                                    warming)):
        if warm:
            rows.append([first_row + i, "warming_up", "", "", 0, ""])
        else:
            rows.append([first_row + i, "scored", score_text(score), "" if unit is None else unit_text(unit[i]),
                         int(flag), manifest.classes[int(cls)]])
    return rows


def score_text(score: float) -> str:
    """A score as the verdict file writes it: 6 significant digits of its float32 value, the
    precision a RESULT frame carries, so a streamed file equals a local run's byte for byte."""
    with np.errstate(over="ignore"):
        return f"{float(np.float32(score)):.6g}"


def unit_text(unit: float) -> str:
    """A unit score (a multiple of 1/65535) with 6 decimals: distinct multiples stay distinct,
    and ``round(value * 65535)`` gives back the uint16 the serial link carries."""
    return f"{float(unit):.6f}"


@contextlib.contextmanager
def atomic_output(path: str | None):
    """A text stream for the verdicts: stdout, or a temporary file renamed to ``path`` only on success,
    so a run that stops on a bad row never leaves a half-written verdict file behind."""
    if not path:
        yield sys.stdout
        return
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        handle = open(temporary, "w", newline="")
    except OSError as exc:
        raise DataError(f"{path}: cannot write the verdicts ({exc.strerror})") from None
    try:
        with handle:
            yield handle
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
