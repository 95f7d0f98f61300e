"""Verify stage: Keras float vs float TFLite vs int8 TFLite on the held-out test split, and the gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from firmware_host import scoring
from firmware_host.errors import QuantizationError
from firmware_host.interpreter import load_runtime
from firmware_host.runner import TFLiteModel, model_scores

from . import metrics
from .prepare import Prepared
from .recipe import Recipe
from .train import TrainResult, calibrate_threshold, keras_scores, scaled


def _evaluate(name, scores, outputs, threshold, is_attack, class_index, class_names, detector):
    verdicts = scoring.decide(detector, scores, outputs, threshold, 0)
    result = metrics.detection_metrics(is_attack, scores, verdicts.is_anomaly)
    result["threshold"] = float(threshold)
    if len(class_names) > 2:
        result["multiclass"] = metrics.multiclass_metrics(class_index, verdicts.predicted, class_names)
    return result, verdicts


def per_class(prep: Prepared, part: str, scores: np.ndarray) -> dict:
    """ROC-AUC and TPR at FPR <= 1 % of each anomalous class against the normal rows."""
    classes = prep.dataset.classes[prep.parts[part]]
    normal = classes == prep.dataset.normal_class
    table = {}
    for name in sorted(set(classes.tolist()) - {prep.dataset.normal_class}):
        rows = normal | (classes == name)
        truth = classes[rows] == name
        table[name] = {"rows": int(truth.sum()), "roc_auc": metrics.roc_auc(truth, scores[rows]),
                       "tpr_at_fpr_0.01": metrics.tpr_at_fpr(truth, scores[rows], 0.01)}
    return table


def verify(prep: Prepared, trained: TrainResult, float_path: Path, int8_path: Path, recipe: Recipe
           ) -> tuple[dict, dict]:
    """Metrics of the Keras, float TFLite and int8 TFLite models on test, through the device's loader.

    Returns (report, test scores per model) -- the scores feed the report's plots."""
    kind = recipe.detector.kind
    runtime = load_runtime()
    x_val = scaled(prep, trained.features, trained.scaler, "validation")
    x_test = scaled(prep, trained.features, trained.scaler, "test")
    val_attack = prep.is_attack[prep.parts["validation"]]
    test_attack = prep.is_attack[prep.parts["test"]]
    test_class = prep.class_index[prep.parts["test"]]
    report = {"interpreter": runtime.describe(), "test_rows": int(len(x_test)), "models": {}}
    scores = {}
    keras_test, keras_out = keras_scores(recipe, trained.model, x_test)
    report["models"]["keras"], _ = _evaluate("keras", keras_test, keras_out, trained.threshold_float, test_attack,
                                             test_class, prep.class_names, kind)
    verdicts = {}
    for name, path in (("float", float_path), ("int8", int8_path)):
        model = TFLiteModel(path, runtime)
        val_scores, _, _, _ = model_scores(model, x_val, kind)
        test_scores, test_out, _, _ = model_scores(model, x_test, kind)
        threshold = trained.threshold_float if name == "float" else \
            calibrate_threshold(recipe.threshold, val_attack, val_scores)
        report["models"][name], verdicts[name] = _evaluate(name, test_scores, test_out, threshold, test_attack,
                                                           test_class, prep.class_names, kind)
        scores[name] = test_scores
        if len(set(prep.dataset.classes.tolist())) > 2:
            report["models"][name]["per_class"] = per_class(prep, "test", test_scores)
    report["threshold_float"] = float(trained.threshold_float)
    report["threshold_int8"] = report["models"]["int8"]["threshold"]
    report["int8_vs_float"] = metrics.agreement(verdicts["int8"].is_anomaly, verdicts["float"].is_anomaly,
                                                scores["int8"], scores["float"])
    report["f1_drop"] = report["models"]["float"]["f1"] - report["models"]["int8"]["f1"]
    report["max_f1_drop"] = recipe.verify.max_f1_drop
    report["passed"] = report["f1_drop"] <= recipe.verify.max_f1_drop + 1e-12
    scores["keras"] = keras_test
    scores["is_attack"] = test_attack
    return report, scores


def check_gate(report: dict) -> None:
    """Raise when int8 F1 fell more than the recipe allows below float F1."""
    if not report["passed"]:
        f = report["models"]["float"]["f1"]
        q = report["models"]["int8"]["f1"]
        raise QuantizationError(
            f"verify gate failed: int8 F1 {q:.4f} is {100 * (f - q):.2f} pt below float F1 {f:.4f} "
            f"(allowed: {100 * report['max_f1_drop']:.2f} pt). Check the representative set and activation ranges")
