"""Detection metrics, from scikit-learn, used by select-features, train, verify, compare and reports;
NAB's score (``nab_score``) is re-exported here so there is one metrics entry point."""

from __future__ import annotations

import numpy as np

from .nab_score import (nab_corpus_report, nab_of_alarms, nab_score, nab_score_verdicts,  # noqa: F401
                        nab_scores_all_profiles)

METRIC_KEYS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc")


def detection_metrics(is_attack: np.ndarray, scores: np.ndarray, flagged: np.ndarray) -> dict:
    """Binary metrics of a detector: ``is_attack`` truth, ``scores`` (higher = anomalous), ``flagged`` verdicts."""
    from sklearn import metrics as skm

    y = np.asarray(is_attack, dtype=bool)
    flagged = np.asarray(flagged, dtype=bool)
    both_classes = 0 < y.sum() < len(y)
    result = {
        "rows": int(len(y)),
        "attack_rows": int(y.sum()),        # 0 (label-free data): F1, recall and the AUCs are not defined
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


def window_detection(alarms: np.ndarray, times: np.ndarray, windows) -> dict:
    """NAB-style scores of per-row ``alarms`` against labelled anomaly ``windows``.

    ``times`` gives each row's time (seconds for the NAB loader; row indices work too, and then
    the "seconds" figures are in rows); ``windows`` is a list of inclusive ``(start, end)`` spans
    in the same unit. Rows need not be sorted. The rules:

    - a window is *detected* when at least one alarm falls inside it (start <= time <= end);
    - the *first* alarm inside a window detects it; later alarms inside the same window are
      neither credited again nor counted as false alarms (NAB credits one detection per window),
      they are reported as ``repeat_alarms_in_windows`` (overlapping windows each count an
      alarm in their overlap);
    - a *false alarm* is an alarm outside every window; ``false_alarms_per_1000`` divides by all
      scored rows (``points``), the NAB convention of "per 1,000 points";
    - *delay* of a detected window: ``delay_rows`` counts the scored rows inside the window before
      its first alarm (0 = alarm on its first scored row) and ``delay_seconds`` is first-alarm time
      minus window start, so a window whose first rows were not scored (warm-up) still shows
      the time it really took;
    - a window holding no scored row cannot be detected: it counts in ``windows`` but not in
      ``windows_scored``, and ``missed`` = scored windows not detected;
    - ``nab`` holds NAB's scores of these alarms over the rows in time order (no probationary
      period: these are the rows scored; scored windows only): ``{profile: {score, raw, null,
      perfect}}``.

    ``per_window`` (in the order given) holds start, end, rows, detected, first_alarm (position
    into the given arrays), delay_rows, delay_seconds and alarms (all alarms inside)."""
    alarms = np.asarray(alarms, dtype=bool)
    times = np.asarray(times, dtype=np.float64)
    if alarms.shape != times.shape or alarms.ndim != 1:
        raise ValueError(f"alarms {alarms.shape} and times {times.shape} must be 1-D and of one length")
    order = np.argsort(times, kind="stable")
    sorted_times, sorted_alarms = times[order], alarms[order]
    in_any = np.zeros(len(times), dtype=bool)
    per_window = []
    for start, end in windows:
        lo = int(np.searchsorted(sorted_times, start, side="left"))
        hi = int(np.searchsorted(sorted_times, end, side="right"))
        in_any[lo:hi] = True
        hits = np.flatnonzero(sorted_alarms[lo:hi])
        entry = {"start": float(start), "end": float(end), "rows": int(hi - lo), "detected": bool(hits.size),
                 "first_alarm": None, "delay_rows": None, "delay_seconds": None, "alarms": int(hits.size)}
        if hits.size:
            first = lo + int(hits[0])
            entry.update(first_alarm=int(order[first]), delay_rows=int(hits[0]),
                         delay_seconds=float(sorted_times[first] - start))
        per_window.append(entry)
    detected = [w for w in per_window if w["detected"]]
    false_alarms = int(np.count_nonzero(sorted_alarms & ~in_any))
    in_windows = int(np.count_nonzero(sorted_alarms & in_any))
    scored = sum(1 for w in per_window if w["rows"])
    mean = lambda key: float(np.mean([w[key] for w in detected])) if detected else float("nan")
    return {"points": int(len(times)), "windows": len(per_window), "windows_scored": scored,
            "detected": len(detected), "missed": scored - len(detected),
            "false_alarms": false_alarms,
            "false_alarms_per_1000": 1000.0 * false_alarms / len(times) if len(times) else float("nan"),
            "alarms_in_windows": in_windows,
            "repeat_alarms_in_windows": sum(w["alarms"] for w in per_window) - len(detected),
            "mean_delay_rows": mean("delay_rows"), "mean_delay_seconds": mean("delay_seconds"),
            "nab": nab_of_alarms(sorted_alarms, sorted_times,
                                 [(w["start"], w["end"]) for w in per_window if w["rows"]]),
            "per_window": per_window}
