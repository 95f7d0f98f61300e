"""The Numenta Anomaly Benchmark (NAB v1.1) score, written here from its published rules
(Lavin & Ahmad 2015; NAB's docs). numpy only.

Units and rules:
- A *file* is one series: ``times`` (in row order: float seconds, row indices or
  ``datetime64``) and ``scores`` (higher = more anomalous, any unit; NaN never alarms).
  A row *alarms* at threshold ``t`` when ``score >= t``.
- *Windows* are inclusive ``(start, end)`` spans in the unit of ``times`` (strings or
  ``datetime64`` when ``times`` are ``datetime64``). A window covers the rows whose time lies in
  it; positions inside it are measured in rows, as NAB does.
- The *probationary period* is the first ``min(floor(0.15 * rows), 750)`` rows of each file;
  alarms there are ignored and window rows there cannot detect.
- Only the earliest alarm inside a window counts: it earns ``A_TP * S(p) / S(-1)``, where
  ``S(x) = 2 / (1 + exp(5x)) - 1`` (``-1`` from ``x >= 3``) and ``p = -(end_row - row + 1) / width``
  (``-1`` on the first row). A scorable window without an alarm costs ``-A_FN``.
- An alarm outside every window costs ``A_FP * S(d)`` with ``d = (row - end_row) / (width - 1)``
  of the window before it (a late detection costs little), or ``-A_FP`` before any window.
- The corpus raw score is the sum over files. It is normalised as
  ``100 * (raw - null) / (perfect - null)``: *null* is the detector that never alarms
  (``-A_FN`` per scorable window), *perfect* is ``A_TP`` per labelled window.
- The threshold is chosen once per profile for the whole corpus, maximising the summed raw score
  over every distinct score value (an exhaustive search; the highest threshold wins ties).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from firmware_host.errors import DataError

PROBATION_FRACTION = 0.15
PROBATION_CAP_ROWS = 750          # NAB caps the probationary period at 15 % of 5,000 rows
FAR_POSITION = 3.0                # relative positions from here on score a full -1


@dataclass(frozen=True)
class Profile:
    """NAB's cost weights: A_TP, A_FP (per false alarm, scaled), A_FN (per missed window)."""
    tp: float
    fp: float
    fn: float


PROFILES = {"standard": Profile(1.0, 0.11, 1.0),
            "reward_low_FP_rate": Profile(1.0, 0.22, 1.0),
            "reward_low_FN_rate": Profile(1.0, 0.11, 2.0)}


def scaled_sigmoid(position) -> np.ndarray:
    """NAB's weight of a relative position: +0.987 at a window's start (-1), 0 at its end, -1 far past."""
    x = np.asarray(position, dtype=np.float64)
    with np.errstate(over="ignore"):
        return np.where(x >= FAR_POSITION, -1.0, 2.0 / (1.0 + np.exp(5.0 * x)) - 1.0)


def probation_rows(rows: int) -> int:
    """Rows at the start of a file whose alarms NAB ignores."""
    return int(min(np.floor(PROBATION_FRACTION * rows), PROBATION_CAP_ROWS))


@dataclass
class _File:
    """One file's rows sorted into roles, independent of the profile."""
    name: str
    scores: np.ndarray            # float64, NaN replaced by -inf
    probation: int                # rows ignored at the start
    spans: list                   # (first_row, last_row) of every labelled window, -1 rows if empty
    outside: np.ndarray           # row indices (after probation) outside every window
    fp_weight: np.ndarray         # S(d) of those rows, in [-1, 0]
    windows: list                 # per scorable window: (rows after probation, relative TP weight)


@dataclass
class FileResult:
    """One file at the chosen threshold. Point counts follow NAB (rows after probation)."""
    name: str
    rows: int
    probation_rows: int
    windows: int                  # labelled windows
    windows_scored: int           # windows holding a row after probation
    detected: int                 # windows with an alarm inside
    raw: float                    # this file's share of the corpus raw score
    tp: int = 0                   # alarm rows inside windows
    fp: int = 0                   # alarm rows outside windows
    fn: int = 0                   # quiet rows inside windows
    tn: int = 0                   # quiet rows outside windows


@dataclass
class NabResult:
    """A corpus scored under one profile. ``score`` is NAB's normalised score (100 = perfect,
    0 = no detections; NaN when the corpus has no window)."""
    profile: str
    score: float
    raw: float
    null: float
    perfect: float
    threshold: float              # alarms are scores >= threshold
    files: dict = field(default_factory=dict)

    @property
    def windows(self) -> int:
        return sum(f.windows for f in self.files.values())

    @property
    def detected(self) -> int:
        return sum(f.detected for f in self.files.values())

    @property
    def false_positives(self) -> int:
        return sum(f.fp for f in self.files.values())

    def summary(self) -> dict:
        """Plain JSON-ready figures of the whole corpus."""
        return {"score": self.score, "raw": self.raw, "null": self.null, "perfect": self.perfect,
                "threshold": self.threshold, "windows": self.windows, "detected": self.detected,
                "false_positives": self.false_positives}


def _numeric(times, windows, name: str) -> tuple[np.ndarray, list]:
    """``times`` and window bounds as comparable float64 / int64 numbers."""
    times = np.asarray(times)
    if times.dtype.kind == "M":
        as_ns = lambda v: np.asarray(np.datetime64(v) if isinstance(v, str) else v,
                                     dtype="datetime64[ns]").astype(np.int64)
        return times.astype("datetime64[ns]").astype(np.int64), [(as_ns(a), as_ns(b)) for a, b in windows]
    try:
        return times.astype(np.float64), [(float(a), float(b)) for a, b in windows]
    except (TypeError, ValueError):
        raise DataError(f"{name}: times and windows must be numbers or datetime64 (got {times.dtype})") from None


def _first(mask: np.ndarray, default: int) -> int:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else default


def _span_rows(t: np.ndarray, start, end) -> tuple[int, int]:
    """First and last row of a window, in file order (a real NAB file repeats an hour of stamps,
    so times need not ascend): the first row stamped ``start`` (else the first at or after it),
    through the first later row stamped ``end`` (else the row before the first one past it)."""
    first = _first(t == start, _first(t >= start, len(t)))
    later = t[first:]
    last = _first(later == end, _first(later > end, len(later)) - 1)
    return first, first + last


def _prepare(name: str, times, scores, windows, probation: int | None) -> _File:
    """Sort one file's rows into probation, window and outside rows, with their NAB weights."""
    scores = np.asarray(scores, dtype=np.float64)
    t, spans_in = _numeric(times, windows, name)
    if t.ndim != 1 or t.shape != scores.shape:
        raise DataError(f"{name}: {t.size} times but {scores.size} scores; give one score per row, both 1-D")
    rows = len(t)
    probation = probation_rows(rows) if probation is None else int(probation)
    spans = [_span_rows(t, a, b) for a, b in sorted(spans_in)]
    for (_, end), (start, _) in zip(spans, spans[1:]):
        if start <= end:
            raise DataError(f"{name}: labelled windows overlap (rows {start}..{end}); merge them first")
    # Distance of every row from the last window that ended before it, in that window's widths.
    index = np.arange(rows)
    position = np.full(rows, FAR_POSITION)
    inside = np.zeros(rows, dtype=bool)
    scored = []
    for first, last in spans:
        if last < first:
            continue
        inside[first:last + 1] = True
        width = last - first + 1
        after = index > last
        position[after] = (index[after] - last) / (width - 1) if width > 1 else FAR_POSITION
        rows_in = np.arange(max(first, probation), last + 1)
        if rows_in.size:
            tp_weight = scaled_sigmoid(-(last - rows_in + 1) / width) / scaled_sigmoid(-1.0)
            scored.append((rows_in, tp_weight))
    outside = np.flatnonzero(~inside & (index >= probation))
    return _File(name, np.where(np.isnan(scores), -np.inf, scores), probation, spans, outside,
                 scaled_sigmoid(position[outside]), scored)


def _window_events(values: np.ndarray, tp_weight: np.ndarray, profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    """Score changes of one window as the threshold falls: each new earliest alarm replaces the
    window's credit (the first replaces the -A_FN miss)."""
    earlier_max = np.concatenate(([-np.inf], np.maximum.accumulate(values)[:-1]))
    record = np.flatnonzero(values > earlier_max)        # rows that become the earliest alarm
    credit = profile.tp * tp_weight[record]
    before = np.concatenate((credit[1:], [-profile.fn]))  # credit held just above each record's score
    return values[record], credit - before


def _curve(files: list[_File], profile: Profile) -> tuple[np.ndarray, np.ndarray, float]:
    """Corpus raw score at every distinct finite score value (descending), and with no alarm."""
    thresholds, deltas = [], []
    base = 0.0
    for f in files:
        thresholds.append(f.scores[f.outside])
        deltas.append(profile.fp * f.fp_weight)
        for rows_in, tp_weight in f.windows:
            base -= profile.fn
            t, d = _window_events(f.scores[rows_in], tp_weight, profile)
            thresholds.append(t)
            deltas.append(d)
    t, d = np.concatenate(thresholds or [np.zeros(0)]), np.concatenate(deltas or [np.zeros(0)])
    keep = np.isfinite(t)
    order = np.argsort(-t[keep], kind="stable")
    t, d = t[keep][order], d[keep][order]
    if t.size == 0:
        return t, t, base
    starts = np.flatnonzero(np.concatenate(([True], t[1:] != t[:-1])))
    return t[starts], base + np.cumsum(np.add.reduceat(d, starts)), base


def _sweep(files: list[_File], profile: Profile) -> float:
    """The threshold with the highest corpus raw score (just above every score if no alarm is best)."""
    thresholds, totals, base = _curve(files, profile)
    best = int(np.argmax(totals)) if totals.size else -1   # first = highest threshold among ties
    if best >= 0 and totals[best] > base:
        return float(thresholds[best])
    everything = np.concatenate([f.scores for f in files]) if files else np.zeros(0)
    return float(np.nextafter(np.max(everything[np.isfinite(everything)], initial=1.0), np.inf))


def _file_result(f: _File, profile: Profile, threshold: float) -> FileResult:
    """One file's raw score and counts at a fixed threshold."""
    alarm = f.scores >= threshold
    alarm[:f.probation] = False
    out_alarm = alarm[f.outside]
    raw = profile.fp * float(f.fp_weight[out_alarm].sum())
    detected, tp, fn = 0, 0, 0
    for rows_in, tp_weight in f.windows:
        hits = np.flatnonzero(alarm[rows_in])
        raw += profile.tp * tp_weight[hits[0]] if hits.size else -profile.fn
        detected += bool(hits.size)
        tp, fn = tp + hits.size, fn + rows_in.size - hits.size
    fp = int(out_alarm.sum())
    return FileResult(f.name, len(f.scores), f.probation, len(f.spans), len(f.windows), detected, float(raw),
                      tp=int(tp), fp=fp, fn=int(fn), tn=int(f.outside.size - fp))


def _null_raw(files: list[_File], profile: Profile) -> float:
    """The raw score of NAB's null detector (no alarm at all): -A_FN per scorable window."""
    return -profile.fn * sum(len(f.windows) for f in files)


def _score(prepared: list[_File], windows_total: int, profile_name: str, threshold: float | None) -> NabResult:
    if profile_name not in PROFILES:
        raise DataError(f"unknown NAB profile '{profile_name}'; choose one of {', '.join(PROFILES)}")
    profile = PROFILES[profile_name]
    if threshold is None:
        threshold = _sweep(prepared, profile)
    results = {f.name: _file_result(f, profile, threshold) for f in prepared}
    raw = sum(r.raw for r in results.values())
    null, perfect = _null_raw(prepared, profile), profile.tp * windows_total
    score = 100.0 * (raw - null) / (perfect - null) if perfect != null else float("nan")
    return NabResult(profile_name, float(score), float(raw), float(null), float(perfect), float(threshold), results)


def _prepare_all(files: dict, windows: dict, probation: int | None) -> tuple[list[_File], int]:
    prepared = [_prepare(name, times, scores, windows.get(name, []), probation)
                for name, (times, scores) in files.items()]
    return prepared, sum(len(f.spans) for f in prepared)


def nab_score(files: dict, windows: dict, profile: str = "standard", threshold: float | None = None,
              probation: int | None = None) -> NabResult:
    """NAB's score of one detector on a corpus.

    ``files`` maps a series name to ``(times, scores)``; ``windows`` maps the same names to lists
    of inclusive ``(start, end)`` spans in the unit of ``times`` (a name absent = no window).
    ``threshold`` None optimises it over the corpus for ``profile``; a number scores alarms
    ``score >= threshold`` as given. ``probation`` overrides NAB's probationary rows per file
    (0 when the rows given are already the scored part of a longer series)."""
    prepared, total = _prepare_all(files, windows, probation)
    return _score(prepared, total, profile, threshold)


def nab_scores_all_profiles(files: dict, windows: dict, threshold: float | None = None,
                            probation: int | None = None) -> dict:
    """``{profile: NabResult}`` for NAB's three profiles, each with its own optimised threshold
    (or the one ``threshold`` given); ``probation`` as for :func:`nab_score`."""
    prepared, total = _prepare_all(files, windows, probation)
    return {name: _score(prepared, total, name, threshold) for name in PROFILES}


def raw_by_threshold(files: dict, windows: dict, profile: str = "standard",
                     probation: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The corpus raw score at every distinct score value (alarms ``>=`` it), thresholds descending:
    the curve the threshold optimisation maximises."""
    if profile not in PROFILES:
        raise DataError(f"unknown NAB profile '{profile}'; choose one of {', '.join(PROFILES)}")
    thresholds, totals, _ = _curve(_prepare_all(files, windows, probation)[0], PROFILES[profile])
    return thresholds, totals


VERDICT_THRESHOLD = 0.5


def nab_score_verdicts(files: dict, windows: dict, probation: int | None = None) -> dict:
    """``{profile: NabResult}`` of fixed 0/1 verdicts (``files`` maps names to ``(times, verdicts)``):
    a 1 is an alarm; no threshold is optimised."""
    as_float = {name: (times, np.asarray(v, dtype=np.float64)) for name, (times, v) in files.items()}
    return nab_scores_all_profiles(as_float, windows, threshold=VERDICT_THRESHOLD, probation=probation)


def nab_corpus_report(series: dict, windows: dict, verdicts: dict | None = None,
                      probation: int | None = None) -> dict:
    """JSON-ready NAB figures of one detector on a corpus, for reports.

    ``series`` maps names to ``(times, unit_scores)`` (scores in [0, 1], higher = anomalous);
    ``windows`` as for :func:`nab_score`. Returns ``{profile: summary}`` with the optimised
    threshold, plus ``{"verdicts": {profile: summary}}`` when ``verdicts`` (name -> 0/1 array,
    same rows as ``series``) is given. ``probation`` as for :func:`nab_score`."""
    report = {name: r.summary() for name, r in nab_scores_all_profiles(series, windows, None, probation).items()}
    if verdicts is not None:
        fixed = {name: (series[name][0], v) for name, v in verdicts.items()}
        report["verdicts"] = {name: r.summary()
                              for name, r in nab_score_verdicts(fixed, windows, probation).items()}
    return report


def combine_fixed(parts: list) -> dict:
    """Corpus NAB scores from per-series ``{profile: {"raw", "null", "perfect"}}`` figures of
    *fixed* alarms (verdicts; raw scores then add up over files):
    ``{profile: 100 * (sum raw - sum null) / (sum perfect - sum null)}``, NaN without windows."""
    combined = {}
    for profile in PROFILES:
        raw, null, perfect = (sum(p[profile][k] for p in parts) for k in ("raw", "null", "perfect"))
        combined[profile] = 100.0 * (raw - null) / (perfect - null) if perfect != null else float("nan")
    return combined


REFERENCE_DETECTORS = ("numenta", "windowedGaussian", "ARTime")


def read_windows(labels_path, names) -> dict:
    """``{name: [(start, end) datetime64]}`` from NAB's ``combined_windows.json`` for the series
    ``names`` (keys = paths under ``data/``); a name without an entry has no window."""
    import json

    table = json.loads(open(labels_path, encoding="utf-8").read())
    return {name: [(np.datetime64(a), np.datetime64(b)) for a, b in table.get(name, [])] for name in names}


def _read_column(path, column: str) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    frame = pd.read_csv(path)
    if "timestamp" not in frame or column not in frame:
        raise DataError(f"{path}: needs columns 'timestamp' and '{column}'")
    return pd.to_datetime(frame["timestamp"]).to_numpy("datetime64[ns]"), frame[column].to_numpy(np.float64)


def reference_corpus(nab_root, detector: str) -> tuple[dict, dict]:
    """A published detector's scores on the NAB series under ``nab_root`` (the shared
    ``nab/`` folder): ``(files, windows)`` ready for :func:`nab_score`. Like NAB, rows take the
    data file's timestamps and the detector's ``anomaly_score`` column."""
    from pathlib import Path

    root = Path(nab_root)
    names = sorted(p.relative_to(root / "data").as_posix() for p in (root / "data").rglob("*.csv"))
    files = {}
    for name in names:
        times, _ = _read_column(root / "data" / name, "value")
        result = root / "reference" / detector / (name + ".gz")
        _, scores = _read_column(result, "anomaly_score")
        if len(scores) != len(times):
            raise DataError(f"{result}: {len(scores)} rows, but its series has {len(times)}")
        files[name] = (times, scores)
    return files, read_windows(root / "labels" / "combined_windows.json", names)


def nab_of_alarms(alarms, times, windows) -> dict | None:
    """NAB figures of fixed per-row ``alarms`` over the scored rows of one series, in the order
    given: ``{profile: {"score", "raw", "null", "perfect"}}``. No probationary period (the rows
    given are what a detector scored after its training rows); ``windows`` should be the ones
    holding a given row. None when windows overlap, which NAB's labels never do."""
    try:
        results = nab_score_verdicts({"rows": (times, np.asarray(alarms, dtype=bool))}, {"rows": windows}, 0)
    except DataError:
        return None
    return {p: {"score": r.score, "raw": r.raw, "null": r.null, "perfect": r.perfect} for p, r in results.items()}
