"""Verify stage: Keras float vs float TFLite vs int8 TFLite on the held-out test split, and the gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from firmware_host import scoring
from firmware_host.errors import QuantizationError
from firmware_host.interpreter import load_runtime
from firmware_host.runner import TFLiteModel, model_scores

from . import adaptive_fit, gates, metrics
from .prepare import Prepared
from .recipe import Recipe
from .train import TrainResult, calibrate_threshold, keras_scores, model_inputs, part_truth


def _evaluate(name, scores, outputs, threshold, is_attack, class_index, class_names, detector, params):
    verdicts = scoring.decide(detector, scores, outputs, threshold, 0, params)
    result = metrics.detection_metrics(is_attack, scores, verdicts.is_anomaly)
    result["threshold"] = float(threshold)
    if len(class_names) > 2:
        result["multiclass"] = metrics.multiclass_metrics(class_index, verdicts.predicted, class_names)
    return result, verdicts


def per_class(prep: Prepared, part: str, scores: np.ndarray, positions: np.ndarray | None = None) -> dict:
    """ROC-AUC and TPR at FPR <= 1 % of each anomalous class against the normal rows
    (of the part's scored rows: ``positions``, default all)."""
    classes = prep.dataset.classes[prep.parts[part]]
    if positions is not None:
        classes = classes[positions]
    normal = classes == prep.dataset.normal_class
    table = {}
    for name in sorted(set(classes.tolist()) - {prep.dataset.normal_class}):
        rows = normal | (classes == name)
        truth = classes[rows] == name
        table[name] = {"rows": int(truth.sum()), "roc_auc": metrics.roc_auc(truth, scores[rows]),
                       "tpr_at_fpr_0.01": metrics.tpr_at_fpr(truth, scores[rows], 0.01)}
    return table


def verify(prep: Prepared, trained: TrainResult, float_path: Path, int8_path: Path, recipe: Recipe,
           primary: bool = True, int8_threshold: str = "recipe") -> tuple[dict, dict]:
    """Metrics of the Keras, float TFLite and int8 TFLite models on test, through the device's loader.

    Returns (report, test scores per model) -- the scores feed the report's plots. The report's
    ``gates`` (toolchain/gates.py) judge the verdicts the bundle will serve; ``primary=False``
    (an extra split the build only reports) applies the agreement gate alone. ``int8_threshold``:
    "recipe" (the recipe's rule on int8 validation scores) or "match_float" (the threshold whose
    int8 validation verdicts agree best with the float model's; a quantization remedy)."""
    kind, params = recipe.detector.kind, trained.score_params
    runtime = load_runtime()
    x_val, pos_val = model_inputs(prep, trained, "validation")
    x_test, pos_test = model_inputs(prep, trained, "test")
    val_attack, _ = part_truth(prep, "validation", pos_val)
    test_attack, test_class = part_truth(prep, "test", pos_test)
    report = {"interpreter": runtime.describe(), "test_rows": int(len(prep.parts["test"])),
              "scored_rows": int(len(x_test)), "window": trained.window, "models": {}}
    scores = {}
    keras_test, keras_out = keras_scores(recipe, trained.model, x_test, params)
    report["models"]["keras"], _ = _evaluate("keras", keras_test, keras_out, trained.threshold_float, test_attack,
                                             test_class, prep.class_names, kind, params)
    verdicts, val_by_model = {}, {}
    for name, path in (("float", float_path), ("int8", int8_path)):
        model = TFLiteModel(path, runtime)
        val_scores, _, val_q, _ = model_scores(model, x_val, kind, 0, params)
        val_by_model[name] = val_scores
        test_scores, test_out, test_q, _ = model_scores(model, x_test, kind, 0, params)
        if name == "int8":      # the int8 inputs: adaptive scoring's step and range channels read them
            int8_inputs = {"validation": val_q, "test": test_q}
        threshold = trained.threshold_float if name == "float" else \
            calibrate_threshold(recipe.threshold, val_attack, val_scores) if int8_threshold == "recipe" else \
            matched_threshold(val_scores, val_by_model["float"] > trained.threshold_float)
        report["models"][name], verdicts[name] = _evaluate(name, test_scores, test_out, threshold, test_attack,
                                                           test_class, prep.class_names, kind, params)
        scores[name] = test_scores
        if len(set(prep.dataset.classes.tolist())) > 2:
            report["models"][name]["per_class"] = per_class(prep, "test", test_scores, pos_test)
        windows = window_detection(prep, "test", pos_test, verdicts[name].is_anomaly)
        if windows is not None:
            report["models"][name]["windows"] = windows
    report["threshold_float"] = float(trained.threshold_float)
    report["threshold_int8"] = report["models"]["int8"]["threshold"]
    report["int8_threshold_rule"] = int8_threshold
    report["int8_vs_float"] = metrics.agreement(verdicts["int8"].is_anomaly, verdicts["float"].is_anomaly,
                                                scores["int8"], scores["float"])
    # The same agreement on validation (static thresholds): calibration choices are made on it, not on test.
    report["int8_vs_float_validation"] = float(np.mean((val_by_model["float"] > trained.threshold_float)
                                                       == (val_by_model["int8"] > report["threshold_int8"])))
    if trained.teacher is not None:    # distilled: how often each student's verdict is the teacher's
        from .distill import teacher_report
        report["teacher"] = teacher_report(trained.teacher, recipe.threshold, x_val, val_attack, x_test, test_attack,
                                           verdicts)
    report["f1_drop"] = report["models"]["float"]["f1"] - report["models"]["int8"]["f1"]
    report["max_f1_drop"] = recipe.verify.max_f1_drop
    report["gate"] = recipe.verify.gate
    if recipe.adaptive.enabled:
        report["adaptive"] = _adaptive_report(prep, recipe, pos_test, val_by_model, scores, int8_inputs,
                                              trained.window)
        report["passed"] = report["adaptive"]["passed"]
    elif recipe.verify.gate == "windows":
        found = {name: report["models"][name].get("windows", {}).get("detected") for name in ("float", "int8")}
        # A series with no labelled window (label-free builds) has no window to count; the
        # false-alarm and agreement gates still judge it.
        report["windows_drop"] = (found["float"] or 0) - (found["int8"] or 0)
        report["passed"] = report["windows_drop"] <= 0
    else:
        report["passed"] = report["f1_drop"] <= recipe.verify.max_f1_drop + 1e-12
    scores["keras"] = keras_test
    scores["is_attack"] = test_attack
    scores["positions"] = pos_test
    report["gates"] = gates.evaluate(*_served(report, verdicts, scores), recipe.verify, primary)
    report["passed"] = not gates.failed(report["gates"])
    return report, scores


def _served(report: dict, verdicts: dict, scores: dict) -> tuple[dict, dict]:
    """(per-model figures, verdicts) the gates judge: those the bundle serves. With adaptive
    scoring that is the adaptive rule's verdicts and [0, 1] scores, and their window counts."""
    adaptive = report.get("adaptive")
    if not adaptive or "flags_int8" not in scores:
        return report["models"], verdicts
    models, served = {}, {}
    for name in ("float", "int8"):
        flags = np.asarray(scores[f"flags_{name}"], bool)
        served[name] = scoring.Verdicts(scores=verdicts[name].scores, is_anomaly=flags,
                                        predicted=flags.astype(np.int64), unit_score=scores[f"unit_{name}"])
        found = metrics.detection_metrics(scores["is_attack"], verdicts[name].scores, flags)
        models[name] = {**found, "windows": adaptive.get("windows", {}).get(name)}
    return models, served


def _adaptive_report(prep: Prepared, recipe: Recipe, pos_test: np.ndarray, validation: dict, scores: dict,
                     int8_inputs: dict, window: int) -> dict:
    """Adaptive unit scores of float and int8 on the test rows: params, agreement, windows, and
    the gate (verdict agreement at least ``min_agreement``; with labelled windows, int8 detects as
    many as float). Adds the unit scores to ``scores``."""
    learning_rows = len(prep.parts["train"]) + len(prep.parts["validation"])
    compared = adaptive_fit.compare(recipe.adaptive, validation, scores, int8_inputs, learning_rows, window)
    entry = {"params": compared["params"], **compared["agreement"]}
    passed = entry["verdict_agreement"] >= entry["min_agreement"]
    for name in ("float", "int8"):
        scores[f"unit_{name}"] = compared["unit"][name]
        scores[f"flags_{name}"] = compared["flags"][name]
        found = window_detection(prep, "test", pos_test, compared["flags"][name])
        if found is not None:
            entry.setdefault("windows", {})[name] = {k: v for k, v in found.items() if k != "per_window"}
    if "windows" in entry:
        passed = passed and entry["windows"]["int8"]["detected"] >= entry["windows"]["float"]["detected"]
    entry["passed"] = bool(passed)
    return entry


def matched_threshold(scores: np.ndarray, reference: np.ndarray) -> float:
    """The threshold t (flag when score > t) whose flags agree with the ``reference`` flags on the
    most rows; the lowest such cut when several tie."""
    order = np.argsort(scores, kind="stable")
    ranked, wanted = np.asarray(scores, np.float64)[order], np.asarray(reference, bool)[order]
    n = len(ranked)
    # Cutting before position k flags ranked[k:]: agreement = unflagged wanted-normal + flagged wanted-anomalous.
    normal_below = np.r_[0, np.cumsum(~wanted)]
    anomalous_above = wanted.sum() - np.r_[0, np.cumsum(wanted)]
    cuts = np.r_[0, np.flatnonzero(np.diff(ranked) > 0) + 1, n]
    k = int(cuts[np.argmax((normal_below + anomalous_above)[cuts])])
    if k == 0:
        return float(np.nextafter(ranked[0], -np.inf))
    return float(ranked[-1]) if k == n else float((ranked[k - 1] + ranked[k]) / 2)


def window_detection(prep: Prepared, part: str, positions: np.ndarray, alarms: np.ndarray) -> dict | None:
    """NAB-style window scores of one part's alarms, when the data set labels anomaly windows."""
    spans = getattr(prep.dataset, "windows", None)
    if not spans:
        return None
    rows = prep.parts[part][positions]
    return metrics.window_detection(np.asarray(alarms, bool), prep.dataset.time[rows], spans)


def check_gate(report: dict) -> None:
    """Raise a one-line QuantizationError naming each gate the report failed (toolchain/gates.py)."""
    failing = gates.failed(report.get("gates", []))
    if failing:
        raise QuantizationError("verify gate failed: " + "; ".join(g["text"] for g in failing)
                                + ". Check the representative set and activation ranges")
    if not report["passed"] and "adaptive" in report:
        a = report["adaptive"]
        windows = a.get("windows")
        found = (f"; labelled windows detected: int8 {windows['int8']['detected']}, float "
                 f"{windows['float']['detected']}") if windows else ""
        raise QuantizationError(f"verify gate failed: int8 and float adaptive verdicts agree on "
                                f"{100 * a['verdict_agreement']:.2f} % of test rows (needed "
                                f"{100 * a['min_agreement']:.2f} %){found}")
    if not report["passed"] and report.get("gate") == "windows":
        f, q = (report["models"][m]["windows"]["detected"] for m in ("float", "int8"))
        raise QuantizationError(f"verify gate failed: int8 detects {q} labelled windows, float {f}")
    if not report["passed"]:
        f = report["models"]["float"]["f1"]
        q = report["models"]["int8"]["f1"]
        raise QuantizationError(
            f"verify gate failed: int8 F1 {q:.4f} is {100 * (f - q):.2f} pt below float F1 {f:.4f} "
            f"(allowed: {100 * report['max_f1_drop']:.2f} pt). Check the representative set and activation ranges")
