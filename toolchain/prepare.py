"""Load a recipe's data set once and split it: the common first step of every stage."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .recipe import TEMPORAL, Recipe
from .split import describe_split, split_indices


@dataclass
class Prepared:
    dataset: object                 # toolchain.datasets.Dataset
    parts: dict                     # part name -> row indices
    split: dict                     # what the bundle records of the split
    is_attack: np.ndarray           # bool per row
    class_index: np.ndarray         # int per row, index into class_names
    class_names: list               # class_names[0] is the normal class

    def raw(self, part: str, features: list[str]) -> np.ndarray:
        return self.dataset.features[features].to_numpy(dtype=np.float64)[self.parts[part]]


def _data_path(recipe: Recipe, root: Path, path):
    base = Path(recipe.path).resolve().parent if recipe.data.relative_to == "recipe" else Path(root).resolve()
    return [str(base / p) for p in path] if isinstance(path, list) else str(base / path)


@lru_cache(maxsize=4)
def _load(loader, root, path, label, target, normal, time_column, exclude):
    from .datasets import load_dataset

    return load_dataset(loader, Path(root), list(path) if isinstance(path, tuple) else path, label=label,
                        target=target, normal=normal, time_column=time_column, exclude=list(exclude))


def _subsample(classes: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(np.arange(len(classes)), train_size=max_rows, random_state=seed, stratify=classes)
    return np.sort(keep)


def prepare(recipe: Recipe, data_root: Path, split_method: str | None = None) -> Prepared:
    """The recipe's data set, split by ``split_method`` (default: the recipe's)."""
    d = recipe.data
    path = _data_path(recipe, data_root, d.path)
    dataset = _load(d.loader, str(data_root), tuple(path) if isinstance(path, list) else path, d.label, d.target,
                    d.normal, d.time_column, tuple(d.exclude))
    temporal = recipe.detector.kind in TEMPORAL
    if temporal:
        # Windows are read from consecutive rows, so rows go in time order and a cap keeps the
        # first max_rows of them rather than a random sample.
        if dataset.time is None:
            dataset = dataclasses.replace(dataset, time=np.arange(len(dataset.classes), dtype=np.float64))
        dataset = dataset.subset(np.argsort(np.asarray(dataset.time, dtype=np.float64), kind="stable"))
        if d.max_rows and len(dataset.classes) > d.max_rows:
            dataset = dataset.subset(np.arange(d.max_rows))
    elif d.max_rows and len(dataset.classes) > d.max_rows:
        dataset = dataset.subset(_subsample(dataset.classes, d.max_rows, recipe.seed))
    method = split_method or recipe.split.method
    s = recipe.split
    unseen = None
    if method == "files":   # the data set's own test file is the test part (toolchain/files_split.py)
        from . import files_split

        test_path = _data_path(recipe, data_root, s.test_path)
        test = _load(d.loader, str(data_root), test_path, d.label, d.target, d.normal, d.time_column,
                     tuple(d.exclude))
        train_rows = len(dataset.classes)
        dataset, unseen = files_split.join(dataset, test)
        parts = files_split.parts(dataset.classes, train_rows, (s.train, s.validation), recipe.seed)
    else:
        parts = split_indices(dataset.classes, dataset.time, method, (s.train, s.validation, s.test), recipe.seed,
                              dataset.normal_class, s.blocks, s.probation, s.probation_cap)
    normal = dataset.normal_class
    if recipe.detector.kind in ("vae_dnn", "cnn_lstm_attn") and recipe.detector.classes == "multi":
        class_names = [normal] + sorted(c for c in set(dataset.classes.tolist()) if c != normal)
    else:
        class_names = [normal, "anomaly"]
    is_attack = dataset.classes != normal
    if len(class_names) > 2:
        lookup = {c: i for i, c in enumerate(class_names)}
        class_index = np.array([lookup[c] for c in dataset.classes], dtype=np.int64)
    else:
        class_index = is_attack.astype(np.int64)
    record = describe_split(parts, dataset.classes, dataset.time, method, recipe.seed)
    if unseen is not None:
        record["test_file"] = s.test_path
        record["unseen_categories"] = unseen   # test values the training file lacks: all-zero one-hot
    return Prepared(dataset, parts, record, is_attack, class_index, class_names)
