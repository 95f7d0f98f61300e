"""Training stage: fit the scaler on train, train the detector, calibrate the float threshold on validation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from firmware_host import scoring
from firmware_host.manifest import Scaler
from firmware_host.preprocess import scale_rows

from . import detectors, metrics
from .prepare import Prepared
from .recipe import Recipe, ThresholdSpec
from .scaling import fit_scaler


@dataclass
class TrainResult:
    model: object
    scaler: Scaler
    features: list
    threshold_float: float
    parameters: int
    history: dict = field(default_factory=dict)


def scaled(prep: Prepared, features: list[str], scaler: Scaler, part: str) -> np.ndarray:
    return scale_rows(prep.raw(part, features), scaler)


def calibrate_threshold(spec: ThresholdSpec, is_attack: np.ndarray, scores: np.ndarray) -> float:
    """The decision threshold from validation scores: best F1 when both classes are present,
    else the recipe's percentile of the normal rows' scores."""
    if spec.method == "f1" and 0 < is_attack.sum() < len(is_attack):
        return metrics.best_f1_threshold(is_attack, scores)
    return metrics.percentile_threshold(scores[~is_attack], spec.percentile)


def keras_scores(recipe: Recipe, model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    outputs = detectors.predict(model, x)
    return scoring.score(recipe.detector.kind, x, outputs, 0), outputs


def train(prep: Prepared, features: list[str], recipe: Recipe, progress=None, epochs: int | None = None) -> TrainResult:
    """Scaler, trained deployable model and float threshold for ``features`` of ``prep``."""
    spec = recipe.detector
    if epochs is not None:
        spec = type(spec)(**{**spec.__dict__, "epochs": epochs, "classifier_epochs": epochs})
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
    else:
        result = detectors.train_vae_dnn(x_train, prep.class_index[prep.parts["train"]], x_val,
                                         prep.class_index[prep.parts["validation"]], len(prep.class_names), spec,
                                         recipe.seed, progress)
    val_scores, _ = keras_scores(recipe, result.model, x_val)
    threshold = calibrate_threshold(recipe.threshold, attack_val, val_scores)
    return TrainResult(result.model, scaler, list(features), threshold, result.parameters, result.history)
