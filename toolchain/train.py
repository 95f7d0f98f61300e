"""Training stage: fit the scaler on train, train the detector, calibrate the float threshold on validation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from firmware_host import scoring
from firmware_host.errors import RecipeError
from firmware_host.manifest import Scaler
from firmware_host.preprocess import scale_rows

from . import detectors, metrics
from .prepare import Prepared
from .recipe import TEMPORAL, Recipe, ThresholdSpec
from .scaling import fit_scaler
from .windows import all_rows_in, part_windows


@dataclass
class TrainResult:
    model: object
    scaler: Scaler
    features: list
    threshold_float: float
    parameters: int
    history: dict = field(default_factory=dict)
    window: int = 1                          # samples per model input (1: point-wise detectors)
    score_params: dict = field(default_factory=dict)   # scoring params (cnn mode, hybrid a/b and norms)
    fit: dict = field(default_factory=dict)  # how score params were fitted (hybrid a/b grid), for the report
    teacher: object = None                   # distill.Teacher the network learned from ([train] teacher), or None


def scaled(prep: Prepared, features: list[str], scaler: Scaler, part: str) -> np.ndarray:
    return scale_rows(prep.raw(part, features), scaler)


def model_inputs(prep: Prepared, trained: TrainResult, part: str) -> tuple[np.ndarray, np.ndarray]:
    """(model inputs, row positions within the part they score) for one part: scaled rows, or
    windows of consecutive scaled rows for a temporal detector (its first W-1 rows get none)."""
    return part_windows(scaled(prep, trained.features, trained.scaler, part), trained.window, prep.parts[part])


def part_truth(prep: Prepared, part: str, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(is_attack, class index) of the scored rows of a part."""
    rows = prep.parts[part][positions]
    return prep.is_attack[rows], prep.class_index[rows]


def calibrate_threshold(spec: ThresholdSpec, is_attack: np.ndarray, scores: np.ndarray) -> float:
    """The decision threshold from validation scores: best F1 when both classes are present,
    else the recipe's percentile of the normal rows' scores."""
    if spec.method == "f1" and 0 < is_attack.sum() < len(is_attack):
        return metrics.best_f1_threshold(is_attack, scores)
    return metrics.percentile_threshold(scores[~is_attack], spec.percentile)


def keras_scores(recipe: Recipe, model, x: np.ndarray, params: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    outputs = detectors.predict(model, x)
    return scoring.score(recipe.detector.kind, x, outputs, 0, params), outputs


def cnn_mode(spec, attack_train: np.ndarray) -> str:
    """cnn_lstm_attn: a classifier where the training rows hold both classes, else a forecaster."""
    if spec.mode != "auto":
        return spec.mode
    return "classifier" if 0 < attack_train.sum() < len(attack_train) else "forecaster"


def train(prep: Prepared, features: list[str], recipe: Recipe, progress=None, epochs: int | None = None) -> TrainResult:
    """Scaler, trained deployable model and float threshold for ``features`` of ``prep``."""
    spec = recipe.detector
    if epochs is not None:
        spec = type(spec)(**{**spec.__dict__, "epochs": epochs, "classifier_epochs": epochs})
    if spec.kind in TEMPORAL:
        return _train_temporal(prep, features, recipe, spec, progress)
    train_raw = prep.raw("train", features)
    attack_train = prep.is_attack[prep.parts["train"]]
    attack_val = prep.is_attack[prep.parts["validation"]]
    learns_normal_only = spec.kind == "ae" and spec.train_on == "normal"
    # The scaler is fitted on the rows the model learns from: for a benign-only AE, benign
    # training rows, so that "how far from normal" is measured in normal traffic's own units.
    scaler = fit_scaler(train_raw[~attack_train] if learns_normal_only else train_raw,
                        recipe.preprocess.log1p, recipe.preprocess.clip)
    x_train, x_val = scale_rows(train_raw, scaler), scaled(prep, features, scaler, "validation")
    if spec.kind == "ae":
        keep_train = ~attack_train if learns_normal_only else np.ones_like(attack_train)
        keep_val = ~attack_val if learns_normal_only else np.ones_like(attack_val)
        result = detectors.train_autoencoder(x_train[keep_train], x_val[keep_val], spec, recipe.seed, progress)
    elif recipe.train.teacher != "none":
        # A quick run (the k-sweep's, ``epochs`` given) trains the first candidate only.
        return _train_distilled(prep, features, recipe, spec, scaler, x_train, x_val, progress,
                                first_only=epochs is not None)
    else:
        result = detectors.train_vae_dnn(x_train, prep.class_index[prep.parts["train"]], x_val,
                                         prep.class_index[prep.parts["validation"]], len(prep.class_names), spec,
                                         recipe.seed, progress)
    val_scores, _ = keras_scores(recipe, result.model, x_val)
    threshold = calibrate_threshold(recipe.threshold, attack_val, val_scores)
    return TrainResult(result.model, scaler, list(features), threshold, result.parameters, result.history)


def _train_distilled(prep: Prepared, features: list[str], recipe: Recipe, spec, scaler: Scaler,
                     x_train: np.ndarray, x_val: np.ndarray, progress, first_only: bool = False) -> TrainResult:
    """vae_dnn trained on an XGBoost teacher's soft targets (toolchain/distill.py). Each
    (teacher weight, augmented rows) pair the recipe lists is trained; the best validation F1 is
    kept (the first on a tie)."""
    from . import distill

    n_classes = len(prep.class_names)
    y_train, y_val = (prep.class_index[prep.parts[part]] for part in ("train", "validation"))
    attack_val = prep.is_attack[prep.parts["validation"]]
    teacher = distill.fit_teacher(x_train, y_train, n_classes, recipe.seed)
    tried, best = [], None
    pairs = distill.candidates(recipe.train.teacher_weight, recipe.train.augment_rows)
    for alpha, rows in pairs[:1] if first_only else pairs:
        x_fit, targets = distill.training_set(teacher, x_train, y_train, alpha, rows, recipe.seed)
        result = detectors.train_vae_dnn(x_fit, targets, x_val, distill.one_hot(y_val, n_classes), n_classes, spec,
                                         recipe.seed, progress)
        val_scores, _ = keras_scores(recipe, result.model, x_val)
        threshold = calibrate_threshold(recipe.threshold, attack_val, val_scores)
        f1 = metrics.detection_metrics(attack_val, val_scores, val_scores > threshold)["f1"]
        tried.append({"teacher_weight": alpha, "augment_rows": rows, "validation_f1": f1})
        if best is None or f1 > best[0]:
            best = (f1, alpha, rows, result, threshold)
    f1, alpha, rows, result, threshold = best
    fit = {"distillation": {"teacher": recipe.train.teacher, "classes": n_classes, "teacher_weight": alpha,
                            "augment": recipe.train.augment, "augment_rows": rows, "validation_f1": f1,
                            "chosen_on": "validation F1 (Keras float, validation threshold)", "tried": tried}}
    return TrainResult(result.model, scaler, list(features), threshold, result.parameters, result.history,
                       fit=fit, teacher=teacher)


def _train_temporal(prep: Prepared, features: list[str], recipe: Recipe, spec, progress) -> TrainResult:
    from . import sequence_detectors as seq
    from .hybrid import fit_ab, normalisation, synthetic_anomalies

    window = spec.window
    attack_train = prep.is_attack[prep.parts["train"]]
    attack_val = prep.is_attack[prep.parts["validation"]]
    if prep.split.get("method") == "probation":   # label-free: the learning rows count as normal, unread
        attack_train, attack_val = np.zeros_like(attack_train), np.zeros_like(attack_val)
    mode = cnn_mode(spec, attack_train) if spec.kind == "cnn_lstm_attn" else "forecaster"
    train_raw = prep.raw("train", features)
    scaler = fit_scaler(train_raw if mode == "classifier" else train_raw[~attack_train],
                        recipe.preprocess.log1p, recipe.preprocess.clip)
    w_train, pos_train = part_windows(scale_rows(train_raw, scaler), window, prep.parts["train"])
    w_val, pos_val = part_windows(scaled(prep, features, scaler, "validation"), window, prep.parts["validation"])
    if len(w_train) == 0 or len(w_val) == 0:
        raise RecipeError(f"the training or validation part has fewer rows than the window ({window}); "
                          "shorten [detector] window or change the split")
    normal_train = all_rows_in(~attack_train, window, pos_train)
    normal_val = all_rows_in(~attack_val, window, pos_val)
    if mode == "forecaster" and (normal_train.sum() == 0 or normal_val.sum() == 0):
        raise RecipeError("no window of only normal rows in the training or validation part to learn from")
    if spec.kind == "lstm":
        result = seq.train_lstm(w_train[normal_train], w_val[normal_val], spec, recipe.seed, progress)
    elif spec.kind == "ae_lstm":
        result = seq.train_ae_lstm(w_train[normal_train], w_val[normal_val], spec, recipe.seed, progress)
    elif mode == "classifier":
        y_train = prep.class_index[prep.parts["train"]][pos_train]
        y_val = prep.class_index[prep.parts["validation"]][pos_val]
        result = seq.train_cnn_lstm_attn(w_train, y_train, w_val, y_val, len(prep.class_names), spec, recipe.seed,
                                         mode, progress)
    else:
        result = seq.train_cnn_lstm_attn(w_train[normal_train], None, w_val[normal_val], None,
                                         len(prep.class_names), spec, recipe.seed, mode, progress)
    params, fit = ({"mode": mode} if spec.kind == "cnn_lstm_attn" else {}), {}
    val_truth = attack_val[pos_val]
    if spec.kind == "ae_lstm":
        outputs = detectors.predict(result.model, w_val)
        re, pe = scoring.hybrid_parts(outputs, {"re_width": window * len(features)})
        norms = {"re_width": window * len(features), **normalisation(re[normal_val], pe[normal_val])}
        if 0 < val_truth.sum() < len(val_truth):
            params, table = fit_ab(re, pe, val_truth, norms)
            fit = {"a_b_fitted_on": f"validation labels ({int(val_truth.sum())} anomalous windows)", "grid": table}
        else:
            fake = synthetic_anomalies(w_val[normal_val], recipe.seed)
            f_re, f_pe = scoring.hybrid_parts(detectors.predict(result.model, fake), norms)
            labels = np.r_[np.zeros(normal_val.sum(), bool), np.ones(len(fake), bool)]
            params, table = fit_ab(np.r_[re[normal_val], f_re], np.r_[pe[normal_val], f_pe], labels, norms)
            fit = {"a_b_fitted_on": f"validation normal windows vs {len(fake)} synthetic anomalies "
                                    "(spikes and out-of-context samples)", "grid": table}
    val_scores, _ = keras_scores(recipe, result.model, w_val, params)
    threshold = calibrate_threshold(recipe.threshold, val_truth, val_scores)
    return TrainResult(result.model, scaler, list(features), threshold, result.parameters, result.history,
                       window=window, score_params=params, fit=fit)
