"""`tinyad init`: look at a CSV file and write a starter recipe that explains each choice.

``inspect_csv`` reads a bounded sample of rows by the project's own cell rules
(``firmware_host.values``: missing tokens, boolean text, float32 range) and sorts each column
into number, boolean, category, identifier, time or label. ``starter_recipe`` turns that into
TOML text with a plain-English comment beside every choice. Neither prints.
"""

from __future__ import annotations

import csv
import itertools
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from firmware_host.csv_input import open_text
from firmware_host.errors import DataError
from firmware_host.values import CellError, is_missing, parse_cell, records

from .datasets import NSL_KDD_COLUMNS

SAMPLE_ROWS = 5000               # rows kept to judge the columns: enough for category counts
SCAN_ROWS = 200_000              # rows read to draw them from (files are often sorted by class or time)
MAX_CATEGORIES = 20              # text columns with at most this many values are categories (as datasets.py)
TIME_NAMES = ("time", "timestamp", "ts", "date", "datetime")
NORMAL_VALUES = ("0", "normal", "benign", "BENIGN", "Normal")    # what the generic loader takes as normal
# IPv4 (with an optional port), or IPv6: hex groups with "::" or all 8 groups (so 19:19:40 is no address)
_IP = re.compile(r"^\d{1,3}(\.\d{1,3}){3}(:\d+)?$|^(?=[0-9a-fA-F:]*::|(?:[0-9a-fA-F]{1,4}:){7})[0-9a-fA-F:]+$")
_MAC = re.compile(r"^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}$")


@dataclass
class Column:
    """One column's verdict: ``role`` is number, boolean, category, identifier, time, label or
    excluded; ``reason`` says why in plain English."""

    name: str
    role: str
    reason: str
    values: list = field(default_factory=list)    # category values (sorted), for categories only


@dataclass
class Inspection:
    """What ``inspect_csv`` found: the file, its columns in order, the sampled row count, and the
    label, time column and known data set (``nab``, ``nbaiot`` or None) it settled on."""

    path: Path
    columns: list[Column]
    sampled_rows: int
    label: str | None = None
    time: str | None = None
    normal: str | None = None          # the label value meaning normal, when the loader cannot guess it
    known: str | None = None

    def kept(self) -> list[Column]:
        return [c for c in self.columns if c.role in ("number", "boolean")]


def _sample(path: Path) -> tuple[list[str], list[list[str]]]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    stream, source = open_text(str(path))
    try:
        with stream:
            reader = csv.reader(stream)
            header = next((cells for cells in reader if cells), None)
            if header is None:
                raise DataError(f"{path}: empty file")
            header = [c.strip() for c in header]
            first = []
            if _nsl_kdd_row(header):           # NSL-KDD has no header: its loader names the columns
                first, header = [header], _nsl_kdd_names(len(header))
            _require_header(path, header)
            rows = _reservoir(itertools.chain(((1, cells) for cells in first), records(reader, header, source)))
    except (UnicodeDecodeError, EOFError, OSError) as exc:
        raise DataError(f"{path}: not a readable CSV ({str(exc).splitlines()[0][:200]})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not valid CSV ({exc})") from None
    if not rows:
        raise DataError(f"{path}: has a header but no data rows")
    return header, rows


def _reservoir(numbered) -> list[list[str]]:
    """A seeded uniform sample of ``SAMPLE_ROWS`` of the first ``SCAN_ROWS`` records, in file order."""
    import random

    draw, kept = random.Random(0), []
    for seen, (_, cells) in enumerate(numbered):
        if seen >= SCAN_ROWS:
            break
        if len(kept) < SAMPLE_ROWS:
            kept.append((seen, cells))
        else:
            slot = draw.randrange(seen + 1)
            if slot < SAMPLE_ROWS:
                kept[slot] = (seen, cells)
    return [cells for _, cells in sorted(kept, key=lambda pair: pair[0])]


def _nsl_kdd_row(cells: list[str]) -> bool:
    """A header-less NSL-KDD record: 41 features, the attack name and (KDD+ files) a difficulty."""
    return len(cells) in (42, 43) and cells[1].strip() in ("tcp", "udp", "icmp") and \
        _number(cells[0]) is not None


def _nsl_kdd_names(width: int) -> list[str]:
    return (list(NSL_KDD_COLUMNS) + ["attack", "difficulty"])[:width]


def _require_header(path: Path, header: list[str]) -> None:
    """A first row holding a number is data, not column names: the generic loader needs names."""
    for i, cell in enumerate(header):
        if not is_missing(cell) and _number(cell) is not None:
            raise DataError(f"{path}: the first row looks like data (cell {i + 1} is {cell!r}), not a header; "
                            "tinyad init needs a first row naming the columns (add one, then run init again)")
    repeated = sorted({n for n in header if header.count(n) > 1})
    if repeated:
        raise DataError(f"{path}: column(s) {', '.join(repeated)} appear more than once in the header")


def _number(cell: str) -> float | None:
    try:
        return parse_cell(cell)
    except CellError:
        return None


def _parses_as_time(cells: list[str]) -> bool:
    """True when every present cell is text that pandas reads as a date or time (as the generic
    loader's time column does), not a plain number."""
    import pandas as pd

    present = [c.strip() for c in cells if not is_missing(c)]
    if not present or any(_number(c) is not None for c in present[:50]):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stamps = pd.to_datetime(pd.Series(present), errors="coerce")
    return not stamps.isna().any()


def _classify(name: str, cells: list[str]) -> Column:
    present = [c.strip() for c in cells if not is_missing(c)]
    distinct = set(present)
    if not present:
        return Column(name, "excluded", "empty in every sampled row")
    if len(distinct) == 1:
        return Column(name, "identifier", f"holds one value ({present[0]!r}) in every sampled row, so it "
                                          "tells the model nothing")
    numbers = [_number(c) for c in present]
    if all(v is not None for v in numbers):
        words = sum(c.lower() in ("true", "false", "yes", "no") for c in present)
        if words == len(present) or distinct <= {"0", "1"}:
            return Column(name, "boolean", "yes/no values, read as 1/0")
        integers = all(float(v).is_integer() for v in numbers)
        if integers and len(present) >= 20 and all(b > a for a, b in zip(numbers, numbers[1:])):
            return Column(name, "identifier", "an integer that rises by row, like a row id or counter; "
                                              "it would teach the model the row order")
        return Column(name, "number", f"numbers ({len(distinct)} distinct values in the sample)")
    if any(_IP.match(c) or _MAC.match(c) for c in present[:200]):
        return Column(name, "identifier", "IP or MAC addresses: they name machines, and a model that "
                                          "learns them fails on any new address")
    if len(distinct) == len(present) and len(present) >= 20:
        return Column(name, "identifier", "text that differs in every row, like an id")
    if len(distinct) <= MAX_CATEGORIES:
        return Column(name, "category", f"text with {len(distinct)} values", sorted(distinct))
    return Column(name, "excluded", f"text with {len(distinct)} different values: too many for categories")


def _label_leaks(column: Column, cells: list[str], labels: list[str]) -> bool:
    """True when each value of ``column`` comes with one label value only (an attack-type column)."""
    seen: dict[str, set] = {}
    for cell, label in zip(cells, labels):
        seen.setdefault(cell.strip(), set()).add(label.strip())
    return len(set(labels)) > 1 and all(len(v) == 1 for v in seen.values())


def _known_set(path: Path, header: list[str]) -> str | None:
    """``nab`` for a NAB series (its windows file is beside data/), ``nbaiot`` for an N-BaIoT benign file."""
    if header == ["timestamp", "value"]:
        for parent in path.resolve().parents:
            if parent.name == "data" and (parent.parent / "labels" / "combined_windows.json").is_file():
                return "nab"
    if path.name.startswith("benign") and header and all(h.startswith(("MI_dir", "H_", "HH_", "HpHp_"))
                                                         for h in header):
        return "nbaiot"
    if header[:len(NSL_KDD_COLUMNS) + 1] == _nsl_kdd_names(len(NSL_KDD_COLUMNS) + 1):
        return "nsl_kdd"
    return None


def inspect_csv(path: str | Path, label: str | None = None, time: str | None = None) -> Inspection:
    """Judge each column of ``path`` on ``SAMPLE_ROWS`` rows drawn from its first ``SCAN_ROWS``.
    ``label`` and ``time`` name columns chosen by the user; without ``time`` the first column whose
    text reads as dates is the time, else one named as in ``TIME_NAMES``. Raises DataError for a missing, empty or header-less
    file or a label/time that is not a column."""
    path = Path(path)
    header, rows = _sample(path)
    for option, name in (("--label", label), ("--time", time)):
        if name is not None and name not in header:
            raise DataError(f"{path}: {option} {name!r} is not a column; columns are: {', '.join(header)}")
    if label is not None and label == time:
        raise DataError(f"{path}: --label and --time both name {label!r}")
    cells = {name: [r[i] for r in rows] for i, name in enumerate(header)}
    found = Inspection(path, [], len(rows), label=label, known=_known_set(path, header))
    if found.known == "nsl_kdd":
        found.label = "attack"             # the nsl_kdd loader reads it: normal, or the attack's name
    found.time = time or next((n for n in header if n != label and _parses_as_time(cells[n])), None) or next(
        (n for n in header if n != label and n.lower() in TIME_NAMES), None)
    for name in header:
        found.columns.append(_judge(name, cells, found))
    if label is not None and found.known is None:
        present = {c.strip() for c in cells[label]}
        if not present & set(NORMAL_VALUES):
            common = max(sorted(present), key=[c.strip() for c in cells[label]].count)
            found.normal = common
    return found


LABEL_NAMES = ("label", "labels", "attack", "is_attack", "class", "target", "anomaly", "is_anomaly")


def _judge(name: str, cells: dict, found: Inspection) -> Column:
    if name == found.label:
        return Column(name, "label", "the label you named: what the model learns to predict" if found.known is None
                      else f"the {found.known} loader reads it as the label (normal, or the attack's name)")
    if found.known == "nsl_kdd" and name not in NSL_KDD_COLUMNS:
        return Column(name, "excluded", "NSL-KDD's difficulty level of the record, not a property of the traffic")
    if found.label is None and found.known is None and name.lower() in LABEL_NAMES:
        return Column(name, "excluded", f"named like a label: left out so the model does not learn the answer; "
                                        f"pass --label {name} to train on it")
    if name == found.time:
        return Column(name, "time", "the time of each row: it orders the split and is not a feature")
    if _parses_as_time(cells[name]):
        return Column(name, "excluded", f"dates or times too; the split orders rows by '{found.time}'")
    column = _classify(name, cells[name])
    if column.role == "category" and found.label and _label_leaks(column, cells[name], cells[found.label]):
        return Column(name, "excluded", f"each of its values ({', '.join(column.values[:6])}) comes with one "
                                        f"'{found.label}' value only: it restates the label, so the model "
                                        "would learn nothing else")
    return column


# -- the recipe text ---------------------------------------------------------------------------

def _q(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    import json

    return json.dumps(text)


def plan_recipe(found: Inspection) -> dict:
    """The loader, split and detector for ``found``, each with the sentence that explains it."""
    kept = found.kept()
    if not kept:
        raise DataError(f"{found.path}: no column holds numbers the model could read "
                        f"({'; '.join(f'{c.name}: {c.reason}' for c in found.columns)})")
    loader = found.known or "csv"
    if found.time and len(kept) == 1:
        return {"loader": loader, "split": "probation", "detector": "lstm",
                "why_split": "one value over time: learn from the first 15 % of the series (at most 750 "
                             "rows), in time order, and score everything after it; no label is read to train",
                "why_detector": f"one value column ('{kept[0].name}') and a time column: an LSTM forecasts "
                                "each sample from the ones before it, and the device turns its forecast "
                                "error into an anomaly level in [0, 1] (adaptive scoring)"}
    split, why_split = (("time", f"rows have a time ('{found.time}'): train on the earlier 60 %, validate "
                                 "on the next 20 % and test on the latest 20 %, as the model will meet the "
                                 "future") if found.time else
                        ("random", "no time column: rows are dealt at random (60 / 20 / 20)"
                                   + (", keeping each class's share the same in every part" if found.label
                                      or loader != "csv" else "")))
    if found.label:
        return {"loader": loader, "split": split, "detector": "vae_dnn", "why_split": why_split,
                "why_detector": f"a label ('{found.label}') exists: a VAE learns the shape of the rows and a "
                                "small classifier on its code learns normal vs anomalous from the labels"}
    if loader == "csv":
        return {"loader": loader, "split": split, "detector": "ae", "why_split": why_split,
                "why_detector": "no label: an autoencoder learns to rebuild the training rows, all taken as "
                                "normal, and a row it rebuilds badly is anomalous; the threshold flags the "
                                "top 1 % of validation scores, and figures that need labels (F1, ROC AUC) "
                                "read n/a. Pass --label COLUMN if a column says which rows are attacks"}
    return {"loader": loader, "split": split, "detector": "ae", "why_split": why_split,
            "why_detector": "no label: an autoencoder learns to rebuild normal rows; a row it rebuilds "
                            "badly is anomalous"}


def _data_lines(found: Inspection, plan: dict, recipe_dir: Path) -> list[str]:
    where = os.path.relpath(found.path.resolve(), recipe_dir.resolve())
    lines = ["[data]"]
    if plan["loader"] == "csv":
        lines.append('loader = "csv"                  # the generic loader: numbers and yes/no columns')
    else:
        lines.append(f'loader = {_q(plan["loader"])}  # this file is from a known data set, '
                     f'whose loader also reads its labels')
    path = _q(where) if plan["loader"] != "nbaiot" else f"[{_q(where)}]"
    lines += [f"path = {path}", 'relative_to = "recipe"          # the path is relative to this file\'s folder']
    if plan["loader"] == "csv":
        if found.label:
            lines.append(f"label = {_q(found.label)}")
        else:
            lines.append("# label = \"attack\"               # none: every row is taken as normal (see Detector)")
        if found.normal is not None:
            lines.append(f"normal = {_q(found.normal)}  # its most common value; no 0/normal/benign value "
                         "found: check this")
        if found.time:
            lines.append(f"time_column = {_q(found.time)}")
    if plan["loader"] != "nab":      # a NAB series is timestamp,value: nothing to leave out
        dropped = [c.name for c in found.columns if c.role not in ("number", "boolean", "label", "time")]
        if plan["loader"] == "nsl_kdd":      # its loader one-hot encodes categories and reads only its columns
            dropped = [c.name for c in found.columns
                       if c.name in NSL_KDD_COLUMNS and c.role not in ("number", "boolean", "category")]
        if dropped:
            lines.append(f"exclude = [{', '.join(_q(n) for n in dropped)}]")
    if plan["detector"] != "lstm":     # a sample of a series would break its windows
        lines.append("# max_rows = 20000               # uncomment for a quick first build on a sample")
    return lines


def _column_lines(found: Inspection, plan: dict) -> list[str]:
    lines = [f"# The columns, judged on {found.sampled_rows} rows drawn from the first {SCAN_ROWS:,}:"]
    for c in found.columns:
        if c.role in ("number", "boolean"):
            verdict = "kept"
        elif c.role in ("label", "time"):
            verdict = c.role
        elif c.role == "category" and plan["loader"] == "nsl_kdd":
            verdict = "kept"
            c = Column(c.name, c.role, f"a category ({', '.join(c.values[:6])}"
                                       f"{', ...' if len(c.values) > 6 else ''}), one-hot encoded by the nsl_kdd "
                                       "loader")
        elif c.role == "category":
            verdict = "excluded"
            c = Column(c.name, c.role, f"a category ({', '.join(c.values[:6])}"
                                       f"{', ...' if len(c.values) > 6 else ''}); one-hot encoding it would "
                                       "suit, but the generic CSV loader reads numbers only")
        else:
            verdict = "excluded"
        lines.append(f"#   {c.name}: {verdict}, {c.reason}.")
    return lines


def starter_recipe(found: Inspection, recipe_dir: Path = Path(".")) -> str:
    """The TOML text of a starter recipe for ``found``, written to live in ``recipe_dir`` (the data
    path is relative to it). Raises DataError when no column can be a feature, or when a label-free
    file is not from a data set whose loader knows its labels."""
    plan = plan_recipe(found)
    kept = len(found.kept())
    name = re.sub(r"[^A-Za-z0-9_]+", "_", found.path.name.split(".")[0]).strip("_") or "starter"
    temporal = plan["detector"] == "lstm"
    out = [f"# Starter recipe written by `tinyad init` from {found.path.name}. Edit freely; every key is",
           "# described in the README (\"Writing a recipe\"). Build it with: tinyad build <this file>", "#"]
    out += _column_lines(found, plan)
    out += ["#", f"# Split: {plan['why_split']}.", f"# Detector: {plan['detector']}, because {plan['why_detector']}.",
            f"name = {_q(name)}", f"description = {_q(f'starter recipe for {found.path.name}')}", "seed = 42", ""]
    out += _data_lines(found, plan, recipe_dir) + ["", "[split]", f"method = {_q(plan['split'])}"]
    out += (["probation = 0.15", "probation_cap = 750", "train = 0.8", "validation = 0.2", "test = 0"] if temporal
            else ["train = 0.6", "validation = 0.2", "test = 0.2"])
    top_k = 0 if kept <= 10 or plan["detector"] != "vae_dnn" else 10
    why_k = ("every kept column is a feature" if top_k == 0 else
             f"the 10 of {kept} columns XGBoost ranks highest on the training rows; 0 keeps all")
    out += ["", "[features]", f"top_k = {top_k}                       # {why_k}",
            "sweep = []                      # list sizes such as [5, 10, 0] to compare them on validation",
            "", "[preprocess]", f'log1p = {_q("none" if temporal else "auto")}', "clip = 6.0",
            "", "[detector]", f"kind = {_q(plan['detector'])}"]
    out += _detector_lines(plan["detector"], found)
    out += ["", "[threshold]"]
    out += (['method = "f1"                   # the score threshold with the best F1 on validation']
            if found.label and not temporal else
            ['method = "percentile"           # no labels to tune on: flag the top 1 % of normal scores',
             "percentile = 99.0"])
    out += ["", "[quantize]", "representative_rows = 300"]
    if temporal:
        out += ["synthetic_share = 0.1             # widen the int8 output range past normal errors",
                "", "[adaptive]", "enabled = true                    # forecast errors -> anomaly level in [0, 1]"]
        if plan["loader"] == "nab":
            out += ["", "[verify]", 'gate = "windows"                  # NAB labels windows, not rows']
    return "\n".join(out) + "\n"


def _detector_lines(kind: str, found: Inspection) -> list[str]:
    if kind == "lstm":
        return ["window = 24                     # samples the model sees per forecast",
                "lstm_units = 16", 'activation = "relu6"', "epochs = 40", "batch_size = 64"]
    if kind == "vae_dnn":
        return ["hidden = [64, 32]", "latent = 8", "classifier = [32, 16]",
                'activation = "relu6"            # bounded, so int8 keeps close to float',
                "epochs = 20", "classifier_epochs = 20", "batch_size = 64"]
    return ["hidden = [32, 16]", "latent = 8", 'activation = "relu6"',
            'train_on = "normal"' + ("              # without a label, every row is normal" if not found.label
                                     and not found.known else ""),
            "epochs = 50", "batch_size = 32"]


def write_recipe(text: str, out: Path, force: bool = False) -> Path:
    """Write ``text`` to ``out`` atomically (a temporary file in the same folder, then a rename).
    Raises DataError when ``out`` exists and ``force`` is false."""
    out = Path(out)
    if out.exists() and not force:
        raise DataError(f"{out}: already exists; pass --force to replace it, or choose another --out")
    if not out.parent.is_dir():
        raise DataError(f"{out.parent}: no such folder for --out")
    handle, temporary = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return out
