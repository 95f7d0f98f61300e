"""The input rules every CSV row and cell obeys, the same in build (``toolchain.datasets``) and
run (``csv_input``): one module, so training and the device never read a cell differently.

- A row holds exactly as many cells as the header; a blank line is skipped.
- Missing: a cell that, stripped, is one of ``MISSING_TOKENS`` (any case). It becomes NaN,
  which the scaler imputes with the training median.
- Boolean text ``true``/``false``/``yes``/``no`` (any case, stripped) reads as 1/0.
- Anything else must be a number as Python's ``float()`` reads it, finite and within float32's
  range (|x| <= 3.4028235e38): ``inf``, ``-inf``, ``1e999``, ``1e39`` and NaN spelled other than
  a missing token (``-nan``) are refused.
- A one-hot source column (``Protocol``) holds category text, stripped and matched exactly; a
  missing token there is missing (NaN in each of its one-hot features), and a value the build
  did not see is refused.

Errors name the cell's file, line and column: ``CellError`` carries the reason alone and
``located`` adds where.
"""

from __future__ import annotations

import csv
import math
from typing import Iterable, Iterator

import numpy as np

from .errors import DataError

# Compared case-insensitively with the stripped cell. "-" and "?" are how Zeek logs and UCI
# files write "no value"; "nan" is pandas' own spelling of a missing float.
MISSING_TOKENS = ("", "NA", "N/A", "NaN", "null", "None", "-", "?")
BOOLEAN_TEXT = {"true": 1.0, "false": 0.0, "yes": 1.0, "no": 0.0}
FLOAT32_MAX = float(np.finfo(np.float32).max)

_MISSING = frozenset(token.lower() for token in MISSING_TOKENS)
_SHOWN_CATEGORIES = 12


class CellError(DataError):
    """Why one cell is refused, without where: ``located`` names the file, line and column."""


def located(source: str, line: int, column: str, error: CellError) -> DataError:
    """A one-line DataError: ``<source> line <n>, column '<name>': <reason>``."""
    return DataError(f"{source} line {line}, column '{column}': {error}")


def is_missing(cell: str) -> bool:
    """True for an empty cell or a missing-value token (``MISSING_TOKENS``, any case, stripped)."""
    return cell.strip().lower() in _MISSING


def parse_bool(cell: str) -> float | None:
    """1.0 for true/yes, 0.0 for false/no (any case, stripped); None for any other text."""
    return BOOLEAN_TEXT.get(cell.strip().lower())


def parse_cell(cell: str) -> float:
    """One numeric feature cell as a float: NaN when missing, 1/0 for boolean text, else the
    finite number within float32's range that it spells. Raises CellError otherwise."""
    try:
        value = float(cell)
    except ValueError:
        return _parse_word(cell)
    if -FLOAT32_MAX <= value <= FLOAT32_MAX:     # the common case; False for NaN and +-inf
        return value
    text = cell.strip()
    if math.isnan(value):
        if text.lower() in _MISSING:
            return math.nan
        raise CellError(f"{text!r} is not a number (write an empty cell for a missing value)")
    if "inf" in text.lower():
        raise CellError(f"{text!r} is not a finite number")
    raise CellError(f"{text!r} is beyond float32's range (+-3.4e38)")


def _parse_word(cell: str) -> float:
    text = cell.strip().lower()
    if text in _MISSING:
        return math.nan
    if text in BOOLEAN_TEXT:
        return BOOLEAN_TEXT[text]
    raise CellError(f"{cell.strip()!r} is not a number")


def parse_column(cells: Iterable[str]) -> np.ndarray:
    """``parse_cell`` over a column of cells, as float64. Raises CellError with ``position`` set
    to the index of the first refused cell."""
    cells = np.asarray(cells, dtype=object)
    try:
        values = cells.astype(np.float64)          # float() per cell, as parse_cell's first step
    except ValueError:                             # some text: read every cell by the full rule
        values = np.empty(len(cells), dtype=np.float64)
        odd = np.arange(len(cells))
    else:
        odd = np.flatnonzero(~(np.abs(values) <= FLOAT32_MAX))
    for position in odd:
        try:
            values[position] = parse_cell(cells[position])
        except CellError as error:
            error.position = int(position)
            raise
    return values


def category_cell(cell: str, known) -> str | None:
    """One-hot source cell -> its stripped text, or None when missing. Raises CellError for
    text not in ``known`` (the categories seen at build time); ``known`` None skips that check."""
    text = cell.strip()
    if text.lower() in _MISSING:
        return None
    if known is not None and text not in known:
        shown = sorted(known)
        listed = ", ".join(shown[:_SHOWN_CATEGORIES]) + (f", ... ({len(shown)} in all)"
                                                         if len(shown) > _SHOWN_CATEGORIES else "")
        raise CellError(f"{text!r} is not a category the model was built with ({listed})")
    return text


def records(reader, header: list[str], source: str, against: str = "the header") -> Iterator[tuple[int, list]]:
    """(line, cells) of each CSV record after the header: ``line`` is the 1-based line of the file
    where the record starts. Blank lines are skipped; a row with more or fewer cells than
    ``header`` is a DataError naming its line and its first missing or extra column."""
    width = len(header)
    end = reader.line_num
    try:
        for cells in reader:
            line, end = end + 1, reader.line_num
            if len(cells) == width:
                yield line, cells
            elif cells:
                raise _width_error(source, line, cells, header, against)
    except csv.Error as exc:
        raise DataError(f"{source} line {reader.line_num}: not valid CSV ({exc})") from None


def _width_error(source: str, line: int, cells: list, header: list[str], against: str) -> DataError:
    have, width = len(cells), len(header)
    if have < width:
        return DataError(f"{source} line {line}, column '{header[have]}': missing; the row has {have} cells, "
                         f"{against} {width}")
    return DataError(f"{source} line {line}, column {width + 1}: the row has {have} cells, {against} only {width}")
