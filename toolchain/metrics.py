"""Detection metrics, from scikit-learn, used by select-features, train, verify, compare and reports."""

from __future__ import annotations

import numpy as np

METRIC_KEYS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc")


def detection_metrics(is_attack: np.ndarray, scores: np.ndarray, flagged: np.ndarray) -> dict:
    """Binary metrics of a detector: ``is_attack`` truth, ``scores`` (higher = anomalous), ``flagged`` verdicts."""
    from sklearn import metrics as skm

    y = np.asarray(is_attack, dtype=bool)
    flagged = np.asarray(flagged, dtype=bool)
    both_classes = 0 < y.sum() < len(y)
    result = {
        "rows": int(len(y)),
        "accuracy": float(skm.accuracy_score(y, flagged)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y, flagged)) if both_classes else float("nan"),
        "precision": float(skm.precision_score(y, flagged, zero_division=0)),
        "recall": float(skm.recall_score(y, flagged, zero_division=0)),
        "f1": float(skm.f1_score(y, flagged, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(y, scores)) if both_classes else float("nan"),
        "pr_auc": float(skm.average_precision_score(y, scores)) if both_classes else float("nan"),
        "confusion_matrix": skm.confusion_matrix(y, flagged, labels=[False, True]).tolist(),
    }
    result["tpr_at_fpr_0.01"] = tpr_at_fpr(y, scores, 0.01) if both_classes else float("nan")
    return result


def multiclass_metrics(true_index: np.ndarray, predicted_index: np.ndarray, classes: list[str]) -> dict:
    from sklearn import metrics as skm

    labels = list(range(len(classes)))
    return {"accuracy": float(skm.accuracy_score(true_index, predicted_index)),
            "macro_f1": float(skm.f1_score(true_index, predicted_index, labels=labels, average="macro",
                                           zero_division=0)),
            "confusion_matrix": skm.confusion_matrix(true_index, predicted_index, labels=labels).tolist(),
            "classes": list(classes)}


def roc_auc(is_attack: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(is_attack, scores))


def tpr_at_fpr(is_attack: np.ndarray, scores: np.ndarray, max_fpr: float) -> float:
    """The best true-positive rate reachable with a false-positive rate no higher than ``max_fpr``."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(is_attack, scores)
    allowed = fpr <= max_fpr
    return float(tpr[allowed].max()) if allowed.any() else 0.0


def agreement(a_flag: np.ndarray, b_flag: np.ndarray, a_scores: np.ndarray, b_scores: np.ndarray) -> dict:
    """How two models' verdicts and score orderings agree (int8 vs float)."""
    from scipy.stats import spearmanr

    rho = spearmanr(a_scores, b_scores).statistic if len(a_scores) > 1 else float("nan")
    return {"verdict_agreement": float(np.mean(np.asarray(a_flag) == np.asarray(b_flag))),
            "score_rank_correlation": float(rho)}


def best_f1_threshold(is_attack: np.ndarray, scores: np.ndarray) -> float:
    """The threshold (flag when score > threshold) that maximises F1 on these rows."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(np.asarray(is_attack, bool), scores)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    best = int(np.argmax(f1))
    # precision_recall_curve flags score >= t; step just below t so "score > threshold" flags the same rows.
    chosen = thresholds[best]
    below = scores[scores < chosen]
    return float((chosen + below.max()) / 2) if below.size else float(np.nextafter(chosen, -np.inf))


def percentile_threshold(normal_scores: np.ndarray, percentile: float) -> float:
    return float(np.percentile(normal_scores, percentile))
