"""Read raw feature rows from a CSV (file or stdin) by the manifest's feature names; write verdicts.

Plain ``csv`` and numpy, no pandas: this runs on the device too. Extra columns are
ignored; one-hot features (``Protocol_UDP``) are derived from their source column. Every
row and cell obeys the rules of ``values``, which the build side's loaders share.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import math
import os
import sys
from typing import Iterator, TextIO

import numpy as np

from .errors import DataError
from .manifest import Manifest
from .line_blocks import byte_chunks, record_blocks
from .values import FLOAT32_MAX, CellError, category_cell, located, parse_cell, parse_column, records


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
        # The time column's index when the caller asked for time cells (``read_batches(with_time=True)``),
        # and the cells of the rows parsed since ``take_times`` last took them.
        self.time_index: int | None = None
        self._times: list[str] = []
        # Per one-hot source column: raw cell bytes -> index into its list of texts (None = missing).
        self._category_ids: dict[int, dict[bytes, int]] = {}
        self._category_texts: dict[int, list] = {}

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
        if self.time_index is not None:
            self._times.append(cells[self.time_index].strip())
        return row

    def parse_fields(self, fields: list[bytes], rows: int) -> np.ndarray:
        """``rows`` records of ASCII cells, flattened row by row (``len(header)`` each) -> their
        feature values, column by column. Raises CellError (without a place) for any bad cell:
        the caller re-reads the block row by row to name the first one."""
        width = len(self.header)
        values = np.empty((rows, len(self.columns)), dtype=np.float64)
        categories = {}
        for j, (index, one_hot, known) in enumerate(self.columns):
            cells = fields[index::width]
            if one_hot is None:
                values[:, j] = _numbers(cells)
                continue
            if index not in categories:
                categories[index] = self._category_codes(index, cells, known)
            ids, texts = categories[index]
            table = np.array([math.nan if text is None else float(text == one_hot) for text in texts])
            values[:, j] = table[ids]
        if self.time_index is not None:
            self._times.extend(cell.decode("ascii").strip() for cell in fields[self.time_index::width])
        return values

    def take_times(self) -> list[str]:
        """The time cells of the rows parsed since the last call, in order."""
        times, self._times = self._times, []
        return times

    def _category_codes(self, index: int, cells: list[bytes], known) -> tuple[np.ndarray, list]:
        """(id per cell, text per id) for a one-hot source column; the ids persist across blocks."""
        ids = self._category_ids.setdefault(index, {})
        texts = self._category_texts.setdefault(index, [])
        found = list(map(ids.get, cells))
        if None in found:
            for position, cell in enumerate(cells):
                if found[position] is None:
                    if cell not in ids:
                        text = cell.decode("ascii").strip()
                        if known is None or text not in known:
                            text = category_cell(text, known)
                        ids[cell] = len(texts)
                        texts.append(text)
                    found[position] = ids[cell]
        return np.array(found, dtype=np.intp), texts


def _numbers(cells: list[bytes]) -> np.ndarray:
    """``values.parse_cell`` over a column of ASCII cells: ``float()`` for the common case, the full
    rule for a cell it refuses or reads beyond float32's range. Raises CellError."""
    try:
        values = np.fromiter(map(float, cells), dtype=np.float64, count=len(cells))
    except ValueError:                     # a word (missing token, boolean) or a bad cell
        return parse_column([cell.decode("ascii") for cell in cells])
    for position in np.flatnonzero(~(np.abs(values) <= FLOAT32_MAX)):     # NaN, inf, beyond float32
        values[position] = parse_cell(cells[position].decode("ascii"))
    return values


def read_batches(stream: TextIO, manifest: Manifest, source: str, batch_rows: int = 256,
                 with_time: bool = False) -> Iterator[np.ndarray]:
    """(rows, features) float arrays of at most ``batch_rows`` rows, in input order.

    Rows are parsed a block at a time as they arrive: a bulk file in large blocks, a pipe in what
    it holds now (a live row is yielded without waiting for more). A block with a bad cell or row
    is re-read row by row, so the error names the same line and column as a row-by-row reader;
    every full batch of rows before it is yielded first. The header is checked now, so a missing
    column is reported before any verdict is written. With ``with_time`` it yields (values, time
    cells) pairs instead: each row's ``time_column`` cell as text, or None for an input without one."""
    blocks = record_blocks(byte_chunks(stream))
    first = next(blocks, b"")
    text = _decode(first, source, 1)
    lines = io.StringIO(text, newline="")
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{source}: empty input (expected a CSV header with {', '.join(manifest.features)})") from None
    except csv.Error as exc:
        raise DataError(f"{source} line 1: not valid CSV ({exc})") from None
    features = FeatureReader(header, manifest, source)
    if with_time:
        features.time_index = time_column(features.header, manifest)
    rest = text[lines.tell():].encode("utf-8", "surrogatepass")
    batches = _batches(itertools.chain([rest] if rest else [], blocks), features, reader.line_num + 1,
                       max(int(batch_rows), 1))
    return _with_times(batches, features) if with_time else batches


def time_column(header: list[str], manifest: Manifest) -> int | None:
    """The index of the input's time column, whose cells verdict records carry as ``time``: the
    recipe's ``[data] time_column`` if the header has it, else the first column named ``time`` or
    ``timestamp`` (any case); None if there is neither."""
    wanted = (manifest.recipe.get("data") or {}).get("time_column")
    if wanted and wanted in header:
        return header.index(wanted)
    names = [name.lower() for name in header]
    for name in ("time", "timestamp"):
        if name in names:
            return names.index(name)
    return None


def _with_times(batches: Iterator[np.ndarray], features: FeatureReader) -> Iterator[tuple]:
    """(values, time cells or None) per batch. ``_batches`` parses a block before it yields the
    block's first batch, and yields only rows it parsed, in order, so the cells line up."""
    times: list[str] = []
    for values in batches:
        if features.time_index is None:
            yield values, None
            continue
        if len(times) < len(values):
            times += features.take_times()
        yield values, times[:len(values)]
        del times[:len(values)]


def _batches(blocks: Iterator[bytes], features: FeatureReader, line: int, batch_rows: int) -> Iterator[np.ndarray]:
    """Parsed blocks cut into arrays of at most ``batch_rows`` rows; ``line`` is the file line the
    first block starts on."""
    yielded = 0
    for block in blocks:
        values = _fast_block(block, features)
        error = None
        if values is None:
            values, error, lines = _exact_block(block, features, line)
            if error is not None:
                # As a reader of whole batches: the rows before the error up to the last full
                # batch (counted from the first row) are yielded, the partial batch is not.
                values = values[:max(0, (yielded + len(values)) // batch_rows * batch_rows - yielded)]
        else:
            lines = block.count(b"\n") + (not block.endswith(b"\n"))
        line += lines
        for first in range(0, len(values), batch_rows):
            yield values[first:first + batch_rows]
        yielded += len(values)
        if error is not None:
            raise error


def _fast_block(block: bytes, features: FeatureReader) -> np.ndarray | None:
    """A block's feature values by whole columns, or None when it needs the row-by-row reader: a
    quote, a non-ASCII byte, a lone carriage return, a row of the wrong width, or a bad cell."""
    if not block.isascii() or b'"' in block:
        return None
    width = len(features.header)
    if b"\r" in block:
        if block.count(b"\r") != block.count(b"\r\n"):
            return None
        if width == 1:           # a CRLF blank line would pass for a one-cell row
            block = block.replace(b"\r\n", b"\n")
        # Else a CRLF line's last cell keeps its "\r": float() and the category rule strip it, and
        # a blank CRLF line has no commas, so it goes to the row-by-row reader.
    lines = block.split(b"\n")
    if not lines[-1]:
        lines.pop()
    if not all(lines):
        lines = [line for line in lines if line]       # blank lines are skipped, as csv.reader does
    if list(map(bytes.count, lines, itertools.repeat(b","))).count(width - 1) != len(lines):
        return None
    fields = b",".join(lines).split(b",") if lines else []
    try:
        return features.parse_fields(fields, len(lines))
    except CellError:
        return None


def _exact_block(block: bytes, features: FeatureReader, line: int) -> tuple[np.ndarray, DataError | None, int]:
    """A block read row by row with ``csv`` and ``values``: (values of the rows before the first
    error, that error as a located DataError or None, lines the block spans)."""
    lines = io.StringIO(_decode(block, features.source, line), newline="")
    reader = _LineOffset(csv.reader(lines), line - 1)
    rows, error = [], None
    try:
        for number, cells in records(reader, features.header, features.source):
            rows.append(features.parse(cells, number))
    except DataError as exc:
        error = exc
    values = np.vstack(rows) if rows else np.empty((0, len(features.columns)))
    return values, error, reader.reader.line_num


class _LineOffset:
    """A csv reader whose ``line_num`` counts from the block's first line in the file."""

    def __init__(self, reader, offset: int):
        self.reader, self.offset = reader, offset

    def __iter__(self):
        return iter(self.reader)

    @property
    def line_num(self) -> int:
        return self.reader.line_num + self.offset


def _decode(block: bytes, source: str, line: int) -> str:
    try:
        return block.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = line + block.count(b"\n", 0, exc.start)
        raise DataError(f"{source} line {at}: not UTF-8 text (byte 0x{block[exc.start]:02x})") from None


def score_csv(detector, stream: TextIO, source: str, out: TextIO | None, batch_rows: int = 1024,
              explain: int = 0, outputs=None) -> tuple[int, int]:
    """Every row of a CSV stream through a detector (``runner.Detector``), its verdicts written to
    ``out`` as ``VERDICT_HEADER`` rows, flushed batch by batch so a live row's verdict goes out
    as soon as it is scored. ``explain`` > 0 adds a ``why`` column naming that many features per
    flagged row. ``out`` None writes no CSV; ``outputs`` (``outputs.VerdictOutputs``: JSON lines,
    MQTT) gets every block too, with each row's time cell. Returns (rows, anomalies). Raises
    DataError at the first bad row."""
    batches = read_batches(stream, detector.manifest, source, batch_rows, with_time=bool(outputs))
    scorer = detector.stream(explain)
    if out is not None:
        csv.writer(out).writerow(verdict_header(explain > 0))
        out.flush()                     # a reader of a live pipe sees the columns before the first row
    rows = anomalies = 0
    for batch in batches:
        raw, times = batch if outputs else (batch, None)
        verdicts = scorer.push(detector.prepare(raw))
        if out is not None:
            out.write(verdict_text(rows, verdicts, detector.manifest))
            out.flush()
        if outputs:
            outputs.write(rows, verdicts, times)
        rows += len(raw)
        anomalies += int(verdicts.is_anomaly.sum())
    return rows, anomalies


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


def verdict_header(explain: bool = False) -> list[str]:
    """The verdict file's columns: ``VERDICT_HEADER``, and ``why`` last when --explain asked for it."""
    return VERDICT_HEADER + ["why"] if explain else VERDICT_HEADER


def why_text(reasons: list) -> str:
    """A ``why`` cell: ``name:value`` pairs joined by ``;``, most important first, values with 3
    decimals (multiples of 1/255 stay distinct); empty for a row that was not flagged."""
    return ";".join(f"{name}:{value:.3f}" for name, value in reasons)


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
    if verdicts.why is not None:
        for row, reasons in zip(rows, verdicts.why):
            row.append(why_text(reasons))
    return rows


def verdict_text(first_row: int, verdicts, manifest: Manifest) -> str:
    """The CSV text ``csv.writer`` makes of ``verdict_rows`` (the same bytes, ``\\r\\n`` line ends),
    built a column at a time: a block's verdicts cost a few string operations per row."""
    count = len(verdicts.scores)
    units = unit_cells(verdicts)
    classes = [_csv_cell(name) for name in manifest.classes]
    lines = [f"{row},scored,{score},{unit},{flag},{classes[cls]}\r\n" for row, score, unit, flag, cls in
             zip(range(first_row, first_row + count), score_cells(verdicts), [""] * count if units is None else units,
                 np.asarray(verdicts.is_anomaly, dtype=np.int64).tolist(),
                 np.asarray(verdicts.predicted, dtype=np.int64).tolist())]
    if verdicts.warming_up is not None:
        for i in np.flatnonzero(verdicts.warming_up).tolist():
            lines[i] = f"{first_row + i},warming_up,,,0,\r\n"
    if verdicts.why is not None:
        # csv.writer quotes a cell only for a comma, quote or line break, which only a name can hold.
        plain = not any(mark in name for name in manifest.features for mark in ',"\r\n')
        lines = [f"{line[:-2]},{(why_text(reasons) if plain else _csv_cell(why_text(reasons))) if reasons else ''}\r\n"
                 for line, reasons in zip(lines, verdicts.why)]
    return "".join(lines)


def score_cells(verdicts) -> list[str]:
    """Each row's ``score_text``, as ``str`` makes them ("nan", "inf" where not finite). Formatted
    once per block of verdicts for every writer (CSV, JSON lines, MQTT): kept in ``verdicts.texts``."""
    cells = verdicts.texts.get("score")
    if cells is None:
        with np.errstate(over="ignore", invalid="ignore"):      # as score_text: its float32 value
            scores = np.asarray(verdicts.scores, dtype=np.float64).astype(np.float32).astype(np.float64)
        cells = verdicts.texts["score"] = _formatted(scores, "{:.6g}")
    return cells


def unit_cells(verdicts) -> list[str] | None:
    """Each row's ``unit_text``, or None for a bundle without unit scores; kept as ``score_cells``."""
    if verdicts.unit_score is None:
        return None
    cells = verdicts.texts.get("unit")
    if cells is None:
        cells = verdicts.texts["unit"] = _formatted(np.asarray(verdicts.unit_score, dtype=np.float64), "{:.6f}")
    return cells


def _formatted(values: np.ndarray, form: str) -> list[str]:
    """``form`` applied to each value. An int8 model's scores take few distinct values (a softmax
    output has at most 256): then each distinct value is formatted once."""
    values = values.ravel()
    if len(values) < 64 or np.signbit(values[values == 0]).any():     # np.unique takes -0.0 for 0.0
        return list(map(form.format, values.tolist()))
    distinct, index = np.unique(values, return_inverse=True)
    if 2 * len(distinct) > len(values):
        return list(map(form.format, values.tolist()))
    texts = list(map(form.format, distinct.tolist()))
    return list(map(texts.__getitem__, index.ravel().tolist()))


def _csv_cell(text: str) -> str:
    """One cell as ``csv.writer`` writes it (quoted if it holds a comma, quote or line break)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow([text])
    return out.getvalue()


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
