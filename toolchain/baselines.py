"""Classical baselines scored on the same split and features as the deep detector.

Two layers. Array-level functions take plain arrays -- ``x_train, y_train, x_val, y_val,
x_test`` (rows x features, already scaled; ``y`` True = anomalous) -- and return a
``BaselineScores``: test scores (higher = more anomalous), the threshold chosen on
validation, and a parameter count. Temporal detectors call them with their per-timestep
rows. Thin wrappers (``isolation_forest``, ``run_all``) read a ``Prepared`` split and a
``TrainResult`` and return report dicts, scored on the same test rows the detector scores.

Thresholds follow the recipe's ``[threshold]`` rule (``train.calibrate_threshold``): best F1
on validation when it holds both classes, else a percentile of its (normal) scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import metrics
from .prepare import Prepared
from .recipe import Recipe, ThresholdSpec
from .train import TrainResult, calibrate_threshold, model_inputs, scaled
from .verify import per_class

OCSVM_MAX_ROWS = 5000          # One-Class SVM training is quadratic in rows: subsample above this
OCSVM_GAMMA_FACTORS = (1.0, 3.0, 10.0, 30.0)   # x sklearn's 'scale' gamma, chosen on labelled validation
GAUSSIAN_WINDOW = 100          # windowed Gaussian: previous rows in the rolling mean / std
GAUSSIAN_MIN_HISTORY = 2       # rows with fewer previous rows in their part score 0


@dataclass
class BaselineScores:
    """One baseline's test-part output."""

    name: str
    test_scores: np.ndarray        # per test row, higher = more anomalous
    threshold: float               # flag when score > threshold (chosen on validation)
    parameters: int | None         # learned numbers (tree nodes, support-vector values); None if not meaningful

    @property
    def alarms(self) -> np.ndarray:
        return self.test_scores > self.threshold

    def report(self, y_test: np.ndarray) -> dict:
        """``metrics.detection_metrics`` on test, plus the threshold and parameter count."""
        result = metrics.detection_metrics(np.asarray(y_test, bool), self.test_scores, self.alarms)
        result["threshold"] = float(self.threshold)
        result["parameters"] = self.parameters
        return result


def _threshold(spec: ThresholdSpec | None, y_val: np.ndarray, val_scores: np.ndarray) -> float:
    return calibrate_threshold(spec or ThresholdSpec(), np.asarray(y_val, bool), val_scores)


def _normal_rows(x_train: np.ndarray, y_train: np.ndarray | None) -> np.ndarray:
    x_train = np.asarray(x_train, dtype=np.float64)
    if y_train is None:
        return x_train
    normal = x_train[~np.asarray(y_train, bool)]
    if len(normal) == 0:
        raise ValueError("no normal training rows to fit an unsupervised baseline on")
    return normal


def _tree_nodes(estimators) -> int:
    return int(sum(tree.tree_.node_count for tree in estimators))


def both_classes(y: np.ndarray) -> bool:
    y = np.asarray(y, bool)
    return bool(0 < y.sum() < len(y))


# -- array level --------------------------------------------------------------------------------

def isolation_forest_scores(x_train, y_train, x_val, y_val, x_test, *, seed: int = 0,
                            threshold: ThresholdSpec | None = None) -> BaselineScores:
    """IsolationForest (200 trees) fitted on the normal training rows (all rows if ``y_train`` is None)."""
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(n_estimators=200, random_state=seed, n_jobs=2).fit(_normal_rows(x_train, y_train))
    val_scores, test_scores = -forest.score_samples(x_val), -forest.score_samples(x_test)
    return BaselineScores("isolation_forest", test_scores, _threshold(threshold, y_val, val_scores),
                          _tree_nodes(forest.estimators_))


def one_class_svm_scores(x_train, y_train, x_val, y_val, x_test, *, seed: int = 0,
                         threshold: ThresholdSpec | None = None, max_rows: int = OCSVM_MAX_ROWS,
                         nu: float = 0.05, gamma: float | None = None) -> BaselineScores:
    """RBF One-Class SVM on the normal training rows, a seeded random ``max_rows`` of them when
    there are more. ``gamma`` None: sklearn's 'scale' times the factor in ``OCSVM_GAMMA_FACTORS``
    with the best validation ROC-AUC when validation holds both classes, else 'scale' itself.
    Parameters: support-vector values + weights + offset."""
    from sklearn.svm import OneClassSVM

    normal = _normal_rows(x_train, y_train)
    if len(normal) > max_rows:
        normal = normal[np.sort(np.random.default_rng(seed).choice(len(normal), max_rows, replace=False))]
    scale = 1.0 / (normal.shape[1] * max(float(normal.var()), 1e-12))
    candidates = [gamma] if gamma is not None else \
        [scale * f for f in (OCSVM_GAMMA_FACTORS if both_classes(y_val) else (1.0,))]
    best = None
    for value in candidates:
        svm = OneClassSVM(kernel="rbf", gamma=value, nu=nu).fit(normal)
        val_scores = -svm.decision_function(x_val)
        quality = metrics.roc_auc(np.asarray(y_val, bool), val_scores) if len(candidates) > 1 else 0.0
        if best is None or quality > best[0]:
            best = (quality, svm, val_scores)
    _, svm, val_scores = best
    parameters = int(svm.support_vectors_.size + svm.dual_coef_.size + 1)
    return BaselineScores("one_class_svm", -svm.decision_function(x_test),
                          _threshold(threshold, y_val, val_scores), parameters)


def random_forest_scores(x_train, y_train, x_val, y_val, x_test, *, seed: int = 0,
                         threshold: ThresholdSpec | None = None, trees: int = 100) -> BaselineScores:
    """RandomForest classifier on all training rows; score = predicted probability of anomaly.
    Needs both classes in ``y_train`` (ValueError otherwise; see ``both_classes``)."""
    from sklearn.ensemble import RandomForestClassifier

    if not both_classes(y_train):
        raise ValueError("RandomForest needs both classes among the training rows")
    forest = RandomForestClassifier(n_estimators=trees, random_state=seed, n_jobs=2, min_samples_leaf=2)
    forest.fit(x_train, np.asarray(y_train, bool))
    val_scores, test_scores = forest.predict_proba(x_val)[:, 1], forest.predict_proba(x_test)[:, 1]
    return BaselineScores("random_forest", test_scores, _threshold(threshold, y_val, val_scores),
                          _tree_nodes(forest.estimators_))


def xgboost_scores(x_train, y_train, x_val, y_val, x_test, *, seed: int = 0,
                   threshold: ThresholdSpec | None = None, rounds: int = 100) -> BaselineScores:
    """XGBoost classifier (depth 6) on all training rows; score = predicted probability of anomaly.
    Needs both classes in ``y_train``. Parameters: tree nodes (split and leaf)."""
    import xgboost

    if not both_classes(y_train):
        raise ValueError("XGBoost needs both classes among the training rows")
    model = xgboost.XGBClassifier(n_estimators=rounds, max_depth=6, learning_rate=0.1, random_state=seed,
                                  n_jobs=2, eval_metric="logloss")
    model.fit(np.asarray(x_train, np.float64), np.asarray(y_train, bool).astype(int))
    val_scores = model.predict_proba(np.asarray(x_val, np.float64))[:, 1]
    test_scores = model.predict_proba(np.asarray(x_test, np.float64))[:, 1]
    nodes = sum(len([line for line in tree.splitlines() if line.strip()])
                for tree in model.get_booster().get_dump())
    return BaselineScores("xgboost", test_scores, _threshold(threshold, y_val, val_scores), int(nodes))


def rolling_z(x: np.ndarray, order: np.ndarray | None, window: int, floor: np.ndarray) -> np.ndarray:
    """Per row, max over features of |x - mean| / std of the previous ``window`` rows in ``order``
    (the rows' own order if None), std floored at ``floor`` per feature. Rows with fewer than
    ``GAUSSIAN_MIN_HISTORY`` previous rows score 0. Scores come back in the rows' given order."""
    import pandas as pd

    x = np.asarray(x, dtype=np.float64)
    order = np.arange(len(x)) if order is None else np.argsort(np.asarray(order, np.float64), kind="stable")
    frame = pd.DataFrame(x[order])
    # shift(1): the current row is never part of its own reference window.
    rolling = frame.rolling(window, min_periods=GAUSSIAN_MIN_HISTORY)
    mean = rolling.mean().shift(1).to_numpy()
    std = np.maximum(np.nan_to_num(rolling.std(ddof=0).shift(1).to_numpy(), nan=0.0), floor)
    z = np.abs(frame.to_numpy() - mean) / std
    per_row = np.nan_to_num(np.nanmax(np.where(np.isnan(z), -np.inf, z), axis=1), neginf=0.0, nan=0.0)
    scores = np.empty(len(x))
    scores[order] = per_row
    return scores


def windowed_gaussian_scores(x_train, y_train, x_val, y_val, x_test, *, order_val=None, order_test=None,
                             window: int = GAUSSIAN_WINDOW, threshold: ThresholdSpec | None = None
                             ) -> BaselineScores:
    """Windowed-Gaussian z-score: each row against the mean and std of the previous ``window``
    rows of its own part, in time order (``order_val`` / ``order_test``: sortable time keys,
    default the given order); score = max |z| over features. Nothing is learned from train
    but the std floor (1 % of each feature's normal training std) that keeps constant stretches
    from dividing by zero."""
    spread = np.nanstd(_normal_rows(x_train, y_train), axis=0)
    floor = np.maximum(0.01 * np.nan_to_num(spread), 1e-9)
    val_scores = rolling_z(x_val, order_val, window, floor)
    test_scores = rolling_z(x_test, order_test, window, floor)
    return BaselineScores("windowed_gaussian", test_scores, _threshold(threshold, y_val, val_scores), 0)


UNSUPERVISED = {"isolation_forest": isolation_forest_scores, "one_class_svm": one_class_svm_scores,
                "windowed_gaussian": windowed_gaussian_scores}
SUPERVISED = {"random_forest": random_forest_scores, "xgboost": xgboost_scores}


# -- Prepared / TrainResult level ---------------------------------------------------------------

@dataclass
class _Split:
    """The scaled rows of each part, truth, time keys, and the test rows the detector scores."""

    x: dict
    y: dict
    time: dict
    test_positions: np.ndarray


def _split(prep: Prepared, trained: TrainResult) -> _Split:
    x, y, time = {}, {}, {}
    for part in ("train", "validation", "test"):
        rows = prep.parts[part]
        x[part] = scaled(prep, trained.features, trained.scaler, part)
        y[part] = prep.is_attack[rows]
        time[part] = None if prep.dataset.time is None else np.asarray(prep.dataset.time, np.float64)[rows]
    # A temporal detector scores no row before its first full window: score baselines on the same rows.
    positions = model_inputs(prep, trained, "test")[1] if trained.window > 1 else np.arange(len(y["test"]))
    return _Split(x, y, time, np.asarray(positions))


def _report(prep: Prepared, split: _Split, result: BaselineScores) -> dict:
    pos = split.test_positions
    scores = BaselineScores(result.name, result.test_scores[pos], result.threshold, result.parameters)
    report = scores.report(split.y["test"][pos])
    if len(set(prep.dataset.classes.tolist())) > 2:
        report["per_class"] = per_class(prep, "test", scores.test_scores, pos)
    spans = getattr(prep.dataset, "windows", None)
    if spans and split.time["test"] is not None:
        report["windows"] = metrics.window_detection(scores.alarms, split.time["test"][pos], spans)
    return report


def _run(name: str, prep: Prepared, split: _Split, recipe: Recipe) -> dict:
    x, y = split.x, split.y
    if name in SUPERVISED and not both_classes(y["train"]):
        return {"skipped": "the training rows hold one class"}
    options = {"order_val": split.time["validation"], "order_test": split.time["test"]} \
        if name == "windowed_gaussian" else {"seed": recipe.seed}
    function = {**UNSUPERVISED, **SUPERVISED}[name]
    result = function(x["train"], y["train"], x["validation"], y["validation"], x["test"],
                      threshold=recipe.threshold, **options)
    return _report(prep, split, result)


def isolation_forest(prep: Prepared, trained: TrainResult, recipe: Recipe) -> dict:
    """IsolationForest fitted on the normal training rows (scaled, selected features)."""
    return _run("isolation_forest", prep, _split(prep, trained), recipe)


def unsupervised(prep: Prepared, trained: TrainResult, recipe: Recipe) -> dict:
    return {"isolation_forest": isolation_forest(prep, trained, recipe)}


def run_all(prep: Prepared, trained: TrainResult, recipe: Recipe, names=None) -> dict:
    """Every baseline (or ``names``) on the recipe's split, scaled features and test rows:
    name -> report dict (detection metrics, threshold, parameters, and ``windows`` for data
    with labelled windows), or {"skipped": reason} for a classifier whose training rows hold
    one class."""
    split = _split(prep, trained)
    names = names or (*UNSUPERVISED, *SUPERVISED)
    return {name: _run(name, prep, split, recipe) for name in names}
