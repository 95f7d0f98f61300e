"""Distillation from the tree: train the network on an XGBoost teacher's class probabilities.

The teacher is an XGBoost classifier fitted on the training rows only, on exactly the rows the
student reads (the selected features, scaled), with the parameters of the build's XGBoost
baseline (``baselines.xgboost_scores``: depth 6, learning rate 0.1, 100 rounds). The student's
target per training row is ``alpha * teacher_probabilities + (1 - alpha) * one_hot(label)``
(``[train] teacher_weight`` = alpha). With ``augment = "mixup"``, extra rows interpolated
between random pairs of training rows are added with the teacher's probabilities as their only
target (they have no label). When the recipe lists several alphas or row counts, each pair is
trained and the one with the best validation F1 is kept; the test part is never read.

The teacher is saved beside the Keras model (``teacher.json``) so the verify step can report how
often the int8 student agrees with it on the test rows.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_host.errors import RecipeError

TEACHER_FILE = "teacher.json"
TEACHER_ROUNDS, TEACHER_DEPTH, TEACHER_LEARNING_RATE = 100, 6, 0.1


@dataclass
class Teacher:
    """A fitted XGBoost classifier over the student's input rows."""

    booster: object           # xgboost.XGBClassifier
    n_classes: int

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities per row, shape (rows, n_classes), float64."""
        proba = np.asarray(self.booster.predict_proba(np.asarray(x, np.float64)), np.float64)
        return proba.reshape(len(x), self.n_classes)

    def save(self, folder: Path) -> None:
        self.booster.save_model(str(Path(folder) / TEACHER_FILE))


def _classifier(n_classes: int, seed: int):
    import xgboost

    objective = "multi:softprob" if n_classes > 2 else "binary:logistic"
    return xgboost.XGBClassifier(n_estimators=TEACHER_ROUNDS, max_depth=TEACHER_DEPTH,
                                 learning_rate=TEACHER_LEARNING_RATE, tree_method="hist", objective=objective,
                                 random_state=seed, n_jobs=1, verbosity=0)


def fit_teacher(x_train: np.ndarray, y_train: np.ndarray, n_classes: int, seed: int) -> Teacher:
    """XGBoost on the training rows (``y_train``: class index per row). One thread, so the same
    rows and seed give the same trees on any machine."""
    y_train = np.asarray(y_train, np.int64)
    present = np.unique(y_train)
    if len(present) < 2:
        raise RecipeError("[train] teacher = \"xgboost\" needs at least two classes among the training rows")
    model = _classifier(n_classes, seed)
    model.fit(np.asarray(x_train, np.float64), y_train)
    return Teacher(model, n_classes)


def load_teacher(folder: Path, n_classes: int) -> Teacher | None:
    """The teacher a train stage saved in ``folder``, or None when it saved none."""
    path = Path(folder) / TEACHER_FILE
    if not path.is_file():
        return None
    model = _classifier(n_classes, 0)
    model.load_model(str(path))
    return Teacher(model, n_classes)


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels, np.int64)
    out = np.zeros((len(labels), n_classes), np.float64)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def soft_targets(teacher_probabilities: np.ndarray, labels: np.ndarray, alpha: float) -> np.ndarray:
    """``alpha * teacher + (1 - alpha) * one_hot(labels)``: rows sum to 1."""
    if not 0.0 <= alpha <= 1.0:
        raise RecipeError(f"[train] teacher_weight = {alpha}; a weight between 0 and 1")
    teacher_probabilities = np.asarray(teacher_probabilities, np.float64)
    return alpha * teacher_probabilities + (1.0 - alpha) * one_hot(labels, teacher_probabilities.shape[1])


def mixup_rows(x: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """``rows`` new rows, each ``lam * a + (1 - lam) * b`` for a random pair (a, b) of ``x`` and
    lam drawn uniformly from [0, 1] (seeded)."""
    if rows <= 0:
        return np.empty((0, x.shape[1]), np.float64)
    rng = np.random.default_rng(seed + 7)
    a, b = rng.integers(0, len(x), rows), rng.integers(0, len(x), rows)
    lam = rng.uniform(0.0, 1.0, (rows, 1))
    return lam * x[a] + (1.0 - lam) * x[b]


def candidates(weights, rows) -> list[tuple[float, int]]:
    """Every (teacher weight, augmented rows) pair the recipe allows, in recipe order."""
    weights = weights if isinstance(weights, list) else [weights]
    rows = rows if isinstance(rows, list) else [rows]
    return [(float(w), int(r)) for w, r in itertools.product(weights, rows)]


def training_set(teacher: Teacher, x_train: np.ndarray, y_train: np.ndarray, alpha: float, extra_rows: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, soft targets) the student trains on: the training rows with blended targets, then
    ``extra_rows`` interpolated rows with the teacher's probabilities alone."""
    targets = soft_targets(teacher.probabilities(x_train), y_train, alpha)
    extra = mixup_rows(np.asarray(x_train, np.float64), extra_rows, seed)
    if len(extra) == 0:
        return x_train, targets
    return np.vstack([x_train, extra]), np.vstack([targets, teacher.probabilities(extra)])


def teacher_verdicts(teacher: Teacher, x: np.ndarray, threshold: float, normal_index: int = 0) -> np.ndarray:
    """The teacher's anomaly verdicts: 1 - P(normal) above ``threshold``."""
    return (1.0 - teacher.probabilities(x)[:, normal_index]) > threshold


def agreement(student: np.ndarray, teacher: np.ndarray) -> float:
    """Share of rows where the two verdict arrays agree (1.0 for no rows)."""
    student, teacher = np.asarray(student, bool), np.asarray(teacher, bool)
    return float(np.mean(student == teacher)) if student.size else 1.0


def teacher_report(teacher: Teacher, threshold_spec, x_val: np.ndarray, val_attack: np.ndarray, x_test: np.ndarray,
                   test_attack: np.ndarray, verdicts: dict) -> dict:
    """The teacher on the test rows beside its students: its metrics (threshold chosen on
    validation by the recipe's rule, as for the XGBoost baseline) and the share of test rows where
    each student's verdict (``verdicts``: model name -> Verdicts) equals the teacher's."""
    from . import metrics
    from .train import calibrate_threshold

    val_scores = 1.0 - teacher.probabilities(x_val)[:, 0]
    threshold = calibrate_threshold(threshold_spec, np.asarray(val_attack, bool), val_scores)
    test_scores = 1.0 - teacher.probabilities(x_test)[:, 0]
    flags = test_scores > threshold
    found = metrics.detection_metrics(np.asarray(test_attack, bool), test_scores, flags)
    report = {"teacher": "xgboost", "threshold": float(threshold), "rows": int(len(flags)),
              "f1": found["f1"], "accuracy": found["accuracy"], "roc_auc": found["roc_auc"]}
    for name, v in verdicts.items():
        report[f"{name}_agreement"] = agreement(v.is_anomaly, flags)
    return report
