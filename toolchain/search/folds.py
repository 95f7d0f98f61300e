"""Validation folds for a search, cut from the recipe's train + validation rows only.

The test part never enters a fold: a search picks a model on these folds, and the one final
build scores the test part once. Each fold has three row sets, as a build's split has:

- ``train``: what the network learns from;
- ``validation``: early stopping and the decision threshold (the build's validation part);
- ``held``: the rows the trial is scored on (the build's test part, inside the learning rows).

Methods: ``stratified`` (k-fold keeping each class's share; for random splits), ``blocked``
(k contiguous blocks of time-ordered rows, each held out once, the others train) and
``forward`` (forward chaining: the rows cut into k + 1 blocks in time order, fold i trains on
blocks 0..i and is scored on block i + 1, so no fold learns from rows later than it is scored on).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from firmware_host.errors import RecipeError

INNER_VALIDATION = 0.25     # share of a fold's training rows kept for early stopping and thresholds


@dataclass
class Fold:
    train: np.ndarray
    validation: np.ndarray
    held: np.ndarray


def learning_rows(prep) -> np.ndarray:
    """The rows a search may read: the recipe split's train and validation parts."""
    return np.sort(np.concatenate([prep.parts["train"], prep.parts["validation"]]))


def fold_method(method: str, split_method: str) -> str:
    """``auto``: stratified folds for a random split and for a ``files`` split (whose train and
    validation parts are a stratified split of the training file, in no time order), forward
    chaining for an ordered one (``time``, ``prefix``, ``blocks``)."""
    if method != "auto":
        return method
    return "stratified" if split_method in ("random", "files") else "forward"


def _time_order(prep, rows: np.ndarray) -> np.ndarray:
    if prep.dataset.time is None:
        return rows
    return rows[np.argsort(np.asarray(prep.dataset.time, dtype=np.float64)[rows], kind="stable")]


def _inner(prep, rows: np.ndarray, ordered: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) of a fold's training rows: the latest rows validate when ``ordered``,
    else a stratified sample."""
    if ordered:
        rows = _time_order(prep, rows)
        cut = int(round(len(rows) * (1 - INNER_VALIDATION)))
        return np.sort(rows[:cut]), np.sort(rows[cut:])
    from sklearn.model_selection import train_test_split

    classes = prep.dataset.classes[rows]
    stratify = classes if np.unique(classes, return_counts=True)[1].min() >= 2 else None
    train, validation = train_test_split(rows, test_size=INNER_VALIDATION, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(validation)


def make_folds(prep, k: int, method: str, seed: int) -> list[Fold]:
    """``k`` folds over ``learning_rows(prep)`` by ``method`` (stratified, blocked or forward)."""
    rows = learning_rows(prep)
    if len(rows) < 4 * (k + 1):
        raise RecipeError(f"{len(rows)} train + validation rows are too few for {k} search folds")
    folds = []
    if method == "stratified":
        from sklearn.model_selection import KFold, StratifiedKFold

        classes = prep.dataset.classes[rows]
        stratified = np.unique(classes, return_counts=True)[1].min() >= k
        splitter = StratifiedKFold(k, shuffle=True, random_state=seed) if stratified else \
            KFold(k, shuffle=True, random_state=seed)
        for train_at, held_at in splitter.split(rows, classes):
            train, validation = _inner(prep, rows[train_at], False, seed)
            folds.append(Fold(train, validation, np.sort(rows[held_at])))
        return folds
    blocks = np.array_split(_time_order(prep, rows), k if method == "blocked" else k + 1)
    for i in range(k):
        if method == "blocked":
            held, rest = blocks[i], np.concatenate([b for j, b in enumerate(blocks) if j != i])
        else:
            held, rest = blocks[i + 1], np.concatenate(blocks[:i + 1])
        train, validation = _inner(prep, rest, True, seed)
        folds.append(Fold(train, validation, np.sort(held)))
    return folds


def fold_prepared(prep, fold: Fold):
    """``prep`` with its parts replaced by the fold's: train, validation, and ``held`` as "test",
    so the build's train and verify code score a fold exactly as they score a split."""
    parts = {"train": fold.train, "validation": fold.validation, "test": fold.held}
    return dataclasses.replace(prep, parts=parts, split={**prep.split, "fold": True})


def describe(prep, folds: list[Fold]) -> list[dict]:
    """Rows and anomalous rows of each fold's parts (the study records it)."""
    table = []
    for fold in folds:
        entry = {}
        for name in ("train", "validation", "held"):
            rows = getattr(fold, name)
            entry[name] = {"rows": int(len(rows)), "anomalous": int(prep.is_attack[rows].sum())}
        table.append(entry)
    return table
