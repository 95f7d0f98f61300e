"""The ``files`` split: a data set's own test file (NSL-KDD's ``KDDTest+``) as the test part.

Train and validation come from the recipe's ``[data] path``; every row of ``[split] test_path``
is a test row. The test file is read by the same loader and brought to the training file's
features: the one-hot columns are those of the values the training file holds, so a test value
the training file lacks (NSL-KDD: service ``tftp_u``, one row of ``KDDTest+``) gives zeros in
every one-hot column of its source column. Such rows are counted in the split record
(``unseen_categories``). The built bundle's ``tinyad run`` refuses that value instead (its
manifest lists the training file's categories): the build scores the data set's full test file,
the device never guesses.
"""

from __future__ import annotations

import numpy as np

from firmware_host.errors import DataError


def join(train, test) -> tuple[object, dict]:
    """(one Dataset: the training file's rows then the test file's, on the training file's
    features; unseen test values per one-hot source column, value -> rows)."""
    import pandas as pd

    columns = list(train.features.columns)
    missing = [c for c in columns if c not in test.features.columns and c not in train.one_hot]
    if missing:
        raise DataError(f"{test.sources[0]}: the test file lacks column(s) {', '.join(missing)} of the training file")
    test_columns = {}
    for name in columns:
        if name in test.features.columns:
            test_columns[name] = test.features[name].to_numpy(np.float64)
        else:   # a value no test row holds: zero, and missing where the test file's source cell is missing
            column = np.zeros(len(test.classes))
            column[_source_missing(test, train.one_hot[name][0])] = np.nan
            test_columns[name] = column
    unseen = {}
    for source, known in train.categories.items():
        extra = sorted(set(test.categories.get(source, ())) - set(known))
        counts = {value: int(np.nansum(test.features[f"{source}_{value}"].to_numpy(np.float64))) for value in extra}
        if counts:
            unseen[source] = counts
    features = pd.concat([train.features.reset_index(drop=True), pd.DataFrame(test_columns, columns=columns)],
                         ignore_index=True)
    both = lambda a, b: None if a is None or b is None else np.concatenate([a, b])
    identifiers = None
    if train.identifiers is not None and test.identifiers is not None:
        identifiers = pd.concat([train.identifiers, test.identifiers], ignore_index=True)
    joined = type(train)(train.name, features, np.concatenate([train.classes, test.classes]), train.normal_class,
                         both(train.time, test.time), identifiers, list(train.sources) + list(test.sources),
                         train.citation, train.one_hot, None, train.categories)
    return joined, unseen


def _source_missing(test, source: str) -> np.ndarray:
    """Per test row: True where its ``source`` cell was missing (its one-hot columns are NaN)."""
    hot = [c for c, (column, _) in test.one_hot.items() if column == source]
    if not hot:
        return np.zeros(len(test.classes), bool)
    return np.isnan(test.features[hot[0]].to_numpy(np.float64))


def parts(classes: np.ndarray, train_rows: int, shares: tuple[float, float], seed: int) -> dict:
    """Row indices per part: the first ``train_rows`` rows (the training file) split train :
    validation by ``shares``, stratified by class and seeded; every later row is test."""
    from sklearn.model_selection import train_test_split

    learning = np.arange(train_rows)
    head = classes[:train_rows]
    stratify = head if min(np.unique(head, return_counts=True)[1]) >= 2 else None
    train, validation = train_test_split(learning, train_size=shares[0] / (shares[0] + shares[1]),
                                         random_state=seed, stratify=stratify)
    return {"train": np.sort(train), "validation": np.sort(validation),
            "test": np.arange(train_rows, len(classes))}
