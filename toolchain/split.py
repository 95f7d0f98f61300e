"""Train / validation / test splits with a fixed seed, recorded in the bundle."""

from __future__ import annotations

import hashlib

import numpy as np

from firmware_host.errors import RecipeError

PARTS = ("train", "validation", "test")


def split_indices(classes: np.ndarray, time: np.ndarray | None, method: str, fractions: tuple[float, float, float],
                  seed: int, normal: str | None = None, blocks: int = 20, probation: float = 0.15,
                  probation_cap: int = 750) -> dict[str, np.ndarray]:
    """Row indices per part. ``random`` stratifies by class; ``time`` puts earlier rows in train;
    ``probation`` (label-free) trains and validates on the first rows of the series, NAB's probationary
    period, and tests on the rest; ``prefix`` (label-peeking) trains and validates on the normal rows
    before the first anomaly and tests on the rest; ``blocks`` cuts the time-ordered rows into
    contiguous blocks and deals whole blocks to the parts."""
    n = len(classes)
    if method == "probation":
        return probation_split(n, time, fractions, probation, probation_cap)
    if method == "prefix":
        return _prefix_split(classes, time, fractions, normal)
    if method == "blocks":
        return _block_split(classes, time, fractions, seed, blocks)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    if method == "time":
        if time is None:
            raise RecipeError("split method 'time' needs a data set with a time column "
                              "(set [data] time_column, or use split method 'random')")
        order = np.argsort(np.asarray(time, dtype=np.float64), kind="stable")
        return {"train": np.sort(order[:n_train]), "validation": np.sort(order[n_train:n_train + n_val]),
                "test": np.sort(order[n_train + n_val:])}
    from sklearn.model_selection import train_test_split

    everything = np.arange(n)
    stratify = classes if min(np.unique(classes, return_counts=True)[1]) >= 3 else None
    train, rest = train_test_split(everything, train_size=n_train, random_state=seed, stratify=stratify)
    rest_strat = classes[rest] if stratify is not None else None
    val, test = train_test_split(rest, train_size=n_val, random_state=seed, stratify=rest_strat)
    return {"train": np.sort(train), "validation": np.sort(val), "test": np.sort(test)}


def probation_rows(n: int, share: float = 0.15, cap: int = 750) -> int:
    """Rows in NAB's probationary period of an ``n``-row series: ``floor(share * n)``, at most ``cap``
    (NAB v1.1's ``getProbationPeriod``: 15 % of the file, at most 15 % of 5,000 rows); cap 0 = none."""
    rows = int(np.floor(share * n))
    return min(rows, int(cap)) if cap else rows


def probation_split(n: int, time: np.ndarray | None, fractions, share: float, cap: int) -> dict:
    """Label-free: train and validate on the probationary period (the series' first rows, split
    train : validation in the recipe's proportions, in time order); test on every row after it.
    No label is read, so a series with no labelled anomaly splits like any other."""
    order = np.argsort(np.asarray(time, dtype=np.float64), kind="stable") if time is not None else np.arange(n)
    head = probation_rows(n, share, cap)
    n_train = int(round(head * fractions[0] / (fractions[0] + fractions[1])))
    if n_train < 2 or head - n_train < 2 or head >= n:
        raise RecipeError(f"split method 'probation': the probationary period of this {n}-row series holds "
                          f"{head} rows, too few to train and validate on (raise [split] probation)")
    return {"train": np.sort(order[:n_train]), "validation": np.sort(order[n_train:head]),
            "test": np.sort(order[head:])}


def _prefix_split(classes: np.ndarray, time: np.ndarray | None, fractions, normal: str | None) -> dict:
    """NAB's way: learn from the start of a series, which holds no labelled anomaly; test on the rest.
    The prefix is split train : validation in the recipe's proportions, in time order."""
    order = np.argsort(np.asarray(time, dtype=np.float64), kind="stable") if time is not None \
        else np.arange(len(classes))
    anomalous = np.flatnonzero(classes[order] != normal)
    if len(anomalous) == 0:
        raise RecipeError("split method 'prefix' needs labelled anomalies: it tests on the rows from the "
                          "first anomaly on (use method 'time' for unlabelled data)")
    prefix = int(anomalous[0])
    n_train = int(round(prefix * fractions[0] / (fractions[0] + fractions[1])))
    if n_train < 2 or prefix - n_train < 2:
        raise RecipeError(f"split method 'prefix': only {prefix} rows precede the first anomaly, too few to "
                          "train and validate on")
    return {"train": np.sort(order[:n_train]), "validation": np.sort(order[n_train:prefix]),
            "test": np.sort(order[prefix:])}


def _block_split(classes: np.ndarray, time: np.ndarray | None, fractions, seed: int, blocks: int) -> dict:
    """Contiguous blocks of time-ordered rows, dealt to train/validation/test in the recipe's
    proportions within each group of blocks sharing a majority class (seeded). Windows never
    span two blocks of different parts, and no row is near-duplicated across parts the way a
    row-level random split duplicates repeated snapshots. For data whose classes come in long
    runs (TON_IoT's attacks follow its normal rows), this gives every part every class."""
    order = np.argsort(np.asarray(time, dtype=np.float64), kind="stable") if time is not None \
        else np.arange(len(classes))
    if blocks < 3 or blocks > len(classes):
        raise RecipeError(f"split method 'blocks': blocks = {blocks} must be between 3 and the row count")
    chunks = np.array_split(order, blocks)
    majority = []
    for chunk in chunks:
        values, counts = np.unique(classes[chunk], return_counts=True)
        majority.append(values[np.argmax(counts)])
    rng = np.random.default_rng(seed)
    parts = {"train": [], "validation": [], "test": []}
    for label in sorted(set(majority)):
        group = [i for i, m in enumerate(majority) if m == label]
        rng.shuffle(group)
        n_val = int(round(fractions[1] * len(group)))
        n_test = int(round(fractions[2] * len(group)))
        if len(group) >= 3:
            n_val, n_test = max(n_val, 1), max(n_test, 1)
        n_train = len(group) - n_val - n_test
        for name, picked in (("train", group[:n_train]), ("validation", group[n_train:n_train + n_val]),
                             ("test", group[n_train + n_val:])):
            parts[name].extend(chunks[i] for i in picked)
    return {name: np.sort(np.concatenate(chunks_)) if chunks_ else np.empty(0, dtype=np.int64)
            for name, chunks_ in parts.items()}


def describe_split(parts: dict[str, np.ndarray], classes: np.ndarray, time: np.ndarray | None, method: str,
                   seed: int) -> dict:
    """What the bundle records of a split: sizes, class counts, time ranges, and a digest of the rows."""
    record = {"method": method, "seed": seed}
    for name in PARTS:
        idx = parts[name]
        values, counts = np.unique(classes[idx], return_counts=True)
        entry = {"rows": int(len(idx)), "classes": {str(v): int(c) for v, c in zip(values, counts)},
                 "rows_sha256": hashlib.sha256(np.asarray(idx, dtype=np.int64).tobytes()).hexdigest()}
        if time is not None and len(idx):
            entry["time_range"] = [float(np.min(time[idx])), float(np.max(time[idx]))]
        record[name] = entry
    return record
