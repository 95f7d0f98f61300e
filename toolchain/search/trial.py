"""One search trial: train the recipe on each fold, convert it to int8, score the int8 model on the
fold's held rows, and measure the int8 file's bytes and invoke p50 with the run side's interpreter.

Per fold, as a build does on its split: the scaler and network learn from the fold's train rows,
early stopping and the float threshold read its validation rows, the int8 threshold is the
recipe's rule on the int8 model's validation scores, and the held rows are scored once.

The int8 gate of a trial is the build's, with one saving: int8 verdicts are compared with the
Keras float model's rather than a converted float TFLite twin (one conversion less per fold; the
two compute the same float32 network). When the recipe's conversion fails a gate the trial tries
the build's remedies (toolchain/remedies.py): on each conversion (the recipe's, then more
calibration rows, the synthetic share, per-tensor Dense weights) the recipe's int8 threshold,
then the threshold matched to float's validation verdicts; the first that passes is kept. Still
failing, the trial fails: the final build would too.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from firmware_host import scoring
from firmware_host.errors import QuantizationError

from .. import convert, gates, metrics, remedies
from ..quantize import representative_rows
from ..recipe import QuantizeSpec, Recipe
from ..train import calibrate_threshold, keras_scores, model_inputs, part_truth, train


@dataclass
class TrialOutcome:
    metric: str                       # "f1" or "roc_auc" of the int8 model on the held rows
    score: float                      # its mean over the folds
    fold_scores: list
    float_scores: list                # the Keras float model's, same rows and metric
    agreement: list                   # int8 vs float verdict agreement per fold
    int8_bytes: int
    p50_us: float
    parameters: int
    remedies: list = field(default_factory=list)   # per fold: the quantize attempt kept
    seconds: float = 0.0


def top_k(ranking: list[str], k: int) -> list[str]:
    return list(ranking) if not k or k >= len(ranking) else list(ranking[:k])


def _attempts(spec: QuantizeSpec, pool: int) -> list[tuple[str, QuantizeSpec]]:
    """The recipe's [quantize] settings, then the build's reconversion remedies in its order
    (more calibration rows, synthetic share, per-tensor Dense weights) where they apply."""
    steps = remedies.plan(spec, pool, ["dense"])       # per_tensor applies to any per-channel model
    return [("recipe", spec)] + [(name, settings) for name, _, settings, rule in steps
                                 if isinstance(settings, QuantizeSpec) and rule == "recipe"]


class _Fold:
    """One fold's trained network and its Keras float figures; ``convert`` makes int8 attempts of it."""

    def __init__(self, prep, trained, recipe: Recipe):
        self.prep, self.trained, self.recipe = prep, trained, recipe
        kind, params = recipe.detector.kind, trained.score_params
        self.x_val, pos_val = model_inputs(prep, trained, "validation")
        self.x_held, pos_held = model_inputs(prep, trained, "test")
        self.val_attack = part_truth(prep, "validation", pos_val)[0]
        self.held_attack = part_truth(prep, "test", pos_held)[0]
        val_float = keras_scores(recipe, trained.model, self.x_val, params)[0]
        self.val_float_flags = val_float > trained.threshold_float
        scores, outputs = keras_scores(recipe, trained.model, self.x_held, params)
        self.float_verdicts = scoring.decide(kind, scores, outputs, trained.threshold_float, 0, params)
        self.float_metrics = metrics.detection_metrics(self.held_attack, scores, self.float_verdicts.is_anomaly)

    def convert(self, qspec: QuantizeSpec, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """int8 with ``qspec`` (the op-list gate raises): (validation scores, held scores, held
        outputs, model bytes), through the run side's interpreter."""
        from firmware_host.interpreter import load_runtime
        from firmware_host.runner import TFLiteModel, model_scores

        kind, params, trained = self.recipe.detector.kind, self.trained.score_params, self.trained
        x_pool, attack = remedies.calibration_pool(self.prep, trained, qspec)
        rep, _ = representative_rows(x_pool, attack, qspec, self.recipe.seed, trained.scaler.clip)
        int8 = convert.convert(trained.model, int8=True, representative=rep, per_channel=qspec.per_channel)
        convert.assert_int8(int8)
        path.write_bytes(int8)
        model = TFLiteModel(path, load_runtime())
        val_scores = model_scores(model, self.x_val, kind, 0, params)[0]
        held_scores, held_out = model_scores(model, self.x_held, kind, 0, params)[:2]
        return val_scores, held_scores, held_out, len(int8)

    def judge(self, threshold: float, held_scores, held_out) -> tuple[dict, list[dict]]:
        """int8 and float figures on the held rows at this int8 threshold, and the gates."""
        kind, params, spec = self.recipe.detector.kind, self.trained.score_params, self.recipe.verify
        verdicts = {"int8": scoring.decide(kind, held_scores, held_out, threshold, 0, params),
                    "float": self.float_verdicts}
        found = {"int8": metrics.detection_metrics(self.held_attack, held_scores, verdicts["int8"].is_anomaly),
                 "float": self.float_metrics}
        checked = [gates.agreement_gate(verdicts, spec)]
        if spec.gate == "f1":
            checked.insert(0, gates.f1_gate(found, spec))
        return found, checked


def _one_fold(number: int, prep, ranking: list[str], recipe: Recipe, folder: Path) -> dict:
    """Train on one fold, then int8 attempts until one passes the gates: each conversion of
    ``_attempts`` with the recipe's threshold rule, then with the threshold matched to float's
    validation verdicts (the build's matched_threshold remedy)."""
    from ..keras_env import import_tf
    from ..verify import matched_threshold

    import_tf()[1].backend.clear_session()     # one graph per fold, not one growing graph per worker
    trained = train(prep, top_k(ranking, recipe.features.top_k), recipe)
    fold = _Fold(prep, trained, recipe)
    failing = []
    for name, qspec in _attempts(recipe.quantize, len(remedies.calibration_pool(prep, trained, recipe.quantize)[0])):
        path = folder / f"fold{number}-{name}.tflite"
        val_scores, held_scores, held_out, size = fold.convert(qspec, path)
        for rule in ("recipe", "matched_threshold"):
            threshold = calibrate_threshold(recipe.threshold, fold.val_attack, val_scores) if rule == "recipe" \
                else matched_threshold(val_scores, fold.val_float_flags)
            found, checked = fold.judge(threshold, held_scores, held_out)
            if not gates.failed(checked):
                agreement = next(g["agreement"] for g in checked if g["gate"] == "agreement")
                return {"models": found, "agreement": agreement, "int8_path": path, "int8_bytes": size,
                        "parameters": trained.parameters, "remedy": name if rule == "recipe" else f"{name}+{rule}"}
            failing = gates.failed(checked)
    raise QuantizationError(f"int8 gate failed on search fold {number + 1} ("
                            + "; ".join(g["text"] for g in failing) + ")")


def metric_for(recipe: Recipe, metric: str) -> str:
    """``auto``: F1 for a supervised classifier (vae_dnn), ROC-AUC for the others."""
    if metric != "auto":
        return metric
    return "f1" if recipe.detector.kind == "vae_dnn" else "roc_auc"


def evaluate(recipe: Recipe, fold_preps: list, rankings: list[list[str]], metric: str, latency_invokes: int,
             progress=None) -> TrialOutcome:
    """Score ``recipe`` on every fold (``fold_preps``: prepared data with the fold's parts;
    ``rankings``: each fold's features, best first). Raises a TinyadError for a failed trial."""
    from firmware_host.bench import bench_model
    from firmware_host.interpreter import load_runtime

    started = time.perf_counter()
    metric = metric_for(recipe, metric)
    fold_scores, float_scores, agreement, kept, sizes = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="tinyad-trial-") as tmp:
        for number, (prep, ranking) in enumerate(zip(fold_preps, rankings)):
            if progress:
                progress("trial", number, len(fold_preps), {"message": f"fold {number + 1}/{len(fold_preps)}"})
            fold = _one_fold(number, prep, ranking, recipe, Path(tmp))
            fold_scores.append(float(fold["models"]["int8"][metric]))
            float_scores.append(float(fold["models"]["float"][metric]))
            agreement.append(float(fold["agreement"]))
            kept.append(fold["remedy"])
            sizes.append(fold["int8_bytes"])
        latency = bench_model(fold["int8_path"], load_runtime(), latency_invokes, max(latency_invokes // 10, 5), 0)
    if not all(np.isfinite(fold_scores)):
        raise QuantizationError(f"the int8 {metric} is undefined on a search fold (one class only in its held rows)")
    return TrialOutcome(metric, float(np.mean(fold_scores)), fold_scores, float_scores, agreement,
                        max(sizes), float(latency["invoke_us_p50"]), int(fold["parameters"]), kept,
                        time.perf_counter() - started)


def as_attrs(outcome: TrialOutcome) -> dict:
    """The outcome as Optuna user attributes (JSON values)."""
    return {k: v for k, v in dataclasses.asdict(outcome).items()}
