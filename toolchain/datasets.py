"""Loaders for the real data sets tinyad builds from, each returning one ``Dataset``.

Loaders only read and validate: no imputation, scaling or splitting happens here
(those are fitted on the training split only, later). Every data problem raises a
one-line ``DataError`` naming the file, and where it applies the line and column.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from firmware_host.errors import DataError
from firmware_host.values import (CellError, category_cell, is_missing, located, parse_cell, parse_column,
                                  records)

if TYPE_CHECKING:  # pandas is imported where a loader needs it
    import pandas as pd

SOURCES = {
    "sdn_ddos": "Mendeley Data doi:10.17632/jxpfjc64kr.1 (Ahuja et al. 2020, CC BY 4.0)",
    "nbaiot": "UCI ML repository, 'detection_of_IoT_botnet_attacks_N_BaIoT' (Meidan et al. 2018)",
    "ton_iot": "UNSW Canberra, https://research.unsw.edu.au/projects/toniot-datasets (Moustafa et al.)",
    "nsl_kdd": "University of New Brunswick, https://www.unb.ca/cic/datasets/nsl.html (Tavallaee et al. 2009)",
    "nab": "Numenta Anomaly Benchmark (NAB v1.1, Numenta, MIT licence), https://github.com/numenta/NAB",
    "csv": "your own CSV file",
}
SDN_IDENTIFIERS = ("src", "dst", "dt", "switch")
SDN_PROTOCOLS = ("UDP", "TCP", "ICMP")
NSL_KDD_COLUMNS = (
    "duration protocol_type service flag src_bytes dst_bytes land wrong_fragment urgent hot "
    "num_failed_logins logged_in num_compromised root_shell su_attempted num_root num_file_creations "
    "num_shells num_access_files num_outbound_cmds is_host_login is_guest_login count srv_count serror_rate "
    "srv_serror_rate rerror_rate srv_rerror_rate same_srv_rate diff_srv_rate srv_diff_host_rate "
    "dst_host_count dst_host_srv_count dst_host_same_srv_rate dst_host_diff_srv_rate "
    "dst_host_same_src_port_rate dst_host_srv_diff_host_rate dst_host_serror_rate dst_host_srv_serror_rate "
    "dst_host_rerror_rate dst_host_srv_rerror_rate").split()


@dataclass
class Dataset:
    """Candidate features and per-row classes of one data set."""

    name: str
    features: "pd.DataFrame"             # numeric candidate features (float64), original names
    classes: np.ndarray                  # per-row class name (str)
    normal_class: str                    # the class name meaning "normal"
    time: np.ndarray | None = None       # per-row sortable time key (seconds or ticks), for split="time"
    identifiers: "pd.DataFrame | None" = None   # leak-prone columns kept out of the features
    sources: list = field(default_factory=list)
    citation: str = ""
    one_hot: dict = field(default_factory=dict)  # feature name -> (source column, value) for derived 0/1 columns
    windows: list | None = None          # labelled anomaly windows [(start, end)] in ``time`` units (NAB), inclusive
    categories: dict = field(default_factory=dict)  # one-hot source column -> its known values (tuple)

    def subset(self, rows: np.ndarray) -> "Dataset":
        """The same data set restricted to ``rows`` (positions), re-indexed from 0. Labelled
        windows are spans of time, so they are kept whole."""
        pick = lambda frame: None if frame is None else frame.iloc[rows].reset_index(drop=True)
        return Dataset(self.name, pick(self.features), self.classes[rows], self.normal_class,
                       None if self.time is None else self.time[rows], pick(self.identifiers), self.sources,
                       self.citation, self.one_hot, self.windows, self.categories)


def resolve_data_root(explicit: str | os.PathLike | None = None, *, search_defaults: bool = True) -> Path:
    """Where recipes' data paths start: ``explicit``, else ``$TINYAD_DATA``, else ``../shared/data``
    (from the working directory, then from the project checkout) when it exists."""
    if explicit:
        root = Path(explicit)
        if not root.is_dir():
            raise DataError(f"data root {root} is not a folder")
        return root
    env = os.environ.get("TINYAD_DATA")
    if env:
        if not Path(env).is_dir():
            raise DataError(f"TINYAD_DATA={env} is not a folder")
        return Path(env)
    if search_defaults:
        for candidate in (Path.cwd() / ".." / "shared" / "data",
                          Path(__file__).resolve().parents[1].parent / "shared" / "data"):
            if candidate.is_dir():
                return candidate.resolve()
    raise DataError("no data root: pass --data-root DIR or set TINYAD_DATA (default ../shared/data does not exist)")


# -- reading and validating ----------------------------------------------------------------------

def _read_csv(path: Path, loader: str, header: bool = True):
    """The file as a frame of string cells, indexed by the line each row starts on in the file.

    Rows follow ``firmware_host.values.records``, as ``tinyad run`` reads them: exactly as many
    cells as the header (or, without a header, the first row), blank lines skipped."""
    import pandas as pd

    from firmware_host.csv_input import open_text

    if not path.is_file():
        raise DataError(f"{path}: no such file; get it from {SOURCES.get(loader, SOURCES['csv'])}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    stream, source = open_text(str(path))
    try:
        with stream:
            reader = csv.reader(stream)
            first = next((cells for cells in reader if cells), None)
            if first is None:
                raise DataError(f"{path}: empty file")
            if header:
                names, rows, lines, against = [c.strip() for c in first], [], [], "the header"
            else:   # columns are named by number; the first row is data
                names, against = [str(i + 1) for i in range(len(first))], "the first row"
                rows, lines = [first], [reader.line_num]
            for line, cells in records(reader, names, source, against):
                rows.append(cells)
                lines.append(line)
    except (UnicodeDecodeError, EOFError, OSError) as exc:
        raise DataError(f"{path}: not a readable CSV ({str(exc).splitlines()[0][:200]})") from None
    except csv.Error as exc:
        raise DataError(f"{path} line 1: not valid CSV ({exc})") from None
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"{path}: column(s) {', '.join(repeated)} appear more than once in the header")
    if not rows:
        raise DataError(f"{path}: has a header but no data rows")
    return pd.DataFrame(np.array(rows, dtype=object), columns=names, index=np.array(lines), dtype=object)


def _require(frame, path: Path, column: str) -> None:
    if column not in frame.columns:
        raise DataError(f"{path}: label column '{column}' is missing; columns are: {', '.join(frame.columns)}")


def _numeric(frame, path: Path, columns):
    """The columns as float64 by ``firmware_host.values.parse_cell``; the first refused cell is an
    error naming its line and column."""
    import pandas as pd

    out = {}
    for column in columns:
        try:
            values = parse_column(frame[column].to_numpy())
        except CellError as error:
            raise located(str(path), int(frame.index[error.position]), column, error) from None
        if np.isnan(values).all():
            raise DataError(f"{path}: column '{column}' is empty in every row")
        out[column] = values
    return pd.DataFrame(out, index=frame.index, columns=list(columns))


def _known_categories(frame, column) -> list[str]:
    """The distinct stripped values of a text column, missing tokens left out, sorted."""
    return sorted({cell.strip() for cell in frame[column].to_numpy() if not is_missing(cell)})


def _is_categorical(frame, column) -> bool:
    """A text column to one-hot encode: over half its cells are text (neither a number, boolean
    text nor missing) and it holds at most 20 distinct values."""
    def is_text(cell: str) -> bool:
        try:
            parse_cell(cell)
        except CellError:
            return True
        return False

    cells = frame[column].to_numpy()
    return sum(map(is_text, cells)) > 0.5 * len(cells) and len(_known_categories(frame, column)) <= 20


def _with_one_hot(frame, path: Path, features, encode: dict, dataset_one_hot: dict, categories: dict):
    """``features`` plus 0/1 columns ``<column>_<value>`` for each column -> known values in ``encode``.

    A missing cell gives NaN in each of its column's one-hot features (the scaler imputes it);
    a value outside the known ones is an error naming its line and column, as in ``tinyad run``."""
    import pandas as pd

    extra = {}
    for column, known in encode.items():
        allowed = frozenset(known)
        texts = np.empty(len(frame), dtype=object)
        for i, cell in enumerate(frame[column].to_numpy()):
            try:
                texts[i] = category_cell(cell, allowed)
            except CellError as error:
                raise located(str(path), int(frame.index[i]), column, error) from None
        missing = np.equal(texts, None)
        for value in known:
            hot = (texts == value).astype(np.float64)
            hot[missing] = np.nan
            extra[f"{column}_{value}"] = hot
            dataset_one_hot[f"{column}_{value}"] = (column, value)
        categories[column] = tuple(known)
    return pd.concat([features, pd.DataFrame(extra, index=features.index)], axis=1) if extra else features


def _seconds(stamps) -> np.ndarray:
    """Datetimes (a pandas Series or array, any resolution) as float64 seconds since 1970-01-01."""
    return np.asarray(stamps, dtype="datetime64[ns]").astype(np.int64) / 1e9


# -- loaders -----------------------------------------------------------------------------------

def _load_sdn(path: Path, exclude, **_) -> Dataset:
    frame = _read_csv(path, "sdn_ddos")
    _require(frame, path, "label")
    labels = _numeric(frame, path, ["label"])["label"].to_numpy()
    if not set(np.unique(labels)) <= {0.0, 1.0}:
        raise DataError(f"{path}: column 'label' must hold 0 (benign) or 1 (attack)")
    numeric_columns = [c for c in frame.columns
                       if c not in SDN_IDENTIFIERS + ("label", "Protocol") and c not in exclude]
    features = _numeric(frame, path, numeric_columns)
    one_hot, categories = {}, {}
    if "Protocol" in frame.columns and "Protocol" not in exclude:
        features = _with_one_hot(frame, path, features, {"Protocol": SDN_PROTOCOLS}, one_hot, categories)
    identifiers = None
    present = [c for c in SDN_IDENTIFIERS if c in frame.columns]
    if present:
        import pandas as pd
        identifiers = pd.DataFrame({c: (pd.to_numeric(frame[c], errors="coerce") if c in ("dt", "switch")
                                        else frame[c].astype("category").cat.codes).astype(np.float64)
                                    for c in present}).reset_index(drop=True)
    time = identifiers["dt"].to_numpy() if identifiers is not None and "dt" in identifiers else None
    return Dataset("sdn_ddos", features.reset_index(drop=True), np.where(labels == 1, "attack", "benign"),
                   "benign", time, identifiers, [str(path)], SOURCES["sdn_ddos"], one_hot,
                   categories=categories)


def _load_nbaiot(paths: list[Path], exclude, **_) -> Dataset:
    import pandas as pd

    frames, classes = [], []
    for path in paths:
        frame = _read_csv(path, "nbaiot")
        frames.append(_numeric(frame, path, [c for c in frame.columns if c not in exclude]))
        classes += [path.name.split(".")[0]] * len(frame)
    columns = list(frames[0].columns)
    for path, frame in zip(paths, frames):
        if list(frame.columns) != columns:
            raise DataError(f"{path}: columns differ from {paths[0].name}'s")
    normal = [p.name.split(".")[0] for p in paths if p.name.startswith("benign")]
    if not normal:
        raise DataError(f"N-BaIoT: no benign file among {', '.join(p.name for p in paths)}")
    return Dataset("nbaiot", pd.concat(frames, ignore_index=True), np.array(classes), normal[0], None, None,
                   [str(p) for p in paths], SOURCES["nbaiot"])


def _load_ton_iot(path: Path, exclude, target=None, **_) -> Dataset:
    import pandas as pd

    frame = _read_csv(path, "ton_iot")
    target = target or "label"
    if target not in ("label", "type"):
        raise DataError(f"TON_IoT target must be 'label' or 'type', not {target!r}")
    for column in ("label", "type", "date", "time"):
        _require(frame, path, column)
    stamp = pd.to_datetime(frame["date"].astype(str).str.strip() + " " + frame["time"].astype(str).str.strip(),
                           format="%d-%b-%y %H:%M:%S", errors="coerce")
    if stamp.isna().any():
        row = int(np.flatnonzero(stamp.isna().to_numpy())[0])
        raise DataError(f"{path} line {frame.index[row]}, columns 'date'/'time': "
                        f"{frame['date'].iloc[row]!r} {frame['time'].iloc[row]!r} is not a date and time")
    device = [c for c in frame.columns if c not in ("date", "time", "label", "type") and c not in exclude]
    categorical = [c for c in device if _is_categorical(frame, c)]
    one_hot, categories = {}, {}
    features = _with_one_hot(frame, path, _numeric(frame, path, [c for c in device if c not in categorical]),
                             {c: _known_categories(frame, c) for c in categorical}, one_hot, categories)
    if target == "label":
        labels = _numeric(frame, path, ["label"])["label"].to_numpy()
        classes = np.where(labels == 1, "attack", "normal")
    else:
        classes = frame["type"].astype(str).str.strip().to_numpy()
    time = _seconds(stamp)
    return Dataset("ton_iot", features.reset_index(drop=True), classes, "normal", time, None, [str(path)],
                   SOURCES["ton_iot"], one_hot, categories=categories)


def _load_nsl_kdd(path: Path, exclude, target=None, **_) -> Dataset:
    frame = _read_csv(path, "nsl_kdd", header=False)
    if frame.shape[1] not in (42, 43):
        raise DataError(f"{path}: expected 43 columns (41 features, attack, difficulty), found {frame.shape[1]}")
    frame = frame.iloc[:, :42]
    frame.columns = list(NSL_KDD_COLUMNS) + ["attack"]
    categorical = ("protocol_type", "service", "flag")
    features = _numeric(frame, path, [c for c in NSL_KDD_COLUMNS if c not in categorical and c not in exclude])
    one_hot, categories = {}, {}
    features = _with_one_hot(frame, path, features, {c: _known_categories(frame, c)
                                                     for c in categorical if c not in exclude}, one_hot, categories)
    attack = frame["attack"].astype(str).str.strip().to_numpy()
    classes = attack if target == "attack" else np.where(attack == "normal", "normal", "attack")
    return Dataset("nsl_kdd", features.reset_index(drop=True), classes, "normal", None, None, [str(path)],
                   SOURCES["nsl_kdd"], one_hot, categories=categories)


UNLABELLED = "unlabelled"       # the one class of a CSV loaded without a label column


def _load_csv(path: Path, exclude, label=None, normal=None, time_column=None, **_) -> Dataset:
    import pandas as pd

    frame = _read_csv(path, "csv")
    if label:
        _require(frame, path, label)
        classes = frame[label].astype(str).str.strip().to_numpy()
    else:
        # No label: every row counts as normal (an autoencoder learns them all); figures that
        # need labels (F1, ROC AUC) are reported as n/a, thresholds come from score percentiles.
        classes, normal = np.full(len(frame), UNLABELLED), UNLABELLED
    if time_column:
        _require(frame, path, time_column)
    columns = [c for c in frame.columns if c not in (label, time_column) and c not in exclude]
    features = _numeric(frame, path, columns)
    if normal is None:
        present = set(classes.tolist())
        normal = next((c for c in ("0", "normal", "benign", "BENIGN", "Normal") if c in present), None)
        if normal is None:
            raise DataError(f"{path}: cannot tell which '{label}' value is normal; set [data] normal in the recipe")
    time = None
    if time_column:
        values = pd.to_numeric(frame[time_column], errors="coerce")
        if values.isna().any():
            stamps = pd.to_datetime(frame[time_column], errors="coerce")
            if stamps.isna().any():
                row = int(np.flatnonzero(stamps.isna().to_numpy())[0])
                raise DataError(f"{path} line {frame.index[row]}, column '{time_column}': "
                                f"{str(frame[time_column].iloc[row]).strip()!r} is neither a number nor a date")
            values = _seconds(stamps)
        time = np.asarray(values, dtype=np.float64)
    return Dataset(path.stem, features.reset_index(drop=True), classes, normal, time, None, [str(path)],
                   SOURCES["csv"])


NAB_LABELS = Path("labels") / "combined_windows.json"


def _nab_root(path: Path) -> Path:
    """The NAB folder holding ``data/`` (where ``path`` lies) and ``labels/``."""
    for parent in path.resolve().parents:
        if parent.name == "data" and (parent.parent / NAB_LABELS).is_file():
            return parent.parent
    raise DataError(f"{path}: not under a NAB folder's data/ beside {NAB_LABELS.as_posix()}; "
                    f"get NAB from {SOURCES['nab']}")


def _parse_stamps(texts, path: Path, where) -> np.ndarray:
    """ISO timestamps as float64 seconds; the first bad one is an error at ``where(i)``."""
    import pandas as pd

    texts = pd.Series(texts, dtype=object).astype(str).str.strip()
    stamps = pd.to_datetime(texts, format="ISO8601", errors="coerce")
    if stamps.isna().any():
        i = int(np.flatnonzero(stamps.isna().to_numpy())[0])
        raise DataError(f"{path} {where(i)}: {texts.iloc[i]!r} is not a timestamp (YYYY-MM-DD HH:MM:SS)")
    return _seconds(stamps)


def nab_windows(path: Path) -> list[tuple[float, float]]:
    """The labelled anomaly windows of one NAB series file, as (start, end) seconds, in time order."""
    import json

    root = _nab_root(path)
    labels = root / NAB_LABELS
    key = path.resolve().relative_to((root / "data").resolve()).as_posix()
    try:
        table = json.loads(labels.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{labels}: not readable JSON ({str(exc).splitlines()[0][:200]})") from None
    if not isinstance(table, dict) or key not in table:
        raise DataError(f"{labels}: no windows for series '{key}' (is it a NAB series?)")
    spans = table[key]
    if not isinstance(spans, list) or any(not isinstance(w, list) or len(w) != 2 for w in spans):
        raise DataError(f"{labels}: '{key}' must be a list of [start, end] timestamp pairs")
    flat = _parse_stamps([t for w in spans for t in w], labels, lambda i: f"'{key}' window {i // 2 + 1}")
    windows = sorted(zip(flat[0::2].tolist(), flat[1::2].tolist()))
    for n, (start, end) in enumerate(windows, 1):
        if end < start:
            raise DataError(f"{labels}: '{key}' window {n} ends before it starts")
    return windows


def _load_nab(path: Path, exclude, **_) -> Dataset:
    if "value" in exclude:
        raise DataError(f"{path}: a NAB series has one feature, 'value'; it cannot be excluded")
    frame = _read_csv(path, "nab")
    for column in ("timestamp", "value"):
        if column not in frame.columns:
            raise DataError(f"{path}: column '{column}' is missing; NAB series have 'timestamp,value'")
    time = _parse_stamps(frame["timestamp"], path, lambda i: f"line {frame.index[i]}, column 'timestamp'")
    features = _numeric(frame, path, ["value"])
    if features["value"].isna().any():
        row = int(np.flatnonzero(features["value"].isna().to_numpy())[0])
        raise DataError(f"{path} line {frame.index[row]}, column 'value': "
                        f"{frame['value'].iloc[row].strip()!r} is missing; a NAB series needs a value in every row")
    windows = nab_windows(path)
    inside = np.zeros(len(time), dtype=bool)
    for start, end in windows:
        inside |= (time >= start) & (time <= end)
    return Dataset(f"nab/{path.parent.name}/{path.stem}", features.reset_index(drop=True),
                   np.where(inside, "anomaly", "normal"), "normal", time, None, [str(path)], SOURCES["nab"],
                   windows=windows)


def first_window_row(dataset: Dataset) -> int:
    """Index of the first row (in time order) at or after the start of the first labelled window:
    rows before it hold no labelled anomaly, the part NAB-style detectors train on. The row
    count when every row precedes the first window."""
    if not dataset.windows or dataset.time is None:
        raise DataError(f"{dataset.name}: no labelled windows, so no first window row")
    start = min(w[0] for w in dataset.windows)
    return int(np.count_nonzero(np.asarray(dataset.time, dtype=np.float64) < start))


LOADERS = {"sdn_ddos": _load_sdn, "nbaiot": _load_nbaiot, "ton_iot": _load_ton_iot, "nsl_kdd": _load_nsl_kdd,
           "nab": _load_nab, "csv": _load_csv}


def load_dataset(loader: str, root: Path, path: str | list[str], *, label: str | None = None,
                 target: str | None = None, normal: str | None = None, time_column: str | None = None,
                 exclude=()) -> Dataset:
    """Load ``path`` (relative to ``root``; a list of files for N-BaIoT) with the named loader."""
    if loader not in LOADERS:
        raise DataError(f"unknown loader {loader!r}; known: {', '.join(LOADERS)}")
    root = Path(root)
    if loader == "nbaiot":
        paths = [root / p for p in ([path] if isinstance(path, str) else path)]
        return _load_nbaiot(paths, tuple(exclude))
    if not isinstance(path, str):
        raise DataError(f"loader {loader!r} reads one file; got {len(path)}")
    return LOADERS[loader](root / path, tuple(exclude), label=label, target=target, normal=normal,
                           time_column=time_column)
