"""Train / validation / test splits with a fixed seed, recorded in the bundle."""

from __future__ import annotations

import hashlib

import numpy as np

from firmware_host.errors import RecipeError

PARTS = ("train", "validation", "test")


def split_indices(classes: np.ndarray, time: np.ndarray | None, method: str, fractions: tuple[float, float, float],
                  seed: int, normal: str | None = None) -> dict[str, np.ndarray]:
    """Row indices per part. ``random`` stratifies by class; ``time`` puts earlier rows in train;
    ``prefix`` trains and validates on the normal rows before the first anomaly and tests on the rest."""
    n = len(classes)
    if method == "prefix":
        return _prefix_split(classes, time, fractions, normal)
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
